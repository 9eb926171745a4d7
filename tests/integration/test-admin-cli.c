/* SPDX-License-Identifier: MIT */
/* `gpuslice-controller create-admin --state-dir DIR --email EMAIL [--role R]`:
 * prints a one-time password on stdout that signs in with the role asked for. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

TestSuite(admin_cli, .timeout = 120);

/* Runs create-admin against c's state dir; returns the password (malloc'ed). */
static char *create_admin(Controller *c, const char *email, const char *role)
{
        const char *argv[] = {"x",
                              "create-admin",
                              "--state-dir",
                              c->state_dir,
                              "--email",
                              email,
                              "--password-scrypt-log-n",
                              "10",
                              role ? "--role" : NULL,
                              role,
                              NULL};
        CliResult res;
        int status = cli_run(argv, NULL, 60000, &res);
        cr_assert_eq(cli_exit_code(status), 0, "create-admin exit %d: %s", status, res.err);
        /* exactly one line on stdout: the password */
        size_t len = strlen(res.out);
        cr_assert(len > 1 && res.out[len - 1] == '\n', "stdout: \"%s\"", res.out);
        res.out[len - 1] = '\0';
        cr_assert_null(strchr(res.out, '\n'), "more than one line on stdout: %s", res.out);
        cr_assert_geq(strlen(res.out), 16, "password too short: %s", res.out);
        cr_assert_null(strstr(res.err, res.out), "the password also went to stderr");
        char *pw = strdup(res.out);
        cli_result_done(&res);
        return pw;
}

static json_t *me_roles(Controller *c, const char *access)
{
        _cleanup_resp_ HttpResponse *me = api_get(c, "/api/v1/me", access);
        cr_assert_eq(me->status, 200, "%s", me->body);
        return json_incref(jget(me, "roles"));
}

static bool has_role(json_t *roles, const char *role)
{
        size_t i;
        json_t *v;
        json_array_foreach(roles, i, v) if (streq(json_string_value(v), role)) return true;
        return false;
}

Test(admin_cli, creates_an_admin_whose_password_signs_in)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        _cleanup_free_ char *pw = create_admin(c, "Root@Example.COM", NULL);
        ctl_start_or_fail(c);
        Tokens t;
        cr_assert_eq(api_login(c, "root@example.com", pw, &t), 200);
        json_t *roles = me_roles(c, t.access);
        cr_assert(has_role(roles, "admin"), "roles: %s", json_dumps(roles, 0));
        json_decref(roles);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE action='user.create' "
                                  "AND reason='create-admin'"),
                     1);
        /* the plain password is not stored anywhere in the database */
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM users WHERE password_hash LIKE "
                                  "'$scrypt$%'"),
                     1);
        ctl_stop_clean(c);
}

Test(admin_cli, billing_operator_role)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        _cleanup_free_ char *pw = create_admin(c, "billing@example.com", "billing_operator");
        ctl_start_or_fail(c);
        Tokens t;
        cr_assert_eq(api_login(c, "billing@example.com", pw, &t), 200);
        json_t *roles = me_roles(c, t.access);
        cr_assert(has_role(roles, "billing_operator"));
        cr_assert_not(has_role(roles, "admin"), "a billing operator is not an admin");
        json_decref(roles);
        ctl_stop_clean(c);
}

static void expect_refused(Controller *c, const char *const *argv, int want_exit,
                           const char *needle)
{
        CliResult res;
        int status = cli_run(argv, NULL, 60000, &res);
        cr_assert_eq(cli_exit_code(status), want_exit, "status %d, stderr: %s", status, res.err);
        cr_assert_str_eq(res.out, "", "printed something on stdout: %s", res.out);
        if (needle)
                cr_assert(strstr(res.err, needle), "stderr lacks \"%s\": %s", needle, res.err);
        cli_result_done(&res);
        (void)c;
}

Test(admin_cli, bad_arguments_exit_2_and_create_nothing)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        const char *bad_email[] = {"x",       "create-admin", "--state-dir", c->state_dir,
                                   "--email", "not-an-email", NULL};
        expect_refused(c, bad_email, 2, "--email");
        const char *no_email[] = {"x", "create-admin", "--state-dir", c->state_dir, NULL};
        expect_refused(c, no_email, 2, "--email");
        const char *dangling[] = {"x",          "create-admin", "--state-dir",
                                  c->state_dir, "--email",      NULL};
        expect_refused(c, dangling, 2, "--email");
        const char *bad_role[] = {"x",          "create-admin", "--state-dir",
                                  c->state_dir, "--email",      "a@example.com",
                                  "--role",     "superuser",    NULL};
        expect_refused(c, bad_role, 2, "--role");
        const char *user_role[] = {"x",          "create-admin", "--state-dir",
                                   c->state_dir, "--email",      "a@example.com",
                                   "--role",     "user",         NULL};
        expect_refused(c, user_role, 2, "--role");
        const char *bad_name[] = {"x",       "create-admin",  "--state-dir", c->state_dir,
                                  "--email", "a@example.com", "--name",      "",
                                  NULL};
        expect_refused(c, bad_name, 2, "--name");
        const char *bad_option[] = {"x",          "create-admin", "--state-dir",
                                    c->state_dir, "--email",      "a@example.com",
                                    "--colour",   "red",          NULL};
        expect_refused(c, bad_option, 2, "colour");

        /* nothing was written */
        _cleanup_free_ char *db = NULL;
        cr_assert(asprintf(&db, "%s/gpuslice.db", c->state_dir) > 0);
        if (access(db, F_OK) == 0)
                cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM users"), 0);
}

Test(admin_cli, rerun_resets_the_password_and_revokes_sessions)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        _cleanup_free_ char *first = create_admin(c, "ops@example.com", NULL);
        ctl_start_or_fail(c);
        Tokens t;
        cr_assert_eq(api_login(c, "ops@example.com", first, &t), 200);
        json_t *roles = me_roles(c, t.access); /* the token is now resolved (and cached) */
        json_decref(roles);

        /* operators run it again while the controller is up */
        _cleanup_free_ char *second = create_admin(c, "OPS@example.com", NULL);
        cr_assert_str_neq(first, second, "a reset must print a new password");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM users"), 1, "it made a second account");

        cr_assert_eq(api_login(c, "ops@example.com", first, NULL), 401);
        Tokens n;
        cr_assert_eq(api_login(c, "ops@example.com", second, &n), 200);
        cr_assert_str_eq(n.user_id, t.user_id);
        /* The old session ends. The change came from another process, so the
         * controller may serve its token-cache entry for a few seconds (at most
         * SESSION_CACHE_TTL_USEC, 5 s): poll, with a deadline well past that. */
        long long deadline = mono_ms() + 20000;
        long status;
        do {
                _cleanup_resp_ HttpResponse *old = api_get(c, "/api/v1/me", t.access);
                status = old->status;
                if (status != 200)
                        assert_error(old, 401, "unauthenticated");
                else {
                        struct timespec ts = {0, 50 * 1000000L};
                        nanosleep(&ts, NULL);
                }
        } while (status == 200 && mono_ms() < deadline);
        cr_assert_eq(status, 401, "the old session outlived the reset by 20 s");
        cr_assert_eq(api_refresh(c, t.refresh, NULL), 401, "the old refresh token survived");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE "
                                  "action='user.password_reset'"),
                     1);
        ctl_stop_clean(c);
}

Test(admin_cli, promotes_an_existing_personal_account)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_start_or_fail(c);
        Tokens t;
        cr_assert_eq(api_signup(c, "grow@example.com", "password1", "Grow", &t), 201);
        json_t *before = me_roles(c, t.access);
        cr_assert_not(has_role(before, "admin"));
        json_decref(before);

        _cleanup_free_ char *pw = create_admin(c, "grow@example.com", "billing_operator");
        Tokens n;
        cr_assert_eq(api_login(c, "grow@example.com", pw, &n), 200);
        json_t *roles = me_roles(c, n.access);
        cr_assert(has_role(roles, "user"));
        cr_assert(has_role(roles, "billing_operator"));
        json_decref(roles);
        ctl_stop_clean(c);
}
