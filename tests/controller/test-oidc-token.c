/* SPDX-License-Identifier: MIT */
/* oidc-token.c: an ID token is accepted only when an RS256 or ES256
 * signature verifies against a key of the provider's JWKS that fits the
 * token's kid and alg, and every claim rule holds (iss, aud, azp, exp, iat,
 * nbf with the skew, nonce, sub). Every refusal names its reason; the keys are
 * real (generated with OpenSSL here) and the tokens signed with cjose. */
#include <cjose/cjose.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "oidc-token.h"

#define ISSUER    "https://idp.example"
#define CLIENT_ID "client-1"
#define NONCE     "nonce-4f1c"
#define NOW       1700000000LL
#define SKEW      60

static cjose_jwk_t *rsa, *ec;
static json_t *jwks;   /* public halves of rsa (kid "rsa-1") and ec (kid "ec-1") */
static json_t *claims; /* a valid claim set; tests change one thing */
static const OidcTokenExpect expect = {
    .issuer = ISSUER, .client_id = CLIENT_ID, .nonce = NONCE, .now_s = NOW, .skew_s = SKEW};

/* ---- keys ---- */

static uint8_t *bn_param(EVP_PKEY *pk, const char *name, size_t pad, size_t *ret_len)
{
        BIGNUM *bn = NULL;
        cr_assert(EVP_PKEY_get_bn_param(pk, name, &bn), "no %s", name);
        size_t n = pad ? pad : (size_t)BN_num_bytes(bn);
        uint8_t *buf = malloc(n);
        cr_assert_not_null(buf);
        cr_assert_eq(BN_bn2binpad(bn, buf, (int)n), (int)n);
        BN_clear_free(bn);
        *ret_len = n;
        return buf;
}

static void set_kid(cjose_jwk_t *k, const char *kid)
{
        cjose_err err;
        cr_assert(cjose_jwk_set_kid(k, kid, strlen(kid), &err), "%s", err.message);
}

static cjose_jwk_t *rsa_key_new(const char *kid)
{
        EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
        cr_assert_not_null(pk);
        cjose_jwk_rsa_keyspec s = {0};
        s.e = bn_param(pk, OSSL_PKEY_PARAM_RSA_E, 0, &s.elen);
        s.n = bn_param(pk, OSSL_PKEY_PARAM_RSA_N, 0, &s.nlen);
        s.d = bn_param(pk, OSSL_PKEY_PARAM_RSA_D, 0, &s.dlen);
        s.p = bn_param(pk, OSSL_PKEY_PARAM_RSA_FACTOR1, 0, &s.plen);
        s.q = bn_param(pk, OSSL_PKEY_PARAM_RSA_FACTOR2, 0, &s.qlen);
        s.dp = bn_param(pk, OSSL_PKEY_PARAM_RSA_EXPONENT1, 0, &s.dplen);
        s.dq = bn_param(pk, OSSL_PKEY_PARAM_RSA_EXPONENT2, 0, &s.dqlen);
        s.qi = bn_param(pk, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, 0, &s.qilen);
        EVP_PKEY_free(pk);
        cjose_err err;
        cjose_jwk_t *k = cjose_jwk_create_RSA_spec(&s, &err);
        cr_assert_not_null(k, "%s", err.message);
        uint8_t *parts[] = {s.e, s.n, s.d, s.p, s.q, s.dp, s.dq, s.qi};
        for (size_t i = 0; i < ELEMENTSOF(parts); i++)
                free(parts[i]);
        set_kid(k, kid);
        return k;
}

static cjose_jwk_t *ec_key_new(const char *kid)
{
        EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        cr_assert_not_null(pk);
        cjose_jwk_ec_keyspec s = {.crv = CJOSE_JWK_EC_P_256};
        s.x = bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, 32, &s.xlen);
        s.y = bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, 32, &s.ylen);
        s.d = bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, 32, &s.dlen);
        EVP_PKEY_free(pk);
        cjose_err err;
        cjose_jwk_t *k = cjose_jwk_create_EC_spec(&s, &err);
        cr_assert_not_null(k, "%s", err.message);
        free(s.x);
        free(s.y);
        free(s.d);
        set_kid(k, kid);
        return k;
}

/* The public JWK as the provider would publish it. */
static json_t *public_jwk(const cjose_jwk_t *k)
{
        cjose_err err;
        char *s = cjose_jwk_to_json(k, false, &err);
        cr_assert_not_null(s, "%s", err.message);
        json_t *j = json_loads(s, 0, NULL);
        cjose_get_dealloc()(s);
        cr_assert(json_is_object(j));
        cr_assert_null(json_object_get(j, "d"), "the published key has no private part");
        return j;
}

static json_t *jwks_of(size_t n, cjose_jwk_t *const *keys)
{
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(arr, public_jwk(keys[i]));
        return json_pack("{s:o}", "keys", arr);
}

/* ---- tokens ---- */

static char *b64url(const void *data, size_t len)
{
        cjose_err err;
        char *out = NULL;
        size_t out_len = 0;
        cr_assert(cjose_base64url_encode(data, len, &out, &out_len, &err));
        char *copy = strndup(out, out_len);
        cjose_get_dealloc()(out);
        cr_assert_not_null(copy);
        return copy;
}

static char *b64url_str(const char *s)
{
        return b64url(s, strlen(s));
}

/* Signs payload (any bytes) with key under alg; kid NULL: no kid header. */
static char *sign_raw(const cjose_jwk_t *key, const char *alg, const char *kid, const char *payload)
{
        cjose_err err;
        cjose_header_t *h = cjose_header_new(&err);
        cr_assert_not_null(h);
        cr_assert(cjose_header_set(h, CJOSE_HDR_ALG, alg, &err));
        if (kid)
                cr_assert(cjose_header_set(h, CJOSE_HDR_KID, kid, &err));
        cjose_jws_t *jws = cjose_jws_sign(key, h, (const uint8_t *)payload, strlen(payload), &err);
        cr_assert_not_null(jws, "signing %s: %s", alg, err.message);
        const char *ser = NULL;
        cr_assert(cjose_jws_export(jws, &ser, &err));
        char *out = strdup(ser);
        cjose_jws_release(jws);
        cjose_header_release(h);
        return out;
}

static char *sign(const cjose_jwk_t *key, const char *alg, const char *kid, json_t *c)
{
        _cleanup_free_ char *payload = json_dumps(c, JSON_COMPACT);
        return sign_raw(key, alg, kid, payload);
}

/* header.payload.signature from the given parts, each base64url'ed here. */
static char *compact(const char *header_json, const char *payload_json, const char *sig_b64)
{
        _cleanup_free_ char *h = b64url_str(header_json);
        _cleanup_free_ char *p = b64url_str(payload_json);
        char *out = NULL;
        cr_assert(asprintf(&out, "%s.%s.%s", h, p, sig_b64) > 0);
        return out;
}

/* ---- expectations ---- */

static void expect_valid(const char *jwt, json_t *keys, const OidcTokenExpect *e)
{
        json_t *got = NULL;
        const char *reason = NULL;
        int r = oidc_id_token_validate(jwt, keys, e, &got, &reason);
        cr_assert_eq(r, 0, "refused: %d %s", r, reason ? reason : "(no reason)");
        cr_assert_not_null(got);
        cr_assert_str_eq(json_string_value(json_object_get(got, "sub")),
                         json_string_value(json_object_get(claims, "sub")));
        json_decref(got);
}

static void expect_refused_by(const char *jwt, json_t *keys, const OidcTokenExpect *e, int code,
                              const char *reason)
{
        json_t *got = NULL;
        const char *why = NULL;
        int r = oidc_id_token_validate(jwt, keys, e, &got, &why);
        cr_assert_eq(r, code, "want %d (%s), got %d (%s)", code, reason, r, why ? why : "(none)");
        cr_assert_not_null(why, "a refusal names its reason");
        cr_assert_str_eq(why, reason);
        cr_assert_null(got, "no claims handed out on refusal");
}

/* The default: signed with the RSA key, checked against the test JWKS. */
static void expect_claims_refused(int code, const char *reason)
{
        _cleanup_free_ char *jwt = sign(rsa, "RS256", "rsa-1", claims);
        expect_refused_by(jwt, jwks, &expect, code, reason);
}

static void expect_claims_valid(void)
{
        _cleanup_free_ char *jwt = sign(rsa, "RS256", "rsa-1", claims);
        expect_valid(jwt, jwks, &expect);
}

static void setup(void)
{
        rsa = rsa_key_new("rsa-1");
        ec = ec_key_new("ec-1");
        jwks = jwks_of(2, (cjose_jwk_t *[]){rsa, ec});
        claims = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "iss", ISSUER, "aud", CLIENT_ID, "exp",
                           (json_int_t)(NOW + 300), "iat", (json_int_t)NOW, "nonce", NONCE, "sub",
                           "user-42");
        cr_assert_not_null(claims);
}

static void teardown(void)
{
        cjose_jwk_release(rsa);
        cjose_jwk_release(ec);
        json_decref(jwks);
        json_decref(claims);
}

TestSuite(oidc_token, .init = setup, .fini = teardown, .timeout = 60);

/* ---- signatures and keys ---- */

Test(oidc_token, rs256_signed_by_a_published_key_is_accepted)
{
        _cleanup_free_ char *jwt = sign(rsa, "RS256", "rsa-1", claims);
        json_t *got = NULL;
        const char *reason = "untouched";
        cr_assert_eq(oidc_id_token_validate(jwt, jwks, &expect, &got, &reason), 0);
        cr_assert_null(reason, "no reason on success");
        cr_assert_str_eq(json_string_value(json_object_get(got, "sub")), "user-42");
        cr_assert_str_eq(json_string_value(json_object_get(got, "nonce")), NONCE);
        cr_assert_eq(got->refcount, 1, "the claims are a new reference for the caller");
        json_decref(got);
}

Test(oidc_token, es256_signed_by_a_published_key_is_accepted)
{
        _cleanup_free_ char *jwt = sign(ec, "ES256", "ec-1", claims);
        expect_valid(jwt, jwks, &expect);
}

Test(oidc_token, token_without_kid_is_checked_against_every_fitting_key)
{
        cjose_jwk_t *other = rsa_key_new("rsa-0");
        _cleanup_(json_decrefp) json_t *keys = jwks_of(3, (cjose_jwk_t *[]){other, ec, rsa});
        _cleanup_free_ char *jwt = sign(rsa, "RS256", NULL, claims);
        expect_valid(jwt, keys, &expect);

        /* Without a kid and without a key of its type there is nothing to try. */
        _cleanup_(json_decrefp) json_t *ec_only = jwks_of(1, (cjose_jwk_t *[]){ec});
        expect_refused_by(jwt, ec_only, &expect, -ENOKEY, "unknown_key");
        cjose_jwk_release(other);
}

Test(oidc_token, payload_changed_after_signing_is_a_bad_signature)
{
        _cleanup_free_ char *jwt = sign(rsa, "RS256", "rsa-1", claims);
        char *dot1 = strchr(jwt, '.'), *dot2 = strrchr(jwt, '.');
        json_object_set_new(claims, "sub", json_string("admin"));
        _cleanup_free_ char *forged_payload = json_dumps(claims, JSON_COMPACT);
        _cleanup_free_ char *p = b64url_str(forged_payload);
        *dot1 = '\0';
        _cleanup_free_ char *forged = NULL;
        cr_assert(asprintf(&forged, "%s.%s%s", jwt, p, dot2) > 0);
        expect_refused_by(forged, jwks, &expect, -EPERM, "bad_signature");

        /* The same for an ES256 token. */
        _cleanup_free_ char *ejwt = sign(ec, "ES256", "ec-1", claims);
        ejwt[strlen(ejwt) - 2] = ejwt[strlen(ejwt) - 2] == 'A' ? 'B' : 'A';
        expect_refused_by(ejwt, jwks, &expect, -EPERM, "bad_signature");
}

Test(oidc_token, signed_by_another_key_under_a_published_kid_is_a_bad_signature)
{
        cjose_jwk_t *attacker = rsa_key_new("rsa-1");
        _cleanup_free_ char *jwt = sign(attacker, "RS256", "rsa-1", claims);
        expect_refused_by(jwt, jwks, &expect, -EPERM, "bad_signature");
        cjose_jwk_release(attacker);
}

Test(oidc_token, kid_absent_from_the_jwks_is_unknown_key)
{
        cjose_jwk_t *rotated = rsa_key_new("rsa-2");
        _cleanup_free_ char *jwt = sign(rotated, "RS256", "rsa-2", claims);
        expect_refused_by(jwt, jwks, &expect, -ENOKEY, "unknown_key");

        /* Once the caller re-fetches a JWKS that has it, the token passes. */
        _cleanup_(json_decrefp) json_t *refreshed = jwks_of(2, (cjose_jwk_t *[]){rsa, rotated});
        expect_valid(jwt, refreshed, &expect);
        cjose_jwk_release(rotated);
}

Test(oidc_token, jwks_without_keys_is_unknown_key)
{
        _cleanup_free_ char *jwt = sign(rsa, "RS256", "rsa-1", claims);
        _cleanup_(json_decrefp) json_t *empty = json_pack("{s:[]}", "keys");
        _cleanup_(json_decrefp) json_t *no_keys = json_object();
        _cleanup_(json_decrefp) json_t *not_array = json_pack("{s:{}}", "keys");
        expect_refused_by(jwt, empty, &expect, -ENOKEY, "unknown_key");
        expect_refused_by(jwt, no_keys, &expect, -ENOKEY, "unknown_key");
        expect_refused_by(jwt, not_array, &expect, -ENOKEY, "unknown_key");
}

Test(oidc_token, rs256_header_naming_an_ec_key_finds_no_key)
{
        /* The provider's EC key and the token share the kid "shared"; an RSA
         * signature must never be checked with it. */
        cjose_jwk_t *signer = rsa_key_new("shared");
        cjose_jwk_t *ec_shared = ec_key_new("shared");
        _cleanup_(json_decrefp) json_t *keys = jwks_of(1, (cjose_jwk_t *[]){ec_shared});
        _cleanup_free_ char *jwt = sign(signer, "RS256", "shared", claims);
        expect_refused_by(jwt, keys, &expect, -ENOKEY, "unknown_key");

        /* And the other way round: ES256 naming an RSA key. */
        cjose_jwk_t *rsa_shared = rsa_key_new("shared");
        _cleanup_(json_decrefp) json_t *rkeys = jwks_of(1, (cjose_jwk_t *[]){rsa_shared});
        _cleanup_free_ char *ejwt = sign(ec_shared, "ES256", "shared", claims);
        expect_refused_by(ejwt, rkeys, &expect, -ENOKEY, "unknown_key");

        /* An ES256 token relabelled RS256 (algorithm confusion) finds no key
         * either: "ec-1" is not an RSA key. */
        _cleanup_free_ char *good = sign(ec, "ES256", "ec-1", claims);
        _cleanup_free_ char *payload = json_dumps(claims, JSON_COMPACT);
        _cleanup_free_ char *relabelled =
            compact("{\"alg\":\"RS256\",\"kid\":\"ec-1\"}", payload, strrchr(good, '.') + 1);
        expect_refused_by(relabelled, jwks, &expect, -ENOKEY, "unknown_key");

        cjose_jwk_release(signer);
        cjose_jwk_release(ec_shared);
        cjose_jwk_release(rsa_shared);
}

Test(oidc_token, keys_not_for_signing_or_for_another_alg_do_not_fit)
{
        _cleanup_free_ char *jwt = sign(rsa, "RS256", "rsa-1", claims);
        _cleanup_(json_decrefp) json_t *enc = jwks_of(1, (cjose_jwk_t *[]){rsa});
        json_object_set_new(json_array_get(json_object_get(enc, "keys"), 0), "use",
                            json_string("enc"));
        expect_refused_by(jwt, enc, &expect, -ENOKEY, "unknown_key");

        _cleanup_(json_decrefp) json_t *other_alg = jwks_of(1, (cjose_jwk_t *[]){rsa});
        json_object_set_new(json_array_get(json_object_get(other_alg, "keys"), 0), "alg",
                            json_string("PS256"));
        expect_refused_by(jwt, other_alg, &expect, -ENOKEY, "unknown_key");

        /* "use":"sig" and a matching "alg" are fine. */
        _cleanup_(json_decrefp) json_t *labelled = jwks_of(1, (cjose_jwk_t *[]){rsa});
        json_t *k = json_array_get(json_object_get(labelled, "keys"), 0);
        json_object_set_new(k, "use", json_string("sig"));
        json_object_set_new(k, "alg", json_string("RS256"));
        expect_valid(jwt, labelled, &expect);
}

Test(oidc_token, alg_none_is_refused)
{
        _cleanup_free_ char *payload = json_dumps(claims, JSON_COMPACT);
        _cleanup_free_ char *jwt = compact("{\"alg\":\"none\"}", payload, "");
        expect_refused_by(jwt, jwks, &expect, -EBADMSG, "algorithm_not_allowed");
        _cleanup_free_ char *with_kid =
            compact("{\"alg\":\"none\",\"kid\":\"rsa-1\"}", payload, "");
        expect_refused_by(with_kid, jwks, &expect, -EBADMSG, "algorithm_not_allowed");
}

Test(oidc_token, hs256_keyed_with_the_client_secret_is_refused)
{
        static const char secret[] = "the-client-secret-shared-with-the-provider";
        cjose_err err;
        cjose_jwk_t *oct = cjose_jwk_create_oct_spec((const uint8_t *)secret, strlen(secret), &err);
        cr_assert_not_null(oct);
        _cleanup_free_ char *jwt = sign(oct, "HS256", NULL, claims);
        expect_refused_by(jwt, jwks, &expect, -EBADMSG, "algorithm_not_allowed");
        _cleanup_free_ char *jwt_kid = sign(oct, "HS256", "rsa-1", claims);
        expect_refused_by(jwt_kid, jwks, &expect, -EBADMSG, "algorithm_not_allowed");

        /* Even when the JWKS itself carries that symmetric key. */
        _cleanup_(json_decrefp) json_t *with_oct = jwks_of(1, (cjose_jwk_t *[]){oct});
        expect_refused_by(jwt, with_oct, &expect, -EBADMSG, "algorithm_not_allowed");
        cjose_jwk_release(oct);
}

Test(oidc_token, other_asymmetric_algorithms_are_refused)
{
        const char *rsa_algs[] = {"RS384", "RS512", "PS256"};
        for (size_t i = 0; i < ELEMENTSOF(rsa_algs); i++) {
                _cleanup_free_ char *jwt = sign(rsa, rsa_algs[i], "rsa-1", claims);
                expect_refused_by(jwt, jwks, &expect, -EBADMSG, "algorithm_not_allowed");
        }
        /* A header whose alg is no JWS algorithm at all (lower case is another
         * name, not RS256) or that has none is not a JWS: cjose will not
         * import it, so it is malformed rather than a refused algorithm. */
        _cleanup_free_ char *good = sign(rsa, "RS256", "rsa-1", claims);
        _cleanup_free_ char *payload = json_dumps(claims, JSON_COMPACT);
        _cleanup_free_ char *lower =
            compact("{\"alg\":\"rs256\",\"kid\":\"rsa-1\"}", payload, strrchr(good, '.') + 1);
        expect_refused_by(lower, jwks, &expect, -EBADMSG, "malformed_id_token");
        _cleanup_free_ char *no_alg =
            compact("{\"kid\":\"rsa-1\"}", payload, strrchr(good, '.') + 1);
        expect_refused_by(no_alg, jwks, &expect, -EBADMSG, "malformed_id_token");
}

/* ---- compact serialisation ---- */

Test(oidc_token, malformed_compact_serialisations_are_refused)
{
        _cleanup_free_ char *good = sign(rsa, "RS256", "rsa-1", claims);
        _cleanup_free_ char *payload = json_dumps(claims, JSON_COMPACT);
        const char *sig = strrchr(good, '.') + 1;

        /* Two parts: the signature dropped. */
        _cleanup_free_ char *two = strndup(good, (size_t)(strrchr(good, '.') - good));
        expect_refused_by(two, jwks, &expect, -EBADMSG, "malformed_id_token");

        /* Four parts. */
        _cleanup_free_ char *four = NULL;
        cr_assert(asprintf(&four, "%s.AAAA", good) > 0);
        expect_refused_by(four, jwks, &expect, -EBADMSG, "malformed_id_token");

        /* A header that is not base64url. */
        _cleanup_free_ char *bad_b64 = NULL;
        cr_assert(asprintf(&bad_b64, "e$y!J*%s", strchr(good, '.')) > 0);
        expect_refused_by(bad_b64, jwks, &expect, -EBADMSG, "malformed_id_token");

        /* A header that decodes but is not JSON. */
        _cleanup_free_ char *not_json = compact("alg=RS256", payload, sig);
        expect_refused_by(not_json, jwks, &expect, -EBADMSG, "malformed_id_token");

        expect_refused_by("", jwks, &expect, -EBADMSG, "malformed_id_token");
        expect_refused_by("..", jwks, &expect, -EBADMSG, "malformed_id_token");
        expect_refused_by(NULL, jwks, &expect, -EBADMSG, "malformed_id_token");
}

Test(oidc_token, a_signed_payload_that_is_not_a_json_object_is_malformed)
{
        const char *payloads[] = {"not json", "[\"iss\"]", "\"a string\""};
        for (size_t i = 0; i < ELEMENTSOF(payloads); i++) {
                _cleanup_free_ char *jwt = sign_raw(rsa, "RS256", "rsa-1", payloads[i]);
                expect_refused_by(jwt, jwks, &expect, -EBADMSG, "malformed_id_token");
        }
        /* Duplicate claims are ambiguous: which sub is meant? */
        _cleanup_free_ char *dup =
            sign_raw(rsa, "RS256", "rsa-1",
                     "{\"iss\":\"" ISSUER "\",\"aud\":\"" CLIENT_ID "\",\"exp\":1700000300,"
                     "\"iat\":1700000000,\"nonce\":\"" NONCE "\",\"sub\":\"a\",\"sub\":\"admin\"}");
        expect_refused_by(dup, jwks, &expect, -EBADMSG, "malformed_id_token");
}

Test(oidc_token, oversized_token_is_refused_before_parsing)
{
        size_t n = 64 * 1024 + 1;
        _cleanup_free_ char *big = malloc(n + 1);
        cr_assert_not_null(big);
        memset(big, 'A', n);
        big[10] = '.';
        big[20] = '.';
        big[n] = '\0';
        expect_refused_by(big, jwks, &expect, -EBADMSG, "malformed_id_token");
}

/* ---- claims ---- */

Test(oidc_token, wrong_issuer_is_refused)
{
        const char *issuers[] = {"https://evil.example", ISSUER "/", "https://IDP.example",
                                 ISSUER ".evil"};
        for (size_t i = 0; i < ELEMENTSOF(issuers); i++) {
                json_object_set_new(claims, "iss", json_string(issuers[i]));
                expect_claims_refused(-EACCES, "issuer_mismatch");
        }
        json_object_set_new(claims, "iss", json_integer(1));
        expect_claims_refused(-EACCES, "issuer_mismatch");
        json_object_del(claims, "iss");
        expect_claims_refused(-EACCES, "issuer_mismatch");
}

Test(oidc_token, wrong_audience_is_refused)
{
        json_object_set_new(claims, "aud", json_string("client-2"));
        expect_claims_refused(-EACCES, "audience_mismatch");
        json_object_set_new(claims, "aud", json_pack("[s, s]", "client-2", "client-3"));
        json_object_set_new(claims, "azp", json_string(CLIENT_ID));
        expect_claims_refused(-EACCES, "audience_mismatch");
        json_object_del(claims, "azp");
        json_object_set_new(claims, "aud", json_pack("[]"));
        expect_claims_refused(-EACCES, "audience_mismatch");
        json_object_set_new(claims, "aud", json_integer(7));
        expect_claims_refused(-EACCES, "audience_mismatch");
        json_object_del(claims, "aud");
        expect_claims_refused(-EACCES, "audience_mismatch");
}

Test(oidc_token, several_audiences_need_azp_naming_this_client)
{
        json_object_set_new(claims, "aud", json_pack("[s, s]", "other-client", CLIENT_ID));
        expect_claims_refused(-EACCES, "azp_mismatch");

        json_object_set_new(claims, "azp", json_string("other-client"));
        expect_claims_refused(-EACCES, "azp_mismatch");

        json_object_set_new(claims, "azp", json_string(CLIENT_ID));
        expect_claims_valid();
}

Test(oidc_token, azp_present_must_name_this_client)
{
        json_object_set_new(claims, "azp", json_string("other-client"));
        expect_claims_refused(-EACCES, "azp_mismatch");
        json_object_set_new(claims, "azp", json_integer(1));
        expect_claims_refused(-EACCES, "azp_mismatch");
        json_object_set_new(claims, "azp", json_string(CLIENT_ID));
        expect_claims_valid();

        /* One audience in an array needs no azp. */
        json_object_del(claims, "azp");
        json_object_set_new(claims, "aud", json_pack("[s]", CLIENT_ID));
        expect_claims_valid();
}

Test(oidc_token, expired_beyond_the_skew_is_refused)
{
        json_object_set_new(claims, "exp", json_integer(NOW - SKEW));
        expect_claims_valid();
        json_object_set_new(claims, "exp", json_integer(NOW - SKEW - 1));
        expect_claims_refused(-EKEYEXPIRED, "id_token_expired");

        OidcTokenExpect strict = expect;
        strict.skew_s = 0;
        json_object_set_new(claims, "exp", json_integer(NOW - 1));
        _cleanup_free_ char *jwt = sign(rsa, "RS256", "rsa-1", claims);
        expect_refused_by(jwt, jwks, &strict, -EKEYEXPIRED, "id_token_expired");
}

Test(oidc_token, exp_far_in_the_future_is_not_an_overflow)
{
        json_object_set_new(claims, "exp", json_integer(INT64_MAX));
        expect_claims_valid();
        json_object_set_new(claims, "exp", json_integer(INT64_MIN));
        expect_claims_refused(-EKEYEXPIRED, "id_token_expired");
        /* Reals beyond int64_t are clamped, not converted (undefined in C). */
        json_object_set_new(claims, "exp", json_real(1e300));
        expect_claims_valid();
        json_object_set_new(claims, "exp", json_real(-1e300));
        expect_claims_refused(-EKEYEXPIRED, "id_token_expired");
        json_object_set_new(claims, "exp", json_integer(NOW + 300));
        json_object_set_new(claims, "iat", json_real(1e300));
        expect_claims_refused(-EACCES, "iat_in_future");
}

Test(oidc_token, iat_in_the_future_beyond_the_skew_is_refused)
{
        json_object_set_new(claims, "iat", json_integer(NOW + SKEW));
        expect_claims_valid();
        json_object_set_new(claims, "iat", json_integer(NOW + SKEW + 1));
        expect_claims_refused(-EACCES, "iat_in_future");
}

Test(oidc_token, nbf_in_the_future_is_refused)
{
        json_object_set_new(claims, "nbf", json_integer(NOW + SKEW));
        expect_claims_valid();
        json_object_set_new(claims, "nbf", json_integer(NOW + SKEW + 1));
        expect_claims_refused(-EACCES, "not_yet_valid");
        json_object_set_new(claims, "nbf", json_integer(NOW - 3600));
        expect_claims_valid();
}

Test(oidc_token, exp_and_iat_are_required_numbers)
{
        json_object_del(claims, "exp");
        expect_claims_refused(-EBADMSG, "malformed_id_token");
        json_object_set_new(claims, "exp", json_string("1700000300"));
        expect_claims_refused(-EBADMSG, "malformed_id_token");
        json_object_set_new(claims, "exp", json_integer(NOW + 300));
        json_object_del(claims, "iat");
        expect_claims_refused(-EBADMSG, "malformed_id_token");

        /* Some providers send times as 1700000000.0. */
        json_object_set_new(claims, "iat", json_real((double)NOW));
        json_object_set_new(claims, "exp", json_real((double)(NOW + 300)));
        expect_claims_valid();
        json_object_set_new(claims, "exp", json_real((double)(NOW - SKEW - 5)));
        expect_claims_refused(-EKEYEXPIRED, "id_token_expired");
}

Test(oidc_token, nonce_must_be_this_logins)
{
        json_object_set_new(claims, "nonce", json_string("nonce-of-another-login"));
        expect_claims_refused(-EACCES, "nonce_mismatch");
        json_object_set_new(claims, "nonce", json_string(NONCE "x"));
        expect_claims_refused(-EACCES, "nonce_mismatch");
        json_object_set_new(claims, "nonce", json_integer(1));
        expect_claims_refused(-EACCES, "nonce_mismatch");
        json_object_del(claims, "nonce");
        expect_claims_refused(-EACCES, "nonce_mismatch");

        /* A login that has no nonce accepts no token, not every token. */
        json_object_set_new(claims, "nonce", json_string(NONCE));
        OidcTokenExpect no_nonce = expect;
        no_nonce.nonce = NULL;
        _cleanup_free_ char *jwt = sign(rsa, "RS256", "rsa-1", claims);
        expect_refused_by(jwt, jwks, &no_nonce, -EACCES, "nonce_mismatch");
}

Test(oidc_token, subject_is_required)
{
        json_object_del(claims, "sub");
        expect_claims_refused(-EACCES, "subject_missing");
        json_object_set_new(claims, "sub", json_string(""));
        expect_claims_refused(-EACCES, "subject_missing");
        json_object_set_new(claims, "sub", json_integer(42));
        expect_claims_refused(-EACCES, "subject_missing");
        char longsub[257];
        memset(longsub, 's', 256);
        longsub[256] = '\0';
        json_object_set_new(claims, "sub", json_string(longsub));
        expect_claims_refused(-EACCES, "subject_missing");
        longsub[255] = '\0'; /* 255 is the longest allowed (OIDC Core 2) */
        json_object_set_new(claims, "sub", json_string(longsub));
        expect_claims_valid();
}

Test(oidc_token, the_signature_is_checked_before_any_claim)
{
        /* A forged token with wrong claims reports the signature, so a probe
         * learns nothing about which claims would pass. */
        cjose_jwk_t *attacker = rsa_key_new("rsa-1");
        json_object_set_new(claims, "iss", json_string("https://evil.example"));
        json_object_del(claims, "nonce");
        _cleanup_free_ char *jwt = sign(attacker, "RS256", "rsa-1", claims);
        expect_refused_by(jwt, jwks, &expect, -EPERM, "bad_signature");
        cjose_jwk_release(attacker);
}

/* RFC 7515 4.1.11: a "crit" header lists extensions the recipient must
 * understand; the validator understands none, so even a correctly signed
 * token carrying one is refused. */
Test(oidc_token, critical_header_extensions_are_refused)
{
        cjose_err err;
        _cleanup_free_ char *payload = json_dumps(claims, JSON_COMPACT);
        cjose_header_t *h = cjose_header_new(&err);
        cr_assert_not_null(h);
        cr_assert(cjose_header_set(h, CJOSE_HDR_ALG, "RS256", &err));
        cr_assert(cjose_header_set(h, CJOSE_HDR_KID, "rsa-1", &err));
        cr_assert(cjose_header_set_raw(h, "crit", "[\"exp-ext\"]", &err));
        cr_assert(cjose_header_set(h, "exp-ext", "1", &err));
        cjose_jws_t *jws = cjose_jws_sign(rsa, h, (const uint8_t *)payload, strlen(payload), &err);
        cr_assert_not_null(jws, "%s", err.message);
        const char *ser = NULL;
        cr_assert(cjose_jws_export(jws, &ser, &err));
        _cleanup_free_ char *jwt = strdup(ser);
        cjose_jws_release(jws);
        cjose_header_release(h);
        expect_refused_by(jwt, jwks, &expect, -EBADMSG, "critical_header_not_understood");
}
