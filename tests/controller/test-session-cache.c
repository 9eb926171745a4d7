/* SPDX-License-Identifier: MIT */
/* The resolved-token cache: hits within its TTL, never past the token's
 * expiry, and evictions by session and by user. */
#include <criterion/criterion.h>
#include <string.h>

#include "session-cache.h"

static void fill_hash(unsigned char h[SESSION_TOKEN_HASH_SIZE], unsigned char seed)
{
        for (int i = 0; i < SESSION_TOKEN_HASH_SIZE; i++)
                h[i] = (unsigned char)(seed * 31 + i);
}

static Auth make_auth(const char *user, const char *session, usec_t expires_at)
{
        Auth a = {.authenticated = true, .roles = ROLE_USER, .expires_at = expires_at};
        strcpy(a.user_id, user);
        strcpy(a.session_id, session);
        return a;
}

Test(session_cache, hit_returns_what_was_inserted, .timeout = 10)
{
        SessionCache *c;
        unsigned char h[32];
        Auth got, a = make_auth("usr_a", "ses_a", 1000 * USEC_PER_SEC);
        cr_assert_eq(session_cache_new(&c), 0);
        fill_hash(h, 1);
        cr_assert_not(session_cache_lookup(c, h, 1, 1, &got), "empty cache must miss");
        session_cache_insert(c, h, &a, 100);
        cr_assert(session_cache_lookup(c, h, 1, 100 + USEC_PER_SEC, &got));
        cr_assert_str_eq(got.user_id, "usr_a");
        cr_assert_str_eq(got.session_id, "ses_a");
        cr_assert_eq(got.roles, ROLE_USER);
        session_cache_free(c);
}

Test(session_cache, entries_expire_after_ttl_and_with_the_token, .timeout = 10)
{
        SessionCache *c;
        unsigned char h[32], h2[32];
        Auth got, a = make_auth("usr_a", "ses_a", 50 * USEC_PER_SEC);
        cr_assert_eq(session_cache_new(&c), 0);
        fill_hash(h, 2);
        session_cache_insert(c, h, &a, 0);
        cr_assert_not(session_cache_lookup(c, h, 1, SESSION_CACHE_TTL_USEC, &got),
                      "an entry must not outlive the cache TTL");
        fill_hash(h2, 3);
        session_cache_insert(c, h2, &a, 0);
        cr_assert_not(session_cache_lookup(c, h2, 50 * USEC_PER_SEC, 1, &got),
                      "an entry must not outlive its token");
        session_cache_free(c);
}

Test(session_cache, different_token_same_slot_misses, .timeout = 10)
{
        SessionCache *c;
        unsigned char h[32], other[32];
        Auth got, a = make_auth("usr_a", "ses_a", 1000 * USEC_PER_SEC);
        cr_assert_eq(session_cache_new(&c), 0);
        fill_hash(h, 4);
        memcpy(other, h, sizeof(other));
        other[31] ^= 0xff; /* same slot (first bytes), another token */
        session_cache_insert(c, h, &a, 0);
        cr_assert_not(session_cache_lookup(c, other, 1, 1, &got));
        session_cache_free(c);
}

Test(session_cache, evict_by_session_and_by_user, .timeout = 10)
{
        SessionCache *c;
        unsigned char h1[32], h2[32], h3[32];
        Auth got;
        Auth a1 = make_auth("usr_a", "ses_1", 1000 * USEC_PER_SEC);
        Auth a2 = make_auth("usr_a", "ses_2", 1000 * USEC_PER_SEC);
        Auth b = make_auth("usr_b", "ses_3", 1000 * USEC_PER_SEC);
        cr_assert_eq(session_cache_new(&c), 0);
        fill_hash(h1, 5);
        fill_hash(h2, 6);
        fill_hash(h3, 7);
        session_cache_insert(c, h1, &a1, 0);
        session_cache_insert(c, h2, &a2, 0);
        session_cache_insert(c, h3, &b, 0);

        session_cache_evict_session(c, "ses_1");
        cr_assert_not(session_cache_lookup(c, h1, 1, 1, &got));
        cr_assert(session_cache_lookup(c, h2, 1, 1, &got), "other sessions stay");

        session_cache_evict_user(c, "usr_a");
        cr_assert_not(session_cache_lookup(c, h2, 1, 1, &got));
        cr_assert(session_cache_lookup(c, h3, 1, 1, &got), "other users stay");
        session_cache_free(c);
}
