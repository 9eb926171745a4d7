/* SPDX-License-Identifier: MIT */
#pragma once

/* The controller's SQLite store: one connection owned by the event loop,
 * WAL mode with synchronous=FULL (an answered write survives kill -9 and power
 * loss), numbered migrations applied at start, prepared statements cached per
 * SQL text, and transactions with a cleanup attribute that rolls back. */

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

typedef struct Db Db;

typedef struct Migration {
        int version;
        const char *name;
        const char *sql;
} Migration;

/* The numbered migrations (migrations.c), in ascending version order. */
extern const Migration db_migrations[];
extern const size_t db_n_migrations;

/* Opens (creating) the database file, sets WAL and the pragmas, and applies
 * pending migrations. Refuses (-EPROTO) a database whose schema is newer than
 * this binary knows. */
int db_open(const char *path, Db **ret);
void db_close(Db *db);
DEFINE_TRIVIAL_CLEANUP_FUNC(Db *, db_close);

sqlite3 *db_handle(Db *db);
int db_schema_version(Db *db);

/* Returns a cached prepared statement for sql (compared by content), reset and
 * with bindings cleared. NULL on error (logged). Use with
 * _cleanup_(db_stmt_resetp) so it is reset when the scope ends. */
sqlite3_stmt *db_stmt(Db *db, const char *sql);
static inline void db_stmt_resetp(sqlite3_stmt **s)
{
        if (*s) {
                sqlite3_reset(*s);
                sqlite3_clear_bindings(*s);
        }
}

/* Transactions: BEGIN IMMEDIATE so a writer never upgrades from a read lock. */
typedef struct DbTxn {
        Db *db;
        bool open;
} DbTxn;
int db_begin(Db *db, DbTxn *txn);
int db_commit(DbTxn *txn);
void db_rollback(DbTxn *txn);
static inline void db_txn_cleanup(DbTxn *txn)
{
        if (txn->open)
                db_rollback(txn);
}
#define _cleanup_txn_ _cleanup_(db_txn_cleanup)

/* Runs a statement without results (DDL, PRAGMA). */
int db_exec(Db *db, const char *sql);

/* Maps SQLite result codes to -errno: SQLITE_CONSTRAINT -> -EEXIST,
 * SQLITE_BUSY -> -EBUSY, SQLITE_FULL -> -ENOSPC, others -> -EIO. */
int db_errno(int sqlite_rc);

/* Binding helpers that treat NULL as SQL NULL. */
int db_bind_text(sqlite3_stmt *s, int idx, const char *text);
const char *db_column_text(sqlite3_stmt *s, int col);
