/* SPDX-License-Identifier: MIT */
/* ratelimit.c: token buckets driven by a clock the test owns. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>

#include "ratelimit.h"

#define SEC(x) ((usec_t)(x)*USEC_PER_SEC)

/* A fake monotonic clock: the limiter only ever sees the "now" it is given. */
static const usec_t T0 = SEC(1000);

TestSuite(ratelimit, .timeout = 30);

Test(ratelimit, bad_parameters_are_refused)
{
        RateLimiter *rl = NULL;
        cr_assert_eq(ratelimiter_new(0, 1, 10, &rl), -EINVAL);
        cr_assert_eq(ratelimiter_new(5, 0, 10, &rl), -EINVAL);
        cr_assert_eq(ratelimiter_new(5, 1, 0, &rl), -EINVAL);
        cr_assert_null(rl);
}

Test(ratelimit, burst_of_capacity_then_refused)
{
        RateLimiter *rl = NULL;
        cr_assert_eq(ratelimiter_new(5, 5.0 / 300, 100, &rl), 0);
        for (int i = 0; i < 5; i++) {
                cr_assert(ratelimit_peek(rl, "acct:a", T0, NULL), "peek %d", i);
                cr_assert(ratelimit_take(rl, "acct:a", T0, NULL), "take %d", i);
        }
        unsigned retry = 0;
        cr_assert_not(ratelimit_peek(rl, "acct:a", T0, &retry));
        cr_assert_eq(retry, 60, "one token per 60 s");
        retry = 0;
        cr_assert_not(ratelimit_take(rl, "acct:a", T0, &retry));
        cr_assert_eq(retry, 60);
        /* another key is untouched */
        cr_assert(ratelimit_peek(rl, "acct:b", T0, NULL));
        ratelimiter_free(rl);
}

Test(ratelimit, peek_does_not_consume)
{
        RateLimiter *rl = NULL;
        cr_assert_eq(ratelimiter_new(1, 1, 10, &rl), 0);
        for (int i = 0; i < 10; i++)
                cr_assert(ratelimit_peek(rl, "k", T0, NULL));
        cr_assert(ratelimit_take(rl, "k", T0, NULL));
        cr_assert_not(ratelimit_peek(rl, "k", T0, NULL));
        ratelimiter_free(rl);
}

Test(ratelimit, refill_follows_the_clock_and_caps_at_capacity)
{
        RateLimiter *rl = NULL;
        /* 3 tokens, one every 10 s */
        cr_assert_eq(ratelimiter_new(3, 0.1, 100, &rl), 0);
        for (int i = 0; i < 3; i++)
                cr_assert(ratelimit_take(rl, "k", T0, NULL));
        unsigned retry = 0;
        cr_assert_not(ratelimit_peek(rl, "k", T0, &retry));
        cr_assert_eq(retry, 10);

        /* 4 s later: 0.4 tokens, 6 s to go (rounded up to whole seconds) */
        cr_assert_not(ratelimit_peek(rl, "k", T0 + SEC(4), &retry));
        cr_assert_eq(retry, 6);
        /* 9.5 s later: still short, and Retry-After never says 0 */
        cr_assert_not(ratelimit_peek(rl, "k", T0 + SEC(9) + USEC_PER_SEC / 2, &retry));
        cr_assert_eq(retry, 1);
        /* 10 s later: exactly one token */
        cr_assert(ratelimit_take(rl, "k", T0 + SEC(10), NULL));
        cr_assert_not(ratelimit_peek(rl, "k", T0 + SEC(10), NULL));

        /* an hour later the bucket is full again, but no fuller than capacity */
        usec_t later = T0 + SEC(3600);
        for (int i = 0; i < 3; i++)
                cr_assert(ratelimit_take(rl, "k", later, NULL), "take %d", i);
        cr_assert_not(ratelimit_take(rl, "k", later, NULL));
        ratelimiter_free(rl);
}

Test(ratelimit, clock_going_backwards_adds_nothing)
{
        RateLimiter *rl = NULL;
        cr_assert_eq(ratelimiter_new(1, 1, 10, &rl), 0);
        cr_assert(ratelimit_take(rl, "k", T0, NULL));
        cr_assert_not(ratelimit_peek(rl, "k", T0 - SEC(100), NULL));
        cr_assert_not(ratelimit_peek(rl, "k", T0, NULL));
        ratelimiter_free(rl);
}

Test(ratelimit, reset_forgets_a_key)
{
        RateLimiter *rl = NULL;
        cr_assert_eq(ratelimiter_new(2, 0.001, 10, &rl), 0);
        cr_assert(ratelimit_take(rl, "k", T0, NULL));
        cr_assert(ratelimit_take(rl, "k", T0, NULL));
        cr_assert_not(ratelimit_peek(rl, "k", T0, NULL));
        cr_assert_eq(ratelimit_size(rl), 1);
        ratelimit_reset(rl, "k");
        cr_assert_eq(ratelimit_size(rl), 0);
        cr_assert(ratelimit_peek(rl, "k", T0, NULL), "a reset key starts full");
        ratelimit_reset(rl, "never-seen"); /* harmless */
        ratelimiter_free(rl);
}

Test(ratelimit, key_count_is_bounded)
{
        RateLimiter *rl = NULL;
        cr_assert_eq(ratelimiter_new(5, 1, 50, &rl), 0);
        char key[32];
        for (int i = 0; i < 5000; i++) {
                snprintf(key, sizeof(key), "addr:10.0.%d.%d", i / 256, i % 256);
                (void)ratelimit_take(rl, key, T0 + (usec_t)i, NULL);
                cr_assert_leq(ratelimit_size(rl), 50, "table grew past max_keys at %d", i);
        }
        cr_assert_eq(ratelimit_size(rl), 50);
        ratelimiter_free(rl);
}

Test(ratelimit, eviction_prefers_full_buckets_over_limited_ones)
{
        RateLimiter *rl = NULL;
        /* refill so slow that a drained bucket stays drained for the test */
        cr_assert_eq(ratelimiter_new(2, 1e-6, 8, &rl), 0);
        cr_assert(ratelimit_take(rl, "attacker", T0, NULL));
        cr_assert(ratelimit_take(rl, "attacker", T0, NULL));
        cr_assert_not(ratelimit_peek(rl, "attacker", T0, NULL));
        /* Churning through many fresh keys must not launder the attacker's
         * limit: the victims are full buckets, which lose nothing by eviction. */
        char key[32];
        for (int i = 0; i < 200; i++) {
                snprintf(key, sizeof(key), "churn-%d", i);
                cr_assert(ratelimit_peek(rl, key, T0 + (usec_t)i, NULL));
        }
        cr_assert_not(ratelimit_peek(rl, "attacker", T0 + SEC(1), NULL),
                      "the drained bucket was evicted");
        ratelimiter_free(rl);
}

Test(ratelimit, tombstones_do_not_exhaust_the_table)
{
        RateLimiter *rl = NULL;
        cr_assert_eq(ratelimiter_new(1, 1, 4, &rl), 0);
        char key[32];
        /* insert and reset far more keys than there are slots */
        for (int i = 0; i < 1000; i++) {
                snprintf(key, sizeof(key), "k%d", i);
                cr_assert(ratelimit_take(rl, key, T0, NULL));
                cr_assert_not(ratelimit_peek(rl, key, T0, NULL), "new key %d not tracked", i);
                ratelimit_reset(rl, key);
        }
        cr_assert_eq(ratelimit_size(rl), 0);
        ratelimiter_free(rl);
}

Test(ratelimit, refund_gives_one_token_back_up_to_capacity)
{
        RateLimiter *rl = NULL;
        cr_assert_eq(ratelimiter_new(2, 1e-6, 10, &rl), 0);
        cr_assert(ratelimit_take(rl, "k", T0, NULL));
        cr_assert(ratelimit_take(rl, "k", T0, NULL));
        cr_assert_not(ratelimit_peek(rl, "k", T0, NULL));
        ratelimit_refund(rl, "k");
        cr_assert(ratelimit_take(rl, "k", T0, NULL), "the refunded token is usable");
        cr_assert_not(ratelimit_peek(rl, "k", T0, NULL));
        /* refunds never lift a bucket above capacity */
        for (int i = 0; i < 10; i++)
                ratelimit_refund(rl, "k");
        cr_assert(ratelimit_take(rl, "k", T0, NULL));
        cr_assert(ratelimit_take(rl, "k", T0, NULL));
        cr_assert_not(ratelimit_take(rl, "k", T0, NULL));
        /* an unknown key is not created by a refund */
        size_t n = ratelimit_size(rl);
        ratelimit_refund(rl, "unknown");
        cr_assert_eq(ratelimit_size(rl), n);
        ratelimiter_free(rl);
}
