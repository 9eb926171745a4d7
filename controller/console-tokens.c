/* SPDX-License-Identifier: MIT */
#include "console-tokens.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/sha.h>

#include "macro.h"

static void token_hash(const char *token, unsigned char out[static SHA256_DIGEST_LENGTH])
{
        SHA256((const unsigned char *)token, strlen(token), out);
}

int terminal_token_create(Db *db, const char *user_id, const char *allocation_id, unsigned ttl_s,
                          char token[static TERMINAL_TOKEN_MAX], usec_t *ret_expires_at)
{
        char rnd[48];
        int r = random_token(32, rnd, sizeof(rnd));
        if (r < 0)
                return r;
        snprintf(token, TERMINAL_TOKEN_MAX, TERMINAL_TOKEN_PREFIX "%s", rnd);
        unsigned char h[SHA256_DIGEST_LENGTH];
        token_hash(token, h);
        usec_t now = now_usec(), expires = now + (usec_t)ttl_s * USEC_PER_SEC;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO terminal_tokens (token_hash, user_id, allocation_id, "
                        "created_at, expires_at) VALUES (?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_blob(s, 1, h, sizeof(h), SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, allocation_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)expires);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE) {
                explicit_bzero(token, TERMINAL_TOKEN_MAX);
                return db_errno(rc);
        }
        if (ret_expires_at)
                *ret_expires_at = expires;
        return 0;
}

/* Why a token could not be spent. */
static int classify(Db *db, const unsigned char *h, usec_t now)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT expires_at, used_at FROM terminal_tokens WHERE token_hash = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_blob(s, 1, h, SHA256_DIGEST_LENGTH, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        if (sqlite3_column_type(s, 1) != SQLITE_NULL)
                return -EALREADY;
        if ((usec_t)sqlite3_column_int64(s, 0) <= now)
                return -EKEYEXPIRED;
        return -EIO; /* spendable after all: the update failed for another reason */
}

int terminal_token_redeem(Db *db, const char *token, usec_t now, char user_id[static ID_MAX],
                          char allocation_id[static ID_MAX])
{
        if (!token || !startswith(token, TERMINAL_TOKEN_PREFIX) ||
            strlen(token) >= TERMINAL_TOKEN_MAX)
                return -ENOENT;
        unsigned char h[SHA256_DIGEST_LENGTH];
        token_hash(token, h);
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db, "UPDATE terminal_tokens SET used_at = ? WHERE token_hash = ? AND used_at "
                        "IS NULL AND expires_at > ? RETURNING user_id, allocation_id");
                if (!s)
                        return -EIO;
                sqlite3_bind_int64(s, 1, (sqlite3_int64)now);
                sqlite3_bind_blob(s, 2, h, sizeof(h), SQLITE_TRANSIENT);
                sqlite3_bind_int64(s, 3, (sqlite3_int64)now);
                int rc = sqlite3_step(s);
                if (rc == SQLITE_ROW) {
                        snprintf(user_id, ID_MAX, "%s", strempty(db_column_text(s, 0)));
                        snprintf(allocation_id, ID_MAX, "%s", strempty(db_column_text(s, 1)));
                        /* Step to the end so the change is complete before the reset. */
                        rc = sqlite3_step(s);
                        return rc == SQLITE_DONE ? 0 : db_errno(rc);
                }
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        return classify(db, h, now);
}

int terminal_tokens_prune(Db *db, usec_t before)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "DELETE FROM terminal_tokens WHERE expires_at < ?");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)before);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? (int)sqlite3_changes(db_handle(db)) : db_errno(rc);
}
