/* SPDX-License-Identifier: MIT */
#include "oidc-token.h"

#include <cjose/cjose.h>
#include <errno.h>
#include <string.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(cjose_jws_t *, cjose_jws_release);
DEFINE_TRIVIAL_CLEANUP_FUNC(cjose_jwk_t *, cjose_jwk_release);

/* The key type a signature algorithm needs. */
static bool key_fits(json_t *k, const char *alg, const char *kid)
{
        const char *kty = json_string_value(json_object_get(k, "kty"));
        const char *use = json_string_value(json_object_get(k, "use"));
        const char *kalg = json_string_value(json_object_get(k, "alg"));
        const char *kkid = json_string_value(json_object_get(k, "kid"));
        if (!kty)
                return false;
        if (streq(alg, "RS256") && !streq(kty, "RSA"))
                return false;
        if (streq(alg, "ES256")) {
                const char *crv = json_string_value(json_object_get(k, "crv"));
                if (!streq(kty, "EC") || !crv || !streq(crv, "P-256"))
                        return false;
        }
        if (use && !streq(use, "sig"))
                return false;
        if (kalg && !streq(kalg, alg))
                return false;
        /* A token naming its key must find exactly that key; one without a kid
         * may be checked against every key of the right type. */
        if (kid && (!kkid || !streq(kid, kkid)))
                return false;
        return true;
}

/* Verifies against the first fitting key that accepts the signature.
 * 0 verified, -ENOKEY no fitting key, -EPERM no fitting key verifies. */
static int verify_signature(cjose_jws_t *jws, json_t *jwks, const char *alg, const char *kid)
{
        json_t *keys = json_object_get(jwks, "keys");
        size_t i;
        json_t *k;
        bool tried = false;

        if (!json_is_array(keys))
                return -ENOKEY;
        json_array_foreach(keys, i, k)
        {
                if (!json_is_object(k) || !key_fits(k, alg, kid))
                        continue;
                cjose_err err;
                _cleanup_free_ char *s = json_dumps(k, JSON_COMPACT);
                if (!s)
                        return -ENOMEM;
                _cleanup_(cjose_jwk_releasep) cjose_jwk_t *jwk =
                    cjose_jwk_import(s, strlen(s), &err);
                if (!jwk)
                        continue; /* a key we cannot read is not one that signed */
                tried = true;
                if (cjose_jws_verify(jws, jwk, &err))
                        return 0;
        }
        return tried ? -EPERM : -ENOKEY;
}

static bool number_claim(json_t *claims, const char *name, int64_t *ret)
{
        json_t *v = json_object_get(claims, name);
        if (json_is_integer(v)) {
                *ret = json_integer_value(v);
                return true;
        }
        if (json_is_real(v)) { /* some providers send 1700000000.0 */
                double d = json_real_value(v);
                /* Clamped: converting a double outside int64_t is undefined. */
                *ret = d >= 0x1p63 ? INT64_MAX : d <= -0x1p63 ? INT64_MIN : (int64_t)d;
                return true;
        }
        return false;
}

#define FAIL(code, why)                                                                            \
        ({                                                                                         \
                *ret_reason = (why);                                                               \
                (code);                                                                            \
        })

int oidc_id_token_validate(const char *jwt, json_t *jwks, const OidcTokenExpect *e,
                           json_t **ret_claims, const char **ret_reason)
{
        cjose_err err;
        *ret_claims = NULL;
        *ret_reason = NULL;

        if (!jwt || strlen(jwt) > 64 * 1024)
                return FAIL(-EBADMSG, "malformed_id_token");
        _cleanup_(cjose_jws_releasep) cjose_jws_t *jws = cjose_jws_import(jwt, strlen(jwt), &err);
        if (!jws)
                return FAIL(-EBADMSG, "malformed_id_token");
        cjose_header_t *hdr = cjose_jws_get_protected(jws);
        const char *alg = hdr ? cjose_header_get(hdr, CJOSE_HDR_ALG, &err) : NULL;
        const char *kid = hdr ? cjose_header_get(hdr, CJOSE_HDR_KID, &err) : NULL;
        if (!alg || !(streq(alg, "RS256") || streq(alg, "ES256")))
                return FAIL(-EBADMSG, "algorithm_not_allowed");
        /* RFC 7515 4.1.11: extensions listed in "crit" must be understood; we
         * understand none, so a token that has them is refused. */
        if (json_object_get((json_t *)hdr, "crit"))
                return FAIL(-EBADMSG, "critical_header_not_understood");

        int r = verify_signature(jws, jwks, alg, kid);
        if (r == -ENOKEY)
                return FAIL(r, "unknown_key");
        if (r < 0)
                return FAIL(-EPERM, "bad_signature");

        uint8_t *plain = NULL;
        size_t plain_len = 0;
        if (!cjose_jws_get_plaintext(jws, &plain, &plain_len, &err))
                return FAIL(-EBADMSG, "malformed_id_token");
        _cleanup_(json_decrefp) json_t *claims =
            json_loadb((const char *)plain, plain_len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(claims))
                return FAIL(-EBADMSG, "malformed_id_token");

        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (!iss || !streq(iss, e->issuer))
                return FAIL(-EACCES, "issuer_mismatch");

        json_t *aud = json_object_get(claims, "aud");
        bool aud_ok = false;
        size_t n_aud = 0;
        if (json_is_string(aud)) {
                aud_ok = streq(json_string_value(aud), e->client_id);
                n_aud = 1;
        } else if (json_is_array(aud)) {
                size_t i;
                json_t *a;
                n_aud = json_array_size(aud);
                json_array_foreach(aud, i, a) if (json_is_string(a) &&
                                                  streq(json_string_value(a), e->client_id))
                    aud_ok = true;
        }
        if (!aud_ok)
                return FAIL(-EACCES, "audience_mismatch");
        json_t *azp = json_object_get(claims, "azp");
        if (azp && !(json_is_string(azp) && streq(json_string_value(azp), e->client_id)))
                return FAIL(-EACCES, "azp_mismatch");
        if (n_aud > 1 && !azp)
                return FAIL(-EACCES, "azp_mismatch");

        int64_t exp, iat, nbf;
        if (!number_claim(claims, "exp", &exp) || !number_claim(claims, "iat", &iat))
                return FAIL(-EBADMSG, "malformed_id_token");
        if (exp < e->now_s - e->skew_s) /* not exp + skew: exp may be INT64_MAX */
                return FAIL(-EKEYEXPIRED, "id_token_expired");
        if (iat > e->now_s + e->skew_s)
                return FAIL(-EACCES, "iat_in_future");
        if (number_claim(claims, "nbf", &nbf) && nbf > e->now_s + e->skew_s)
                return FAIL(-EACCES, "not_yet_valid");

        const char *nonce = json_string_value(json_object_get(claims, "nonce"));
        if (!nonce || !e->nonce || !streq(nonce, e->nonce))
                return FAIL(-EACCES, "nonce_mismatch");

        const char *sub = json_string_value(json_object_get(claims, "sub"));
        if (!sub || !*sub || strlen(sub) > 255)
                return FAIL(-EACCES, "subject_missing");

        *ret_claims = TAKE_PTR(claims);
        return 0;
}
