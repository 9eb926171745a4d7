/* SPDX-License-Identifier: MIT */
#include "session-cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct Entry {
        unsigned char hash[SESSION_TOKEN_HASH_SIZE];
        usec_t until_mono; /* 0: empty */
        Auth auth;
} Entry;

struct SessionCache {
        Entry slots[SESSION_CACHE_SLOTS];
};

int session_cache_new(SessionCache **ret)
{
        SessionCache *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *ret = c;
        return 0;
}

void session_cache_free(SessionCache *c)
{
        free(c);
}

static Entry *slot_for(SessionCache *c, const unsigned char *hash)
{
        /* The hash is SHA-256 of a random token: its first bytes are uniform. */
        size_t i;
        memcpy(&i, hash, sizeof(i));
        return &c->slots[i % SESSION_CACHE_SLOTS];
}

bool session_cache_lookup(SessionCache *c, const unsigned char hash[SESSION_TOKEN_HASH_SIZE],
                          usec_t now_wall, usec_t now_mono, Auth *ret)
{
        Entry *e = slot_for(c, hash);
        if (e->until_mono == 0 || memcmp(e->hash, hash, SESSION_TOKEN_HASH_SIZE) != 0)
                return false;
        if (now_mono >= e->until_mono || now_wall >= e->auth.expires_at) {
                e->until_mono = 0;
                return false;
        }
        *ret = e->auth;
        return true;
}

void session_cache_insert(SessionCache *c, const unsigned char hash[SESSION_TOKEN_HASH_SIZE],
                          const Auth *auth, usec_t now_mono)
{
        Entry *e = slot_for(c, hash);
        memcpy(e->hash, hash, SESSION_TOKEN_HASH_SIZE);
        e->auth = *auth;
        e->until_mono = now_mono + SESSION_CACHE_TTL_USEC;
}

void session_cache_evict_session(SessionCache *c, const char *session_id)
{
        for (size_t i = 0; i < SESSION_CACHE_SLOTS; i++)
                if (c->slots[i].until_mono != 0 && streq(c->slots[i].auth.session_id, session_id))
                        c->slots[i].until_mono = 0;
}

void session_cache_evict_user(SessionCache *c, const char *user_id)
{
        for (size_t i = 0; i < SESSION_CACHE_SLOTS; i++)
                if (c->slots[i].until_mono != 0 && streq(c->slots[i].auth.user_id, user_id))
                        c->slots[i].until_mono = 0;
}
