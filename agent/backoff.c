/* SPDX-License-Identifier: MIT */
#include "backoff.h"

#include <openssl/rand.h>

static double random_openssl(void *userdata)
{
        uint64_t v;
        if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
                return 0.5; /* no jitter rather than no backoff */
        return (double)(v >> 11) / (double)(UINT64_C(1) << 53);
}

void backoff_init(Backoff *b, BackoffRandom random, void *userdata)
{
        *b = (Backoff){
            .base_ms = BACKOFF_BASE_MS,
            .max_ms = BACKOFF_MAX_MS,
            .jitter = BACKOFF_JITTER,
            .random = random ? random : random_openssl,
            .userdata = userdata,
        };
}

uint64_t backoff_next(Backoff *b)
{
        uint64_t wait = b->base_ms;
        /* Doubling stops once the cap is reached, so the shift never overflows. */
        for (unsigned i = 0; i < b->attempt && wait < b->max_ms; i++)
                wait *= 2;
        if (wait > b->max_ms)
                wait = b->max_ms;
        if (b->attempt < 64)
                b->attempt++;

        double r = b->random(b->userdata);
        if (r < 0)
                r = 0;
        if (r >= 1)
                r = 0.999999;
        /* r in [0,1) maps to a factor in [1-jitter, 1+jitter). */
        double factor = 1.0 - b->jitter + 2.0 * b->jitter * r;
        uint64_t out = (uint64_t)((double)wait * factor + 0.5);
        return out > 0 ? out : 1;
}

void backoff_reset(Backoff *b)
{
        b->attempt = 0;
}
