/* SPDX-License-Identifier: MIT */
/* Chaos at the scale of the launch path: four simulated hosts (32 slots, the
 * real agents), four tenants, and per round 200 threads each launching at
 * once over HTTP with an Idempotency-Key, following the allocation, holding
 * it a random moment and releasing it, while the controller is killed with
 * SIGKILL at random moments and restarted on the same ports. A sold-out
 * launch tries again a little later with a new key (so freed slots are
 * taken again and far more allocations provision than there are slots); a
 * call that got no answer is repeated as it was (the same key).
 *
 * After every restart: each launch answered 202 before the kill exists.
 * After every round, read from the API and the SQLite file: no slot held by
 * two allocations, slots and allocations agreeing, every allocation in a
 * contract state, no task running, every slot available again, the ledger
 * summing to zero and no hold pending for a finished allocation. At the end:
 * each tenant has exactly the allocations their clients were answered (a
 * lost answer repeated with its key gave the same allocation, never a
 * second one), every accepted release finished, and the counts (launched,
 * sold_out, activated, released, ...) are printed.
 *
 * The helpers of tests/lib/cloud.c fail through Criterion and stay on the
 * main thread; the client threads only record what they saw. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cloud.h"

#define HOSTS          4
#define SLOTS_PER_HOST 8
#define USERS          4
#define OPS            200 /* concurrent launches per round */
#define ROUNDS         3
#define KILLS          2 /* per round */
#define LAUNCH_TRIES   3 /* a sold-out launch tries again with a new key, twice */
#define OP_DEADLINE_MS 150000
#define SETTLE_MS      120000

typedef struct Op {
        int round, index, user;
        unsigned seed;
        /* what the client saw (under lock: id, launched) */
        char id[64];
        bool launched, activated, failed, release_accepted, released;
        int posts, no_answer, sold_out, offline, replayed;
        long long t_start, t_launched, t_active, t_done; /* mono ms */
        char failure[64];
        char error[512]; /* an answer no rule allows */
} Op;

static struct {
        Cloud *cl;
        char url[256];
        Tokens users[USERS];
        char *body;
        pthread_mutex_t lock;
        pthread_t threads[OPS];
        int n_threads;
        atomic_bool stop; /* a failed check ended the test: clients give up */
} W = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void join_clients(void)
{
        for (int i = 0; i < W.n_threads; i++)
                pthread_join(W.threads[i], NULL);
        W.n_threads = 0;
}

static void setup(void)
{
        curl_global_init(CURL_GLOBAL_ALL);
        W.cl = NULL;
        W.body = NULL;
        W.n_threads = 0;
        atomic_store(&W.stop, false);
}

static void teardown(void)
{
        atomic_store(&W.stop, true);
        join_clients();
        cloud_free(W.cl);
        W.cl = NULL;
        free(W.body);
}

TestSuite(chaos, .init = setup, .fini = teardown, .timeout = 480);

/* ---- the client threads: raw libcurl, nothing that asserts ---- */

typedef struct Buf {
        char *p;
        size_t n;
} Buf;

static size_t collect(char *p, size_t size, size_t n, void *u)
{
        Buf *b = u;
        char *q = realloc(b->p, b->n + size * n + 1);
        if (!q)
                return 0;
        memcpy(q + b->n, p, size * n);
        b->n += size * n;
        q[b->n] = 0;
        b->p = q;
        return size * n;
}

/* One call; the HTTP status, 0 when no answer came (the controller died or
 * is not up yet). *ret gets the parsed body (may stay NULL). */
static long call(CURL *h, const char *method, const char *path, const char *token, const char *key,
                 const char *body, json_t **ret)
{
        char url[512], auth[256], idem[128];
        snprintf(url, sizeof(url), "%s%s", W.url, path);
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        struct curl_slist *hdrs = curl_slist_append(NULL, auth);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        if (key) {
                snprintf(idem, sizeof(idem), "Idempotency-Key: %s", key);
                hdrs = curl_slist_append(hdrs, idem);
        }
        Buf b = {0};
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (streq(method, "POST"))
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        long status = 0;
        if (curl_easy_perform(h) == CURLE_OK)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(hdrs);
        *ret = status && b.p ? json_loads(b.p, 0, NULL) : NULL;
        free(b.p);
        return status;
}

static const char *jpath(json_t *j, const char *a, const char *b)
{
        json_t *v = json_object_get(j, a);
        if (b)
                v = json_object_get(v, b);
        return json_string_value(v);
}

static bool give_up(long long deadline)
{
        return atomic_load(&W.stop) || mono_ms() > deadline;
}

static void nap(Op *op, int min_ms, int max_ms)
{
        pause_ms(min_ms + (int)(rand_r(&op->seed) % (unsigned)(max_ms - min_ms + 1)));
}

static void op_error(Op *op, const char *what, long status, json_t *j)
{
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        snprintf(op->error, sizeof(op->error), "%s: %ld %s", what, status, text ? text : "");
        free(text);
}

/* Polls the allocation until it is in one of the states (space-separated
 * list); the state, or NULL on an error (recorded). */
static const char *follow(Op *op, CURL *h, const char *token, const char *states, char *state,
                          long long deadline)
{
        char path[128];
        snprintf(path, sizeof(path), "/api/v1/allocations/%s", op->id);
        for (;;) {
                if (give_up(deadline)) {
                        snprintf(op->error, sizeof(op->error), "%s never one of %s (last %s)",
                                 op->id, states, state);
                        return NULL;
                }
                json_t *j = NULL;
                long st = call(h, "GET", path, token, NULL, NULL, &j);
                if (st == 200) {
                        snprintf(state, 32, "%s", strempty(jpath(j, "state", NULL)));
                        if (streq(state, "failed"))
                                snprintf(op->failure, sizeof(op->failure), "%s",
                                         strempty(jpath(j, "failure_reason", NULL)));
                } else if (st != 0 && st != 503) {
                        op_error(op, "GET allocation", st, j);
                        json_decref(j);
                        return NULL;
                }
                json_decref(j);
                if (st == 200) {
                        char want[128];
                        snprintf(want, sizeof(want), " %s ", states);
                        char have[40];
                        snprintf(have, sizeof(have), " %s ", state);
                        if (strstr(want, have))
                                return state;
                }
                nap(op, 150, 400);
        }
}

static void *op_run(void *arg)
{
        Op *op = arg;
        const char *token = W.users[op->user].access;
        long long deadline = mono_ms() + OP_DEADLINE_MS;
        CURL *h = curl_easy_init();
        if (!h) {
                snprintf(op->error, sizeof(op->error), "curl_easy_init");
                return NULL;
        }
        char key[64], state[32] = "";
        int attempt = 0;
        op->t_start = mono_ms();
        snprintf(key, sizeof(key), "chaos-%d-%d-%d", op->round, op->index, attempt);

        /* the launch: repeated as it was until answered */
        while (!op->launched) {
                if (give_up(deadline)) {
                        snprintf(op->error, sizeof(op->error), "no answer to launch %s", key);
                        goto out;
                }
                json_t *j = NULL;
                long st = call(h, "POST", "/api/v1/allocations", token, key, W.body, &j);
                op->posts++;
                const char *code = jpath(j, "error", "code");
                if (st == 202) {
                        pthread_mutex_lock(&W.lock);
                        snprintf(op->id, sizeof(op->id), "%s",
                                 strempty(jpath(j, "allocation", "id")));
                        op->launched = true;
                        pthread_mutex_unlock(&W.lock);
                        op->t_launched = mono_ms();
                        op->replayed += json_is_true(json_object_get(j, "replayed"));
                } else if (st == 0 || st == 503) {
                        op->no_answer++;
                        nap(op, 200, 500);
                } else if (st == 409 &&
                           (streq_ptr(code, "sold_out") || streq_ptr(code, "node_offline"))) {
                        if (streq(code, "sold_out"))
                                op->sold_out++;
                        else
                                op->offline++;
                        if (++attempt >= LAUNCH_TRIES) {
                                json_decref(j);
                                goto out;
                        }
                        snprintf(key, sizeof(key), "chaos-%d-%d-%d", op->round, op->index, attempt);
                        nap(op, 300, 2000);
                } else {
                        op_error(op, "launch", st, j);
                        json_decref(j);
                        goto out;
                }
                json_decref(j);
        }
        if (!op->id[0]) {
                snprintf(op->error, sizeof(op->error), "a 202 without an allocation id");
                goto out;
        }

        /* provisioned (or failed), held a moment */
        if (!follow(op, h, token, "active failed", state, deadline))
                goto out;
        if (streq(state, "failed")) {
                op->failed = true;
                goto out;
        }
        op->activated = true;
        op->t_active = mono_ms();
        nap(op, 0, 1000);

        /* the release: repeated until answered; a repeat may find it released */
        char path[128], rkey[64];
        snprintf(path, sizeof(path), "/api/v1/allocations/%s/release", op->id);
        snprintf(rkey, sizeof(rkey), "release-%d-%d", op->round, op->index);
        for (;;) {
                if (give_up(deadline)) {
                        snprintf(op->error, sizeof(op->error), "no answer to release %s", op->id);
                        goto out;
                }
                json_t *j = NULL;
                long st = call(h, "POST", path, token, rkey, NULL, &j);
                json_t *details = json_object_get(json_object_get(j, "error"), "details");
                const char *was = json_string_value(json_object_get(details, "state"));
                if (st == 202) {
                        pthread_mutex_lock(&W.lock);
                        op->release_accepted = true;
                        pthread_mutex_unlock(&W.lock);
                        json_decref(j);
                        break;
                }
                if (st == 409 && streq_ptr(jpath(j, "error", "code"), "invalid_state") &&
                    (streq_ptr(was, "releasing") || streq_ptr(was, "released"))) {
                        /* the answer to an earlier try was lost with the kill */
                        op->release_accepted = true;
                        json_decref(j);
                        break;
                }
                if (st != 0 && st != 503) {
                        op_error(op, "release", st, j);
                        json_decref(j);
                        goto out;
                }
                json_decref(j);
                nap(op, 200, 500);
        }
        if (!follow(op, h, token, "released release_failed", state, deadline))
                goto out;
        if (streq(state, "release_failed"))
                snprintf(op->error, sizeof(op->error), "%s ended release_failed", op->id);
        else
                op->released = true;
out:
        op->t_done = mono_ms();
        curl_easy_cleanup(h);
        return NULL;
}

/* ---- the checks (main thread) ---- */

typedef struct Totals {
        int posts, launched, sold_out, offline, no_answer, replayed, activated, failed, released;
        int kills, durable_checked;
} Totals;

/* The ids of the launches answered 202 so far (releases: whose release was
 * answered 202), read under the lock, as a quoted SQL list; *n gets how
 * many. NULL when none. */
static char *answered_ids(Op *ops, int n_ops, bool releases, int *n)
{
        size_t cap = (size_t)n_ops * 70 + 16, len = 0;
        char *s = malloc(cap);
        cr_assert(s);
        *n = 0;
        pthread_mutex_lock(&W.lock);
        for (int i = 0; i < n_ops; i++) {
                if (!ops[i].launched || !ops[i].id[0] || (releases && !ops[i].release_accepted))
                        continue;
                len += (size_t)snprintf(s + len, cap - len, "%s'%s'", *n ? "," : "", ops[i].id);
                (*n)++;
        }
        pthread_mutex_unlock(&W.lock);
        if (*n == 0) {
                free(s);
                return NULL;
        }
        return s;
}

static void check_exist(const char *ids, int n, const char *when)
{
        if (!ids)
                return;
        _cleanup_free_ char *sql =
            xasprintf("SELECT count(*) FROM allocations WHERE id IN (%s)", ids);
        long long found = db_scalar(W.cl->c, sql);
        ensure(found == n, "%s: %d launches were answered 202, %lld of them exist", when, n, found);
}

static void check_releasing(const char *ids, int n)
{
        if (!ids)
                return;
        _cleanup_free_ char *sql =
            xasprintf("SELECT count(*) FROM allocations WHERE id IN (%s) "
                      "AND state IN ('releasing', 'released', 'release_failed')",
                      ids);
        long long found = db_scalar(W.cl->c, sql);
        ensure(found == n, "after a restart: %d releases were answered 202, %lld of them stayed", n,
               found);
}

static void settle(int round)
{
        long long deadline = mono_ms() + SETTLE_MS;
        for (;;) {
                long long busy =
                    db_scalar(W.cl->c, "SELECT count(*) FROM allocations WHERE state IN "
                                       "('pending', 'provisioning', 'releasing')") +
                    db_scalar(W.cl->c, "SELECT count(*) FROM tasks WHERE state = 'running'");
                if (busy == 0)
                        return;
                ensure(mono_ms() < deadline,
                       "round %d: %lld allocation(s) or task(s) still unfinished after %d s", round,
                       busy, SETTLE_MS / 1000);
                pause_ms(200);
        }
}

static void check_round(int round)
{
        cloud_check_invariants(W.cl);
        cloud_check_ledger(W.cl);
        ensure(db_scalar(W.cl->c, "SELECT count(*) FROM tasks WHERE state = 'running'") == 0,
               "round %d: a task still running", round);
        ensure(db_scalar(W.cl->c, "SELECT count(*) FROM allocations WHERE state NOT IN "
                                  "('released', 'failed')") == 0,
               "round %d: every allocation finished", round);
        long long avail = cloud_slots_in_state(W.cl, NULL, "available");
        ensure(avail == HOSTS * SLOTS_PER_HOST,
               "round %d: %lld of %d slots available (quarantined %lld)", round, avail,
               HOSTS * SLOTS_PER_HOST, cloud_slots_in_state(W.cl, NULL, "quarantined"));
}

/* Every allocation of the user through the API, page by page: how many, and
 * that each is in a contract state. */
static long long api_count(const Tokens *u)
{
        long long n = 0;
        _cleanup_free_ char *cursor = NULL;
        for (int page = 0; page < 1000; page++) {
                _cleanup_free_ char *path =
                    cursor ? xasprintf("/api/v1/allocations?limit=100&cursor=%s", cursor)
                           : xasprintf("/api/v1/allocations?limit=100");
                _cleanup_resp_ HttpResponse *r = api_get(W.cl->c, path, u->access);
                ensure(r->status == 200, "%s: %ld %s", path, r->status, r->body);
                size_t i;
                json_t *it;
                json_array_foreach(jget(r, "items"), i, it)
                {
                        const char *st = json_string_value(json_object_get(it, "state"));
                        ensure(streq_ptr(st, "released") || streq_ptr(st, "failed"),
                               "allocation %s is %s after the settle",
                               json_string_value(json_object_get(it, "id")), st ? st : "(none)");
                        n++;
                }
                free(cursor);
                cursor = jstr(r, "next_cursor") ? strdup(jstr(r, "next_cursor")) : NULL;
                if (!cursor)
                        return n;
        }
        ensure(false, "no end to the pages");
        return n;
}

Test(chaos, kill_9_at_random_moments_under_200_concurrent_launches_and_releases)
{
        const char *args[] = {"--metering-interval-s", "1", NULL};
        CloudOptions o = {.controller_args = args, .fixed_ports = true, .n_hosts = HOSTS};
        W.cl = cloud_new(&o);
        for (size_t i = 0; i < W.cl->n_hosts; i++)
                ensure(W.cl->hosts[i]->n_slots == SLOTS_PER_HOST, "host %zu: %zu slots", i,
                       W.cl->hosts[i]->n_slots);
        snprintf(W.url, sizeof(W.url), "%s", W.cl->c->url);
        W.body = cloud_launch_body(W.cl, 1);
        for (int u = 0; u < USERS; u++) {
                _cleanup_free_ char *email = xasprintf("chaos-%d@example.com", u);
                cloud_user(W.cl, email, &W.users[u], 1000000000);
        }
        unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
        srand(seed);
        cr_log_info("chaos seed %u", seed);

        static Op ops[ROUNDS][OPS];
        Totals tot = {0};
        long long started = mono_ms();
        for (int round = 0; round < ROUNDS; round++) {
                for (int i = 0; i < OPS; i++) {
                        ops[round][i] = (Op){.round = round,
                                             .index = i,
                                             .user = i % USERS,
                                             .seed = seed + (unsigned)(round * OPS + i)};
                        int r = pthread_create(&W.threads[i], NULL, op_run, &ops[round][i]);
                        cr_assert(r == 0, "pthread_create: %s", strerror(r));
                        W.n_threads++;
                }
                /* kill -9 at random moments, restart at once: the first in the
                 * burst of launches or the first provisions, the next a random
                 * moment after the restart (provisions, holds, releases, the
                 * launches that try again) */
                long long t0 = mono_ms(), next = 30 + rand() % 800;
                for (int k = 0; k < KILLS; k++) {
                        long long wait = t0 + next - mono_ms();
                        if (wait > 0)
                                pause_ms((long)wait);
                        int n = 0, nr = 0;
                        _cleanup_free_ char *ids = answered_ids(ops[round], OPS, false, &n);
                        _cleanup_free_ char *rel = answered_ids(ops[round], OPS, true, &nr);
                        long long killed_at = mono_ms() - t0;
                        ctl_kill9(W.cl->c);
                        tot.kills++;
                        cloud_controller_restart(W.cl);
                        /* what was answered 202 before the kill survived it */
                        check_exist(ids, n, "after a restart");
                        check_releasing(rel, nr);
                        tot.durable_checked += n + nr;
                        long long up_at = mono_ms() - t0;
                        cr_log_info("round %d: kill -9 at %lld ms, %d launches and %d releases "
                                    "answered before, up again at %lld ms",
                                    round, killed_at, n, nr, up_at);
                        next = up_at + 300 + rand() % 4200;
                }
                join_clients();
                for (int i = 0; i < OPS; i++) {
                        Op *op = &ops[round][i];
                        ensure(!op->error[0], "round %d op %d: %s", round, i, op->error);
                        tot.posts += op->posts;
                        tot.launched += op->launched;
                        tot.sold_out += op->sold_out;
                        tot.offline += op->offline;
                        tot.no_answer += op->no_answer;
                        tot.replayed += op->replayed;
                        tot.activated += op->activated;
                        tot.failed += op->failed;
                        tot.released += op->released;
                        ensure(!op->release_accepted || op->released,
                               "an accepted release of %s never finished", op->id);
                }
                /* the slowest client, for the log */
                Op *slow = &ops[round][0];
                for (int i = 1; i < OPS; i++)
                        if (ops[round][i].t_done > slow->t_done)
                                slow = &ops[round][i];
                cr_log_info("round %d: slowest client %d (%s): launched %lld ms, active %lld ms, "
                            "done %lld ms after the round began",
                            round, slow->index, slow->id[0] ? slow->id : "none",
                            slow->t_launched ? slow->t_launched - t0 : -1,
                            slow->t_active ? slow->t_active - t0 : -1, slow->t_done - t0);
                settle(round);
                int n = 0;
                _cleanup_free_ char *ids = answered_ids(ops[round], OPS, false, &n);
                check_exist(ids, n, "after the round");
                check_round(round);
                cr_log_info("round %d done at %lld ms", round, mono_ms() - started);
        }

        /* each tenant has exactly what their clients were answered */
        for (int u = 0; u < USERS; u++) {
                int known = 0;
                for (int round = 0; round < ROUNDS; round++)
                        for (int i = 0; i < OPS; i++)
                                known += ops[round][i].launched && ops[round][i].user == u;
                _cleanup_free_ char *sql = xasprintf(
                    "SELECT count(*) FROM allocations WHERE user_id = '%s'", W.users[u].user_id);
                long long in_db = db_scalar(W.cl->c, sql);
                ensure(in_db == known, "tenant %d: %lld allocations stored, %d answered", u, in_db,
                       known);
                ensure(api_count(&W.users[u]) == known, "tenant %d: the API lists %d", u, known);
        }
        ensure(db_scalar(W.cl->c, "SELECT count(*) FROM ledger_holds WHERE state = 'pending'") == 0,
               "a hold still pending");

        char summary[512];
        snprintf(summary, sizeof(summary),
                 "chaos: %d rounds x %d concurrent clients, %d kills; %d launch calls: %d "
                 "launched (%d answers replayed), %d sold_out, %d node_offline, %d unanswered "
                 "and repeated; %d activated, %d failed, %d released; %d 202 answers (launches, "
                 "releases) checked "
                 "after the kill they preceded; %lld s",
                 ROUNDS, OPS, tot.kills, tot.posts, tot.launched, tot.replayed, tot.sold_out,
                 tot.offline, tot.no_answer, tot.activated, tot.failed, tot.released,
                 tot.durable_checked, (mono_ms() - started) / 1000);
        cr_log_info("%s", summary);
        fprintf(stderr, "# %s\n", summary);
        ensure(tot.launched == tot.activated + tot.failed, "%s", summary);
        ensure(tot.released == tot.activated, "%s", summary);
        /* far more than one slot's worth each: slots were taken again and again */
        ensure(tot.activated >= 2 * HOSTS * SLOTS_PER_HOST, "%s", summary);
        ctl_stop_clean(W.cl->c);
}
