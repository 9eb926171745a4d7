/* SPDX-License-Identifier: MIT */
/* OpenID Connect sign-in: authorize (302 to the provider with state, nonce
 * and PKCE S256, the state bound to this browser by a cookie) and exchange
 * (redeem the code, validate the ID token, link or create the user, start a
 * session). Provider HTTP runs on the thread pool; the database and the
 * provider caches are touched only here, on the loop. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "async.h"
#include "audit.h"
#include "db.h"
#include "log.h"
#include "oidc-provider.h"
#include "oidc-store.h"
#include "oidc-token.h"
#include "server.h"
#include "sessions.h"
#include "users.h"

#define BINDER_COOKIE "gpuslice_oidc"
#define COOKIE_PATH   "/api/v1/auth/oidc"
#define RANDOM_LEN    64 /* buffer for 32 random bytes as base64url */

static OidcProviders *providers(Request *r)
{
        OidcProviders *ps = r->server->oidc;
        return ps && ps->n > 0 ? ps : NULL;
}

static int reply_not_configured(Request *r)
{
        return http_reply_error(r, ERR_UNAVAILABLE,
                                json_pack("{s:s}", "reason", "oidc_not_configured"),
                                "single sign-on is not configured on this controller");
}

/* A failed sign-in: one audit row (security event), then the answer. */
static void fail(Request *r, ErrorCode code, const char *provider, const char *reason,
                 const char *message)
{
        Server *s = r->server;
        _cleanup_txn_ DbTxn txn = {0};
        if (db_begin(s->db, &txn) >= 0 &&
            audit_log(s->db, NULL, "auth.oidc_failed", "oidc_provider", provider, reason,
                      json_pack("{s:s}", "client_addr", r->client_addr)) >= 0)
                (void)db_commit(&txn);
        log_info("OIDC sign-in refused | provider=%s reason=%s client=%s", provider, reason,
                 r->client_addr);
        http_reply_error(r, code, json_pack("{s:s}", "reason", reason), "%s", message);
}

/* ---- the background job: discovery, token endpoint, JWKS, validation ---- */

typedef struct OidcJob {
        OidcProvider *provider; /* loop side only */
        /* copies for the worker */
        char *issuer, *client_id, *client_secret;
        bool auth_post;
        OidcHttpLimits limits;
        int64_t skew_s;
        json_t *discovery; /* deep copies, NULL: fetch */
        json_t *jwks;
        bool may_refetch_jwks;
        bool exchange; /* false: discovery only (authorize) */
        char *code, *redirect_uri, *code_verifier, *nonce, *state;
        /* results */
        bool discovery_fetched, jwks_fetched, jwks_refetched_for_kid;
        json_t *claims;
        int result;
        const char *reason;
        char *token_error;
} OidcJob;

static void job_free(void *p)
{
        OidcJob *j = p;
        if (!j)
                return;
        free(j->issuer);
        free(j->client_id);
        if (j->client_secret) {
                explicit_bzero(j->client_secret, strlen(j->client_secret));
                free(j->client_secret);
        }
        json_decref(j->discovery);
        json_decref(j->jwks);
        free(j->code);
        free(j->redirect_uri);
        if (j->code_verifier) {
                explicit_bzero(j->code_verifier, strlen(j->code_verifier));
                free(j->code_verifier);
        }
        free(j->nonce);
        free(j->state);
        json_decref(j->claims);
        free(j->token_error);
        free(j);
}

static OidcJob *job_new(Request *r, OidcProvider *p)
{
        OidcProviders *ps = providers(r);
        OidcJob *j = calloc(1, sizeof(*j));
        if (!j)
                return NULL;
        j->provider = p;
        j->issuer = strdup(p->issuer);
        j->client_id = strdup(p->client_id);
        j->client_secret = strdup(p->client_secret);
        j->auth_post = p->auth_post;
        j->limits = ps->limits;
        j->skew_s = ps->clock_skew_s;
        json_t *d = oidc_provider_fresh_discovery(ps, p), *k = oidc_provider_fresh_jwks(ps, p);
        /* Copies: the worker must not share reference counts with the loop. */
        j->discovery = d ? json_deep_copy(d) : NULL;
        j->jwks = k ? json_deep_copy(k) : NULL;
        usec_t now = now_mono_usec();
        j->may_refetch_jwks =
            p->jwks_kid_refresh_at == 0 || now - p->jwks_kid_refresh_at >= ps->jwks_kid_refresh_min;
        if (!j->issuer || !j->client_id || !j->client_secret || (d && !j->discovery) ||
            (k && !j->jwks)) {
                job_free(j);
                return NULL;
        }
        return j;
}

static const char *doc_str(json_t *doc, const char *k)
{
        return json_string_value(json_object_get(doc, k));
}

static void job_work(void *p)
{
        OidcJob *j = p;
        int r;

        if (!j->discovery) {
                r = oidc_fetch_discovery(j->issuer, &j->limits, &j->discovery);
                if (r < 0) {
                        j->result = r;
                        j->reason = "provider_unavailable";
                        return;
                }
                j->discovery_fetched = true;
        }
        if (!j->exchange)
                return;

        _cleanup_free_ char *id_token = NULL;
        r = oidc_redeem_code(doc_str(j->discovery, "token_endpoint"), j->client_id,
                             j->client_secret, j->auth_post, j->code, j->redirect_uri,
                             j->code_verifier, &j->limits, &id_token, &j->token_error);
        if (r < 0) {
                j->result = r;
                j->reason = r == -EACCES ? "code_rejected" : "provider_unavailable";
                return;
        }
        const char *jwks_uri = doc_str(j->discovery, "jwks_uri");
        if (!j->jwks) {
                r = oidc_fetch_jwks(jwks_uri, &j->limits, &j->jwks);
                if (r < 0) {
                        j->result = r;
                        j->reason = "provider_unavailable";
                        return;
                }
                j->jwks_fetched = true;
        }
        OidcTokenExpect e = {.issuer = j->issuer,
                             .client_id = j->client_id,
                             .nonce = j->nonce,
                             .now_s = (int64_t)(now_usec() / USEC_PER_SEC),
                             .skew_s = j->skew_s};
        r = oidc_id_token_validate(id_token, j->jwks, &e, &j->claims, &j->reason);
        if (r == -ENOKEY && !j->jwks_fetched && j->may_refetch_jwks) {
                /* The provider rotated its keys: fetch them again, once. */
                json_t *fresh = NULL;
                int q = oidc_fetch_jwks(jwks_uri, &j->limits, &fresh);
                if (q < 0) {
                        j->result = q;
                        j->reason = "provider_unavailable";
                        return;
                }
                json_decref(j->jwks);
                j->jwks = fresh;
                j->jwks_fetched = j->jwks_refetched_for_kid = true;
                r = oidc_id_token_validate(id_token, j->jwks, &e, &j->claims, &j->reason);
        }
        j->result = r;
}

/* Keeps what the worker fetched, for the next sign-ins. */
static void job_update_cache(OidcJob *j)
{
        OidcProvider *p = j->provider;
        usec_t now = now_mono_usec();
        if (j->discovery_fetched && j->discovery) {
                json_decref(p->discovery);
                p->discovery = json_incref(j->discovery);
                p->discovery_at = now;
        }
        if (j->jwks_fetched && j->jwks) {
                json_decref(p->jwks);
                p->jwks = json_incref(j->jwks);
                p->jwks_at = now;
        }
        if (j->jwks_refetched_for_kid)
                p->jwks_kid_refresh_at = now;
}

/* ---- authorize ---- */

static int random_string(char out[static RANDOM_LEN])
{
        return random_token(32, out, RANDOM_LEN);
}

/* The binder already in this browser's cookie, so that two tabs signing in
 * at once both work; NULL when absent or not one of ours. */
static const char *cookie_binder(Request *r, char out[static RANDOM_LEN])
{
        const char *c = http_header(r, "cookie");
        size_t name_len = STRLEN(BINDER_COOKIE);
        for (const char *p = c; p && *p;) {
                while (*p == ' ' || *p == ';')
                        p++;
                const char *end = strchr(p, ';');
                size_t len = end ? (size_t)(end - p) : strlen(p);
                if (len > name_len + 1 && strncmp(p, BINDER_COOKIE "=", name_len + 1) == 0) {
                        size_t vlen = len - name_len - 1;
                        const char *v = p + name_len + 1;
                        if (vlen < 40 || vlen >= RANDOM_LEN)
                                return NULL;
                        for (size_t i = 0; i < vlen; i++)
                                if (!((v[i] >= 'a' && v[i] <= 'z') ||
                                      (v[i] >= 'A' && v[i] <= 'Z') ||
                                      (v[i] >= '0' && v[i] <= '9') || v[i] == '-' || v[i] == '_'))
                                        return NULL;
                        memcpy(out, v, vlen);
                        out[vlen] = '\0';
                        return out;
                }
                p = end;
        }
        return NULL;
}

static char *url_escape(const char *s)
{
        static const char hex[] = "0123456789ABCDEF";
        char *out = malloc(strlen(s) * 3 + 1), *o = out;
        if (!out)
                return NULL;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~')
                        *o++ = (char)*p;
                else {
                        *o++ = '%';
                        *o++ = hex[*p >> 4];
                        *o++ = hex[*p & 15];
                }
        }
        *o = '\0';
        return out;
}

static void authorize_finish(Request *r, OidcProvider *p, json_t *discovery,
                             const char *redirect_uri)
{
        Server *s = r->server;
        OidcProviders *ps = providers(r);
        char state[RANDOM_LEN], nonce[RANDOM_LEN], verifier[RANDOM_LEN], binder[RANDOM_LEN];
        if (random_string(state) < 0 || random_string(nonce) < 0 || random_string(verifier) < 0) {
                http_reply_error(r, ERR_INTERNAL, NULL, "no randomness");
                return;
        }
        bool new_binder = !cookie_binder(r, binder);
        if (new_binder && random_string(binder) < 0) {
                http_reply_error(r, ERR_INTERNAL, NULL, "no randomness");
                return;
        }
        unsigned char digest[SHA256_DIGEST_LENGTH];
        char challenge[RANDOM_LEN];
        SHA256((const unsigned char *)verifier, strlen(verifier), digest);
        if (base64url_encode(digest, sizeof(digest), challenge, sizeof(challenge)) < 0) {
                http_reply_error(r, ERR_INTERNAL, NULL, "cannot encode the PKCE challenge");
                return;
        }

        usec_t now = now_usec();
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = oidc_states_prune(s->db, now);
        if (ret >= 0)
                ret = oidc_state_insert(s->db, state, binder, p->name, nonce, verifier,
                                        redirect_uri, now + ps->state_ttl);
        if (ret >= 0)
                ret = db_commit(&txn);
        explicit_bzero(verifier, sizeof(verifier));
        if (ret < 0) {
                http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot start the sign-in now");
                return;
        }

        const char *endpoint = doc_str(discovery, "authorization_endpoint");
        _cleanup_free_ char *e_id = url_escape(p->client_id), *e_uri = url_escape(redirect_uri);
        _cleanup_free_ char *location = NULL;
        if (!e_id || !e_uri ||
            asprintf(&location,
                     "%s%cresponse_type=code&client_id=%s&redirect_uri=%s"
                     "&scope=openid%%20email%%20profile&state=%s&nonce=%s"
                     "&code_challenge=%s&code_challenge_method=S256",
                     endpoint, strchr(endpoint, '?') ? '&' : '?', e_id, e_uri, state, nonce,
                     challenge) < 0) {
                location = NULL;
                http_reply_error(r, ERR_INTERNAL, NULL, "out of memory");
                return;
        }
        if (new_binder) {
                char cookie[256];
                bool secure = s->public_url && strncmp(s->public_url, "https:", 6) == 0;
                snprintf(cookie, sizeof(cookie),
                         BINDER_COOKIE "=%s; Path=" COOKIE_PATH
                                       "; Max-Age=%llu; HttpOnly; SameSite=Lax%s",
                         binder, (unsigned long long)(ps->state_ttl / USEC_PER_SEC),
                         secure ? "; Secure" : "");
                http_add_header(r, "set-cookie", cookie);
        }
        /* ?response=json: 200 with the URL, for clients that navigate themselves. */
        const char *mode = http_query(r, "response");
        bool as_json = mode && streq(mode, "json");
        if (!as_json)
                http_add_header(r, "location", location);
        http_reply_json(
            r, as_json ? 200 : 302,
            json_pack("{s:s, s:s}", "authorization_url", location, "provider", p->name));
}

static void authorize_done(Server *s, Request *r, void *p)
{
        OidcJob *j = p;
        job_update_cache(j);
        if (!r)
                return;
        if (j->result < 0) {
                fail(r, ERR_UNAVAILABLE, j->provider->name, "provider_unavailable",
                     "the sign-in provider cannot be reached; try again later");
                return;
        }
        authorize_finish(r, j->provider, j->discovery, j->redirect_uri);
}

int api_oidc_authorize(Request *r)
{
        OidcProviders *ps = providers(r);
        if (!ps)
                return reply_not_configured(r);
        const char *name = http_query(r, "provider");
        OidcProvider *p = oidc_providers_find(ps, name);
        if (!p)
                return http_reply_invalid_field(r, "provider", "no such sign-in provider");
        const char *redirect_uri = http_query(r, "redirect_uri");
        if (!redirect_uri)
                redirect_uri = p->redirect_uris[0];
        if (!oidc_provider_redirect_allowed(p, redirect_uri))
                return http_reply_invalid_field(r, "redirect_uri",
                                                "redirect_uri is not one this controller allows");

        json_t *d = oidc_provider_fresh_discovery(ps, p);
        if (d) {
                authorize_finish(r, p, d, redirect_uri);
                return 0;
        }
        OidcJob *j = job_new(r, p);
        if (!j || !(j->redirect_uri = strdup(redirect_uri))) {
                job_free(j);
                return -ENOMEM;
        }
        int ret = async_run(r, job_work, authorize_done, j, job_free);
        if (ret < 0)
                job_free(j);
        return ret;
}

/* ---- exchange ---- */

static const JsonField exchange_fields[] = {
    {"code", JSON_FIELD_STRING, true, 1, 2048},
    {"state", JSON_FIELD_STRING, true, 1, 512},
    {"iss", JSON_FIELD_STRING, false, 1, 2048},
};

static json_t *token_response(const User *u, const TokenPair *t)
{
        return json_pack("{s:o, s:s, s:s, s:I, s:s}", "user", user_to_json(u), "access_token",
                         t->access_token, "refresh_token", t->refresh_token, "expires_in",
                         (json_int_t)t->expires_in, "token_type", "Bearer");
}

/* A display name from the claims, else the email. */
static const char *pick_name(json_t *claims, const char *email)
{
        const char *n = json_string_value(json_object_get(claims, "name"));
        if (n && name_validate(n) >= 0)
                return n;
        return email;
}

static void exchange_done(Server *s, Request *r, void *p)
{
        OidcJob *j = p;
        OidcProvider *prov = j->provider;
        job_update_cache(j);
        if (!r)
                return; /* nothing created for a client that left */
        if (j->result < 0) {
                switch (j->result) {
                case -EHOSTUNREACH:
                case -EBADMSG:
                        if (streq(j->reason ? j->reason : "", "provider_unavailable") ||
                            !j->reason) {
                                fail(r, ERR_UNAVAILABLE, prov->name, "provider_unavailable",
                                     "the sign-in provider cannot be reached; try again later");
                                return;
                        }
                        break;
                case -EACCES:
                        if (streq(j->reason, "code_rejected")) {
                                fail(r, ERR_UNAUTHENTICATED, prov->name, "code_rejected",
                                     "the provider refused the authorization code; sign in "
                                     "again");
                                return;
                        }
                        break;
                default:
                        break;
                }
                if (j->result == -ENOMEM) {
                        http_reply_error(r, ERR_INTERNAL, NULL, "out of memory");
                        return;
                }
                fail(r, ERR_UNAUTHENTICATED, prov->name, j->reason ? j->reason : "invalid_id_token",
                     "the provider's ID token was not accepted; sign in again");
                return;
        }

        json_t *claims = j->claims;
        const char *sub = json_string_value(json_object_get(claims, "sub"));
        const char *raw_email = json_string_value(json_object_get(claims, "email"));
        bool verified = json_is_true(json_object_get(claims, "email_verified"));
        _cleanup_free_ char *email = NULL;
        if (raw_email)
                (void)email_normalize(raw_email, &email);

        _cleanup_txn_ DbTxn txn = {0};
        _cleanup_(user_done) User u = {0};
        char user_id[ID_MAX];
        const char *event = "auth.oidc_login";
        int ret = db_begin(s->db, &txn);
        if (ret >= 0) {
                ret = user_identity_find(s->db, prov->issuer, sub, user_id);
                if (ret >= 0)
                        ret = user_identity_touch(s->db, prov->issuer, sub);
                if (ret >= 0)
                        ret = users_get(s->db, user_id, &u);
        }
        if (ret == -ENOENT) {
                if (!email) {
                        db_rollback(&txn);
                        fail(r, ERR_UNAUTHENTICATED, prov->name, "email_missing",
                             "the provider shared no usable email address; allow the email "
                             "scope and sign in again");
                        return;
                }
                ret = users_get_by_email(s->db, email, &u, NULL);
                if (ret >= 0 && !verified) {
                        /* Linking on an unverified address would hand the account to
                         * whoever typed that address at the provider. */
                        db_rollback(&txn);
                        fail(r, ERR_EMAIL_TAKEN, prov->name, "email_not_verified",
                             "an account with this email exists; the provider does not assert "
                             "the email verified, so sign in with your password instead");
                        return;
                }
                if (ret >= 0) {
                        event = "auth.oidc_linked";
                } else if (ret == -ENOENT) {
                        event = "user.oidc_signup";
                        ret = users_insert(s->db, email, pick_name(claims, email), NULL, ROLE_USER,
                                           &u);
                }
                if (ret >= 0)
                        ret = user_identity_insert(s->db, prov->issuer, sub, u.id, email);
        }
        char session_id[ID_MAX];
        TokenPair t;
        if (ret >= 0)
                ret = sessions_create(s->db, &s->session_policy, u.id, r->client_addr, session_id,
                                      &t);
        if (ret >= 0)
                ret = audit_log(s->db, u.id, event, "user", u.id, NULL,
                                json_pack("{s:s, s:s, s:s, s:s, s:s}", "provider", prov->name,
                                          "issuer", prov->issuer, "subject", sub, "session_id",
                                          session_id, "client_addr", r->client_addr));
        if (ret >= 0 && !streq(event, "auth.oidc_login"))
                ret = audit_log(
                    s->db, u.id, "auth.oidc_login", "user", u.id, NULL,
                    json_pack("{s:s, s:s}", "provider", prov->name, "session_id", session_id));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0) {
                http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot create the session now");
                return;
        }
        log_info("OIDC sign-in | provider=%s user=%s event=%s", prov->name, u.id, event);
        http_reply_json(r, 200, token_response(&u, &t));
}

int api_oidc_exchange(Request *r)
{
        Server *s = r->server;
        OidcProviders *ps = providers(r);
        if (!ps)
                return reply_not_configured(r);
        json_t *body = NULL;
        if (http_read_json(r, exchange_fields, ELEMENTSOF(exchange_fields), &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        const char *state = json_field_string(b, "state");
        const char *iss = json_field_string(b, "iss");

        _cleanup_(oidc_state_done) OidcState st = {0};
        int ret = oidc_state_get(s->db, state, &st);
        if (ret == -ENOENT) {
                fail(r, ERR_UNAUTHENTICATED, "unknown", "state_unknown",
                     "this sign-in was not started here or has been cleaned up; sign in again");
                return 0;
        }
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot sign in now");
        if (st.used_at != 0) {
                fail(r, ERR_UNAUTHENTICATED, st.provider, "state_used",
                     "this sign-in was already completed; sign in again");
                return 0;
        }
        if (now_usec() > st.expires_at) {
                fail(r, ERR_UNAUTHENTICATED, st.provider, "state_expired",
                     "this sign-in took too long; sign in again");
                return 0;
        }
        char binder[RANDOM_LEN];
        unsigned char bh[OIDC_HASH_LEN];
        if (!cookie_binder(r, binder)) {
                fail(r, ERR_UNAUTHENTICATED, st.provider, "state_not_bound",
                     "this sign-in was started in another browser; sign in again here");
                return 0;
        }
        oidc_hash(binder, bh);
        if (CRYPTO_memcmp(bh, st.binder_hash, OIDC_HASH_LEN) != 0) {
                fail(r, ERR_UNAUTHENTICATED, st.provider, "state_not_bound",
                     "this sign-in was started in another browser; sign in again here");
                return 0;
        }
        OidcProvider *p = oidc_providers_find(ps, st.provider);
        if (!p) {
                fail(r, ERR_UNAUTHENTICATED, st.provider, "provider_gone",
                     "the sign-in provider is no longer configured");
                return 0;
        }
        /* RFC 9207: the iss the provider put on the redirect names who answered. */
        if (iss && !streq(iss, p->issuer)) {
                fail(r, ERR_UNAUTHENTICATED, p->name, "issuer_mismatch",
                     "the answer came from another provider than the one asked");
                return 0;
        }

        /* Spend the state before the provider is asked: a replay racing this
         * request finds it used. */
        {
                _cleanup_txn_ DbTxn txn = {0};
                ret = db_begin(s->db, &txn);
                if (ret >= 0)
                        ret = oidc_state_consume(s->db, state);
                if (ret >= 0)
                        ret = db_commit(&txn);
        }
        if (ret == -EALREADY) {
                fail(r, ERR_UNAUTHENTICATED, st.provider, "state_used",
                     "this sign-in was already completed; sign in again");
                return 0;
        }
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot sign in now");

        OidcJob *j = job_new(r, p);
        if (!j)
                return -ENOMEM;
        j->exchange = true;
        j->code = strdup(json_field_string(b, "code"));
        j->redirect_uri = TAKE_PTR(st.redirect_uri);
        j->code_verifier = TAKE_PTR(st.code_verifier);
        j->nonce = TAKE_PTR(st.nonce);
        if (!j->code) {
                job_free(j);
                return -ENOMEM;
        }
        ret = async_run(r, job_work, exchange_done, j, job_free);
        if (ret < 0)
                job_free(j);
        return ret;
}
