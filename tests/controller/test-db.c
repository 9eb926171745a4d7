/* SPDX-License-Identifier: MIT */
/* db.c: migrations, schema version guard, WAL, statement cache, transactions. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "harness.h"

static char *dir;
static char *path;

static void setup(void)
{
        dir = tmpdir_new("db");
        cr_assert(asprintf(&path, "%s/gpuslice.db", dir) > 0);
}

static void teardown(void)
{
        tmpdir_remove(dir);
        free(dir);
        free(path);
}

static long long scalar(Db *db, const char *sql)
{
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db), sql, -1, &s, NULL), SQLITE_OK, "%s", sql);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s", sql);
        long long v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
}

static const char *text(Db *db, const char *sql, char *buf, size_t size)
{
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db), sql, -1, &s, NULL), SQLITE_OK);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        snprintf(buf, size, "%s", (const char *)sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
        return buf;
}

static int latest_version(void)
{
        return db_migrations[db_n_migrations - 1].version;
}

TestSuite(db, .init = setup, .fini = teardown, .timeout = 30);

Test(db, migrations_are_numbered_ascending)
{
        cr_assert_gt(db_n_migrations, 0);
        for (size_t i = 0; i < db_n_migrations; i++) {
                cr_assert_eq(db_migrations[i].version, (int)i + 1,
                             "migration %zu has version %d: versions must be 1, 2, 3...", i,
                             db_migrations[i].version);
                cr_assert(db_migrations[i].name && db_migrations[i].sql);
        }
}

Test(db, fresh_database_gets_every_migration)
{
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        cr_assert_eq(db_schema_version(db), latest_version());
        cr_assert_eq(scalar(db, "PRAGMA user_version"), latest_version());
        const char *tables[] = {"users", "sessions", "access_tokens", "refresh_tokens",
                                "audit_logs"};
        for (size_t i = 0; i < ELEMENTSOF(tables); i++) {
                char sql[128];
                snprintf(sql, sizeof(sql),
                         "SELECT COUNT(*) FROM sqlite_schema WHERE type='table' AND name='%s'",
                         tables[i]);
                cr_assert_eq(scalar(db, sql), 1, "table %s missing", tables[i]);
        }
        db_close(db);
}

Test(db, reopening_applies_nothing_twice)
{
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        cr_assert_eq(db_exec(db, "INSERT INTO users (id, email, name, created_at, updated_at) "
                                 "VALUES ('usr_a', 'a@b.io', 'A', 1, 1)"),
                     0);
        db_close(db);
        cr_assert_eq(db_open(path, &db), 0);
        cr_assert_eq(db_schema_version(db), latest_version());
        cr_assert_eq(scalar(db, "SELECT COUNT(*) FROM users"), 1);
        db_close(db);
}

Test(db, wal_synchronous_full_and_foreign_keys)
{
        Db *db = NULL;
        char buf[32];
        cr_assert_eq(db_open(path, &db), 0);
        cr_assert_str_eq(text(db, "PRAGMA journal_mode", buf, sizeof(buf)), "wal");
        cr_assert_eq(scalar(db, "PRAGMA synchronous"), 2, "synchronous must be FULL");
        cr_assert_eq(scalar(db, "PRAGMA foreign_keys"), 1);
        /* foreign keys are enforced: a session for no user is refused */
        cr_assert_eq(db_exec(db, "INSERT INTO sessions (id, user_id, created_at, expires_at) "
                                 "VALUES ('ses_x', 'usr_nobody', 1, 2)"),
                     -EEXIST);
        db_close(db);
}

Test(db, newer_schema_is_refused_and_left_alone)
{
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", latest_version() + 1);
        cr_assert_eq(db_exec(db, sql), 0);
        db_close(db);

        db = NULL;
        cr_assert_eq(db_open(path, &db), -EPROTO);
        cr_assert_null(db);

        /* the file still says what it said: nothing was migrated down */
        sqlite3 *raw = NULL;
        cr_assert_eq(sqlite3_open_v2(path, &raw, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_stmt *s = NULL;
        sqlite3_prepare_v2(raw, "PRAGMA user_version", -1, &s, NULL);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        cr_assert_eq(sqlite3_column_int(s, 0), latest_version() + 1);
        sqlite3_finalize(s);
        sqlite3_close(raw);
}

Test(db, not_a_database_is_an_error)
{
        cr_assert_eq(write_file(path, "this is not a sqlite database, just text that is long "
                                      "enough to fill a header and then some more bytes\n"),
                     0);
        Db *db = NULL;
        cr_assert_lt(db_open(path, &db), 0);
}

static int insert_row(Db *db, const char *id)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO users (id, email, name, created_at, updated_at) "
                        "VALUES (?, ?, 'N', 1, 1)");
        cr_assert(s);
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        char email[64];
        snprintf(email, sizeof(email), "%s@example.com", id);
        sqlite3_bind_text(s, 2, email, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

Test(db, transaction_left_open_rolls_back_at_scope_end)
{
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        {
                _cleanup_txn_ DbTxn txn = {0};
                cr_assert_eq(db_begin(db, &txn), 0);
                cr_assert_eq(insert_row(db, "usr_rolled_back"), 0);
                cr_assert_eq(scalar(db, "SELECT COUNT(*) FROM users"), 1);
                /* leaves scope without commit: an error path */
        }
        cr_assert_eq(scalar(db, "SELECT COUNT(*) FROM users"), 0);
        cr_assert(sqlite3_get_autocommit(db_handle(db)), "transaction still open");
        {
                _cleanup_txn_ DbTxn txn = {0};
                cr_assert_eq(db_begin(db, &txn), 0);
                cr_assert_eq(insert_row(db, "usr_kept"), 0);
                cr_assert_eq(db_commit(&txn), 0);
                cr_assert_not(txn.open);
        }
        cr_assert_eq(scalar(db, "SELECT COUNT(*) FROM users"), 1);
        db_close(db);

        /* committed means on disk: a new connection sees it */
        cr_assert_eq(db_open(path, &db), 0);
        cr_assert_eq(scalar(db, "SELECT COUNT(*) FROM users WHERE id = 'usr_kept'"), 1);
        db_close(db);
}

Test(db, constraint_violation_maps_to_eexist)
{
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        cr_assert_eq(insert_row(db, "usr_one"), 0);
        cr_assert_eq(insert_row(db, "usr_one"), -EEXIST);
        db_close(db);
}

Test(db, statement_cache_returns_the_same_reset_statement)
{
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        static const char sql[] = "SELECT ?";
        sqlite3_stmt *a = db_stmt(db, sql);
        cr_assert(a);
        sqlite3_bind_int(a, 1, 42);
        cr_assert_eq(sqlite3_step(a), SQLITE_ROW);
        /* same text from another buffer: same statement, reset and unbound */
        char copy[16];
        snprintf(copy, sizeof(copy), "%s", sql);
        sqlite3_stmt *b = db_stmt(db, copy);
        cr_assert_eq(a, b);
        cr_assert_eq(sqlite3_step(b), SQLITE_ROW);
        cr_assert_eq(sqlite3_column_type(b, 0), SQLITE_NULL, "bindings were not cleared");
        sqlite3_reset(b);
        cr_assert_null(db_stmt(db, "SELECT FROM nowhere"), "bad SQL must give NULL");
        db_close(db);
}

Test(db, statement_cache_grows_past_hundreds_of_statements)
{
        /* The modules own well over 256 statements between them; every one
         * must stay cached, found again by its text, and keep its identity
         * while the table grows. */
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        enum { N = 1500 };
        static sqlite3_stmt *first[N];
        char sql[64];
        for (int i = 0; i < N; i++) {
                snprintf(sql, sizeof(sql), "SELECT %d + ?", i);
                first[i] = db_stmt(db, sql);
                cr_assert(first[i], "statement %d not prepared", i);
        }
        for (int i = 0; i < N; i++) {
                snprintf(sql, sizeof(sql), "SELECT %d + ?", i);
                sqlite3_stmt *again = db_stmt(db, sql);
                cr_assert_eq(again, first[i], "statement %d prepared twice", i);
                sqlite3_bind_int(again, 1, 1);
                cr_assert_eq(sqlite3_step(again), SQLITE_ROW);
                cr_assert_eq(sqlite3_column_int(again, 0), i + 1);
                sqlite3_reset(again);
        }
        db_close(db);
}

Test(db, errno_mapping)
{
        cr_assert_eq(db_errno(SQLITE_OK), 0);
        cr_assert_eq(db_errno(SQLITE_DONE), 0);
        cr_assert_eq(db_errno(SQLITE_CONSTRAINT_UNIQUE), -EEXIST);
        cr_assert_eq(db_errno(SQLITE_BUSY), -EBUSY);
        cr_assert_eq(db_errno(SQLITE_FULL), -ENOSPC);
        cr_assert_eq(db_errno(SQLITE_CORRUPT), -EBADMSG);
        cr_assert_eq(db_errno(SQLITE_IOERR_WRITE), -EIO);
}

Test(db, close_checkpoints_the_wal)
{
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        cr_assert_eq(insert_row(db, "usr_wal"), 0);
        db_close(db);
        /* After a clean close the WAL is folded back: the .db alone is whole. */
        char wal[4096];
        snprintf(wal, sizeof(wal), "%s-wal", path);
        FILE *f = fopen(wal, "r");
        if (f) {
                fseek(f, 0, SEEK_END);
                cr_assert_eq(ftell(f), 0, "WAL not truncated at close");
                fclose(f);
        }
}
