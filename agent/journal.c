/* SPDX-License-Identifier: MIT */
#include "journal.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include "inventory.h" /* strv_push, strv_free */
#include "log.h"
#include "timeutil.h"

struct Journal {
        sqlite3 *db;
        char *path;
        unsigned keep;
};

void journal_set_keep(Journal *j, unsigned keep)
{
        j->keep = keep;
}

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS commands ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  type TEXT NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('started', 'done')),"
    "  reply BLOB,"
    "  started_at_us INTEGER NOT NULL,"
    "  finished_at_us INTEGER"
    ");"
    "CREATE INDEX IF NOT EXISTS commands_finished ON commands (finished_at_us);"
    "CREATE TABLE IF NOT EXISTS assignments ("
    "  key TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL"
    ");";

static int sqlite_errno(int rc)
{
        switch (rc & 0xff) {
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_CANTOPEN:
        case SQLITE_PERM:
        case SQLITE_READONLY:
                return -EACCES;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        default:
                return -EIO;
        }
}

static int journal_fail(Journal *j, int rc, const char *what)
{
        return log_error_errno(sqlite_errno(rc), "Journal %s failed | path=%s sqlite=\"%s\"", what,
                               j->path, sqlite3_errmsg(j->db));
}

static void stmt_finalizep(sqlite3_stmt **s)
{
        if (*s)
                sqlite3_finalize(*s);
}
#define _cleanup_stmt_ _cleanup_(stmt_finalizep)

static int prepare(Journal *j, const char *sql, sqlite3_stmt **ret)
{
        int rc = sqlite3_prepare_v2(j->db, sql, -1, ret, NULL);
        if (rc != SQLITE_OK)
                return journal_fail(j, rc, "prepare");
        return 0;
}

void journal_close(Journal *j)
{
        if (!j)
                return;
        if (j->db)
                sqlite3_close(j->db);
        free(j->path);
        free(j);
}

int journal_open(const char *state_dir, Journal **ret)
{
        _cleanup_(journal_closep) Journal *j = calloc(1, sizeof(*j));
        if (!j)
                return log_oom();
        j->keep = JOURNAL_KEEP_DONE;
        if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Cannot create the state directory | path=%s: %m",
                                       state_dir);
        if (asprintf(&j->path, "%s/%s", state_dir, JOURNAL_FILE) < 0) {
                j->path = NULL;
                return log_oom();
        }
        int rc =
            sqlite3_open_v2(j->path, &j->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK)
                return journal_fail(j, rc, "open");
        sqlite3_busy_timeout(j->db, 5000);
        /* WAL with synchronous=FULL: a reply recorded is on disk before it is sent. */
        rc = sqlite3_exec(j->db,
                          "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                          "PRAGMA foreign_keys=ON;",
                          NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return journal_fail(j, rc, "setup");
        rc = sqlite3_exec(j->db, schema, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return journal_fail(j, rc, "schema");
        (void)chmod(j->path, 0600);
        *ret = TAKE_PTR(j);
        return 0;
}

int journal_lookup(Journal *j, const char *id, JournalState *ret_state, void **ret_reply,
                   size_t *ret_len)
{
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(j, "SELECT state, reply FROM commands WHERE id = ?", &s);
        if (r < 0)
                return r;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) {
                *ret_state = JOURNAL_NEW;
                if (ret_reply)
                        *ret_reply = NULL;
                if (ret_len)
                        *ret_len = 0;
                return 0;
        }
        if (rc != SQLITE_ROW)
                return journal_fail(j, rc, "lookup");
        const char *state = (const char *)sqlite3_column_text(s, 0);
        *ret_state = streq(state, "done") ? JOURNAL_DONE : JOURNAL_STARTED;
        if (ret_reply) {
                const void *blob = sqlite3_column_blob(s, 1);
                int n = sqlite3_column_bytes(s, 1);
                *ret_reply = NULL;
                if (blob && n > 0) {
                        *ret_reply = malloc(n);
                        if (!*ret_reply)
                                return log_oom();
                        memcpy(*ret_reply, blob, n);
                }
                if (ret_len)
                        *ret_len = blob ? (size_t)n : 0;
        }
        return 0;
}

int journal_begin(Journal *j, const char *id, const char *type, uint64_t epoch)
{
        JournalState st;
        int r = journal_lookup(j, id, &st, NULL, NULL);
        if (r < 0)
                return r;
        if (st == JOURNAL_DONE)
                return -EEXIST;
        if (st == JOURNAL_STARTED)
                return 0;
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        r = prepare(j,
                    "INSERT INTO commands (id, type, epoch, state, started_at_us) "
                    "VALUES (?, ?, ?, 'started', ?)",
                    &s);
        if (r < 0)
                return r;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, type, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)epoch);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return journal_fail(j, rc, "begin");
        return 0;
}

int journal_finish(Journal *j, const char *id, const void *reply, size_t len)
{
        int rc = sqlite3_exec(j->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return journal_fail(j, rc, "transaction");

        int r;
        {
                _cleanup_stmt_ sqlite3_stmt *s = NULL;
                r = prepare(j,
                            "UPDATE commands SET state = 'done', reply = ?, finished_at_us = ? "
                            "WHERE id = ?",
                            &s);
                if (r < 0)
                        goto rollback;
                sqlite3_bind_blob(s, 1, reply, (int)len, SQLITE_STATIC);
                sqlite3_bind_int64(s, 2, (sqlite3_int64)now_usec());
                sqlite3_bind_text(s, 3, id, -1, SQLITE_STATIC);
                rc = sqlite3_step(s);
                if (rc != SQLITE_DONE) {
                        r = journal_fail(j, rc, "finish");
                        goto rollback;
                }
                if (sqlite3_changes(j->db) != 1) {
                        r = log_error_errno(-ENOENT,
                                            "Journal finish of a command never begun | id=%s", id);
                        goto rollback;
                }
        }
        {
                /* Keep the journal small: the newest JOURNAL_KEEP_DONE done commands. */
                _cleanup_stmt_ sqlite3_stmt *s = NULL;
                r = prepare(j,
                            "DELETE FROM commands WHERE state = 'done' AND seq NOT IN ("
                            "  SELECT seq FROM commands WHERE state = 'done' "
                            "  ORDER BY finished_at_us DESC, seq DESC LIMIT ?)",
                            &s);
                if (r < 0)
                        goto rollback;
                sqlite3_bind_int(s, 1, (int)j->keep);
                rc = sqlite3_step(s);
                if (rc != SQLITE_DONE) {
                        r = journal_fail(j, rc, "prune");
                        goto rollback;
                }
        }
        rc = sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                r = journal_fail(j, rc, "commit");
                goto rollback;
        }
        return 0;

rollback:
        sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
}

int journal_applied(Journal *j, size_t max, char ***ret)
{
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(j,
                        "SELECT id FROM commands WHERE state = 'done' "
                        "ORDER BY finished_at_us DESC, seq DESC LIMIT ?",
                        &s);
        if (r < 0)
                return r;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)max);
        char **l = calloc(1, sizeof(char *));
        if (!l)
                return log_oom();
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
                if (strv_push(&l, (const char *)sqlite3_column_text(s, 0)) < 0) {
                        strv_free(l);
                        return log_oom();
                }
        if (rc != SQLITE_DONE) {
                strv_free(l);
                return journal_fail(j, rc, "list");
        }
        *ret = l;
        return 0;
}

int journal_set_assignment(Journal *j, const char *key, const char *value)
{
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(j,
                        value ? "INSERT INTO assignments (key, value) VALUES (?, ?) "
                                "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                              : "DELETE FROM assignments WHERE key = ?",
                        &s);
        if (r < 0)
                return r;
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        if (value)
                sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return journal_fail(j, rc, "assignment");
        return 0;
}

int journal_assignments(Journal *j, char ***ret)
{
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(j, "SELECT key, value FROM assignments ORDER BY key", &s);
        if (r < 0)
                return r;
        char **l = calloc(1, sizeof(char *));
        if (!l)
                return log_oom();
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
                if (strv_push(&l, (const char *)sqlite3_column_text(s, 0)) < 0 ||
                    strv_push(&l, (const char *)sqlite3_column_text(s, 1)) < 0) {
                        strv_free(l);
                        return log_oom();
                }
        if (rc != SQLITE_DONE) {
                strv_free(l);
                return journal_fail(j, rc, "assignments");
        }
        *ret = l;
        return 0;
}
