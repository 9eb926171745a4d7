/* SPDX-License-Identifier: MIT */
#include "oidc-store.h"

#include <errno.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "macro.h"

void oidc_state_done(OidcState *s)
{
        free(s->provider);
        free(s->nonce);
        if (s->code_verifier) {
                explicit_bzero(s->code_verifier, strlen(s->code_verifier));
                free(s->code_verifier);
        }
        free(s->redirect_uri);
        *s = (OidcState){0};
}

void oidc_hash(const char *s, unsigned char out[static OIDC_HASH_LEN])
{
        SHA256((const unsigned char *)s, strlen(s), out);
}

int oidc_state_insert(Db *db, const char *state, const char *binder, const char *provider,
                      const char *nonce, const char *code_verifier, const char *redirect_uri,
                      usec_t expires_at)
{
        unsigned char sh[OIDC_HASH_LEN], bh[OIDC_HASH_LEN];
        oidc_hash(state, sh);
        oidc_hash(binder, bh);
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "INSERT INTO oidc_states (state_hash, binder_hash, provider, nonce, code_verifier, "
                "redirect_uri, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_blob(s, 1, sh, sizeof(sh), SQLITE_TRANSIENT);
        sqlite3_bind_blob(s, 2, bh, sizeof(bh), SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, provider, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 4, nonce, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 5, code_verifier, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 6, redirect_uri, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 7, (sqlite3_int64)now_usec());
        sqlite3_bind_int64(s, 8, (sqlite3_int64)expires_at);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int oidc_state_get(Db *db, const char *state, OidcState *ret)
{
        unsigned char sh[OIDC_HASH_LEN];
        oidc_hash(state, sh);
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT binder_hash, provider, nonce, code_verifier, redirect_uri, "
                        "expires_at, used_at FROM oidc_states WHERE state_hash = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_blob(s, 1, sh, sizeof(sh), SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        *ret = (OidcState){0};
        if (sqlite3_column_bytes(s, 0) == OIDC_HASH_LEN)
                memcpy(ret->binder_hash, sqlite3_column_blob(s, 0), OIDC_HASH_LEN);
        ret->provider = strdup(db_column_text(s, 1));
        ret->nonce = strdup(db_column_text(s, 2));
        ret->code_verifier = strdup(db_column_text(s, 3));
        ret->redirect_uri = strdup(db_column_text(s, 4));
        ret->expires_at = (usec_t)sqlite3_column_int64(s, 5);
        ret->used_at = (usec_t)sqlite3_column_int64(s, 6);
        if (!ret->provider || !ret->nonce || !ret->code_verifier || !ret->redirect_uri) {
                oidc_state_done(ret);
                return -ENOMEM;
        }
        return 0;
}

int oidc_state_consume(Db *db, const char *state)
{
        unsigned char sh[OIDC_HASH_LEN];
        oidc_hash(state, sh);
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "UPDATE oidc_states SET used_at = ? WHERE state_hash = ? AND used_at IS NULL");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)now_usec());
        sqlite3_bind_blob(s, 2, sh, sizeof(sh), SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return sqlite3_changes(db_handle(db)) == 1 ? 0 : -EALREADY;
}

int oidc_states_prune(Db *db, usec_t now)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "DELETE FROM oidc_states WHERE expires_at < ?");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)(now - 86400 * USEC_PER_SEC));
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int user_identity_find(Db *db, const char *issuer, const char *subject, char user_id[static ID_MAX])
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT user_id FROM user_identities WHERE issuer = ? AND subject = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, issuer, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, subject, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        snprintf(user_id, ID_MAX, "%s", db_column_text(s, 0));
        return 0;
}

int user_identity_insert(Db *db, const char *issuer, const char *subject, const char *user_id,
                         const char *email)
{
        usec_t now = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO user_identities (issuer, subject, user_id, email, "
                        "created_at, last_login_at) VALUES (?, ?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, issuer, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, subject, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, user_id, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 4, email);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 6, (sqlite3_int64)now);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int user_identity_touch(Db *db, const char *issuer, const char *subject)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "UPDATE user_identities SET last_login_at = ? WHERE issuer = ? AND subject = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 2, issuer, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, subject, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}
