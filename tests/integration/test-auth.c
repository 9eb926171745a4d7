/* SPDX-License-Identifier: MIT */
/* Personal sign-in against the real controller: signup, login, refresh
 * rotation and reuse detection, logout, /me; every bad input the contract
 * names, each checked for status, code, details.field and for leaving the
 * database as it was. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define SIGNUP  "/api/v1/auth/personal/signup"
#define LOGIN   "/api/v1/auth/personal/login"
#define REFRESH "/api/v1/auth/token/refresh"
#define LOGOUT  "/api/v1/auth/logout"
#define ME      "/api/v1/me"

TestSuite(auth, .timeout = 120);

static size_t discard_body(char *p, size_t size, size_t n, void *u)
{
        (void)p;
        (void)u;
        return size * n;
}

static Controller *started(void)
{
        Controller *c = ctl_new();
        ctl_start_or_fail(c);
        return c;
}

Test(auth, signup_login_me_journey)
{
        _cleanup_ctl_ Controller *c = started();
        _cleanup_resp_ HttpResponse *r = api_post(
            c, SIGNUP, NULL,
            "{\"email\":\"  Ada.Lovelace@Example.COM \",\"password\":\"analytical engine\","
            "\"name\":\"Ada Lovelace\"}");
        cr_assert_eq(r->status, 201, "%s", r->body);
        cr_assert_str_eq(strempty(jstr(r, "user.email")), "ada.lovelace@example.com",
                         "emails are stored normalised");
        cr_assert_str_eq(strempty(jstr(r, "user.name")), "Ada Lovelace");
        cr_assert(startswith(strempty(jstr(r, "user.id")), "usr_"));
        cr_assert(startswith(strempty(jstr(r, "access_token")), "gsa_"));
        cr_assert(startswith(strempty(jstr(r, "refresh_token")), "gsr_"));
        cr_assert_eq(json_integer_value(jget(r, "expires_in")), 900);
        cr_assert_null(jget(r, "user.password_hash"));
        cr_assert_null(strstr(r->body, "scrypt"), "the hash leaked: %s", r->body);
        json_t *roles = jget(r, "user.roles");
        cr_assert(json_is_array(roles) && json_array_size(roles) == 1);
        cr_assert_str_eq(json_string_value(json_array_get(roles, 0)), "user");

        /* /me with the signup token: a first run */
        _cleanup_resp_ HttpResponse *me = api_get(c, ME, jstr(r, "access_token"));
        cr_assert_eq(me->status, 200, "%s", me->body);
        cr_assert_str_eq(strempty(jstr(me, "user.id")), jstr(r, "user.id"));
        cr_assert(json_is_true(jget(me, "first_run")));
        cr_assert_str_eq(strempty(jstr(me, "next")), "/billing");
        cr_assert_eq(json_integer_value(jget(me, "balance_micros")), 0);
        cr_assert(json_is_integer(jget(me, "balance_micros")));
        cr_assert_str_eq(strempty(jstr(me, "currency")), "USD");
        json_t *mroles = jget(me, "roles");
        cr_assert(json_is_array(mroles) && json_array_size(mroles) == 1);

        /* login with another spelling of the same address */
        Tokens t;
        cr_assert_eq(api_login(c, "ADA.LOVELACE@example.com", "analytical engine", &t), 200);
        cr_assert_str_eq(t.user_id, jstr(r, "user.id"));
        cr_assert_str_neq(t.access, jstr(r, "access_token"), "a login is a new session");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM sessions"), 2);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM users"), 1);

        /* with a balance (a ledger credit) it is no longer a first run */
        _cleanup_free_ char *credit = xasprintf(
            "INSERT INTO ledger_transactions (id, at, kind) VALUES ('ltx_authtest', 1, 'grant');"
            "INSERT INTO ledger_entries (txn_id, account_id, amount_micros, at) VALUES "
            "('ltx_authtest', 'user:%s', 5000000, 1), "
            "('ltx_authtest', 'platform:grants', -5000000, 1);",
            t.user_id);
        db_exec_rw(c, credit);
        _cleanup_resp_ HttpResponse *me2 = api_get(c, ME, t.access);
        cr_assert(json_is_false(jget(me2, "first_run")), "%s", me2->body);
        cr_assert(json_is_null(jget(me2, "next")), "%s", me2->body);
        cr_assert_eq(json_integer_value(jget(me2, "balance_micros")), 5000000);

        /* the audit log saw both */
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE action='user.signup'"), 1);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE action='auth.login'"), 1);
        ctl_stop_clean(c);
}

typedef struct BadInput {
        const char *name;
        const char *body;
        const char *field; /* NULL: no details.field expected */
} BadInput;

static void expect_all_refused(Controller *c, const char *path, const BadInput *cases, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                DbCounts before = db_counts(c);
                long long audit = db_scalar(c, "SELECT COUNT(*) FROM audit_logs");
                _cleanup_resp_ HttpResponse *r = api_post(c, path, NULL, cases[i].body);
                cr_assert_eq(r->status, 400, "%s: expected 400, got %ld %s", cases[i].name,
                             r->status, r->body);
                assert_error(r, 400, "invalid_request");
                if (cases[i].field)
                        cr_assert_str_eq(strempty(jstr(r, "error.details.field")), cases[i].field,
                                         "%s: %s", cases[i].name, r->body);
                assert_counts_equal(before, db_counts(c));
                cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs"), audit, "%s",
                             cases[i].name);
        }
}

Test(auth, signup_bad_inputs_change_nothing)
{
        _cleanup_ctl_ Controller *c = started();
        char long_password[1100];
        memset(long_password, 'p', sizeof(long_password));
        long_password[sizeof(long_password) - 1] = '\0';
        char long_pw_body[1300];
        snprintf(long_pw_body, sizeof(long_pw_body),
                 "{\"email\":\"a@example.com\",\"password\":\"%s\",\"name\":\"A\"}", long_password);
        char long_name[256];
        memset(long_name, 'n', 201);
        long_name[201] = '\0';
        char long_name_body[400];
        snprintf(long_name_body, sizeof(long_name_body),
                 "{\"email\":\"a@example.com\",\"password\":\"password1\",\"name\":\"%s\"}",
                 long_name);

        const BadInput cases[] = {
            {"malformed JSON", "{\"email\":", NULL},
            {"trailing garbage", "{\"email\":\"a@example.com\"} x", NULL},
            {"not an object", "[\"a@example.com\",\"password1\",\"A\"]", NULL},
            {"a string", "\"hello\"", NULL},
            {"empty body", "", NULL},
            {"duplicate keys",
             "{\"email\":\"a@example.com\",\"email\":\"b@example.com\",\"password\":"
             "\"password1\",\"name\":\"A\"}",
             NULL},
            {"email a number", "{\"email\":5,\"password\":\"password1\",\"name\":\"A\"}", "email"},
            {"password a boolean", "{\"email\":\"a@example.com\",\"password\":true,\"name\":\"A\"}",
             "password"},
            {"name an object",
             "{\"email\":\"a@example.com\",\"password\":\"password1\",\"name\":{}}", "name"},
            {"name an array",
             "{\"email\":\"a@example.com\",\"password\":\"password1\",\"name\":[]}", "name"},
            {"unknown field",
             "{\"email\":\"a@example.com\",\"password\":\"password1\",\"name\":\"A\","
             "\"roles\":[\"admin\"]}",
             "roles"},
            {"missing email", "{\"password\":\"password1\",\"name\":\"A\"}", "email"},
            {"missing password", "{\"email\":\"a@example.com\",\"name\":\"A\"}", "password"},
            {"missing name", "{\"email\":\"a@example.com\",\"password\":\"password1\"}", "name"},
            {"null email", "{\"email\":null,\"password\":\"password1\",\"name\":\"A\"}", "email"},
            {"empty object", "{}", NULL},
            {"bad email", "{\"email\":\"not-an-email\",\"password\":\"password1\",\"name\":\"A\"}",
             "email"},
            {"email without domain dot",
             "{\"email\":\"a@localhost\",\"password\":\"password1\",\"name\":\"A\"}", "email"},
            {"email with header injection",
             "{\"email\":\"a@example.com\\r\\nBcc: b@example.com\",\"password\":\"password1\","
             "\"name\":\"A\"}",
             "email"},
            {"empty email", "{\"email\":\"\",\"password\":\"password1\",\"name\":\"A\"}", "email"},
            {"short password",
             "{\"email\":\"a@example.com\",\"password\":\"short\",\"name\":\"A\"}", "password"},
            {"seven char password",
             "{\"email\":\"a@example.com\",\"password\":\"1234567\",\"name\":\"A\"}", "password"},
            {"long password", long_pw_body, "password"},
            {"empty name", "{\"email\":\"a@example.com\",\"password\":\"password1\",\"name\":\"\"}",
             "name"},
            {"blank name",
             "{\"email\":\"a@example.com\",\"password\":\"password1\",\"name\":\"  \"}", "name"},
            {"name with control character",
             "{\"email\":\"a@example.com\",\"password\":\"password1\",\"name\":\"a\\u0007b\"}",
             "name"},
            {"long name", long_name_body, "name"},
        };
        expect_all_refused(c, SIGNUP, cases, ELEMENTSOF(cases));
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM users"), 0);
        ctl_stop_clean(c);
}

Test(auth, duplicate_email_is_409_email_taken)
{
        _cleanup_ctl_ Controller *c = started();
        cr_assert_eq(api_signup(c, "Grace@Example.com", "password-one", "Grace", NULL), 201);
        DbCounts before = db_counts(c);
        const char *spellings[] = {"grace@example.com", "GRACE@EXAMPLE.COM", "  grace@example.com"};
        for (size_t i = 0; i < ELEMENTSOF(spellings); i++) {
                json_t *b = json_pack("{s:s, s:s, s:s}", "email", spellings[i], "password",
                                      "password-two", "name", "Impostor");
                _cleanup_free_ char *s = json_dumps(b, JSON_COMPACT);
                json_decref(b);
                _cleanup_resp_ HttpResponse *r = api_post(c, SIGNUP, NULL, s);
                assert_error(r, 409, "email_taken");
                cr_assert_str_eq(strempty(jstr(r, "error.details.field")), "email");
                assert_counts_equal(before, db_counts(c));
        }
        /* the first account keeps its password */
        cr_assert_eq(api_login(c, "grace@example.com", "password-one", NULL), 200);
        cr_assert_eq(api_login(c, "grace@example.com", "password-two", NULL), 401);
        ctl_stop_clean(c);
}

Test(auth, login_bad_inputs_change_nothing)
{
        _cleanup_ctl_ Controller *c = started();
        cr_assert_eq(api_signup(c, "x@example.com", "password1", "X", NULL), 201);
        const BadInput cases[] = {
            {"malformed JSON", "{", NULL},
            {"missing password", "{\"email\":\"x@example.com\"}", "password"},
            {"missing email", "{\"password\":\"password1\"}", "email"},
            {"password a number", "{\"email\":\"x@example.com\",\"password\":12345678}",
             "password"},
            {"unknown field",
             "{\"email\":\"x@example.com\",\"password\":\"password1\",\"otp\":\"1\"}", "otp"},
            {"bad email", "{\"email\":\"x-at-example.com\",\"password\":\"password1\"}", "email"},
            {"empty password", "{\"email\":\"x@example.com\",\"password\":\"\"}", "password"},
        };
        expect_all_refused(c, LOGIN, cases, ELEMENTSOF(cases));
        ctl_stop_clean(c);
}

Test(auth, wrong_password_and_unknown_email_get_the_same_answer)
{
        _cleanup_ctl_ Controller *c = started();
        cr_assert_eq(api_signup(c, "known@example.com", "password1", "Known", NULL), 201);
        DbCounts before = db_counts(c);
        _cleanup_resp_ HttpResponse *wrong = api_post(
            c, LOGIN, NULL, "{\"email\":\"known@example.com\",\"password\":\"password2\"}");
        _cleanup_resp_ HttpResponse *unknown = api_post(
            c, LOGIN, NULL, "{\"email\":\"unknown@example.com\",\"password\":\"password2\"}");
        assert_error(wrong, 401, "unauthenticated");
        assert_error(unknown, 401, "unauthenticated");
        cr_assert_eq(wrong->status, unknown->status);
        cr_assert_str_eq(jstr(wrong, "error.code"), jstr(unknown, "error.code"));
        cr_assert_str_eq(jstr(wrong, "error.message"), jstr(unknown, "error.message"));
        cr_assert(json_equal(jget(wrong, "error.details"), jget(unknown, "error.details")));
        cr_assert_null(wrong->retry_after);
        cr_assert_null(unknown->retry_after);
        assert_counts_equal(before, db_counts(c));
        /* both failures are audited, neither made a session */
        cr_assert_eq(
            db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE action='auth.login_failed'"), 2);
        ctl_stop_clean(c);
}

static HttpResponse *login_from(Controller *c, const char *email, const char *password,
                                const char *source_ip)
{
        json_t *b = json_pack("{s:s, s:s}", "email", email, "password", password);
        _cleanup_free_ char *s = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        HttpRequest rq = {.path = LOGIN, .body = s, .source_ip = source_ip};
        HttpResponse *r = http_send(c, &rq);
        cr_assert_eq(r->curl_code, CURLE_OK, "%s", curl_easy_strerror(r->curl_code));
        return r;
}

static void assert_rate_limited(const HttpResponse *r, long max_retry)
{
        assert_error(r, 429, "rate_limited");
        cr_assert(r->retry_after, "429 without Retry-After");
        long v = strtol(r->retry_after, NULL, 10);
        cr_assert(v >= 1 && v <= max_retry, "Retry-After %s", r->retry_after);
        cr_assert_eq(json_integer_value(jget(r, "error.details.retry_after_s")), v);
}

Test(auth, failed_logins_are_limited_per_account)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--login-failures-per-account", "3", "--login-failures-per-address", "1000",
                 "--login-failure-window-s", "3600", NULL);
        ctl_start_or_fail(c);
        cr_assert_eq(api_signup(c, "victim@example.com", "right-password", "V", NULL), 201);
        cr_assert_eq(api_signup(c, "bystander@example.com", "right-password", "B", NULL), 201);
        DbCounts before = db_counts(c);

        for (int i = 0; i < 3; i++) {
                _cleanup_resp_ HttpResponse *r =
                    login_from(c, "victim@example.com", "wrong-password", NULL);
                assert_error(r, 401, "unauthenticated");
        }
        _cleanup_resp_ HttpResponse *limited =
            login_from(c, "VICTIM@example.com", "wrong-password", NULL);
        assert_rate_limited(limited, 3600 / 3);
        /* while limited, even the right password is not tried */
        _cleanup_resp_ HttpResponse *right =
            login_from(c, "victim@example.com", "right-password", NULL);
        assert_rate_limited(right, 3600 / 3);
        assert_counts_equal(before, db_counts(c));

        /* another account from the same address is unaffected */
        _cleanup_resp_ HttpResponse *other =
            login_from(c, "bystander@example.com", "right-password", NULL);
        cr_assert_eq(other->status, 200, "%s", other->body);

        /* an unknown email is limited the same way: no account enumeration */
        for (int i = 0; i < 3; i++) {
                _cleanup_resp_ HttpResponse *r =
                    login_from(c, "ghost@example.com", "wrong-password", NULL);
                assert_error(r, 401, "unauthenticated");
        }
        _cleanup_resp_ HttpResponse *ghost =
            login_from(c, "ghost@example.com", "wrong-password", NULL);
        assert_rate_limited(ghost, 3600 / 3);
        ctl_stop_clean(c);
}

Test(auth, successful_login_clears_the_account_failures)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--login-failures-per-account", "3", "--login-failure-window-s", "3600", NULL);
        ctl_start_or_fail(c);
        cr_assert_eq(api_signup(c, "typo@example.com", "right-password", "T", NULL), 201);
        for (int round = 0; round < 3; round++) {
                for (int i = 0; i < 2; i++)
                        cr_assert_eq(api_login(c, "typo@example.com", "wrong", NULL), 401);
                cr_assert_eq(api_login(c, "typo@example.com", "right-password", NULL), 200,
                             "round %d", round);
        }
        ctl_stop_clean(c);
}

Test(auth, failed_logins_are_limited_per_address)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--login-failures-per-account", "100", "--login-failures-per-address", "4",
                 "--login-failure-window-s", "3600", NULL);
        ctl_start_or_fail(c);
        cr_assert_eq(api_signup(c, "real@example.com", "right-password", "R", NULL), 201);
        DbCounts before = db_counts(c);

        /* spraying one password over many accounts from one address */
        char email[64];
        for (int i = 0; i < 4; i++) {
                snprintf(email, sizeof(email), "spray%d@example.com", i);
                _cleanup_resp_ HttpResponse *r = login_from(c, email, "Summer2026!", "127.0.0.1");
                assert_error(r, 401, "unauthenticated");
        }
        _cleanup_resp_ HttpResponse *limited =
            login_from(c, "spray9@example.com", "Summer2026!", "127.0.0.1");
        assert_rate_limited(limited, 3600 / 4);
        _cleanup_resp_ HttpResponse *right =
            login_from(c, "real@example.com", "right-password", "127.0.0.1");
        assert_rate_limited(right, 3600 / 4);
        assert_counts_equal(before, db_counts(c));

        /* another client address is not affected */
        _cleanup_resp_ HttpResponse *elsewhere =
            login_from(c, "real@example.com", "right-password", "127.0.0.2");
        cr_assert_eq(elsewhere->status, 200, "%s", elsewhere->body);
        ctl_stop_clean(c);
}

static HttpResponse *refresh(Controller *c, const char *token)
{
        json_t *b = json_pack("{s:s}", "refresh_token", token);
        _cleanup_free_ char *s = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        return api_post(c, REFRESH, NULL, s);
}

static long me_status(Controller *c, const char *access)
{
        _cleanup_resp_ HttpResponse *r = api_get(c, ME, access);
        if (r->status != 200)
                assert_error(r, r->status, "unauthenticated");
        return r->status;
}

Test(auth, refresh_rotates_and_reuse_revokes_the_family)
{
        _cleanup_ctl_ Controller *c = started();
        Tokens first, other;
        cr_assert_eq(api_signup(c, "rot@example.com", "password1", "Rot", &first), 201);
        cr_assert_eq(api_login(c, "rot@example.com", "password1", &other), 200);

        /* a refresh hands out a new pair in the same session */
        Tokens second;
        {
                _cleanup_resp_ HttpResponse *r = refresh(c, first.refresh);
                cr_assert_eq(r->status, 200, "%s", r->body);
                cr_assert_str_eq(strempty(jstr(r, "user.id")), first.user_id);
                cr_assert_eq(json_integer_value(jget(r, "expires_in")), 900);
                snprintf(second.access, sizeof(second.access), "%s", jstr(r, "access_token"));
                snprintf(second.refresh, sizeof(second.refresh), "%s", jstr(r, "refresh_token"));
        }
        cr_assert_str_neq(second.access, first.access);
        cr_assert_str_neq(second.refresh, first.refresh);
        cr_assert_eq(me_status(c, second.access), 200);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM sessions"), 2, "no new session");

        /* the spent refresh token comes back: the whole family is revoked */
        {
                _cleanup_resp_ HttpResponse *r = refresh(c, first.refresh);
                assert_error(r, 401, "unauthenticated");
                cr_assert_str_eq(strempty(jstr(r, "error.details.reason")), "refresh_token_reused");
        }
        cr_assert_eq(me_status(c, second.access), 401, "the new access token survived reuse");
        cr_assert_eq(me_status(c, first.access), 401);
        {
                _cleanup_resp_ HttpResponse *r = refresh(c, second.refresh);
                assert_error(r, 401, "unauthenticated");
        }
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM sessions WHERE "
                                  "revoke_reason = 'refresh_token_reused'"),
                     1);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE "
                                  "action = 'auth.refresh_token_reused'"),
                     1);
        /* the other sign-in of the same user is a different family */
        cr_assert_eq(me_status(c, other.access), 200);
        _cleanup_resp_ HttpResponse *o = refresh(c, other.refresh);
        cr_assert_eq(o->status, 200, "%s", o->body);
        ctl_stop_clean(c);
}

Test(auth, refresh_bad_inputs)
{
        _cleanup_ctl_ Controller *c = started();
        Tokens t;
        cr_assert_eq(api_signup(c, "rb@example.com", "password1", "RB", &t), 201);
        const BadInput cases[] = {
            {"missing", "{}", "refresh_token"},
            {"number", "{\"refresh_token\":42}", "refresh_token"},
            {"empty", "{\"refresh_token\":\"\"}", "refresh_token"},
            {"unknown field", "{\"refresh_token\":\"gsr_x\",\"scope\":\"all\"}", "scope"},
            {"malformed", "{\"refresh_token\":", NULL},
        };
        expect_all_refused(c, REFRESH, cases, ELEMENTSOF(cases));

        DbCounts before = db_counts(c);
        const char *unknown[] = {"gsr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "garbage",
                                 t.access};
        for (size_t i = 0; i < ELEMENTSOF(unknown); i++) {
                _cleanup_resp_ HttpResponse *r = refresh(c, unknown[i]);
                assert_error(r, 401, "unauthenticated");
                cr_assert_str_eq(strempty(jstr(r, "error.details.reason")),
                                 "refresh_token_unknown");
        }
        assert_counts_equal(before, db_counts(c));
        /* none of that disturbed the real session */
        cr_assert_eq(me_status(c, t.access), 200);
        ctl_stop_clean(c);
}

Test(auth, expired_tokens_are_401)
{
        _cleanup_ctl_ Controller *c = started();
        Tokens t;
        cr_assert_eq(api_signup(c, "exp@example.com", "password1", "E", &t), 201);
        /* expiry is set in the database rather than waited for */
        db_exec_rw(c, "UPDATE access_tokens SET expires_at = 1");
        {
                _cleanup_resp_ HttpResponse *r = api_get(c, ME, t.access);
                assert_error(r, 401, "unauthenticated");
                cr_assert_str_eq(strempty(jstr(r, "error.details.token")), "expired");
        }
        /* the refresh token still works and gives a working access token */
        Tokens n;
        cr_assert_eq(api_refresh(c, t.refresh, &n), 200);
        cr_assert_eq(me_status(c, n.access), 200);

        db_exec_rw(c, "UPDATE refresh_tokens SET expires_at = 1");
        DbCounts before = db_counts(c);
        {
                _cleanup_resp_ HttpResponse *r = refresh(c, n.refresh);
                assert_error(r, 401, "unauthenticated");
                cr_assert_str_eq(strempty(jstr(r, "error.details.reason")),
                                 "refresh_token_expired");
        }
        assert_counts_equal(before, db_counts(c));

        /* A session past its end is over for every token. (A token already
         * resolved may be served from the controller's short-lived cache, which
         * cannot see this out-of-process edit: use a fresh sign-in.) */
        Tokens m;
        cr_assert_eq(api_login(c, "exp@example.com", "password1", &m), 200);
        db_exec_rw(c, "UPDATE sessions SET expires_at = 1");
        {
                _cleanup_resp_ HttpResponse *r = api_get(c, ME, m.access);
                assert_error(r, 401, "unauthenticated");
                cr_assert_str_eq(strempty(jstr(r, "error.details.token")), "revoked");
        }
        ctl_stop_clean(c);
}

Test(auth, logout_revokes_the_session_only)
{
        _cleanup_ctl_ Controller *c = started();
        Tokens a, b;
        cr_assert_eq(api_signup(c, "out@example.com", "password1", "O", &a), 201);
        cr_assert_eq(api_login(c, "out@example.com", "password1", &b), 200);

        _cleanup_resp_ HttpResponse *r = api_post(c, LOGOUT, a.access, NULL);
        cr_assert_eq(r->status, 204, "%s", r->body);
        cr_assert_eq(r->body_len, 0);
        cr_assert_eq(me_status(c, a.access), 401);
        _cleanup_resp_ HttpResponse *again = api_post(c, LOGOUT, a.access, NULL);
        assert_error(again, 401, "unauthenticated");
        _cleanup_resp_ HttpResponse *rf = refresh(c, a.refresh);
        assert_error(rf, 401, "unauthenticated");
        cr_assert_str_eq(strempty(jstr(rf, "error.details.reason")), "session_revoked");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM sessions WHERE revoke_reason='logout'"), 1);

        /* the other session is untouched */
        cr_assert_eq(me_status(c, b.access), 200);
        ctl_stop_clean(c);
}

Test(auth, missing_or_malformed_credentials_are_401)
{
        _cleanup_ctl_ Controller *c = started();
        Tokens t;
        cr_assert_eq(api_signup(c, "hdr@example.com", "password1", "H", &t), 201);
        DbCounts before = db_counts(c);
        _cleanup_free_ char *basic = NULL, *no_space = NULL, *bogus = NULL,
                            *refresh_as_access = NULL;
        cr_assert(asprintf(&basic, "Authorization: Basic %s", t.access) > 0);
        cr_assert(asprintf(&no_space, "Authorization: Bearer%s", t.access) > 0);
        cr_assert(asprintf(&bogus, "Authorization: Bearer gsa_%s", "A") > 0);
        cr_assert(asprintf(&refresh_as_access, "Authorization: Bearer %s", t.refresh) > 0);
        const char *headers[] = {
            NULL,  "Authorization: Bearer", "Authorization: Bearer ", basic, no_space,
            bogus, refresh_as_access};
        const char *paths[] = {ME, LOGOUT};
        for (size_t p = 0; p < ELEMENTSOF(paths); p++)
                for (size_t i = 0; i < ELEMENTSOF(headers); i++) {
                        HttpRequest rq = {.method = p == 0 ? "GET" : "POST",
                                          .path = paths[p],
                                          .extra_header = headers[i]};
                        _cleanup_resp_ HttpResponse *r = http_send(c, &rq);
                        assert_error(r, 401, "unauthenticated");
                }
        assert_counts_equal(before, db_counts(c));
        /* the scheme name is case-insensitive (RFC 9110) */
        _cleanup_free_ char *lower = NULL;
        cr_assert(asprintf(&lower, "Authorization: bearer %s", t.access) > 0);
        HttpRequest rq = {.path = ME, .extra_header = lower};
        _cleanup_resp_ HttpResponse *r = http_send(c, &rq);
        cr_assert_eq(r->status, 200, "%s", r->body);
        ctl_stop_clean(c);
}

/* Many wrong guesses in parallel: each must be counted before its password is
 * checked, or a client can make as many guesses as it has connections while
 * the first ones are still hashing. */
Test(auth, concurrent_guesses_do_not_outrun_the_limit)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--login-failures-per-account", "3", "--login-failures-per-address", "1000",
                 "--login-failure-window-s", "3600", "--password-scrypt-log-n", "14", NULL);
        ctl_start_or_fail(c);
        cr_assert_eq(api_signup(c, "target@example.com", "right-password", "T", NULL), 201);

        enum { N = 24 };
        CURLM *multi = curl_multi_init();
        CURL *easy[N];
        struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        char url[300];
        snprintf(url, sizeof(url), "%s" LOGIN, c->url);
        static const char body[] = "{\"email\":\"target@example.com\",\"password\":\"guess\"}";
        for (int i = 0; i < N; i++) {
                easy[i] = curl_easy_init();
                curl_easy_setopt(easy[i], CURLOPT_URL, url);
                curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, hdrs);
                curl_easy_setopt(easy[i], CURLOPT_TIMEOUT_MS, 60000L);
                curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L);
                curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, discard_body);
                curl_multi_add_handle(multi, easy[i]);
        }
        int running = N;
        long long deadline = mono_ms() + 60000;
        while (running > 0 && mono_ms() < deadline) {
                curl_multi_perform(multi, &running);
                if (running > 0)
                        curl_multi_poll(multi, NULL, 0, 100, NULL);
        }
        cr_assert_eq(running, 0);
        int n401 = 0, n429 = 0;
        for (int i = 0; i < N; i++) {
                long status = 0;
                curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &status);
                n401 += status == 401;
                n429 += status == 429;
                curl_multi_remove_handle(multi, easy[i]);
                curl_easy_cleanup(easy[i]);
        }
        curl_multi_cleanup(multi);
        curl_slist_free_all(hdrs);
        cr_assert_eq(n401 + n429, N, "%d 401, %d 429", n401, n429);
        cr_assert_leq(n401, 3, "%d passwords were checked with an allowance of 3", n401);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE "
                                  "action='auth.login_failed'"),
                     n401);
        ctl_stop_clean(c);
}
