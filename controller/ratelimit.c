/* SPDX-License-Identifier: MIT */
#include "ratelimit.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

typedef struct Bucket {
        char *key; /* NULL: empty slot; TOMBSTONE: deleted */
        double tokens;
        usec_t updated;
} Bucket;

static char tombstone;
#define TOMBSTONE (&tombstone)

struct RateLimiter {
        double capacity, refill_per_sec;
        Bucket *slots;
        size_t n_slots, n_used, max_keys;
        uint64_t rng;
};

static uint64_t hash_key(const char *s)
{
        /* FNV-1a; keys are bounded strings and the table is private. */
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++) {
                h ^= (unsigned char)*s;
                h *= 1099511628211ULL;
        }
        return h;
}

int ratelimiter_new(double capacity, double refill_per_sec, size_t max_keys, RateLimiter **ret)
{
        if (capacity < 1 || refill_per_sec <= 0 || max_keys == 0)
                return -EINVAL;
        RateLimiter *rl = calloc(1, sizeof(*rl));
        if (!rl)
                return -ENOMEM;
        size_t n = 16;
        while (n < max_keys * 2)
                n *= 2;
        rl->slots = calloc(n, sizeof(Bucket));
        if (!rl->slots) {
                free(rl);
                return -ENOMEM;
        }
        rl->n_slots = n;
        rl->max_keys = max_keys;
        rl->capacity = capacity;
        rl->refill_per_sec = refill_per_sec;
        rl->rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)rl;
        *ret = rl;
        return 0;
}

void ratelimiter_free(RateLimiter *rl)
{
        if (!rl)
                return;
        for (size_t i = 0; i < rl->n_slots; i++)
                if (rl->slots[i].key && rl->slots[i].key != TOMBSTONE)
                        free(rl->slots[i].key);
        free(rl->slots);
        free(rl);
}

size_t ratelimit_size(const RateLimiter *rl)
{
        return rl->n_used;
}

static Bucket *find(RateLimiter *rl, const char *key, Bucket **ret_free)
{
        size_t mask = rl->n_slots - 1, i = hash_key(key) & mask;
        Bucket *first_free = NULL;
        for (size_t probe = 0; probe < rl->n_slots; probe++, i = (i + 1) & mask) {
                Bucket *b = &rl->slots[i];
                if (!b->key) {
                        if (!first_free)
                                first_free = b;
                        break;
                }
                if (b->key == TOMBSTONE) {
                        if (!first_free)
                                first_free = b;
                        continue;
                }
                if (streq(b->key, key))
                        return b;
        }
        if (ret_free)
                *ret_free = first_free;
        return NULL;
}

static void refill(RateLimiter *rl, Bucket *b, usec_t now)
{
        if (now > b->updated) {
                double add = (double)(now - b->updated) / USEC_PER_SEC * rl->refill_per_sec;
                b->tokens = MIN(rl->capacity, b->tokens + add);
                b->updated = now;
        }
}

static void evict_one(RateLimiter *rl, usec_t now)
{
        Bucket *victim = NULL;
        /* Sample occupied slots; prefer full buckets, then the stalest. */
        for (int tries = 0; tries < 64; tries++) {
                rl->rng ^= rl->rng << 13;
                rl->rng ^= rl->rng >> 7;
                rl->rng ^= rl->rng << 17;
                Bucket *b = &rl->slots[rl->rng & (rl->n_slots - 1)];
                if (!b->key || b->key == TOMBSTONE)
                        continue;
                refill(rl, b, now);
                if (!victim || b->tokens > victim->tokens ||
                    (b->tokens == victim->tokens && b->updated < victim->updated))
                        victim = b;
        }
        if (!victim)
                for (size_t i = 0; i < rl->n_slots && !victim; i++)
                        if (rl->slots[i].key && rl->slots[i].key != TOMBSTONE)
                                victim = &rl->slots[i];
        if (victim) {
                free(victim->key);
                victim->key = TOMBSTONE;
                rl->n_used--;
        }
}

static Bucket *get(RateLimiter *rl, const char *key, usec_t now)
{
        Bucket *free_slot = NULL;
        Bucket *b = find(rl, key, &free_slot);
        if (b) {
                refill(rl, b, now);
                return b;
        }
        if (rl->n_used >= rl->max_keys) {
                evict_one(rl, now);
                (void)find(rl, key, &free_slot);
        }
        if (!free_slot)
                return NULL;
        char *k = strdup(key);
        if (!k)
                return NULL;
        *free_slot = (Bucket){.key = k, .tokens = rl->capacity, .updated = now};
        rl->n_used++;
        return free_slot;
}

static unsigned retry_after(RateLimiter *rl, const Bucket *b)
{
        double need = 1.0 - b->tokens;
        double s = ceil(need / rl->refill_per_sec);
        return s < 1 ? 1 : (unsigned)s;
}

bool ratelimit_peek(RateLimiter *rl, const char *key, usec_t now, unsigned *retry_after_s)
{
        Bucket *b = get(rl, key, now);
        if (!b)
                return true; /* out of memory: fail open rather than lock everyone out */
        if (b->tokens >= 1.0)
                return true;
        if (retry_after_s)
                *retry_after_s = retry_after(rl, b);
        return false;
}

bool ratelimit_take(RateLimiter *rl, const char *key, usec_t now, unsigned *retry_after_s)
{
        Bucket *b = get(rl, key, now);
        if (!b)
                return true;
        if (b->tokens >= 1.0) {
                b->tokens -= 1.0;
                return true;
        }
        if (retry_after_s)
                *retry_after_s = retry_after(rl, b);
        return false;
}

void ratelimit_refund(RateLimiter *rl, const char *key)
{
        Bucket *b = find(rl, key, NULL);
        if (b)
                b->tokens = MIN(rl->capacity, b->tokens + 1.0);
}

void ratelimit_reset(RateLimiter *rl, const char *key)
{
        Bucket *b = find(rl, key, NULL);
        if (b) {
                free(b->key);
                b->key = TOMBSTONE;
                rl->n_used--;
        }
}
