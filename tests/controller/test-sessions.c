/* SPDX-License-Identifier: MIT */
/* sessions.c: token pairs, authentication, expiry, revocation, refresh
 * rotation and reuse detection. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "harness.h"
#include "http.h"
#include "sessions.h"
#include "users.h"

static char *dir;
static Db *db;
static User alice, bob;
static const SessionPolicy policy = {.access_ttl_s = 900, .refresh_ttl_s = 86400};

static void setup(void)
{
        dir = tmpdir_new("sessions");
        char path[4096];
        snprintf(path, sizeof(path), "%s/gpuslice.db", dir);
        cr_assert_eq(db_open(path, &db), 0);
        cr_assert_eq(users_insert(db, "alice@example.com", "Alice", "$h", ROLE_USER, &alice), 0);
        cr_assert_eq(users_insert(db, "bob@example.com", "Bob", "$h", ROLE_USER | ROLE_ADMIN, &bob),
                     0);
}

static void teardown(void)
{
        user_done(&alice);
        user_done(&bob);
        db_close(db);
        db = NULL;
        tmpdir_remove(dir);
        free(dir);
}

TestSuite(sessions, .init = setup, .fini = teardown, .timeout = 30);

static void create(const User *u, char session_id[static ID_MAX], TokenPair *t)
{
        DbTxn txn = {0};
        cr_assert_eq(db_begin(db, &txn), 0);
        cr_assert_eq(sessions_create(db, &policy, u->id, "127.0.0.1", session_id, t), 0);
        cr_assert_eq(db_commit(&txn), 0);
}

static long long scalar_text(const char *sql, const char *arg)
{
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db), sql, -1, &s, NULL), SQLITE_OK, "%s", sql);
        if (arg)
                sqlite3_bind_text(s, 1, arg, -1, SQLITE_TRANSIENT);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        long long v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
}

static void exec(const char *sql)
{
        cr_assert_eq(db_exec(db, sql), 0, "%s", sql);
}

Test(sessions, create_gives_prefixed_distinct_tokens)
{
        char sid[ID_MAX];
        TokenPair t;
        create(&alice, sid, &t);
        cr_assert(strncmp(sid, "ses_", 4) == 0, "%s", sid);
        cr_assert(startswith(t.access_token, ACCESS_TOKEN_PREFIX), "%s", t.access_token);
        cr_assert(startswith(t.refresh_token, REFRESH_TOKEN_PREFIX), "%s", t.refresh_token);
        cr_assert_gt(strlen(t.access_token), 40, "256 bits of randomness expected");
        cr_assert_str_neq(t.access_token + 4, t.refresh_token + 4);
        cr_assert_eq(t.expires_in, policy.access_ttl_s);
        /* only hashes are stored */
        cr_assert_eq(scalar_text("SELECT COUNT(*) FROM access_tokens WHERE "
                                 "CAST(token_hash AS TEXT) = ?",
                                 t.access_token),
                     0);
        cr_assert_eq(scalar_text("SELECT length(token_hash) FROM access_tokens", NULL), 32);
}

Test(sessions, authenticate_resolves_user_session_and_roles)
{
        char sid[ID_MAX];
        TokenPair t;
        create(&bob, sid, &t);
        Auth a = {0};
        cr_assert_eq(sessions_authenticate(db, t.access_token, &a), 0);
        cr_assert(a.authenticated);
        cr_assert_str_eq(a.user_id, bob.id);
        cr_assert_str_eq(a.session_id, sid);
        cr_assert_eq(a.roles, ROLE_USER | ROLE_ADMIN);
}

Test(sessions, unknown_and_foreign_tokens_are_enoent)
{
        char sid[ID_MAX];
        TokenPair t;
        create(&alice, sid, &t);
        Auth a = {0};
        cr_assert_eq(sessions_authenticate(db, "gsa_doesnotexist", &a), -ENOENT);
        cr_assert_eq(sessions_authenticate(db, "", &a), -ENOENT);
        /* a refresh token is not an access token */
        cr_assert_eq(sessions_authenticate(db, t.refresh_token, &a), -ENOENT);
        /* nor is the access token with its prefix swapped */
        char swapped[TOKEN_MAX];
        snprintf(swapped, sizeof(swapped), "gsr_%s", t.access_token + 4);
        cr_assert_eq(sessions_authenticate(db, swapped, &a), -ENOENT);
        cr_assert_not(a.authenticated);
}

Test(sessions, expired_access_token)
{
        char sid[ID_MAX];
        TokenPair t;
        create(&alice, sid, &t);
        exec("UPDATE access_tokens SET expires_at = 1");
        Auth a = {0};
        cr_assert_eq(sessions_authenticate(db, t.access_token, &a), -EKEYEXPIRED);
}

Test(sessions, expired_session_ends_its_tokens)
{
        char sid[ID_MAX];
        TokenPair t;
        create(&alice, sid, &t);
        exec("UPDATE sessions SET expires_at = 1");
        Auth a = {0};
        cr_assert_eq(sessions_authenticate(db, t.access_token, &a), -EKEYREVOKED);
}

Test(sessions, revoke_ends_one_session_only)
{
        char s1[ID_MAX], s2[ID_MAX];
        TokenPair t1, t2;
        create(&alice, s1, &t1);
        create(&alice, s2, &t2);
        DbTxn txn = {0};
        cr_assert_eq(db_begin(db, &txn), 0);
        cr_assert_eq(sessions_revoke(db, s1, "logout"), 0);
        cr_assert_eq(db_commit(&txn), 0);

        Auth a = {0};
        int r = sessions_authenticate(db, t1.access_token, &a);
        cr_assert(r == -EKEYREVOKED || r == -ENOENT, "revoked token still works (%d)", r);
        cr_assert_eq(sessions_authenticate(db, t2.access_token, &a), 0);
        cr_assert_eq(scalar_text("SELECT COUNT(*) FROM sessions WHERE id = ? AND "
                                 "revoke_reason = 'logout' AND revoked_at IS NOT NULL",
                                 s1),
                     1);
        /* its refresh token is dead too */
        char uid[ID_MAX], sid[ID_MAX];
        TokenPair n;
        cr_assert_eq(sessions_refresh(db, &policy, t1.refresh_token, uid, sid, &n), -EKEYREVOKED);
}

Test(sessions, revoke_user_ends_every_session_of_that_user)
{
        char s[5][ID_MAX], sb[ID_MAX];
        TokenPair t[5], tb;
        for (int i = 0; i < 5; i++)
                create(&alice, s[i], &t[i]);
        create(&bob, sb, &tb);
        DbTxn txn = {0};
        cr_assert_eq(db_begin(db, &txn), 0);
        cr_assert_eq(sessions_revoke_user(db, alice.id, "password_reset"), 0);
        cr_assert_eq(db_commit(&txn), 0);
        Auth a = {0};
        for (int i = 0; i < 5; i++)
                cr_assert_lt(sessions_authenticate(db, t[i].access_token, &a), 0);
        cr_assert_eq(sessions_authenticate(db, tb.access_token, &a), 0, "bob is not alice");
        cr_assert_eq(scalar_text("SELECT COUNT(*) FROM sessions WHERE user_id = ? AND "
                                 "revoked_at IS NULL",
                                 alice.id),
                     0);
}

Test(sessions, revoke_user_with_more_sessions_than_one_batch)
{
        char sid[ID_MAX];
        TokenPair t;
        DbTxn txn = {0};
        cr_assert_eq(db_begin(db, &txn), 0);
        for (int i = 0; i < 300; i++)
                cr_assert_eq(sessions_create(db, &policy, alice.id, NULL, sid, &t), 0);
        cr_assert_eq(sessions_revoke_user(db, alice.id, "password_reset"), 0);
        cr_assert_eq(db_commit(&txn), 0);
        cr_assert_eq(scalar_text("SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL", NULL),
                     0);
}

Test(sessions, refresh_rotates_the_pair)
{
        char sid[ID_MAX], uid[ID_MAX], rsid[ID_MAX];
        TokenPair t, n;
        create(&alice, sid, &t);
        cr_assert_eq(sessions_refresh(db, &policy, t.refresh_token, uid, rsid, &n), 0);
        cr_assert_str_eq(uid, alice.id);
        cr_assert_str_eq(rsid, sid, "rotation stays in the same session (family)");
        cr_assert_str_neq(n.access_token, t.access_token);
        cr_assert_str_neq(n.refresh_token, t.refresh_token);
        Auth a = {0};
        cr_assert_eq(sessions_authenticate(db, n.access_token, &a), 0);
        cr_assert_str_eq(a.session_id, sid);
        /* the new refresh token rotates again */
        TokenPair n2;
        cr_assert_eq(sessions_refresh(db, &policy, n.refresh_token, uid, rsid, &n2), 0);
        cr_assert_eq(sessions_authenticate(db, n2.access_token, &a), 0);
}

Test(sessions, reusing_a_spent_refresh_token_revokes_the_family)
{
        char sid[ID_MAX], uid[ID_MAX], rsid[ID_MAX], other_sid[ID_MAX];
        TokenPair t, n, x, other;
        create(&alice, sid, &t);
        create(&alice, other_sid, &other);
        cr_assert_eq(sessions_refresh(db, &policy, t.refresh_token, uid, rsid, &n), 0);

        /* the thief (or the victim) presents the spent token again */
        cr_assert_eq(sessions_refresh(db, &policy, t.refresh_token, uid, rsid, &x), -EALREADY);
        cr_assert_str_eq(rsid, sid);
        cr_assert_str_eq(uid, alice.id);

        /* every token of the family is now dead, including the fresh pair */
        Auth a = {0};
        cr_assert_lt(sessions_authenticate(db, n.access_token, &a), 0);
        cr_assert_lt(sessions_authenticate(db, t.access_token, &a), 0);
        cr_assert_eq(sessions_refresh(db, &policy, n.refresh_token, uid, rsid, &x), -EKEYREVOKED);
        cr_assert_eq(scalar_text("SELECT COUNT(*) FROM sessions WHERE id = ? AND "
                                 "revoke_reason = 'refresh_token_reused'",
                                 sid),
                     1);
        /* and the revocation was committed, not left in an open transaction */
        cr_assert(sqlite3_get_autocommit(db_handle(db)));

        /* the user's other session is not part of the family */
        cr_assert_eq(sessions_authenticate(db, other.access_token, &a), 0);
}

Test(sessions, refresh_of_unknown_or_expired_tokens)
{
        char sid[ID_MAX], uid[ID_MAX], rsid[ID_MAX];
        TokenPair t, n;
        cr_assert_eq(sessions_refresh(db, &policy, "gsr_unknown", uid, rsid, &n), -ENOENT);
        cr_assert_eq(sessions_refresh(db, &policy, "", uid, rsid, &n), -ENOENT);
        create(&alice, sid, &t);
        cr_assert_eq(sessions_refresh(db, &policy, t.access_token, uid, rsid, &n), -ENOENT,
                     "an access token cannot refresh");
        exec("UPDATE refresh_tokens SET expires_at = 1");
        cr_assert_eq(sessions_refresh(db, &policy, t.refresh_token, uid, rsid, &n), -EKEYEXPIRED);
        cr_assert(sqlite3_get_autocommit(db_handle(db)), "failed refresh left a transaction open");
        /* nothing was spent by the failed attempt */
        cr_assert_eq(
            scalar_text("SELECT COUNT(*) FROM refresh_tokens WHERE spent_at IS NOT NULL", NULL), 0);
}

Test(sessions, refresh_slides_the_session_expiry)
{
        char sid[ID_MAX], uid[ID_MAX], rsid[ID_MAX];
        TokenPair t, n;
        create(&alice, sid, &t);
        exec("UPDATE sessions SET expires_at = expires_at - 3600000000");
        long long before = scalar_text("SELECT expires_at FROM sessions WHERE id = ?", sid);
        cr_assert_eq(sessions_refresh(db, &policy, t.refresh_token, uid, rsid, &n), 0);
        long long after = scalar_text("SELECT expires_at FROM sessions WHERE id = ?", sid);
        cr_assert_gt(after, before);
}
