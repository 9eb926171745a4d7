/* SPDX-License-Identifier: MIT */
/* Times metering ticks (metering_run: one SQLite transaction that charges
 * every open meter, posts the usage of the owners whose turn it is to the
 * ledger and evaluates every owner) against a real database file in WAL mode
 * with synchronous=FULL, as the controller opens it. The allocations are
 * spread over USERS owners, each with enough credit and every allocation with
 * a pending hold; every tick advances the clock by the metering interval
 * (60 s), so each one charges every allocation. Owners are posted on the
 * controller's default schedule (billing_post_interval_s 3600, staggered;
 * BENCH_POST_INTERVAL_S overrides it, 0 posts every owner every tick). Prints
 * median and p99, and checks the ledger and that every balance read equals
 * the credit less what was charged.
 * Usage: bench-billing [ALLOCATIONS=10000] [USERS=2500] [TICKS=30] */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "id.h"
#include "ledger.h"
#include "log.h"
#include "macro.h"
#include "metering.h"

#define SEC      1000000ULL
#define INTERVAL (60 * SEC)
#define CREDIT   1000000000000LL

static double now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static int exec(Db *db, const char *sql)
{
        char *err = NULL;
        int rc = sqlite3_exec(db_handle(db), sql, NULL, NULL, &err);
        if (rc != SQLITE_OK) {
                fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
                sqlite3_free(err);
                return -1;
        }
        return 0;
}

/* Ids like the controller's (id_new: 22 random URL-safe base64 characters),
 * from a fixed seed so a run is repeatable; the metering tick staggers its
 * ledger postings by them. */
static void bench_id(const char *prefix, int n, char buf[static ID_MAX])
{
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        uint64_t x = (uint64_t)n * 0x9E3779B97F4A7C15ULL + (prefix[0] == 'u' ? 1 : 2);
        int o = snprintf(buf, ID_MAX, "%s_", prefix);
        for (int i = 0; i < ID_RANDOM_CHARS; i++) {
                if (i % 8 == 0) {
                        /* splitmix64 */
                        x += 0x9E3779B97F4A7C15ULL;
                        uint64_t z = x;
                        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
                        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
                        x = z ^ (z >> 31);
                }
                buf[o++] = b64[(x >> (6 * (i % 8))) & 63];
        }
        buf[o] = '\0';
}

static int populate(Db *db, int n_alloc, int n_users, usec_t t0)
{
        DbTxn txn = {0};
        if (db_begin(db, &txn) < 0)
                return -1;
        for (int u = 0; u < n_users; u++) {
                char id[ID_MAX], email[64], sql[512];
                bench_id("usr", u, id);
                snprintf(email, sizeof(email), "bench-%d@example.com", u);
                snprintf(sql, sizeof(sql),
                         "INSERT INTO users (id, email, name, created_at, updated_at) VALUES "
                         "('%s', '%s', 'Bench', 1, 1)",
                         id, email);
                if (exec(db, sql) < 0)
                        return -1;
                LedgerPosting p = {.kind = LEDGER_KIND_GRANT, .user_id = id};
                if (ledger_credit_user(db, &p, LEDGER_GRANTS, CREDIT, NULL) < 0)
                        return -1;
        }
        sqlite3_stmt *s = NULL;
        if (sqlite3_prepare_v2(db_handle(db),
                               "INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, "
                               "image_id, network_id, hourly_cost_micros, billing_started_at, "
                               "created_at, updated_at) VALUES (?, ?, 'active', 'sku_b', 1, "
                               "'img_b', 'net_b', ?, ?, 1, 1)",
                               -1, &s, NULL) != SQLITE_OK)
                return -1;
        for (int a = 0; a < n_alloc; a++) {
                char id[ID_MAX], user[ID_MAX];
                bench_id("alc", a, id);
                bench_id("usr", a % n_users, user);
                sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 2, user, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(s, 3, 2000000 + (a % 7) * 1111111); /* 2..8.7 USD/h */
                sqlite3_bind_int64(s, 4, (sqlite3_int64)(t0 - (usec_t)(a % 60) * SEC));
                if (sqlite3_step(s) != SQLITE_DONE)
                        return -1;
                sqlite3_reset(s);
                if (ledger_hold_place(db, user, id, 2000000) < 0)
                        return -1;
        }
        sqlite3_finalize(s);
        return db_commit(&txn);
}

int main(int argc, char **argv)
{
        int n_alloc = argc > 1 ? atoi(argv[1]) : 10000;
        int n_users = argc > 2 ? atoi(argv[2]) : 2500;
        int ticks = argc > 3 ? atoi(argv[3]) : 30;
        if (n_alloc < 1 || n_users < 1 || n_users > n_alloc || ticks < 1) {
                fprintf(stderr,
                        "usage: bench-billing [ALLOCATIONS] [USERS<=ALLOCATIONS] [TICKS]\n");
                return 2;
        }
        log_set_level(LOG_LEVEL_WARNING);

        char dir[] = "/tmp/bench-billing-XXXXXX";
        if (!mkdtemp(dir))
                return 1;
        char path[256];
        snprintf(path, sizeof(path), "%s/gpuslice.db", dir);
        Db *db = NULL;
        if (db_open(path, &db) < 0)
                return 1;
        const char *cache = getenv("BENCH_SQLITE_CACHE_KIB");
        if (cache) {
                char pragma[64];
                snprintf(pragma, sizeof(pragma), "PRAGMA cache_size = -%d", atoi(cache));
                if (exec(db, pragma) < 0)
                        return 1;
        }
        usec_t t0 = 1800000000ULL * SEC;
        double p0 = now_ms();
        if (populate(db, n_alloc, n_users, t0) < 0) {
                fprintf(stderr, "populate failed\n");
                return 1;
        }
        printf("populated %d allocations of %d users in %.0f ms\n", n_alloc, n_users,
               now_ms() - p0);

        MeteringPolicy policy = {.grace = 900 * SEC, .post_interval = 3600 * SEC};
        const char *pi = getenv("BENCH_POST_INTERVAL_S");
        if (pi)
                policy.post_interval = (usec_t)atoll(pi) * SEC;
        metering_parse_thresholds("24,1", &policy);
        double *ms = calloc((size_t)ticks, sizeof(double));
        double *cpu = calloc((size_t)ticks, sizeof(double));
        double phase[5] = {0}, first = 0;
        size_t charges = 0, posted = 0;
        for (int i = 0; i < ticks; i++) {
                MeteringTick t;
                double a = now_ms(), c = cpu_ms();
                int r = metering_run(db, &policy, t0 + (usec_t)(i + 1) * INTERVAL, &t);
                ms[i] = now_ms() - a;
                cpu[i] = cpu_ms() - c;
                /* The first tick syncs every meter (a write each) and
                 * posts every owner: counted in the times, not the phases. */
                if (i == 0)
                        first = ms[0];
                else if (ticks > 1) {
                        phase[0] += (double)t.read_usec / 1e3 / (ticks - 1);
                        phase[1] += (double)t.post_usec / 1e3 / (ticks - 1);
                        phase[2] += (double)t.record_usec / 1e3 / (ticks - 1);
                        phase[3] += (double)t.owners_usec / 1e3 / (ticks - 1);
                        phase[4] += (double)t.commit_usec / 1e3 / (ticks - 1);
                }
                if (r < 0) {
                        fprintf(stderr, "tick failed: %d\n", r);
                        return 1;
                }
                charges = t.charges;
                if (i > 0)
                        posted += t.posted;
                metering_tick_done(&t);
        }
        int64_t sum = -1, bad_acc = -1, bad_txn = -1;
        ledger_audit(db, &sum, &bad_acc, &bad_txn);
        /* Every balance read (posted less unposted) adds up to the credit less
         * every charge. */
        int64_t balances = 0, charged = -1;
        for (int u = 0; u < n_users; u++) {
                char id[ID_MAX];
                bench_id("usr", u, id);
                int64_t b = 0;
                if (ledger_balance_micros(db, id, &b) < 0)
                        return 1;
                balances += b;
        }
        {
                sqlite3_stmt *s = NULL;
                if (sqlite3_prepare_v2(db_handle(db),
                                       "SELECT SUM(charged_micros) FROM allocation_usage", -1, &s,
                                       NULL) == SQLITE_OK &&
                    sqlite3_step(s) == SQLITE_ROW)
                        charged = sqlite3_column_int64(s, 0);
                sqlite3_finalize(s);
        }
        bool exact = balances == (int64_t)n_users * CREDIT - charged;
        qsort(ms, (size_t)ticks, sizeof(double), cmp_double);
        qsort(cpu, (size_t)ticks, sizeof(double), cmp_double);
        printf("metering tick: %d allocations, %d owners, %zu charges per tick, %.1f owners posted "
               "per tick after the first (post interval %llu s)\n",
               n_alloc, n_users, charges, ticks > 1 ? (double)posted / (ticks - 1) : 0.0,
               (unsigned long long)(policy.post_interval / SEC));
        printf("  median %.1f ms  p99 %.1f ms  min %.1f ms  max %.1f ms  (%d ticks)\n",
               ms[ticks / 2], ms[(int)((ticks - 1) * 0.99)], ms[0], ms[ticks - 1], ticks);
        printf("  CPU time (user+sys) median %.1f ms  p99 %.1f ms\n", cpu[ticks / 2],
               cpu[(int)((ticks - 1) * 0.99)]);
        printf("  phases after the first tick (mean wall ms): read %.1f  ledger %.1f  meters %.1f  "
               "owners %.1f  commit %.1f; the first tick %.1f ms\n",
               phase[0], phase[1], phase[2], phase[3], phase[4], first);
        printf("  ledger sum %lld, unbalanced accounts %lld, unbalanced transactions %lld, "
               "balances %s the credit less the charges\n",
               (long long)sum, (long long)bad_acc, (long long)bad_txn,
               exact ? "equal" : "DIFFER FROM");
        free(ms);
        free(cpu);
        db_close(db);
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
                return 1;
        return sum == 0 && bad_acc == 0 && bad_txn == 0 && exact ? 0 : 1;
}
