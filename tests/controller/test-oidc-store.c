/* SPDX-License-Identifier: MIT */
/* oidc-store.c: a sign-in state is kept only as its SHA-256, bound to the
 * hash of the browser binder, usable once, and pruned a day after it expires;
 * an (issuer, subject) pair links to exactly one user. */
#include <criterion/criterion.h>
#include <errno.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "harness.h"
#include "oidc-store.h"
#include "users.h"

static char *dir;
static Db *db;

static void setup(void)
{
        _cleanup_free_ char *path = NULL;
        dir = tmpdir_new("oidc-store");
        cr_assert(asprintf(&path, "%s/gpuslice.db", dir) > 0);
        cr_assert_eq(db_open(path, &db), 0);
}

static void teardown(void)
{
        db_close(db);
        tmpdir_remove(dir);
        free(dir);
}

TestSuite(oidc_store, .init = setup, .fini = teardown, .timeout = 30);

static long long scalar(const char *sql)
{
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db), sql, -1, &s, NULL), SQLITE_OK, "%s", sql);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s", sql);
        long long v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
}

static void insert_state(const char *state, const char *binder, usec_t expires_at)
{
        cr_assert_eq(oidc_state_insert(db, state, binder, "default", "nonce-1", "verifier-1",
                                       "https://app.example/cb", expires_at),
                     0);
}

static void make_user(const char *email, char id[static ID_MAX])
{
        User u = {0};
        cr_assert_eq(users_insert(db, email, "Someone", NULL, ROLE_USER, &u), 0);
        snprintf(id, ID_MAX, "%s", u.id);
        user_done(&u);
}

Test(oidc_store, hash_is_sha256_of_the_text)
{
        unsigned char got[OIDC_HASH_LEN], want[SHA256_DIGEST_LENGTH];
        oidc_hash("abc", got);
        SHA256((const unsigned char *)"abc", 3, want);
        cr_assert_arr_eq(got, want, OIDC_HASH_LEN);
        /* The FIPS 180-2 test vector, so a swapped digest is caught too. */
        cr_assert_eq(got[0], 0xba);
        cr_assert_eq(got[31], 0xad);
}

Test(oidc_store, inserted_state_reads_back_with_everything_it_was_given)
{
        usec_t expires = now_usec() + 600 * USEC_PER_SEC;
        insert_state("state-abc", "binder-xyz", expires);

        OidcState st = {0};
        cr_assert_eq(oidc_state_get(db, "state-abc", &st), 0);
        cr_assert_str_eq(st.provider, "default");
        cr_assert_str_eq(st.nonce, "nonce-1");
        cr_assert_str_eq(st.code_verifier, "verifier-1");
        cr_assert_str_eq(st.redirect_uri, "https://app.example/cb");
        cr_assert_eq(st.expires_at, expires);
        cr_assert_eq(st.used_at, 0, "a fresh state is not used");
        oidc_state_done(&st);
        cr_assert_null(st.provider, "oidc_state_done leaves the struct zeroed");
}

Test(oidc_store, state_and_binder_are_stored_only_as_hashes)
{
        insert_state("plain-state-7f3a", "plain-binder-91c2", now_usec() + USEC_PER_SEC);

        unsigned char sh[OIDC_HASH_LEN], bh[OIDC_HASH_LEN];
        oidc_hash("plain-state-7f3a", sh);
        oidc_hash("plain-binder-91c2", bh);
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db), "SELECT * FROM oidc_states", -1, &s, NULL),
                     SQLITE_OK);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        bool saw_state_hash = false, saw_binder_hash = false;
        for (int i = 0; i < sqlite3_column_count(s); i++) {
                const void *blob = sqlite3_column_blob(s, i);
                int n = sqlite3_column_bytes(s, i);
                if (n == OIDC_HASH_LEN && memcmp(blob, sh, n) == 0)
                        saw_state_hash = true;
                if (n == OIDC_HASH_LEN && memcmp(blob, bh, n) == 0)
                        saw_binder_hash = true;
                if (blob && n > 0) {
                        cr_assert_null(memmem(blob, n, "plain-state", 11),
                                       "column %s holds the state in clear",
                                       sqlite3_column_name(s, i));
                        cr_assert_null(memmem(blob, n, "plain-binder", 12),
                                       "column %s holds the binder in clear",
                                       sqlite3_column_name(s, i));
                }
        }
        cr_assert_eq(sqlite3_step(s), SQLITE_DONE, "one insert, one row");
        sqlite3_finalize(s);
        cr_assert(saw_state_hash, "the state's SHA-256 is the key");
        cr_assert(saw_binder_hash, "the binder's SHA-256 is stored");
}

Test(oidc_store, state_is_bound_to_the_binder_hash)
{
        insert_state("state-b", "the-browser-cookie", now_usec() + 60 * USEC_PER_SEC);
        OidcState st = {0};
        cr_assert_eq(oidc_state_get(db, "state-b", &st), 0);
        unsigned char mine[OIDC_HASH_LEN], other[OIDC_HASH_LEN];
        oidc_hash("the-browser-cookie", mine);
        oidc_hash("another-browser", other);
        cr_assert_arr_eq(st.binder_hash, mine, OIDC_HASH_LEN);
        cr_assert_arr_neq(st.binder_hash, other, OIDC_HASH_LEN);
        oidc_state_done(&st);
}

Test(oidc_store, unknown_state_is_enoent)
{
        insert_state("issued", "b", now_usec() + USEC_PER_SEC);
        OidcState st = {0};
        cr_assert_eq(oidc_state_get(db, "never-issued", &st), -ENOENT);
        cr_assert_eq(oidc_state_get(db, "issued ", &st), -ENOENT, "no near matches");
        cr_assert_null(st.provider);
}

Test(oidc_store, same_state_cannot_be_issued_twice)
{
        insert_state("dup", "b1", now_usec() + USEC_PER_SEC);
        cr_assert_eq(oidc_state_insert(db, "dup", "b2", "default", "n", "v", "https://x/cb",
                                       now_usec() + USEC_PER_SEC),
                     -EEXIST);
        OidcState st = {0};
        cr_assert_eq(oidc_state_get(db, "dup", &st), 0);
        unsigned char b1[OIDC_HASH_LEN];
        oidc_hash("b1", b1);
        cr_assert_arr_eq(st.binder_hash, b1, OIDC_HASH_LEN, "the first issue stands");
        oidc_state_done(&st);
}

Test(oidc_store, state_is_single_use)
{
        insert_state("once", "b", now_usec() + 60 * USEC_PER_SEC);
        usec_t before = now_usec();

        DbTxn txn = {0};
        cr_assert_eq(db_begin(db, &txn), 0);
        cr_assert_eq(oidc_state_consume(db, "once"), 0);
        cr_assert_eq(db_commit(&txn), 0);

        OidcState st = {0};
        cr_assert_eq(oidc_state_get(db, "once", &st), 0, "a used state is still found");
        cr_assert_geq(st.used_at, before, "used_at records when");
        cr_assert_leq(st.used_at, now_usec());
        oidc_state_done(&st);

        cr_assert_eq(db_begin(db, &txn), 0);
        cr_assert_eq(oidc_state_consume(db, "once"), -EALREADY, "a replay finds it spent");
        db_rollback(&txn);
        cr_assert_eq(oidc_state_consume(db, "once"), -EALREADY);
}

Test(oidc_store, consume_rolled_back_leaves_the_state_usable)
{
        insert_state("rb", "b", now_usec() + 60 * USEC_PER_SEC);
        DbTxn txn = {0};
        cr_assert_eq(db_begin(db, &txn), 0);
        cr_assert_eq(oidc_state_consume(db, "rb"), 0);
        db_rollback(&txn);
        OidcState st = {0};
        cr_assert_eq(oidc_state_get(db, "rb", &st), 0);
        cr_assert_eq(st.used_at, 0);
        oidc_state_done(&st);
        cr_assert_eq(oidc_state_consume(db, "rb"), 0);
}

Test(oidc_store, consuming_an_unknown_state_fails)
{
        cr_assert_lt(oidc_state_consume(db, "never-issued"), 0);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM oidc_states"), 0, "nothing created");
}

Test(oidc_store, expiry_is_returned_and_prune_keeps_recently_expired_a_day)
{
        usec_t now = now_usec();
        insert_state("live", "b", now + 600 * USEC_PER_SEC);
        insert_state("just-expired", "b", now - 60 * USEC_PER_SEC);
        insert_state("expired-23h", "b", now - 23 * 3600 * USEC_PER_SEC);
        insert_state("expired-25h", "b", now - 25 * 3600 * USEC_PER_SEC);

        OidcState st = {0};
        cr_assert_eq(oidc_state_get(db, "just-expired", &st), 0);
        cr_assert_lt(st.expires_at, now, "the caller sees that it expired");
        oidc_state_done(&st);

        cr_assert_eq(oidc_states_prune(db, now), 0);
        cr_assert_eq(oidc_state_get(db, "expired-25h", &st), -ENOENT,
                     "expired more than a day ago: gone");
        const char *kept[] = {"live", "just-expired", "expired-23h"};
        for (size_t i = 0; i < ELEMENTSOF(kept); i++) {
                cr_assert_eq(oidc_state_get(db, kept[i], &st), 0,
                             "%s is kept (replays get a precise answer)", kept[i]);
                oidc_state_done(&st);
        }
        cr_assert_eq(scalar("SELECT COUNT(*) FROM oidc_states"), 3);
}

Test(oidc_store, identity_links_issuer_and_subject_to_a_user)
{
        char ada[ID_MAX], got[ID_MAX];
        make_user("ada@example.com", ada);
        cr_assert_eq(user_identity_find(db, "https://idp.example", "sub-1", got), -ENOENT);
        cr_assert_eq(
            user_identity_insert(db, "https://idp.example", "sub-1", ada, "ada@example.com"), 0);
        cr_assert_eq(user_identity_find(db, "https://idp.example", "sub-1", got), 0);
        cr_assert_str_eq(got, ada);
        cr_assert_eq(user_identity_find(db, "https://idp.example", "sub-2", got), -ENOENT);
        cr_assert_eq(user_identity_find(db, "https://other.example", "sub-1", got), -ENOENT,
                     "a subject means nothing under another issuer");
        cr_assert_eq(user_identity_find(db, "https://idp.example", "SUB-1", got), -ENOENT,
                     "subjects are compared exactly");
}

Test(oidc_store, identity_is_unique_per_issuer_and_subject)
{
        char ada[ID_MAX], bob[ID_MAX], got[ID_MAX];
        make_user("ada@example.com", ada);
        make_user("bob@example.com", bob);
        cr_assert_eq(user_identity_insert(db, "https://idp.example", "sub-1", ada, NULL), 0);
        cr_assert_eq(user_identity_insert(db, "https://idp.example", "sub-1", bob, NULL), -EEXIST);
        cr_assert_eq(user_identity_insert(db, "https://idp.example", "sub-1", ada, NULL), -EEXIST);
        cr_assert_eq(user_identity_find(db, "https://idp.example", "sub-1", got), 0);
        cr_assert_str_eq(got, ada, "the first link stands");

        /* The same subject at another issuer is another identity, and one user
         * may hold several. */
        cr_assert_eq(user_identity_insert(db, "https://other.example", "sub-1", bob, NULL), 0);
        cr_assert_eq(user_identity_insert(db, "https://idp.example", "sub-9", ada, NULL), 0);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM user_identities"), 3);
}

Test(oidc_store, identity_needs_an_existing_user)
{
        cr_assert_lt(user_identity_insert(db, "https://idp.example", "sub-1", "usr_missing", NULL),
                     0);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM user_identities"), 0);
}

Test(oidc_store, touch_moves_last_login_only)
{
        char ada[ID_MAX];
        make_user("ada@example.com", ada);
        cr_assert_eq(
            user_identity_insert(db, "https://idp.example", "sub-1", ada, "ada@example.com"), 0);
        cr_assert_eq(user_identity_insert(db, "https://idp.example", "sub-2", ada, NULL), 0);
        cr_assert_eq(db_exec(db, "UPDATE user_identities SET last_login_at = 1"), 0);

        usec_t before = now_usec();
        cr_assert_eq(user_identity_touch(db, "https://idp.example", "sub-1"), 0);
        cr_assert_geq(scalar("SELECT last_login_at FROM user_identities WHERE subject = 'sub-1'"),
                      (long long)before);
        cr_assert_eq(scalar("SELECT last_login_at FROM user_identities WHERE subject = 'sub-2'"), 1,
                     "another identity is untouched");
        cr_assert_eq(scalar("SELECT COUNT(*) FROM user_identities WHERE subject = 'sub-1' AND "
                            "email = 'ada@example.com' AND created_at <= last_login_at"),
                     1);
}
