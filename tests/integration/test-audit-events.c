/* SPDX-License-Identifier: MIT */
/* Security events in the audit log, read from the database of the real
 * controller after the events themselves: signup, a sign-in, a failed
 * sign-in, a refresh-token reuse, a logout, create-admin making an admin and
 * granting a role to an existing account. Each row names the actor, the
 * target and the client address where there is one, and none holds a
 * password or a token. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

TestSuite(audit_events, .timeout = 120);

static long long count(const Controller *c, const char *where)
{
        char sql[1024];
        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM audit_logs WHERE %s", where);
        return db_scalar(c, sql);
}

static char *create_admin(const Controller *c, const char *email, const char *role)
{
        const char *argv[] = {"gpuslice-controller",
                              "create-admin",
                              "--state-dir",
                              c->state_dir,
                              "--email",
                              email,
                              "--role",
                              role,
                              "--password-scrypt-log-n",
                              "10",
                              NULL};
        CliResult res;
        int status = cli_run(argv, NULL, 60000, &res);
        cr_assert_eq(cli_exit_code(status), 0, "create-admin: %d %s", status, res.err);
        char *pw = strndup(res.out, strcspn(res.out, "\n"));
        cli_result_done(&res);
        return pw;
}

Test(audit_events, sign_ins_failures_reuse_logout_and_role_changes_are_recorded)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_start_or_fail(c);

        Tokens su, t, t2, spent;
        cr_assert_eq(api_signup(c, "events@example.com", "password-events", "Events", &su), 201);
        char who[128];
        snprintf(who, sizeof(who), "actor_id = '%s'", su.user_id);

        /* signup */
        char where[512];
        snprintf(where, sizeof(where),
                 "action = 'user.signup' AND %s AND target_id = '%s' AND "
                 "json_extract(details, '$.client_addr') = '127.0.0.1'",
                 who, su.user_id);
        cr_assert_eq(count(c, where), 1, "no user.signup row");

        /* a sign-in */
        cr_assert_eq(api_login(c, "events@example.com", "password-events", &t), 200);
        snprintf(where, sizeof(where),
                 "action = 'auth.login' AND %s AND target_type = 'user' AND "
                 "json_extract(details, '$.session_id') LIKE 'ses_%%' AND "
                 "json_extract(details, '$.client_addr') = '127.0.0.1'",
                 who);
        cr_assert_eq(count(c, where), 1, "no auth.login row");

        /* a failed sign-in, and one for an account that does not exist */
        cr_assert_eq(api_login(c, "events@example.com", "not the password", NULL), 401);
        cr_assert_eq(api_login(c, "nobody@example.com", "not the password", NULL), 401);
        cr_assert_eq(count(c, "action = 'auth.login_failed' AND actor_id IS NULL AND "
                              "target_type = 'email' AND target_id = 'events@example.com' AND "
                              "reason = 'invalid_credentials'"),
                     1, "no auth.login_failed row for the account");
        cr_assert_eq(count(c, "action = 'auth.login_failed' AND target_id = "
                              "'nobody@example.com'"),
                     1, "no auth.login_failed row for the unknown email");

        /* a refresh token presented twice: the family is revoked and recorded */
        cr_assert_eq(api_refresh(c, t.refresh, &spent), 200);
        cr_assert_eq(api_refresh(c, t.refresh, NULL), 401);
        snprintf(where, sizeof(where),
                 "action = 'auth.refresh_token_reused' AND %s AND target_type = 'session' AND "
                 "reason = 'refresh_token_reused'",
                 who);
        cr_assert_eq(count(c, where), 1, "no auth.refresh_token_reused row");

        /* logout */
        cr_assert_eq(api_login(c, "events@example.com", "password-events", &t2), 200);
        HttpRequest rq = {.method = "POST", .path = "/api/v1/auth/logout", .bearer = t2.access};
        _cleanup_resp_ HttpResponse *out = http_send(c, &rq);
        cr_assert_eq(out->status, 204, "%s", out->body);
        snprintf(where, sizeof(where), "action = 'auth.logout' AND %s AND target_type = 'session'",
                 who);
        cr_assert_eq(count(c, where), 1, "no auth.logout row");

        /* create-admin: a new admin, then a role granted to the existing user */
        _cleanup_free_ char *pw = create_admin(c, "boss@example.com", "admin");
        cr_assert_eq(count(c, "action = 'user.create' AND reason = 'create-admin' AND "
                              "json_extract(details, '$.role') = 'admin'"),
                     1, "no user.create row for the admin");
        _cleanup_free_ char *pw2 = create_admin(c, "events@example.com", "billing_operator");
        snprintf(where, sizeof(where),
                 "action = 'user.role_grant' AND target_id = '%s' AND "
                 "json_extract(details, '$.role') = 'billing_operator' AND "
                 "json_extract(details, '$.roles_before[0]') = 'user'",
                 su.user_id);
        cr_assert_eq(count(c, where), 1, "no user.role_grant row");
        snprintf(where, sizeof(where), "action = 'user.password_reset' AND target_id = '%s'",
                 su.user_id);
        cr_assert_eq(count(c, where), 1, "no user.password_reset row");
        /* granting a role the account already has is no role change */
        _cleanup_free_ char *pw3 = create_admin(c, "events@example.com", "billing_operator");
        cr_assert_eq(count(c, "action = 'user.role_grant'"), 1);

        /* the new admin signs in: recorded like anyone else */
        Tokens adm;
        cr_assert_eq(api_login(c, "boss@example.com", pw, &adm), 200);
        snprintf(where, sizeof(where), "action = 'auth.login' AND actor_id = '%s'", adm.user_id);
        cr_assert_eq(count(c, where), 1);

        /* no secret ever lands in the log */
        char secrets[1024];
        snprintf(secrets, sizeof(secrets),
                 "details LIKE '%%password-events%%' OR details LIKE '%%not the password%%' OR "
                 "details LIKE '%%gsa_%%' OR details LIKE '%%gsr_%%' OR details LIKE '%%%s%%' OR "
                 "details LIKE '%%scrypt%%'",
                 pw);
        cr_assert_eq(count(c, secrets), 0, "a secret in the audit log");
        ctl_stop_clean(c);
}
