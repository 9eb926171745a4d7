/* SPDX-License-Identifier: MIT */
#pragma once

/* A small direct-mapped cache of resolved access tokens, so an authenticated
 * request does not pay a database round trip (and its file locks) just to
 * learn who is calling. Entries live at most SESSION_CACHE_TTL_USEC and never
 * past the token's own expiry. Revocations made by this process (logout,
 * refresh-token reuse) evict at once; a change made by another process on the
 * same database (create-admin resetting a password) is seen within the TTL. */

#include <stdbool.h>

#include "http.h"
#include "timeutil.h"

#define SESSION_CACHE_SLOTS     16384
#define SESSION_CACHE_TTL_USEC  (5 * USEC_PER_SEC)
#define SESSION_TOKEN_HASH_SIZE 32

typedef struct SessionCache SessionCache;

int session_cache_new(SessionCache **ret);
void session_cache_free(SessionCache *c);

bool session_cache_lookup(SessionCache *c, const unsigned char hash[SESSION_TOKEN_HASH_SIZE],
                          usec_t now_wall, usec_t now_mono, Auth *ret);
void session_cache_insert(SessionCache *c, const unsigned char hash[SESSION_TOKEN_HASH_SIZE],
                          const Auth *auth, usec_t now_mono);
void session_cache_evict_session(SessionCache *c, const char *session_id);
void session_cache_evict_user(SessionCache *c, const char *user_id);
