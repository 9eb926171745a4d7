/* SPDX-License-Identifier: MIT */
/* metering.c: per-second accrual charged in intervals and at the end, never
 * for provisioning, failed launches or after billing stopped; idempotent
 * ticks; low-balance thresholds; release after the grace period. Allocation
 * rows are written with SQL the way the allocations code leaves them. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "harness.h"
#include "ledger.h"
#include "metering.h"
#include "users.h"

#define SEC  1000000ULL
#define T0   (1800000000ULL * SEC) /* a fixed wall-clock origin */
#define RATE 3600000LL             /* 3.6 USD an hour: 1000 micro-USD a second */

static char *dir;
static Db *db;
static char alice[ID_MAX];
static MeteringPolicy policy;

static void exec(const char *sql)
{
        char *err = NULL;
        cr_assert_eq(sqlite3_exec(db_handle(db), sql, NULL, NULL, &err), SQLITE_OK, "%s: %s", sql,
                     err ? err : "");
}

static long long scalar(const char *sql)
{
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db), sql, -1, &s, NULL), SQLITE_OK, "%s", sql);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s", sql);
        long long v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
}

static void setup(void)
{
        dir = tmpdir_new("metering");
        char *path = xasprintf("%s/gpuslice.db", dir);
        cr_assert_eq(db_open(path, &db), 0);
        free(path);
        User u;
        cr_assert_eq(users_insert(db, "alice@example.com", "Alice", NULL, ROLE_USER, &u), 0);
        snprintf(alice, sizeof(alice), "%s", u.id);
        user_done(&u);
        policy = (MeteringPolicy){.grace = 300 * SEC};
        cr_assert_eq(metering_parse_thresholds("24,1", &policy), 0);
}

static void teardown(void)
{
        int64_t sum = -1, bad_accounts = -1, bad_txns = -1;
        cr_assert_eq(ledger_audit(db, &sum, &bad_accounts, &bad_txns), 0);
        cr_assert_eq(sum, 0, "ledger sum is %lld", (long long)sum);
        cr_assert_eq(bad_accounts, 0);
        cr_assert_eq(bad_txns, 0);
        db_close(db);
        tmpdir_remove(dir);
        free(dir);
}

TestSuite(metering, .init = setup, .fini = teardown, .timeout = 30);

static void grant(int64_t amount)
{
        LedgerPosting p = {.kind = LEDGER_KIND_GRANT, .user_id = alice};
        cr_assert_eq(ledger_credit_user(db, &p, LEDGER_GRANTS, amount, NULL), 0);
}

static int64_t balance(void)
{
        int64_t b;
        cr_assert_eq(ledger_balance_micros(db, alice, &b), 0);
        return b;
}

/* An allocation row as the allocations code writes it; started/ended 0 = NULL. */
static void allocation(const char *id, const char *state, int64_t rate, usec_t started,
                       usec_t ended, int stopped)
{
        char *st = started ? xasprintf("%llu", (unsigned long long)started) : strdup("NULL");
        char *en = ended ? xasprintf("%llu", (unsigned long long)ended) : strdup("NULL");
        char *sql = xasprintf(
            "INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, image_id, network_id, "
            "hourly_cost_micros, billing_started_at, billing_ended_at, billing_stopped, "
            "created_at, updated_at) VALUES ('%s', '%s', '%s', 'sku_x', 1, 'img_x', 'net_x', "
            "%lld, %s, %s, %d, %llu, %llu)",
            id, alice, state, (long long)rate, st, en, stopped, (unsigned long long)T0,
            (unsigned long long)T0);
        exec(sql);
        free(sql);
        free(st);
        free(en);
}

static MeteringTick tick(usec_t now)
{
        MeteringTick t;
        cr_assert_eq(metering_run(db, &policy, now, &t), 0);
        return t;
}

static void tick_quiet(usec_t now)
{
        MeteringTick t = tick(now);
        metering_tick_done(&t);
}

Test(metering, an_active_allocation_is_charged_per_second_in_intervals)
{
        grant(1000000000);
        allocation("alc_a", "active", RATE, T0, 0, 0);
        tick_quiet(T0 + 100 * SEC + 400000); /* the partial second waits */
        cr_assert_eq(balance(), 1000000000 - 100000);
        tick_quiet(T0 + 130 * SEC);
        cr_assert_eq(balance(), 1000000000 - 130000);
        /* How far it is charged follows from the watermark: no row per tick. */
        cr_assert_eq(scalar("SELECT charged_micros FROM allocation_usage"), 130000);
        cr_assert_eq(scalar("SELECT charged_to FROM allocation_usage"),
                     (long long)(T0 + 130 * SEC));
        cr_assert_eq(scalar("SELECT watermark FROM metering_state"), (long long)(T0 + 130 * SEC));
        /* One ledger transaction per tick, not per allocation. */
        cr_assert_eq(scalar("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'usage'"), 2);
        cr_assert_eq(scalar("SELECT balance_micros FROM ledger_accounts WHERE id = "
                            "'platform:revenue'"),
                     130000);
}

typedef struct Usage {
        size_t n;
        usec_t start[16];
        int64_t amount[16], seconds[16];
} Usage;

static int collect(const char *allocation_id, usec_t start, int64_t amount, int64_t seconds,
                   void *userdata)
{
        (void)allocation_id;
        Usage *u = userdata;
        cr_assert(u->n < 16);
        u->start[u->n] = start;
        u->amount[u->n] = amount;
        u->seconds[u->n] = seconds;
        u->n++;
        return 0;
}

Test(metering, usage_across_an_hour_boundary_is_split_exactly)
{
        grant(1000000000);
        allocation("alc_a", "active", RATE, T0 + 3590 * SEC + 500000, 0, 0);
        tick_quiet(T0 + 3620 * SEC + 600000);
        /* The 9 seconds ending at 3591.5 .. 3599.5 belong to the first hour,
         * the 21 ending at 3600.5 .. 3620.5 to the second. */
        Usage u = {0};
        cr_assert_eq(metering_usage(db, alice, T0, T0 + 2 * 3600 * SEC, 3600 * SEC, collect, &u),
                     0);
        cr_assert_eq(u.n, 2);
        cr_assert_eq(u.start[0], T0);
        cr_assert_eq(u.amount[0], 9000);
        cr_assert_eq(u.seconds[0], 9);
        cr_assert_eq(u.start[1], T0 + 3600 * SEC);
        cr_assert_eq(u.amount[1], 21000);
        cr_assert_eq(u.seconds[1], 21);
        cr_assert_eq(balance(), 1000000000 - 30000);
}

Test(metering, many_owners_are_charged_in_one_balanced_transaction)
{
        User u;
        cr_assert_eq(users_insert(db, "bob@example.com", "Bob", NULL, ROLE_USER, &u), 0);
        char bob[ID_MAX];
        snprintf(bob, sizeof(bob), "%s", u.id);
        user_done(&u);
        grant(1000000000);
        allocation("alc_a", "active", RATE, T0, 0, 0);
        allocation("alc_b", "active", 2 * RATE, T0, 0, 0);
        char *sql = xasprintf("INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, "
                              "image_id, network_id, hourly_cost_micros, billing_started_at, "
                              "created_at, updated_at) VALUES ('alc_c', '%s', 'active', 's', 1, "
                              "'i', 'n', %lld, %llu, 1, 1)",
                              bob, (long long)RATE, (unsigned long long)T0);
        exec(sql);
        free(sql);
        tick_quiet(T0 + 10 * SEC);
        cr_assert_eq(balance(), 1000000000 - 30000);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'usage'"), 1);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM ledger_entries e JOIN ledger_transactions t "
                            "ON t.id = e.txn_id WHERE t.kind = 'usage'"),
                     3, "alice, bob, revenue");
        cr_assert_eq(scalar("SELECT balance_micros FROM ledger_accounts WHERE id = "
                            "'platform:revenue'"),
                     40000);
}

Test(metering, a_repeated_tick_charges_nothing_twice)
{
        grant(1000000000);
        allocation("alc_a", "active", RATE, T0, 0, 0);
        tick_quiet(T0 + 60 * SEC);
        MeteringTick t = tick(T0 + 60 * SEC);
        cr_assert_eq(t.charges, 0);
        metering_tick_done(&t);
        /* Time never runs backwards for a meter. */
        tick_quiet(T0 + 30 * SEC);
        cr_assert_eq(balance(), 1000000000 - 60000);
}

Test(metering, provisioning_and_failed_launches_are_never_charged)
{
        grant(1000000000);
        allocation("alc_p", "provisioning", RATE, 0, 0, 0);
        allocation("alc_f", "failed", RATE, 0, 0, 0);
        MeteringTick t = tick(T0 + 3600 * SEC);
        cr_assert_eq(t.meters, 0);
        cr_assert_eq(t.charges, 0);
        metering_tick_done(&t);
        cr_assert_eq(balance(), 1000000000);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM allocation_meters"), 0);
}

Test(metering, billing_starts_when_the_allocation_becomes_active)
{
        grant(1000000000);
        allocation("alc_p", "provisioning", RATE, 0, 0, 0);
        tick_quiet(T0 + 50 * SEC);
        /* It became active at T0 + 50 s (provisioning took 50 s). */
        exec("UPDATE allocations SET state = 'active', billing_started_at = 1800000050000000 "
             "WHERE id = 'alc_p'");
        tick_quiet(T0 + 80 * SEC);
        cr_assert_eq(balance(), 1000000000 - 30000);
}

Test(metering, the_end_is_charged_and_the_meter_closes)
{
        grant(1000000000);
        cr_assert_eq(ledger_hold_place(db, alice, "alc_a", RATE), 0);
        allocation("alc_a", "active", RATE, T0, 0, 0);
        tick_quiet(T0 + 60 * SEC);
        /* Release requested at T0 + 90.5 s. */
        exec("UPDATE allocations SET state = 'releasing', billing_ended_at = 1800000090500000 "
             "WHERE id = 'alc_a'");
        MeteringTick t = tick(T0 + 200 * SEC);
        cr_assert_eq(t.closed, 1);
        metering_tick_done(&t);
        cr_assert_eq(balance(), 1000000000 - 90000);
        cr_assert_eq(scalar("SELECT closed FROM allocation_meters"), 1);
        cr_assert_eq(scalar("SELECT state = 'posted' FROM ledger_holds"), 1);
        int64_t avail;
        cr_assert_eq(ledger_available_micros(db, alice, &avail), 0);
        cr_assert_eq(avail, balance(), "a closed hold reserves nothing");
        t = tick(T0 + 900 * SEC);
        cr_assert_eq(t.meters, 0);
        metering_tick_done(&t);
        cr_assert_eq(balance(), 1000000000 - 90000);
}

Test(metering, a_meter_whose_end_lies_ahead_closes_only_when_it_is_reached)
{
        grant(1000000000);
        allocation("alc_a", "releasing", RATE, T0, T0 + 10 * SEC, 0);
        MeteringTick t = tick(T0 + 4 * SEC);
        cr_assert_eq(t.closed, 0);
        metering_tick_done(&t);
        cr_assert_eq(balance(), 1000000000 - 4000);
        t = tick(T0 + 30 * SEC);
        cr_assert_eq(t.closed, 1);
        metering_tick_done(&t);
        cr_assert_eq(balance(), 1000000000 - 10000);
}

Test(metering, nothing_after_billing_stopped)
{
        grant(1000000000);
        allocation("alc_a", "active", RATE, T0, 0, 0);
        tick_quiet(T0 + 10 * SEC);
        /* release_failed: billing stopped at T0 + 20 s. */
        exec("UPDATE allocations SET state = 'release_failed', billing_stopped = 1, "
             "billing_ended_at = 1800000020000000 WHERE id = 'alc_a'");
        tick_quiet(T0 + 5000 * SEC);
        cr_assert_eq(balance(), 1000000000 - 20000);
        /* Stopped without an end time: charged up to where it stood. */
        allocation("alc_b", "active", RATE, T0, 0, 0);
        tick_quiet(T0 + 5000 * SEC + 10 * SEC);
        int64_t b = balance();
        exec("UPDATE allocations SET state = 'release_failed', billing_stopped = 1 "
             "WHERE id = 'alc_b'");
        tick_quiet(T0 + 9000 * SEC);
        cr_assert_eq(balance(), b);
}

Test(metering, interval_charges_add_up_to_the_whole_without_drift)
{
        grant(1000000000);
        const int64_t rate = 7777777; /* not a multiple of 3600 */
        allocation("alc_a", "active", rate, T0, 0, 0);
        for (int s = 7; s <= 7 * 100; s += 7)
                tick_quiet(T0 + (usec_t)s * SEC);
        cr_assert_eq(1000000000 - balance(), rate * 700 / 3600);
}

Test(metering, a_low_runway_emits_one_event_per_threshold)
{
        /* 30 hours of runway: no event. */
        grant(30 * RATE);
        allocation("alc_a", "active", RATE, T0, 0, 0);
        MeteringTick t = tick(T0 + SEC);
        cr_assert_eq(t.events, 0);
        metering_tick_done(&t);
        /* Use 7 hours: 23 hours left, below 24. */
        tick_quiet(T0 + 7 * 3600 * SEC);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM events WHERE type = 'billing.low_balance'"), 1);
        tick_quiet(T0 + 8 * 3600 * SEC);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM events WHERE type = 'billing.low_balance'"), 1);
        /* Below one hour. */
        tick_quiet(T0 + (29 * 3600 + 1800) * SEC);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM events WHERE type = 'billing.low_balance'"), 2);
        cr_assert_eq(scalar("SELECT json_extract(data, '$.threshold_hours') FROM events WHERE "
                            "type = 'billing.low_balance' ORDER BY seq DESC LIMIT 1"),
                     1);
}

Test(metering, an_exhausted_owner_is_released_after_the_grace_period)
{
        grant(60 * 1000); /* one minute */
        allocation("alc_a", "active", RATE, T0, 0, 0);
        allocation("alc_r", "releasing", RATE, T0, T0 + 5 * SEC, 0);
        MeteringTick t = tick(T0 + 60 * SEC);
        cr_assert_eq(t.n_release, 0, "the grace period starts now");
        metering_tick_done(&t);
        cr_assert(balance() <= 0);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM events WHERE type = 'billing.low_balance' AND "
                            "json_extract(data, '$.exhausted')"),
                     1);
        t = tick(T0 + 300 * SEC);
        cr_assert_eq(t.n_release, 0);
        metering_tick_done(&t);
        t = tick(T0 + 360 * SEC);
        cr_assert_eq(t.n_release, 1);
        cr_assert_str_eq(t.release[0], "alc_a");
        metering_tick_done(&t);
        /* Charged through the grace period: a negative balance is a debt,
         * not money destroyed. */
        cr_assert_eq(balance(), 60 * 1000 - 360 * 1000 - 5 * 1000);
}

Test(metering, a_top_up_ends_the_grace_period)
{
        grant(60 * 1000);
        allocation("alc_a", "active", RATE, T0, 0, 0);
        tick_quiet(T0 + 60 * SEC);
        cr_assert_neq(scalar("SELECT exhausted_at IS NOT NULL FROM billing_alerts"), 0);
        grant(1000000000);
        MeteringTick t = tick(T0 + 1000 * SEC);
        cr_assert_eq(t.n_release, 0);
        metering_tick_done(&t);
        cr_assert_eq(scalar("SELECT exhausted_at IS NULL AND level = 0 FROM billing_alerts"), 1);
}

Test(metering, burn_rate_counts_running_allocations_only)
{
        allocation("alc_a", "active", RATE, T0, 0, 0);
        allocation("alc_b", "active", 2 * RATE, T0, 0, 0);
        allocation("alc_c", "releasing", 4 * RATE, T0, T0 + SEC, 0);
        allocation("alc_d", "provisioning", 8 * RATE, 0, 0, 0);
        int64_t burn;
        cr_assert_eq(metering_burn_rate(db, alice, &burn), 0);
        cr_assert_eq(burn, 3 * RATE);
}

Test(metering, thresholds_parse_strictly)
{
        MeteringPolicy p;
        cr_assert_eq(metering_parse_thresholds("72, 24,1", &p), 0);
        cr_assert_eq(p.n_thresholds, 3);
        cr_assert_eq(metering_parse_thresholds("", &p), 0);
        cr_assert_eq(p.n_thresholds, 0);
        cr_assert_eq(metering_parse_thresholds("1,24", &p), -EINVAL);
        cr_assert_eq(metering_parse_thresholds("24,24", &p), -EINVAL);
        cr_assert_eq(metering_parse_thresholds("0", &p), -EINVAL);
        cr_assert_eq(metering_parse_thresholds("x", &p), -EINVAL);
        cr_assert_eq(metering_parse_thresholds("9,8,7,6,5,4,3,2,1", &p), -EINVAL);
}

/* ---- usage posted per owner now and then, read exactly in between ---- */

static int64_t posted(const char *user)
{
        LedgerFunds f;
        cr_assert_eq(ledger_funds(db, user, &f), 0);
        return f.posted;
}

static long long postings_of(const char *user)
{
        char *sql = xasprintf("SELECT COUNT(*) FROM ledger_entries e JOIN ledger_transactions t ON "
                              "t.id = e.txn_id WHERE t.kind = 'usage' AND e.account_id = 'user:%s'",
                              user);
        long long n = scalar(sql);
        free(sql);
        return n;
}

Test(metering, usage_is_posted_on_the_owners_turn_and_read_exactly_in_between)
{
        policy.post_interval = 3600 * SEC;
        grant(1000000000);
        allocation("alc_a", "active", RATE, T0, 0, 0);
        /* A tick a minute for two hours: every read is exact, and the owner's
         * usage reaches the ledger once an hour. (The first tick of a
         * database, from watermark 0, is everyone's turn.) */
        tick_quiet(T0);
        for (usec_t s = 60; s <= 7200; s += 60) {
                tick_quiet(T0 + s * SEC);
                cr_assert_eq(balance(), 1000000000 - (int64_t)s * 1000, "at %llu s",
                             (unsigned long long)s);
                int64_t avail;
                cr_assert_eq(ledger_available_micros(db, alice, &avail), 0);
                cr_assert_eq(avail, balance(), "no hold");
                /* What is posted is in the ledger, the rest is not lost. */
                cr_assert_eq(1000000000 - posted(alice),
                             scalar("SELECT COALESCE((SELECT balance_micros FROM ledger_accounts "
                                    "WHERE id = 'platform:revenue'), 0)"));
                cr_assert_leq(posted(alice) - balance(), 3600 * 1000);
                if (s == 3600)
                        cr_assert_eq(postings_of(alice), 1, "one posting in the first hour");
        }
        cr_assert_eq(postings_of(alice), 2, "one posting an hour");
        cr_assert_eq(scalar("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'usage'"), 2);
}

Test(metering, owners_take_their_turns_spread_over_the_interval)
{
        enum { OWNERS = 60 };
        policy.post_interval = 3600 * SEC;
        char users[OWNERS][ID_MAX];
        for (int i = 0; i < OWNERS; i++) {
                User u;
                char *email = xasprintf("owner%d@example.com", i);
                cr_assert_eq(users_insert(db, email, "Owner", NULL, ROLE_USER, &u), 0);
                free(email);
                snprintf(users[i], ID_MAX, "%s", u.id);
                user_done(&u);
                LedgerPosting p = {.kind = LEDGER_KIND_GRANT, .user_id = users[i]};
                cr_assert_eq(ledger_credit_user(db, &p, LEDGER_GRANTS, 1000000000, NULL), 0);
                char *sql = xasprintf(
                    "INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, image_id, "
                    "network_id, hourly_cost_micros, billing_started_at, created_at, updated_at) "
                    "VALUES ('alc_%d', '%s', 'active', 's', 1, 'i', 'n', %lld, %llu, 1, 1)",
                    i, users[i], (long long)RATE, (unsigned long long)T0);
                exec(sql);
                free(sql);
        }
        tick_quiet(T0);
        size_t most = 0;
        for (usec_t s = 60; s <= 3600; s += 60) {
                MeteringTick t = tick(T0 + s * SEC);
                cr_assert_eq(t.charges, OWNERS);
                most = MAX(most, t.posted);
                metering_tick_done(&t);
        }
        /* Each owner exactly once in the hour, never all at once: turns
         * follow the ids, which are random. */
        for (int i = 0; i < OWNERS; i++) {
                cr_assert_eq(postings_of(users[i]), 1, "owner %d", i);
                int64_t b;
                cr_assert_eq(ledger_balance_micros(db, users[i], &b), 0);
                cr_assert_eq(b, 1000000000 - 3600 * 1000);
        }
        cr_assert_lt(most, 12, "a tick posted %zu of %d owners", most, OWNERS);
}

Test(metering, an_end_posts_all_of_the_owners_usage)
{
        policy.post_interval = 3600 * SEC;
        grant(1000000000);
        allocation("alc_a", "active", RATE, T0, 0, 0);
        allocation("alc_b", "active", 2 * RATE, T0, 0, 0);
        tick_quiet(T0);
        tick_quiet(T0 + 60 * SEC);
        exec("UPDATE allocations SET state = 'releasing', billing_ended_at = 1800000090500000 "
             "WHERE id = 'alc_a'");
        MeteringTick t = tick(T0 + 120 * SEC);
        cr_assert_eq(t.closed, 1);
        cr_assert_eq(t.posted, 1, "the owner is posted with the end");
        metering_tick_done(&t);
        /* alc_a to its end (90 whole seconds), alc_b to the tick. */
        cr_assert_eq(posted(alice), 1000000000 - 90000 - 240000);
        cr_assert_eq(balance(), posted(alice));
        cr_assert_eq(scalar("SELECT posted_micros FROM allocation_meters WHERE allocation_id = "
                            "'alc_a'"),
                     90000);
}

Test(metering, the_last_tick_posts_every_owner)
{
        policy.post_interval = 3600 * SEC;
        grant(1000000000);
        allocation("alc_a", "active", RATE, T0, 0, 0);
        tick_quiet(T0);
        tick_quiet(T0 + 60 * SEC);
        policy.post_all = true;
        MeteringTick t = tick(T0 + 70 * SEC);
        metering_tick_done(&t);
        cr_assert_eq(posted(alice), 1000000000 - 70000);
        cr_assert_eq(balance(), posted(alice));
        cr_assert_eq(scalar("SELECT balance_micros FROM ledger_accounts WHERE id = "
                            "'platform:revenue'"),
                     70000);
}

Test(metering, a_hold_counts_metered_usage_before_it_is_posted)
{
        policy.post_interval = 3600 * SEC;
        grant(1000000000);
        cr_assert_eq(ledger_hold_place(db, alice, "alc_a", RATE), 0);
        cr_assert_eq(scalar("SELECT held_micros FROM ledger_accounts WHERE user_id IS NOT NULL"),
                     RATE, "the account caches what its holds reserve");
        allocation("alc_a", "active", RATE, T0, 0, 0);
        tick_quiet(T0 + 600 * SEC);
        LedgerFunds f;
        cr_assert_eq(ledger_funds(db, alice, &f), 0);
        /* Ten minutes used out of the one-hour hold: the balance drops, what
         * is available does not, posted or not. */
        cr_assert_eq(f.balance, 1000000000 - 600000);
        cr_assert_eq(f.held, RATE - 600000);
        cr_assert_eq(f.available, 1000000000 - RATE);
        int64_t held;
        cr_assert_eq(ledger_open_holds_micros(db, alice, &held), 0);
        cr_assert_eq(held, RATE - 600000);
        /* Past the hold, usage comes out of what is available. */
        tick_quiet(T0 + 4000 * SEC);
        cr_assert_eq(ledger_funds(db, alice, &f), 0);
        cr_assert_eq(f.balance, 1000000000 - 4000000);
        cr_assert_eq(f.held, 0);
        cr_assert_eq(f.available, f.balance);
        /* The end closes the hold and posts everything. */
        exec("UPDATE allocations SET state = 'releasing', billing_ended_at = 1800004000000000 "
             "WHERE id = 'alc_a'");
        tick_quiet(T0 + 4001 * SEC);
        cr_assert_eq(ledger_funds(db, alice, &f), 0);
        cr_assert_eq(f.posted, 1000000000 - 4000000);
        cr_assert_eq(f.balance, f.posted);
        cr_assert_eq(f.available, f.balance);
        cr_assert_eq(scalar("SELECT held_micros FROM ledger_accounts WHERE user_id IS NOT NULL"),
                     0);
}

Test(metering, runway_and_exhaustion_count_unposted_usage)
{
        policy.post_interval = 86400 * SEC;
        grant(60 * 1000); /* one minute */
        allocation("alc_a", "active", RATE, T0, 0, 0);
        MeteringTick t = tick(T0 + 60 * SEC);
        metering_tick_done(&t);
        cr_assert(balance() <= 0);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM events WHERE type = 'billing.low_balance' AND "
                            "json_extract(data, '$.exhausted')"),
                     1);
        t = tick(T0 + 360 * SEC);
        cr_assert_eq(t.n_release, 1, "released after the grace period");
        metering_tick_done(&t);
        cr_assert_eq(balance(), 60 * 1000 - 360 * 1000);
}

/* A database metered before usage was posted per owner (migration 8): every
 * tick had posted everything, so what the meters charged is posted, and the
 * holds keep reserving what they did. */
Test(metering, a_database_metered_before_migration_8_keeps_its_balances)
{
        db_close(db);
        db = NULL;
        char *path = xasprintf("%s/old.db", dir);
        sqlite3 *raw = NULL;
        cr_assert_eq(sqlite3_open(path, &raw), SQLITE_OK);
        for (size_t i = 0; i < db_n_migrations && db_migrations[i].version <= 7; i++) {
                char *err = NULL;
                cr_assert_eq(sqlite3_exec(raw, db_migrations[i].sql, NULL, NULL, &err), SQLITE_OK,
                             "migration %d: %s", db_migrations[i].version, err ? err : "");
                char *v = xasprintf("PRAGMA user_version = %d", db_migrations[i].version);
                cr_assert_eq(sqlite3_exec(raw, v, NULL, NULL, NULL), SQLITE_OK);
                free(v);
        }
        /* Alice: 1,000 USD, two allocations charged to the watermark
         * (T0 + 600 s) by the old ticks, one with its one-hour hold. */
        char *sql = xasprintf(
            "INSERT INTO users (id, email, name, created_at, updated_at) VALUES ('%s', "
            "'alice@example.com', 'Alice', 1, 1);"
            "INSERT INTO ledger_transactions (id, at, kind) VALUES ('ltx_g', 1, 'grant'), "
            "('ltx_u', 2, 'usage');"
            "INSERT INTO ledger_entries (txn_id, account_id, amount_micros, at) VALUES "
            "('ltx_g', 'user:%s', 1000000000, 1), ('ltx_g', 'platform:grants', -1000000000, 1), "
            "('ltx_u', 'user:%s', -1800000, 2), ('ltx_u', 'platform:revenue', 1800000, 2);"
            "INSERT INTO ledger_holds (allocation_id, user_id, amount_micros, state, created_at, "
            "updated_at) VALUES ('alc_a', '%s', %lld, 'pending', 1, 1);"
            "INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, image_id, "
            "network_id, hourly_cost_micros, billing_started_at, created_at, updated_at) VALUES "
            "('alc_a', '%s', 'active', 's', 1, 'i', 'n', %lld, %llu, 1, 1), "
            "('alc_b', '%s', 'active', 's', 1, 'i', 'n', %lld, %llu, 1, 1);"
            "UPDATE metering_state SET watermark = %llu;"
            "UPDATE allocation_meters SET synced = 1;",
            alice, alice, alice, alice, (long long)RATE, alice, (long long)RATE,
            (unsigned long long)T0, alice, (long long)(2 * RATE), (unsigned long long)T0,
            (unsigned long long)(T0 + 600 * SEC));
        char *err = NULL;
        cr_assert_eq(sqlite3_exec(raw, sql, NULL, NULL, &err), SQLITE_OK, "%s", err ? err : "");
        free(sql);
        sqlite3_close(raw);

        cr_assert_eq(db_open(path, &db), 0);
        free(path);
        LedgerFunds f;
        cr_assert_eq(ledger_funds(db, alice, &f), 0);
        cr_assert_eq(f.posted, 1000000000 - 1800000);
        cr_assert_eq(f.balance, f.posted, "everything charged was posted");
        cr_assert_eq(f.held, RATE - 600000, "the hold less the usage it covered");
        cr_assert_eq(f.available, f.balance - f.held);
        cr_assert_eq(scalar("SELECT SUM(posted_micros) FROM allocation_meters"), 1800000);
        /* And it goes on from there. */
        policy.post_interval = 3600 * SEC;
        tick_quiet(T0 + 660 * SEC);
        cr_assert_eq(balance(), 1000000000 - 3 * 660000);
}
