/* SPDX-License-Identifier: MIT */
/* console-tokens.c: terminal tokens are random, stored hashed, bound to a
 * user and an allocation, single use and short-lived. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "console-tokens.h"
#include "db.h"
#include "harness.h"
#include "users.h"

static char *dir;
static Db *db;
static User alice;
static const char *ALLOC = "alc_AAAAAAAAAAAAAAAAAAAAAA";

static void exec_sql(const char *sql)
{
        char *err = NULL;
        cr_assert_eq(sqlite3_exec(db_handle(db), sql, NULL, NULL, &err), SQLITE_OK, "%s: %s", sql,
                     err);
}

static void setup(void)
{
        dir = tmpdir_new("console-tokens");
        _cleanup_free_ char *path = xasprintf("%s/gpuslice.db", dir);
        cr_assert_eq(db_open(path, &db), 0);
        cr_assert_eq(users_insert(db, "alice@example.com", "Alice", "$h", ROLE_USER, &alice), 0);
        _cleanup_free_ char *sql =
            xasprintf("INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, image_id, "
                      "network_id, hourly_cost_micros, created_at, updated_at) VALUES ('%s', '%s', "
                      "'active', 'sku_x', 1, 'img_x', 'net_x', 0, 1, 1)",
                      ALLOC, alice.id);
        exec_sql(sql);
}

static void teardown(void)
{
        user_done(&alice);
        db_close(db);
        db = NULL;
        tmpdir_remove(dir);
        free(dir);
}

TestSuite(console_tokens, .init = setup, .fini = teardown, .timeout = 30);

static long long count_rows(void)
{
        sqlite3_stmt *s = NULL;
        cr_assert_eq(
            sqlite3_prepare_v2(db_handle(db), "SELECT count(*) FROM terminal_tokens", -1, &s, NULL),
            SQLITE_OK);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        long long n = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return n;
}

Test(console_tokens, a_token_is_spent_once_and_names_its_user_and_allocation, .timeout = 30)
{
        char token[TERMINAL_TOKEN_MAX], user[ID_MAX], alloc[ID_MAX];
        usec_t expires, before = now_usec();
        cr_assert_eq(terminal_token_create(db, alice.id, ALLOC, 60, token, &expires), 0);
        cr_assert(startswith(token, TERMINAL_TOKEN_PREFIX), "%s", token);
        cr_assert_geq(expires, before + 60 * USEC_PER_SEC);
        cr_assert_leq(expires, now_usec() + 60 * USEC_PER_SEC);

        cr_assert_eq(terminal_token_redeem(db, token, now_usec(), user, alloc), 0);
        cr_assert_str_eq(user, alice.id);
        cr_assert_str_eq(alloc, ALLOC);
        cr_assert_eq(terminal_token_redeem(db, token, now_usec(), user, alloc), -EALREADY);
}

Test(console_tokens, an_expired_token_is_refused_and_stays_unspent, .timeout = 30)
{
        char token[TERMINAL_TOKEN_MAX], user[ID_MAX], alloc[ID_MAX];
        usec_t expires;
        cr_assert_eq(terminal_token_create(db, alice.id, ALLOC, 5, token, &expires), 0);
        cr_assert_eq(terminal_token_redeem(db, token, expires, user, alloc), -EKEYEXPIRED);
        cr_assert_eq(terminal_token_redeem(db, token, expires + USEC_PER_SEC, user, alloc),
                     -EKEYEXPIRED);
        /* Refused attempts did not spend it: within its minute it still works. */
        cr_assert_eq(terminal_token_redeem(db, token, expires - 1, user, alloc), 0);
}

Test(console_tokens, unknown_and_malformed_tokens_are_unknown, .timeout = 30)
{
        char token[TERMINAL_TOKEN_MAX], user[ID_MAX], alloc[ID_MAX];
        cr_assert_eq(terminal_token_create(db, alice.id, ALLOC, 60, token, NULL), 0);
        char other[TERMINAL_TOKEN_MAX];
        snprintf(other, sizeof(other), "%s", token);
        other[strlen(other) - 1] = other[strlen(other) - 1] == 'A' ? 'B' : 'A';
        cr_assert_eq(terminal_token_redeem(db, other, now_usec(), user, alloc), -ENOENT);
        cr_assert_eq(terminal_token_redeem(db, "", now_usec(), user, alloc), -ENOENT);
        cr_assert_eq(terminal_token_redeem(db, NULL, now_usec(), user, alloc), -ENOENT);
        cr_assert_eq(terminal_token_redeem(db, token + strlen(TERMINAL_TOKEN_PREFIX), now_usec(),
                                           user, alloc),
                     -ENOENT, "the bare random part is not the token");
        cr_assert_eq(terminal_token_redeem(db, token, now_usec(), user, alloc), 0);
}

Test(console_tokens, only_the_hash_is_stored, .timeout = 30)
{
        char token[TERMINAL_TOKEN_MAX];
        cr_assert_eq(terminal_token_create(db, alice.id, ALLOC, 60, token, NULL), 0);
        unsigned char h[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)token, strlen(token), h);
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db),
                                        "SELECT token_hash, user_id, allocation_id, used_at FROM "
                                        "terminal_tokens",
                                        -1, &s, NULL),
                     SQLITE_OK);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        cr_assert_eq(sqlite3_column_bytes(s, 0), SHA256_DIGEST_LENGTH);
        cr_assert_eq(memcmp(sqlite3_column_blob(s, 0), h, sizeof(h)), 0);
        cr_assert_str_eq((const char *)sqlite3_column_text(s, 1), alice.id);
        cr_assert_str_eq((const char *)sqlite3_column_text(s, 2), ALLOC);
        cr_assert_eq(sqlite3_column_type(s, 3), SQLITE_NULL);
        cr_assert_eq(sqlite3_step(s), SQLITE_DONE, "one row, no copy of the token elsewhere");
        sqlite3_finalize(s);
}

Test(console_tokens, tokens_are_distinct, .timeout = 30)
{
        char a[TERMINAL_TOKEN_MAX], b[TERMINAL_TOKEN_MAX];
        cr_assert_eq(terminal_token_create(db, alice.id, ALLOC, 60, a, NULL), 0);
        cr_assert_eq(terminal_token_create(db, alice.id, ALLOC, 60, b, NULL), 0);
        cr_assert_str_neq(a, b);
        cr_assert_geq(strlen(a), strlen(TERMINAL_TOKEN_PREFIX) + 43, "256 random bits: %s", a);
}

Test(console_tokens, a_token_needs_a_real_user_and_allocation, .timeout = 30)
{
        char token[TERMINAL_TOKEN_MAX];
        cr_assert_eq(
            terminal_token_create(db, alice.id, "alc_BBBBBBBBBBBBBBBBBBBBBB", 60, token, NULL),
            -EEXIST, "foreign key");
        cr_assert_eq(count_rows(), 0);
}

Test(console_tokens, prune_forgets_only_expired_tokens, .timeout = 30)
{
        char a[TERMINAL_TOKEN_MAX], b[TERMINAL_TOKEN_MAX], user[ID_MAX], alloc[ID_MAX];
        usec_t ea, eb;
        cr_assert_eq(terminal_token_create(db, alice.id, ALLOC, 1, a, &ea), 0);
        cr_assert_eq(terminal_token_create(db, alice.id, ALLOC, 60, b, &eb), 0);
        cr_assert_eq(terminal_tokens_prune(db, ea + 1), 1);
        cr_assert_eq(count_rows(), 1);
        cr_assert_eq(terminal_token_redeem(db, a, now_usec(), user, alloc), -ENOENT);
        cr_assert_eq(terminal_token_redeem(db, b, now_usec(), user, alloc), 0);
        cr_assert_eq(terminal_tokens_prune(db, ea + 1), 0);
}
