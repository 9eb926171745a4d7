/* SPDX-License-Identifier: MIT */
/* Times metering ticks (metering_run: one SQLite transaction that charges
 * every open meter and evaluates every owner) against a real database file
 * in WAL mode with synchronous=FULL, as the controller opens it. The
 * allocations are spread over USERS owners, each with enough credit; every
 * tick advances the clock by the metering interval, so each one posts a
 * charge (a ledger transaction, two entries, a hold capture, a charge row,
 * the meter's new position) for every allocation. Prints median and p99.
 * Usage: bench-billing [ALLOCATIONS=10000] [USERS=2500] [TICKS=30] */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "ledger.h"
#include "log.h"
#include "macro.h"
#include "metering.h"

#define SEC      1000000ULL
#define INTERVAL (60 * SEC)

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

static int populate(Db *db, int n_alloc, int n_users, usec_t t0)
{
        DbTxn txn = {0};
        if (db_begin(db, &txn) < 0)
                return -1;
        for (int u = 0; u < n_users; u++) {
                char id[64], email[64], sql[512];
                snprintf(id, sizeof(id), "usr_bench%013dAAAAAAAA", u);
                snprintf(email, sizeof(email), "bench-%d@example.com", u);
                snprintf(sql, sizeof(sql),
                         "INSERT INTO users (id, email, name, created_at, updated_at) VALUES "
                         "('%s', '%s', 'Bench', 1, 1)",
                         id, email);
                if (exec(db, sql) < 0)
                        return -1;
                LedgerPosting p = {.kind = LEDGER_KIND_GRANT, .user_id = id};
                if (ledger_credit_user(db, &p, LEDGER_GRANTS, 1000000000000LL, NULL) < 0)
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
                char id[64], user[64];
                snprintf(id, sizeof(id), "alc_bench%013dAAAAAAAA", a);
                snprintf(user, sizeof(user), "usr_bench%013dAAAAAAAA", a % n_users);
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

        MeteringPolicy policy = {.grace = 900 * SEC};
        metering_parse_thresholds("24,1", &policy);
        double *ms = calloc((size_t)ticks, sizeof(double));
        double *cpu = calloc((size_t)ticks, sizeof(double));
        double phase[5] = {0};
        size_t charges = 0;
        for (int i = 0; i < ticks; i++) {
                MeteringTick t;
                double a = now_ms(), c = cpu_ms();
                int r = metering_run(db, &policy, t0 + (usec_t)(i + 1) * INTERVAL, &t);
                ms[i] = now_ms() - a;
                cpu[i] = cpu_ms() - c;
                phase[0] += (double)t.read_usec / 1e3 / ticks;
                phase[1] += (double)t.post_usec / 1e3 / ticks;
                phase[2] += (double)t.record_usec / 1e3 / ticks;
                phase[3] += (double)t.owners_usec / 1e3 / ticks;
                phase[4] += (double)t.commit_usec / 1e3 / ticks;
                if (r < 0) {
                        fprintf(stderr, "tick failed: %d\n", r);
                        return 1;
                }
                charges = t.charges;
                metering_tick_done(&t);
        }
        int64_t sum = -1, bad_acc = -1, bad_txn = -1;
        ledger_audit(db, &sum, &bad_acc, &bad_txn);
        qsort(ms, (size_t)ticks, sizeof(double), cmp_double);
        qsort(cpu, (size_t)ticks, sizeof(double), cmp_double);
        printf("metering tick: %d allocations, %d owners, %zu charges per tick\n", n_alloc, n_users,
               charges);
        printf("  median %.1f ms  p99 %.1f ms  min %.1f ms  max %.1f ms  (%d ticks)\n",
               ms[ticks / 2], ms[(int)((ticks - 1) * 0.99)], ms[0], ms[ticks - 1], ticks);
        printf("  CPU time (user+sys) median %.1f ms  p99 %.1f ms\n", cpu[ticks / 2],
               cpu[(int)((ticks - 1) * 0.99)]);
        printf("  phases (mean wall ms): read %.1f  ledger %.1f  charge rows %.1f  owners %.1f  "
               "commit %.1f\n",
               phase[0], phase[1], phase[2], phase[3], phase[4]);
        printf("  ledger sum %lld, unbalanced accounts %lld, unbalanced transactions %lld\n",
               (long long)sum, (long long)bad_acc, (long long)bad_txn);
        free(ms);
        free(cpu);
        db_close(db);
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
                return 1;
        return sum == 0 && bad_acc == 0 && bad_txn == 0 ? 0 : 1;
}
