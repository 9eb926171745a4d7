/* SPDX-License-Identifier: MIT */
/* Personal sign-in: signup, login, token refresh, logout, and /me. Password
 * hashing runs on the thread pool; everything touching the database runs on
 * the loop, each change in one transaction with its audit row. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "async.h"
#include "audit.h"
#include "ledger.h"
#include "log.h"
#include "metering.h"
#include "passwords.h"
#include "server.h"
#include "sessions.h"
#include "users.h"

typedef struct PasswordJob {
        char *email;
        char *name;
        char *password;
        char *stored_hash; /* login: the hash to check (NULL: unknown user) */
        char *new_hash;    /* signup: the hash made */
        unsigned log_n;
        int result;
} PasswordJob;

static void password_job_free(void *p)
{
        PasswordJob *j = p;
        if (!j)
                return;
        free(j->email);
        free(j->name);
        if (j->password) {
                explicit_bzero(j->password, strlen(j->password));
                free(j->password);
        }
        free(j->stored_hash);
        free(j->new_hash);
        free(j);
}

/* Fills the fields every password job has and queues it on the thread pool.
 * Takes ownership of j (and of *email) whatever happens. */
static int password_job_start(Request *r, PasswordJob *j, char **email, const char *password,
                              AsyncWorkFn work, AsyncDoneFn done)
{
        j->email = TAKE_PTR(*email);
        j->password = strdup(password);
        j->log_n = r->server->scrypt_log_n;
        if (!j->password) {
                password_job_free(j);
                return -ENOMEM;
        }
        int ret = async_run(r, work, done, j, password_job_free);
        if (ret < 0)
                password_job_free(j);
        return ret;
}

static json_t *token_response(const User *u, const TokenPair *t)
{
        return json_pack("{s:o, s:s, s:s, s:I, s:s}", "user", user_to_json(u), "access_token",
                         t->access_token, "refresh_token", t->refresh_token, "expires_in",
                         (json_int_t)t->expires_in, "token_type", "Bearer");
}

/* Creates a session and answers with the token pair (signup: 201, login: 200). */
static int reply_new_session(Request *r, const User *u, int status, const char *audit_action)
{
        Server *s = r->server;
        _cleanup_txn_ DbTxn txn = {0};
        char session_id[ID_MAX];
        TokenPair t;
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = sessions_create(s->db, &s->session_policy, u->id, r->client_addr, session_id,
                                      &t);
        if (ret >= 0)
                ret = audit_log(s->db, u->id, audit_action, "user", u->id, NULL,
                                json_pack("{s:s, s:s}", "session_id", session_id, "client_addr",
                                          r->client_addr));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL,
                                        "cannot create the session now; try again");
        return http_reply_json(r, status, token_response(u, &t));
}

/* ---- signup ---- */

static const JsonField signup_fields[] = {
    {"email", JSON_FIELD_STRING, true, 1, 320},
    {"password", JSON_FIELD_STRING, true, PASSWORD_MIN_LEN, PASSWORD_MAX_LEN},
    {"name", JSON_FIELD_STRING, true, 1, NAME_MAX_LEN},
};

static void signup_work(void *p)
{
        PasswordJob *j = p;
        j->result = password_hash(j->password, j->log_n, &j->new_hash);
}

static void signup_done(Server *s, Request *r, void *p)
{
        PasswordJob *j = p;
        if (!r)
                return; /* the client went away: create nothing it cannot learn about */
        if (j->result < 0) {
                http_reply_error(r, ERR_INTERNAL, NULL, "cannot hash the password");
                return;
        }
        _cleanup_txn_ DbTxn txn = {0};
        _cleanup_(user_done) User u = {0};
        char session_id[ID_MAX];
        TokenPair t;
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = users_insert(s->db, j->email, j->name, j->new_hash, ROLE_USER, &u);
        if (ret == -EEXIST) {
                http_reply_error(r, ERR_EMAIL_TAKEN, json_pack("{s:s}", "field", "email"),
                                 "an account with this email exists; sign in instead");
                return;
        }
        if (ret >= 0)
                ret = sessions_create(s->db, &s->session_policy, u.id, r->client_addr, session_id,
                                      &t);
        if (ret >= 0)
                ret = audit_log(s->db, u.id, "user.signup", "user", u.id, NULL,
                                json_pack("{s:s}", "client_addr", r->client_addr));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0) {
                http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot create the account now");
                return;
        }
        http_reply_json(r, 201, token_response(&u, &t));
}

int api_auth_signup(Request *r)
{
        Server *s = r->server;
        json_t *body = NULL;
        if (http_read_json(r, signup_fields, ELEMENTSOF(signup_fields), &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        _cleanup_free_ char *email = NULL;
        if (email_normalize(json_field_string(b, "email"), &email) < 0)
                return http_reply_invalid_field(r, "email", "email is not a valid address");
        const char *name = json_field_string(b, "name");
        if (name_validate(name) < 0)
                return http_reply_invalid_field(
                    r, "name", "name must be 1 to %d characters without control characters",
                    NAME_MAX_LEN);
        /* Cheap early answer; the UNIQUE constraint stays the real arbiter. */
        int ret = users_email_exists(s->db, email);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "database unavailable");
        if (ret > 0)
                return http_reply_error(r, ERR_EMAIL_TAKEN, json_pack("{s:s}", "field", "email"),
                                        "an account with this email exists; sign in instead");

        PasswordJob *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->name = strdup(name);
        if (!j->name) {
                password_job_free(j);
                return -ENOMEM;
        }
        return password_job_start(r, j, &email, json_field_string(b, "password"), signup_work,
                                  signup_done);
}

/* ---- login ---- */

static const JsonField login_fields[] = {
    {"email", JSON_FIELD_STRING, true, 1, 320},
    {"password", JSON_FIELD_STRING, true, 1, PASSWORD_MAX_LEN},
};

static void login_work(void *p)
{
        PasswordJob *j = p;
        if (j->stored_hash) {
                j->result = password_verify(j->password, j->stored_hash);
                return;
        }
        /* Unknown account: spend the same work so timing does not tell. */
        char dummy[160];
        snprintf(dummy, sizeof(dummy),
                 "$scrypt$ln=%u,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$"
                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                 j->log_n);
        (void)password_verify(j->password, dummy);
        j->result = 0;
}

static void rate_keys(Request *r, const char *email, char *acct, size_t acct_size, char *addr,
                      size_t addr_size)
{
        snprintf(acct, acct_size, "acct:%s", email);
        snprintf(addr, addr_size, "addr:%s", r->client_addr);
}

static int reply_rate_limited(Request *r, unsigned retry_after)
{
        char v[16];
        snprintf(v, sizeof(v), "%u", retry_after);
        http_add_header(r, "retry-after", v);
        return http_reply_error(r, ERR_RATE_LIMITED,
                                json_pack("{s:I}", "retry_after_s", (json_int_t)retry_after),
                                "too many failed sign-ins; try again in %u s", retry_after);
}

static void login_done(Server *s, Request *r, void *p)
{
        PasswordJob *j = p;
        char acct[400], addr[80];
        if (!r)
                return;
        rate_keys(r, j->email, acct, sizeof(acct), addr, sizeof(addr));
        if (j->result == 1) {
                _cleanup_(user_done) User u = {0};
                int ret = users_get_by_email(s->db, j->email, &u, NULL);
                if (ret < 0) {
                        http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot sign in now");
                        return;
                }
                /* A success clears the account's failures and gives the
                 * address back the attempt api_auth_login charged. */
                ratelimit_reset(s->login_account_rl, acct);
                ratelimit_refund(s->login_address_rl, addr);
                reply_new_session(r, &u, 200, "auth.login");
                return;
        }
        _cleanup_txn_ DbTxn txn = {0};
        if (db_begin(s->db, &txn) >= 0 &&
            audit_log(s->db, NULL, "auth.login_failed", "email", j->email, "invalid_credentials",
                      json_pack("{s:s}", "client_addr", r->client_addr)) >= 0)
                (void)db_commit(&txn);
        /* Same answer for an unknown email and a wrong password. */
        http_reply_error(r, ERR_UNAUTHENTICATED, NULL, "invalid email or password");
}

int api_auth_login(Request *r)
{
        Server *s = r->server;
        json_t *body = NULL;
        if (http_read_json(r, login_fields, ELEMENTSOF(login_fields), &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        _cleanup_free_ char *email = NULL;
        if (email_normalize(json_field_string(b, "email"), &email) < 0)
                return http_reply_invalid_field(r, "email", "email is not a valid address");

        char acct[400], addr[80];
        unsigned retry = 0;
        rate_keys(r, email, acct, sizeof(acct), addr, sizeof(addr));
        usec_t now = now_mono_usec();
        const char *limited = !ratelimit_peek(s->login_address_rl, addr, now, &retry)   ? addr
                              : !ratelimit_peek(s->login_account_rl, acct, now, &retry) ? acct
                                                                                        : NULL;
        if (limited) {
                server_audit_rate_limited(r, "login", limited, retry);
                return reply_rate_limited(r, retry);
        }
        /* Charge the attempt now, on the loop, before the password is checked
         * on the thread pool: otherwise any number of concurrent guesses pass
         * the check above while the first ones are still hashing. */
        (void)ratelimit_take(s->login_address_rl, addr, now, NULL);
        (void)ratelimit_take(s->login_account_rl, acct, now, NULL);

        PasswordJob *j = calloc(1, sizeof(*j));
        _cleanup_(user_done) User u = {0};
        int ret = j ? users_get_by_email(s->db, email, &u, &j->stored_hash) : -ENOMEM;
        if (ret >= 0 || ret == -ENOENT)
                ret = password_job_start(r, j, &email, json_field_string(b, "password"), login_work,
                                         login_done);
        else
                password_job_free(j);
        if (ret < 0) {
                /* Our failure, not a guess: give the attempt back. */
                ratelimit_refund(s->login_address_rl, addr);
                ratelimit_refund(s->login_account_rl, acct);
                if (ret == -ENOMEM)
                        return ret;
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot sign in now");
        }
        return 0;
}

/* ---- refresh, logout, me ---- */

static const JsonField refresh_fields[] = {
    {"refresh_token", JSON_FIELD_STRING, true, 1, 256},
};

int api_auth_refresh(Request *r)
{
        Server *s = r->server;
        json_t *body = NULL;
        if (http_read_json(r, refresh_fields, ELEMENTSOF(refresh_fields), &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        char user_id[ID_MAX], session_id[ID_MAX];
        TokenPair t;
        int ret = sessions_refresh(s->db, &s->session_policy, json_field_string(b, "refresh_token"),
                                   user_id, session_id, &t);
        switch (ret) {
        case 0:
                break;
        case -EALREADY: {
                _cleanup_txn_ DbTxn txn = {0};
                session_cache_evict_session(s->session_cache, session_id);
                if (db_begin(s->db, &txn) >= 0 &&
                    audit_log(s->db, user_id, "auth.refresh_token_reused", "session", session_id,
                              "refresh_token_reused",
                              json_pack("{s:s}", "client_addr", r->client_addr)) >= 0)
                        (void)db_commit(&txn);
                return http_reply_error(r, ERR_UNAUTHENTICATED,
                                        json_pack("{s:s}", "reason", "refresh_token_reused"),
                                        "this refresh token was already used; the session is "
                                        "revoked, sign in again");
        }
        case -ENOENT:
        case -EKEYEXPIRED:
        case -EKEYREVOKED: {
                const char *why = ret == -ENOENT        ? "refresh_token_unknown"
                                  : ret == -EKEYEXPIRED ? "refresh_token_expired"
                                                        : "session_revoked";
                return http_reply_error(r, ERR_UNAUTHENTICATED, json_pack("{s:s}", "reason", why),
                                        "the refresh token cannot be used; sign in again");
        }
        default:
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot refresh now");
        }
        _cleanup_(user_done) User u = {0};
        if (users_get(s->db, user_id, &u) < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot refresh now");
        return http_reply_json(r, 200, token_response(&u, &t));
}

int api_auth_logout(Request *r)
{
        Server *s = r->server;
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = sessions_revoke(s->db, r->auth.session_id, "logout");
        if (ret >= 0)
                ret = audit_log(s->db, r->auth.user_id, "auth.logout", "session",
                                r->auth.session_id, NULL, NULL);
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot sign out now");
        session_cache_evict_session(s->session_cache, r->auth.session_id);
        return http_reply_empty(r, 204);
}

int api_me(Request *r)
{
        Server *s = r->server;
        _cleanup_(user_done) User u = {0};
        int ret = users_get(s->db, r->auth.user_id, &u);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the account now");
        /* The ledger's balance; a first run is a zero balance and no
         * allocation ever. */
        int64_t balance = 0;
        bool had_allocation = false;
        ret = ledger_balance_micros(s->db, u.id, &balance);
        if (ret >= 0)
                ret = metering_user_had_allocation(s->db, u.id, &had_allocation);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the account now");
        bool first_run = balance == 0 && !had_allocation;
        return http_reply_json(r, 200,
                               json_pack("{s:o, s:o, s:I, s:s, s:b, s:o}", "user", user_to_json(&u),
                                         "roles", roles_to_json(u.roles), "balance_micros",
                                         (json_int_t)balance, "currency", "USD",
                                         "first_run", first_run, "next",
                                         first_run ? json_string("/billing") : json_null()));
}
