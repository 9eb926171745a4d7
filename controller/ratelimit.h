/* SPDX-License-Identifier: MIT */
#pragma once

/* Token buckets keyed by a string (an account, a client address, a session).
 * Memory is bounded: when the table is full, the least recently touched of a
 * few sampled buckets is evicted (a full bucket loses nothing by eviction). */

#include <stdbool.h>
#include <stddef.h>

#include "timeutil.h"

typedef struct RateLimiter RateLimiter;

/* capacity: burst size; refill_per_sec: sustained rate. */
int ratelimiter_new(double capacity, double refill_per_sec, size_t max_keys, RateLimiter **ret);
void ratelimiter_free(RateLimiter *rl);

/* True when key has at least one token now. Otherwise false and
 * *retry_after_s (if given) is the whole seconds until it has one. */
bool ratelimit_peek(RateLimiter *rl, const char *key, usec_t now_mono, unsigned *retry_after_s);
/* Takes one token when there is one (true); never goes below zero. */
bool ratelimit_take(RateLimiter *rl, const char *key, usec_t now_mono, unsigned *retry_after_s);
/* Gives back one token taken earlier (an attempt charged up front that turned
 * out fine); never above capacity, and nothing for an unknown key. */
void ratelimit_refund(RateLimiter *rl, const char *key);
/* Forgets a key (e.g. after a successful login). */
void ratelimit_reset(RateLimiter *rl, const char *key);
size_t ratelimit_size(const RateLimiter *rl);
