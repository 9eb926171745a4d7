/* SPDX-License-Identifier: MIT */
/* Redial backoff: 0.5 s doubling to 30 s, ±25 % jitter, reset after a welcome. */

#include <criterion/criterion.h>

#include "backoff.h"

static double fixed(void *userdata)
{
        return *(double *)userdata;
}

Test(backoff, doubles_from_half_a_second_to_thirty_seconds_without_jitter, .timeout = 10)
{
        double mid = 0.5; /* the middle of [1-j, 1+j): no jitter */
        Backoff b;
        backoff_init(&b, fixed, &mid);
        const uint64_t want[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
                cr_expect_eq(backoff_next(&b), want[i], "attempt %zu", i);
}

Test(backoff, jitter_stays_within_a_quarter_either_side, .timeout = 10)
{
        double lo = 0.0, hi = 0.9999999;
        Backoff b;
        backoff_init(&b, fixed, &lo);
        cr_expect_eq(backoff_next(&b), 375); /* 500 * 0.75 */
        backoff_init(&b, fixed, &hi);
        uint64_t v = backoff_next(&b);
        cr_expect(v >= 624 && v <= 625, "got %llu", (unsigned long long)v); /* 500 * 1.25 */
        for (int i = 0; i < 20; i++)
                v = backoff_next(&b);
        cr_expect(v <= 37500 && v >= 37499, "the cap is jittered too: %llu", (unsigned long long)v);
}

Test(backoff, real_random_source_spreads_and_respects_bounds, .timeout = 10)
{
        Backoff b;
        uint64_t min = UINT64_MAX, max = 0;
        for (int i = 0; i < 200; i++) {
                backoff_init(&b, NULL, NULL);
                uint64_t v = backoff_next(&b);
                cr_assert(v >= 375 && v <= 625, "first wait %llu outside 500 ±25 %%",
                          (unsigned long long)v);
                min = v < min ? v : min;
                max = v > max ? v : max;
        }
        cr_expect(max - min > 50, "200 draws should spread (min %llu, max %llu)",
                  (unsigned long long)min, (unsigned long long)max);
}

Test(backoff, reset_after_welcome_starts_again_at_base, .timeout = 10)
{
        double mid = 0.5;
        Backoff b;
        backoff_init(&b, fixed, &mid);
        for (int i = 0; i < 10; i++)
                backoff_next(&b);
        cr_expect_eq(backoff_next(&b), 30000);
        backoff_reset(&b);
        cr_expect_eq(backoff_next(&b), 500);
        cr_expect_eq(backoff_next(&b), 1000);
}

Test(backoff, many_attempts_never_overflow, .timeout = 10)
{
        double mid = 0.5;
        Backoff b;
        backoff_init(&b, fixed, &mid);
        for (int i = 0; i < 100000; i++)
                cr_assert_eq(backoff_next(&b) <= 30000, true);
}
