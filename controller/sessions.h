/* SPDX-License-Identifier: MIT */
#pragma once

/* Sign-in sessions and their tokens. A session is a refresh-token family:
 * every refresh spends the presented refresh token and issues a new pair;
 * presenting a spent one again means it was stolen or replayed, so the whole
 * family is revoked. Tokens are 256 random bits, handed out once and stored
 * only as SHA-256 hashes. */

#include <stdint.h>

#include "id.h"

typedef struct Db Db;
typedef struct Auth Auth;

#define ACCESS_TOKEN_PREFIX  "gsa_"
#define REFRESH_TOKEN_PREFIX "gsr_"
#define TOKEN_MAX            64

typedef struct SessionPolicy {
        int64_t access_ttl_s;
        int64_t refresh_ttl_s;
} SessionPolicy;

typedef struct TokenPair {
        char access_token[TOKEN_MAX];
        char refresh_token[TOKEN_MAX];
        int64_t expires_in;
} TokenPair;

/* Creates a session for user_id and its first token pair. Call inside a transaction. */
int sessions_create(Db *db, const SessionPolicy *p, const char *user_id, const char *client_addr,
                    char session_id[static ID_MAX], TokenPair *ret);

/* SHA-256 of a token, the form it is stored and looked up in. */
void sessions_token_hash(const char *token, unsigned char out[32]);

/* Resolves an access token: 0 and *ret filled, -ENOENT unknown, -EKEYEXPIRED
 * expired, -EKEYREVOKED when its session ended or was revoked by another
 * process. Revoking through sessions_revoke() deletes the session's access
 * tokens, so those answer -ENOENT afterwards (no row is kept for them). */
int sessions_authenticate(Db *db, const char *access_token, Auth *ret);

/* Rotates a refresh token inside its own transaction. 0 and a new pair;
 * -ENOENT unknown; -EKEYEXPIRED expired; -EKEYREVOKED session revoked;
 * -EALREADY when the token was already spent (the family is now revoked). */
int sessions_refresh(Db *db, const SessionPolicy *p, const char *refresh_token,
                     char user_id[static ID_MAX], char session_id[static ID_MAX], TokenPair *ret);

/* Revokes one session (all its tokens). Call inside a transaction. */
int sessions_revoke(Db *db, const char *session_id, const char *reason);
/* Revokes every live session of a user. Call inside a transaction. */
int sessions_revoke_user(Db *db, const char *user_id, const char *reason);
