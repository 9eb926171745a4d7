/* SPDX-License-Identifier: MIT */
#pragma once

/* Usage metering. An allocation accrues per whole second at its quoted
 * hourly_cost_micros from billing_started_at (the moment it became active)
 * until billing_ended_at (release requested, release failed, force release)
 * or, while it runs, until now. A timer charges every open meter in short
 * intervals (metering_interval_s) up to one instant, the watermark, and once
 * more at its end, in one SQLite transaction that also moves the watermark,
 * so a tick that is repeated or interrupted charges nothing twice.
 * Provisioning time and failed launches are never charged (their billing
 * never started); nothing after billing_stopped or billing_ended_at is
 * charged.
 *
 * What is charged is posted to the ledger per owner, not every tick: when one
 * of the owner's meters closes, once per billing_post_interval_s on a
 * schedule staggered by owner, and for every owner when the timer stops. In
 * between the balance is the posted one minus the usage metered since
 * (metering_unposted), computed exactly at read time, so every read sees
 * every charge while a tick writes a ledger leg for a fraction of the owners.
 *
 * After charging, each owner's runway (balance / burn rate) is compared with
 * the low_balance_runway_hours thresholds: crossing one emits
 * "billing.low_balance". An owner whose balance is used up (available balance
 * at zero with every hold spent, i.e. balance <= 0) gets
 * billing_grace_period_s, then the allocations still running are released
 * with reason insufficient_balance. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "timeutil.h"

typedef struct Db Db;
typedef struct Server Server;
typedef struct Metering Metering;

#define METERING_MAX_THRESHOLDS 8

typedef struct MeteringPolicy {
        usec_t grace;         /* billing_grace_period_s */
        usec_t post_interval; /* billing_post_interval_s; 0: post every owner every tick */
        bool post_all;        /* this tick posts every owner (the last one at stop) */
        int64_t thresholds_h[METERING_MAX_THRESHOLDS]; /* descending runway hours */
        size_t n_thresholds;
} MeteringPolicy;

/* Parses "24,1" (positive integers, strictly descending). */
int metering_parse_thresholds(const char *s, MeteringPolicy *p);

typedef struct MeteringTick {
        size_t meters;          /* open meters looked at */
        size_t charges;         /* meters charged something (metered) */
        size_t closed;          /* meters closed (billing ended) */
        int64_t charged_micros; /* total charged (metered) */
        size_t posted;          /* owners whose usage was posted to the ledger */
        int64_t posted_micros;  /* total posted */
        size_t events;          /* billing.low_balance events */
        usec_t read_usec, post_usec, record_usec, owners_usec, commit_usec; /* phases */
        char **release; /* allocations to release (insufficient_balance) */
        size_t n_release;
} MeteringTick;

void metering_tick_done(MeteringTick *t);

/* Charges every open meter up to now in one transaction of its own and
 * evaluates the owners' balances; the allocations to release are returned,
 * not released (the caller does that through the allocations code). */
int metering_run(Db *db, const MeteringPolicy *p, usec_t now, MeteringTick *ret);

/* floor(hourly * secs / 3600) without overflow: what secs whole seconds cost. */
int64_t metering_due(int64_t hourly, int64_t secs);

/* The user's usage per allocation and bucket (bucket: an hour or a day, in
 * usec; from aligned to it) between from and to: fn is called per allocation
 * and bucket with usage, in allocation order then time order. */
typedef int (*MeteringUsageFn)(const char *allocation_id, usec_t bucket_start,
                               int64_t amount_micros, int64_t seconds, void *userdata);
int metering_usage(Db *db, const char *user_id, usec_t from, usec_t to, usec_t bucket,
                   MeteringUsageFn fn, void *userdata);

/* Whether the user ever launched an allocation (any state). */
int metering_user_had_allocation(Db *db, const char *user_id, bool *ret);

/* The user's usage charged (metered up to the watermark) and not yet posted
 * to the ledger, and how much metered usage lies within the uncaptured part
 * of pending holds (that much the holds no longer reserve). One range of the
 * open-meter index: the user's open meters, and their holds. */
int metering_unposted(Db *db, const char *user_id, int64_t *ret_unposted, int64_t *ret_on_holds);

/* Sum of hourly_cost_micros of the user's allocations being charged now. */
int metering_burn_rate(Db *db, const char *user_id, int64_t *ret);

/* The timer on the server's loop (metering_interval_s); a tick also runs
 * once at start, and metering_stop() runs a last one that posts every
 * owner's usage, so a stopped controller leaves the ledger current. */
int metering_start(Server *s, Metering **ret);
void metering_stop(Metering *m);
/* Releases one allocation whose owner ran out of funds (reason
 * insufficient_balance) through the allocations code. */
int metering_release(Server *s, const char *allocation_id);

/* Runs a tick now (tests, shutdown). */
int metering_tick_now(Metering *m);
