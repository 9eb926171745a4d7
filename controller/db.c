/* SPDX-License-Identifier: MIT */
#include "db.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Prepared statements cached by SQL text in an open-addressing hash table
 * that doubles when half full: lookups stay O(1) however many statements the
 * modules own, and the cache keeps its own copy of the text, so a caller may
 * pass any string. */
typedef struct CachedStmt {
        char *sql; /* owned copy; NULL marks an empty bucket */
        size_t len;
        uint64_t hash;
        sqlite3_stmt *stmt;
} CachedStmt;

struct Db {
        sqlite3 *handle;
        char *path;
        CachedStmt *cache; /* n_buckets entries, a power of two */
        size_t n_buckets;
        size_t n_cached;
        int schema_version;
};

static uint64_t sql_hash(const char *sql, size_t len)
{
        uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)sql[i]) * 0x100000001b3ULL;
        return h;
}

static CachedStmt *cache_slot(CachedStmt *buckets, size_t n_buckets, const char *sql, size_t len,
                              uint64_t hash)
{
        for (size_t i = hash & (n_buckets - 1);; i = (i + 1) & (n_buckets - 1)) {
                CachedStmt *c = &buckets[i];
                if (!c->sql || (c->hash == hash && c->len == len && memcmp(c->sql, sql, len) == 0))
                        return c;
        }
}

static int cache_grow(Db *db)
{
        size_t n = db->n_buckets ? db->n_buckets * 2 : 256;
        CachedStmt *b = calloc(n, sizeof(*b));
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < db->n_buckets; i++) {
                CachedStmt *c = &db->cache[i];
                if (c->sql)
                        *cache_slot(b, n, c->sql, c->len, c->hash) = *c;
        }
        free(db->cache);
        db->cache = b;
        db->n_buckets = n;
        return 0;
}

int db_errno(int rc)
{
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_DONE:
        case SQLITE_ROW:
                return 0;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_READONLY:
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        default:
                return -EIO;
        }
}

int db_exec(Db *db, const char *sql)
{
        char *msg = NULL;
        int rc = sqlite3_exec(db->handle, sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
                log_error("sqlite exec failed | rc=%d error=\"%s\"", rc, msg ? msg : "?");
                sqlite3_free(msg);
                return db_errno(rc);
        }
        return 0;
}

sqlite3 *db_handle(Db *db)
{
        return db->handle;
}

int db_schema_version(Db *db)
{
        return db->schema_version;
}

static int read_schema_version(Db *db, int *ret)
{
        sqlite3_stmt *s = NULL;
        int rc = sqlite3_prepare_v2(db->handle, "PRAGMA user_version", -1, &s, NULL);
        if (rc != SQLITE_OK)
                return db_errno(rc);
        rc = sqlite3_step(s);
        int v = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
        sqlite3_finalize(s);
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        *ret = v;
        return 0;
}

static int migrate(Db *db)
{
        int current = 0, r;
        int latest = db_n_migrations > 0 ? db_migrations[db_n_migrations - 1].version : 0;

        r = read_schema_version(db, &current);
        if (r < 0)
                return log_error_errno(r, "cannot read schema version | path=%s", db->path);
        if (current > latest)
                return log_error_errno(-EPROTO,
                                       "database schema is newer than this binary; upgrade "
                                       "gpuslice-controller | path=%s schema=%d supported=%d",
                                       db->path, current, latest);

        for (size_t i = 0; i < db_n_migrations; i++) {
                const Migration *m = &db_migrations[i];
                if (m->version <= current)
                        continue;
                char pragma[64];
                r = db_exec(db, "BEGIN IMMEDIATE");
                if (r < 0)
                        return r;
                r = db_exec(db, m->sql);
                if (r >= 0) {
                        snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", m->version);
                        r = db_exec(db, pragma);
                }
                if (r >= 0)
                        r = db_exec(db, "COMMIT");
                if (r < 0) {
                        (void)db_exec(db, "ROLLBACK");
                        return log_error_errno(r, "migration failed | version=%d name=%s",
                                               m->version, m->name);
                }
                log_info("applied migration | version=%d name=%s", m->version, m->name);
                current = m->version;
        }
        db->schema_version = current;
        return 0;
}

int db_open(const char *path, Db **ret)
{
        Db *db = calloc(1, sizeof(*db));
        int rc, r;

        if (!db)
                return -ENOMEM;
        db->path = strdup(path);
        if (!db->path) {
                free(db);
                return -ENOMEM;
        }
        /* One connection, used only from the event loop thread. */
        rc =
            sqlite3_open_v2(path, &db->handle,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                r = log_error_errno(db_errno(rc), "cannot open database | path=%s error=\"%s\"",
                                    path, db->handle ? sqlite3_errmsg(db->handle) : "?");
                db_close(db);
                return r;
        }
        sqlite3_extended_result_codes(db->handle, 1);
        sqlite3_busy_timeout(db->handle, 5000);

        /* WAL with synchronous=FULL: every COMMIT is on disk before we answer. */
        r = db_exec(db, "PRAGMA journal_mode = WAL");
        if (r >= 0)
                r = db_exec(db, "PRAGMA synchronous = FULL");
        if (r >= 0)
                r = db_exec(db, "PRAGMA foreign_keys = ON");
        /* Savepoint sub-journals in memory, not in a temp file: a launch batch
         * runs each launch in a savepoint of its own (provisioner.c), and a
         * file costs a write per page each one touches (60 % more launches
         * per second in bench/alloc). */
        if (r >= 0)
                r = db_exec(db, "PRAGMA temp_store = MEMORY");
        if (r >= 0)
                r = migrate(db);
        if (r < 0) {
                db_close(db);
                return r;
        }
        *ret = db;
        return 0;
}

void db_close(Db *db)
{
        if (!db)
                return;
        for (size_t i = 0; i < db->n_buckets; i++)
                if (db->cache[i].sql) {
                        sqlite3_finalize(db->cache[i].stmt);
                        free(db->cache[i].sql);
                }
        free(db->cache);
        if (db->handle) {
                /* Folds the WAL back into the main file so a backup of the .db alone is whole. */
                (void)sqlite3_wal_checkpoint_v2(db->handle, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL,
                                                NULL);
                int rc = sqlite3_close(db->handle);
                if (rc != SQLITE_OK)
                        log_warning("sqlite close failed | rc=%d", rc);
        }
        free(db->path);
        free(db);
}

sqlite3_stmt *db_stmt(Db *db, const char *sql)
{
        size_t len = strlen(sql);
        uint64_t hash = sql_hash(sql, len);
        if (db->n_buckets > 0) {
                CachedStmt *c = cache_slot(db->cache, db->n_buckets, sql, len, hash);
                if (c->sql) {
                        sqlite3_reset(c->stmt);
                        sqlite3_clear_bindings(c->stmt);
                        return c->stmt;
                }
        }
        if ((db->n_cached + 1) * 2 > db->n_buckets && cache_grow(db) < 0) {
                log_oom();
                return NULL;
        }
        _cleanup_free_ char *copy = strndup(sql, len);
        if (!copy) {
                log_oom();
                return NULL;
        }
        sqlite3_stmt *s = NULL;
        int rc = sqlite3_prepare_v3(db->handle, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &s, NULL);
        if (rc != SQLITE_OK) {
                log_error("cannot prepare statement | error=\"%s\" sql=\"%s\"",
                          sqlite3_errmsg(db->handle), sql);
                return NULL;
        }
        *cache_slot(db->cache, db->n_buckets, sql, len, hash) =
            (CachedStmt){.sql = TAKE_PTR(copy), .len = len, .hash = hash, .stmt = s};
        db->n_cached++;
        return s;
}

int db_begin(Db *db, DbTxn *txn)
{
        *txn = (DbTxn){.db = db, .open = false};
        sqlite3_stmt *s = db_stmt(db, "BEGIN IMMEDIATE");
        if (!s)
                return -EIO;
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
                return log_error_errno(db_errno(rc), "BEGIN failed | error=\"%s\"",
                                       sqlite3_errmsg(db->handle));
        txn->open = true;
        return 0;
}

int db_commit(DbTxn *txn)
{
        sqlite3_stmt *s = db_stmt(txn->db, "COMMIT");
        if (!s)
                return -EIO;
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) {
                int r = log_error_errno(db_errno(rc), "COMMIT failed | error=\"%s\"",
                                        sqlite3_errmsg(txn->db->handle));
                db_rollback(txn);
                return r;
        }
        txn->open = false;
        return 0;
}

void db_rollback(DbTxn *txn)
{
        if (!txn->open)
                return;
        txn->open = false;
        /* Not cached: ROLLBACK must work even when the cache or the connection is unhappy. */
        if (sqlite3_get_autocommit(txn->db->handle))
                return;
        (void)sqlite3_exec(txn->db->handle, "ROLLBACK", NULL, NULL, NULL);
}

int db_bind_text(sqlite3_stmt *s, int idx, const char *text)
{
        int rc = text ? sqlite3_bind_text(s, idx, text, -1, SQLITE_TRANSIENT)
                      : sqlite3_bind_null(s, idx);
        return rc == SQLITE_OK ? 0 : db_errno(rc);
}

const char *db_column_text(sqlite3_stmt *s, int col)
{
        return (const char *)sqlite3_column_text(s, col);
}
