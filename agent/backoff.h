/* SPDX-License-Identifier: MIT */
#pragma once

/* Jittered exponential backoff for redialing the controller: the n-th wait is
 * base * 2^n capped at max, then moved by up to ±jitter of itself, so a fleet
 * of agents that lost the controller together does not redial in lockstep.
 * The random source is injected so tests can pin the jitter. */

#include <stdint.h>

/* Returns a uniformly distributed double in [0, 1). */
typedef double (*BackoffRandom)(void *userdata);

typedef struct Backoff {
        uint64_t base_ms, max_ms;
        double jitter; /* 0.25: ±25 % */
        unsigned attempt;
        BackoffRandom random;
        void *userdata;
} Backoff;

#define BACKOFF_BASE_MS 500
#define BACKOFF_MAX_MS  30000
#define BACKOFF_JITTER  0.25

/* The link's defaults (0.5 s doubling to 30 s, ±25 %); random NULL uses
 * OpenSSL's generator. */
void backoff_init(Backoff *b, BackoffRandom random, void *userdata);
/* The wait before the next attempt, in milliseconds; counts the attempt. */
uint64_t backoff_next(Backoff *b);
/* After a successful welcome: the next failure waits base again. */
void backoff_reset(Backoff *b);
