/* SPDX-License-Identifier: MIT */
#include "sessions.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/sha.h>

#include "db.h"
#include "http.h"
#include "log.h"
#include "timeutil.h"

void sessions_token_hash(const char *token, unsigned char out[SHA256_DIGEST_LENGTH])
{
        SHA256((const unsigned char *)token, strlen(token), out);
}

static int new_token(const char *prefix, char out[TOKEN_MAX])
{
        size_t pl = strlen(prefix);
        memcpy(out, prefix, pl);
        return random_token(32, out + pl, TOKEN_MAX - pl);
}

static int insert_token(Db *db, const char *sql, const char *token, const char *session_id,
                        usec_t expires_at)
{
        unsigned char h[SHA256_DIGEST_LENGTH];
        sessions_token_hash(token, h);
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(db, sql);
        if (!s)
                return -EIO;
        sqlite3_bind_blob(s, 1, h, sizeof(h), SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, session_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)expires_at);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int issue_pair(Db *db, const SessionPolicy *p, const char *session_id, TokenPair *ret)
{
        usec_t now = now_usec();
        int r = new_token(ACCESS_TOKEN_PREFIX, ret->access_token);
        if (r < 0)
                return r;
        r = new_token(REFRESH_TOKEN_PREFIX, ret->refresh_token);
        if (r < 0)
                return r;
        r = insert_token(db,
                         "INSERT INTO access_tokens (token_hash, session_id, expires_at) "
                         "VALUES (?, ?, ?)",
                         ret->access_token, session_id,
                         now + (usec_t)p->access_ttl_s * USEC_PER_SEC);
        if (r < 0)
                return r;
        r = insert_token(db,
                         "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) "
                         "VALUES (?, ?, ?)",
                         ret->refresh_token, session_id,
                         now + (usec_t)p->refresh_ttl_s * USEC_PER_SEC);
        if (r < 0)
                return r;
        ret->expires_in = p->access_ttl_s;
        return 0;
}

int sessions_create(Db *db, const SessionPolicy *p, const char *user_id, const char *client_addr,
                    char session_id[static ID_MAX], TokenPair *ret)
{
        int r = id_new("ses", session_id);
        if (r < 0)
                return r;
        usec_t now = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO sessions (id, user_id, created_at, expires_at, "
                        "client_addr) VALUES (?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, session_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)(now + (usec_t)p->refresh_ttl_s * USEC_PER_SEC));
        db_bind_text(s, 5, client_addr);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return issue_pair(db, p, session_id, ret);
}

int sessions_authenticate(Db *db, const char *access_token, Auth *ret)
{
        unsigned char h[SHA256_DIGEST_LENGTH];

        if (!startswith(access_token, ACCESS_TOKEN_PREFIX))
                return -ENOENT;
        sessions_token_hash(access_token, h);
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT a.expires_at, s.id, s.revoked_at, s.expires_at, u.id, u.roles "
                        "FROM access_tokens a JOIN sessions s ON s.id = a.session_id "
                        "JOIN users u ON u.id = s.user_id WHERE a.token_hash = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_blob(s, 1, h, sizeof(h), SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        usec_t now = now_usec();
        if ((usec_t)sqlite3_column_int64(s, 0) <= now)
                return -EKEYEXPIRED;
        if (sqlite3_column_type(s, 2) != SQLITE_NULL || (usec_t)sqlite3_column_int64(s, 3) <= now)
                return -EKEYREVOKED;
        *ret = (Auth){.authenticated = true,
                      .roles = (unsigned)sqlite3_column_int(s, 5),
                      .expires_at = (usec_t)sqlite3_column_int64(s, 0)};
        snprintf(ret->session_id, sizeof(ret->session_id), "%s", db_column_text(s, 1));
        snprintf(ret->user_id, sizeof(ret->user_id), "%s", db_column_text(s, 4));
        return 0;
}

int sessions_revoke(Db *db, const char *session_id, const char *reason)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE sessions SET revoked_at = ?, revoke_reason = ? "
                        "WHERE id = ? AND revoked_at IS NULL");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 2, reason, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, session_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        /* The token rows are not needed any more: drop them so they cannot be looked up. */
        _cleanup_(db_stmt_resetp) sqlite3_stmt *d =
            db_stmt(db, "DELETE FROM access_tokens WHERE session_id = ?");
        if (!d)
                return -EIO;
        sqlite3_bind_text(d, 1, session_id, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(d);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int sessions_revoke_user(Db *db, const char *user_id, const char *reason)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT id FROM sessions WHERE user_id = ? AND revoked_at IS NULL");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, user_id, -1, SQLITE_TRANSIENT);
        /* Collect first: revoking while stepping the same table's cursor is fragile. */
        char ids[256][ID_MAX];
        size_t n = 0;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < ELEMENTSOF(ids))
                snprintf(ids[n++], ID_MAX, "%s", db_column_text(s, 0));
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return db_errno(rc);
        sqlite3_reset(s);
        for (size_t i = 0; i < n; i++) {
                int r = sessions_revoke(db, ids[i], reason);
                if (r < 0)
                        return r;
        }
        /* More than 256 live sessions: go round again until none is left. */
        return n == ELEMENTSOF(ids) ? sessions_revoke_user(db, user_id, reason) : 0;
}

int sessions_refresh(Db *db, const SessionPolicy *p, const char *refresh_token,
                     char user_id[static ID_MAX], char session_id[static ID_MAX], TokenPair *ret)
{
        unsigned char h[SHA256_DIGEST_LENGTH];
        _cleanup_txn_ DbTxn txn = {0};
        int r;

        if (!startswith(refresh_token, REFRESH_TOKEN_PREFIX))
                return -ENOENT;
        sessions_token_hash(refresh_token, h);
        r = db_begin(db, &txn);
        if (r < 0)
                return r;

        usec_t now = now_usec();
        usec_t expires_at, spent_at;
        bool revoked;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT r.expires_at, r.spent_at, s.id, s.revoked_at, "
                                "s.user_id FROM refresh_tokens r JOIN sessions s "
                                "ON s.id = r.session_id WHERE r.token_hash = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_blob(s, 1, h, sizeof(h), SQLITE_TRANSIENT);
                int rc = sqlite3_step(s);
                if (rc == SQLITE_DONE)
                        return -ENOENT;
                if (rc != SQLITE_ROW)
                        return db_errno(rc);
                expires_at = (usec_t)sqlite3_column_int64(s, 0);
                spent_at = sqlite3_column_type(s, 1) == SQLITE_NULL
                               ? 0
                               : (usec_t)sqlite3_column_int64(s, 1);
                snprintf(session_id, ID_MAX, "%s", db_column_text(s, 2));
                revoked = sqlite3_column_type(s, 3) != SQLITE_NULL;
                snprintf(user_id, ID_MAX, "%s", db_column_text(s, 4));
        }
        if (revoked)
                return -EKEYREVOKED;
        if (spent_at != 0) {
                /* Replay of a spent token: someone else holds this family. */
                r = sessions_revoke(db, session_id, "refresh_token_reused");
                if (r < 0)
                        return r;
                r = db_commit(&txn);
                return r < 0 ? r : -EALREADY;
        }
        if (expires_at <= now)
                return -EKEYEXPIRED;

        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *u =
                    db_stmt(db, "UPDATE refresh_tokens SET spent_at = ? WHERE token_hash = ?");
                if (!u)
                        return -EIO;
                sqlite3_bind_int64(u, 1, (sqlite3_int64)now);
                sqlite3_bind_blob(u, 2, h, sizeof(h), SQLITE_TRANSIENT);
                int rc = sqlite3_step(u);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        {
                /* An active session slides: each refresh extends it by the refresh TTL. */
                _cleanup_(db_stmt_resetp) sqlite3_stmt *e =
                    db_stmt(db, "UPDATE sessions SET expires_at = ? WHERE id = ?");
                if (!e)
                        return -EIO;
                sqlite3_bind_int64(e, 1,
                                   (sqlite3_int64)(now + (usec_t)p->refresh_ttl_s * USEC_PER_SEC));
                sqlite3_bind_text(e, 2, session_id, -1, SQLITE_TRANSIENT);
                int rc = sqlite3_step(e);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        r = issue_pair(db, p, session_id, ret);
        if (r < 0)
                return r;
        return db_commit(&txn);
}
