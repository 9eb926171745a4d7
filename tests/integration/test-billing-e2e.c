/* SPDX-License-Identifier: MIT */
/* Billing with real launches: the controller, scripts/bootstrap.sh enrolling
 * a simulated host and the real `gpuslice-agent run --simulate`, credit from
 * an admin. A launch holds an hour of its price; usage is charged per second
 * from the moment the allocation is active until its release is asked for,
 * never for provisioning, never for a failed launch, never after a teardown
 * failed (billing_stopped). The ledger sums to zero after each.
 *
 * (The simulated-host fixture mirrors test-allocations.c's.) */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "test-peer.h"

#define DEADLINE_MS 60000
/* 36 USD per GPU hour: 10,000 micro-USD a second, visible within a tick. */
#define PRICE  36000000LL
#define CREDIT 100000000LL

extern char **environ;

static struct {
        Controller *c;
        Tokens admin, user;
        char *root, *prefix, *conf, *boot_out, *agent_log, *faults;
        char node_id[64], sku_id[64], image_id[64], network_id[64];
        pid_t agent;
} T;

static void pause_ms(long ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
}

static void print_tail(const char *title, const char *path)
{
        _cleanup_free_ char *s = path ? read_file(path) : NULL;
        if (!s)
                return;
        size_t n = strlen(s);
        fprintf(stderr, "---- %s (%s, last 6000 bytes) ----\n%s\n", title, path,
                n > 6000 ? s + n - 6000 : s);
}

#define ensure(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        if (T.c)                                                                   \
                                print_tail("controller stderr", T.c->stderr_path);                 \
                        print_tail("agent log", T.agent_log);                                      \
                        cr_assert_fail(__VA_ARGS__);                                               \
                }                                                                                  \
        } while (0)

static pid_t spawn(char *const *argv, const char *out_path)
{
        size_t n = 0;
        for (char **e = environ; *e; e++)
                n++;
        _cleanup_free_ char **envp = calloc(n + 1, sizeof(char *));
        cr_assert(envp);
        size_t k = 0;
        for (char **e = environ; *e; e++)
                if (strncmp(*e, "GPUSLICE_", 9) != 0)
                        envp[k++] = *e;
        pid_t parent = getpid();
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                int in = open("/dev/null", O_RDONLY);
                int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
                if (in < 0 || out < 0)
                        _exit(127);
                dup2(in, STDIN_FILENO);
                dup2(out, STDOUT_FILENO);
                dup2(out, STDERR_FILENO);
                execve(argv[0], argv, envp);
                _exit(127);
        }
        return pid;
}

static int wait_child(pid_t pid, long long timeout_ms)
{
        long long deadline = mono_ms() + timeout_ms;
        for (;;) {
                int status;
                pid_t r = waitpid(pid, &status, WNOHANG);
                if (r == pid)
                        return status;
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (mono_ms() >= deadline)
                        return -ETIMEDOUT;
                pause_ms(10);
        }
}

static HttpResponse *get_fmt(const char *token, const char *fmt, const char *arg)
{
        _cleanup_free_ char *path = xasprintf(fmt, arg);
        return api_get(T.c, path, token);
}

static char *admin_create(const char *path, const char *body)
{
        _cleanup_resp_ HttpResponse *r = api_post(T.c, path, T.admin.access, body);
        ensure(r->status == 201, "POST %s: %ld %s", path, r->status, r->body);
        return strdup(jstr(r, "id"));
}

static bool node_online(void)
{
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                _cleanup_resp_ HttpResponse *r =
                    get_fmt(T.admin.access, "/api/v1/admin/nodes/%s", T.node_id);
                if (r->status == 200 && json_is_true(jget(r, "online")))
                        return true;
                if (mono_ms() > deadline)
                        return false;
                pause_ms(100);
        }
}

/* Controller, a simulated host enrolled and approved, a SKU at PRICE, a user
 * with CREDIT. */
static void world_start(void)
{
        T.c = ctl_new();
        ctl_args(T.c, "--heartbeat-interval-s", "1", "--metering-interval-s", "1",
                 "--rate-limit-session-rps", "0", "--rate-limit-address-rps", "0", NULL);
        ctl_start_or_fail(T.c);
        admin_sign_in(T.c, "root@example.com", NULL, &T.admin);

        T.root = tmpdir_new("billing-host");
        T.prefix = xasprintf("%s/host", T.root);
        T.conf = xasprintf("%s/etc/gpuslice/agent.conf", T.prefix);
        T.boot_out = xasprintf("%s/bootstrap.out", T.root);
        T.agent_log = xasprintf("%s/agent.log", T.root);
        T.faults = xasprintf("%s/var/lib/gpuslice-agent/simulated-host/faults", T.prefix);
        _cleanup_resp_ HttpResponse *add = api_post(T.c, "/api/v1/admin/nodes", T.admin.access,
                                                    "{\"name\":\"sim-1\",\"simulated\":true}");
        ensure(add->status == 201, "%s", add->body);
        snprintf(T.node_id, sizeof(T.node_id), "%s", jstr(add, "node.id"));
        const char *src = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        const char *build = getenv("GPUSLICE_TEST_BUILD_ROOT");
        cr_assert(src && build, "run through meson test");
        _cleanup_free_ char *script = xasprintf("%s/scripts/bootstrap.sh", src);
        _cleanup_free_ char *agent = xasprintf("%s/agent/gpuslice-agent", build);
        char *argv[] = {"/bin/bash",   script,     "--controller",
                        T.c->url,      "--token",  (char *)jstr(add, "bootstrap_token"),
                        "--simulate",  "--prefix", T.prefix,
                        "--agent-bin", agent,      NULL};
        int status = wait_child(spawn(argv, T.boot_out), 90000);
        if (!(status >= 0 && cli_exit_code(status) == 0))
                print_tail("bootstrap.sh", T.boot_out);
        ensure(status >= 0 && cli_exit_code(status) == 0, "bootstrap.sh failed (%d)", status);
        char *run[] = {agent, "run", "--config", T.conf, "--simulate", NULL};
        T.agent = spawn(run, T.agent_log);
        ensure(node_online(), "the agent never brought the node online");

        _cleanup_free_ char *dpath =
            xasprintf("/api/v1/admin/nodes/%s/slice-topology/discovery", T.node_id);
        _cleanup_resp_ HttpResponse *d = api_post(T.c, dpath, T.admin.access, NULL);
        ensure(d->status == 202, "%s", d->body);
        _cleanup_free_ char *cpath =
            xasprintf("/api/v1/admin/nodes/%s/slice-topology/candidates/%s", T.node_id,
                      jstr(d, "discovery_id"));
        HttpResponse *cand = NULL;
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                cand = api_get(T.c, cpath, T.admin.access);
                if (cand->status == 200 && !streq(jstr(cand, "state"), "running"))
                        break;
                ensure(mono_ms() < deadline, "discovery never finished: %s", cand->body);
                http_response_free(cand);
                pause_ms(100);
        }
        const char *gpu = json_string_value(
            json_array_get(json_object_get(json_array_get(jget(cand, "slots"), 0), "gpus"), 0));
        char pci_id[16] = "";
        size_t i;
        json_t *dev;
        json_array_foreach(jget(cand, "document.devices"), i, dev)
        {
                if (streq_ptr(json_string_value(json_object_get(dev, "address")), gpu))
                        snprintf(pci_id, sizeof(pci_id), "%s:%s",
                                 json_string_value(json_object_get(dev, "vendor")),
                                 json_string_value(json_object_get(dev, "device")));
        }
        http_response_free(cand);
        ensure(pci_id[0], "no GPU in the discovery");
        _cleanup_free_ char *apath = xasprintf("%s/approve", cpath);
        _cleanup_resp_ HttpResponse *ap = api_post(T.c, apath, T.admin.access, "{}");
        ensure(ap->status == 200, "approve: %s", ap->body);

        _cleanup_free_ char *sku = xasprintf(
            "{\"name\":\"sim-gpu\",\"gpu_model\":\"Simulated GPU\",\"gpu_memory_gb\":64,"
            "\"pci_ids\":[\"%s\"],\"gpu_counts\":[1,2,4,8],\"price_per_gpu_hour_micros\":%lld,"
            "\"topology\":\"node\"}",
            pci_id, PRICE);
        _cleanup_free_ char *sku_id = admin_create("/api/v1/admin/skus", sku);
        _cleanup_free_ char *img = admin_create("/api/v1/admin/images", "{\"name\":\"ubuntu\"}");
        _cleanup_free_ char *net =
            admin_create("/api/v1/admin/networks", "{\"name\":\"tenant\",\"vlan\":100}");
        snprintf(T.sku_id, sizeof(T.sku_id), "%s", sku_id);
        snprintf(T.image_id, sizeof(T.image_id), "%s", img);
        snprintf(T.network_id, sizeof(T.network_id), "%s", net);

        ensure(api_signup(T.c, "tenant@example.com", "correct horse battery", "Tenant", &T.user) ==
                   201,
               "signup");
        _cleanup_free_ char *cp = xasprintf("/api/v1/admin/users/%s/credits", T.user.user_id);
        _cleanup_free_ char *cb =
            xasprintf("{\"amount_micros\":%lld,\"reason\":\"e2e credit\"}", CREDIT);
        _cleanup_resp_ HttpResponse *g = api_post(T.c, cp, T.admin.access, cb);
        ensure(g->status == 201, "%s", g->body);
}

static void setup(void)
{
        T = (typeof(T)){0};
}

static void teardown(void)
{
        if (T.agent > 0) {
                kill(T.agent, SIGKILL);
                while (waitpid(T.agent, NULL, 0) < 0 && errno == EINTR)
                        ;
        }
        if (T.c)
                ctl_free(T.c);
        if (T.root)
                tmpdir_remove(T.root);
        free(T.root);
        free(T.prefix);
        free(T.conf);
        free(T.boot_out);
        free(T.agent_log);
        free(T.faults);
}

TestSuite(billing_e2e, .init = setup, .fini = teardown, .timeout = 240);

/* ---- helpers ---- */

static json_t *balance(void)
{
        _cleanup_resp_ HttpResponse *r = api_get(T.c, "/api/v1/billing/balance", T.user.access);
        ensure(r->status == 200, "%s", r->body);
        return json_incref(r->json);
}

static long long balance_field(const char *field)
{
        json_t *b = balance();
        long long v = json_integer_value(json_object_get(b, field));
        json_decref(b);
        return v;
}

static void launch(const char *key, char id[static 64])
{
        _cleanup_free_ char *body =
            xasprintf("{\"sku_id\":\"%s\",\"gpu_count\":1,\"image_id\":\"%s\","
                      "\"network_id\":\"%s\",\"ssh_key_ids\":[]}",
                      T.sku_id, T.image_id, T.network_id);
        _cleanup_free_ char *hdr = xasprintf("Idempotency-Key: %s", key);
        HttpRequest rq = {.method = "POST",
                          .path = "/api/v1/allocations",
                          .body = body,
                          .bearer = T.user.access,
                          .extra_header = hdr};
        _cleanup_resp_ HttpResponse *r = http_send(T.c, &rq);
        ensure(r->status == 202, "launch: %ld %s", r->status, r->body);
        snprintf(id, 64, "%s", jstr(r, "allocation.id"));
}

static HttpResponse *alloc_wait(const char *id, const char *state)
{
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                HttpResponse *r = get_fmt(T.user.access, "/api/v1/allocations/%s", id);
                ensure(r->status == 200, "%s", r->body);
                if (streq(jstr(r, "state"), state))
                        return r;
                ensure(mono_ms() < deadline, "allocation %s never %s: %s", id, state, r->body);
                http_response_free(r);
                pause_ms(100);
        }
}

static long long sql_for(const char *fmt, const char *id)
{
        _cleanup_free_ char *sql = xasprintf(fmt, id);
        return db_scalar(T.c, sql);
}

static void wait_sql(const char *fmt, const char *id, long long want, const char *what)
{
        long long deadline = mono_ms() + DEADLINE_MS;
        while (sql_for(fmt, id) < want) {
                ensure(mono_ms() < deadline, "%s", what);
                pause_ms(100);
        }
}

static void assert_ledger_sound(void)
{
        ensure(db_scalar(T.c, "SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_entries") == 0,
               "the ledger does not sum to zero");
        ensure(db_scalar(T.c, "SELECT COUNT(*) FROM ledger_accounts a WHERE balance_micros != "
                              "(SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_entries e "
                              "WHERE e.account_id = a.id)") == 0,
               "a cached balance differs from its entries");
        ensure(db_scalar(T.c, "SELECT COUNT(*) FROM (SELECT txn_id FROM ledger_entries GROUP BY "
                              "txn_id HAVING SUM(amount_micros) != 0)") == 0,
               "an unbalanced transaction");
}

/* What billing_started_at .. billing_ended_at costs: whole seconds. */
static long long due_between(const char *id)
{
        long long secs = sql_for("SELECT (billing_ended_at - billing_started_at) / 1000000 FROM "
                                 "allocations WHERE id = '%s'",
                                 id);
        return PRICE / 3600 * secs + PRICE % 3600 * secs / 3600;
}

/* ---- the journeys ---- */

Test(billing_e2e, a_launch_is_held_then_charged_from_active_until_its_release)
{
        world_start();
        char id[64];
        launch("e2e-1", id);
        /* The hold: an hour of the price reserved at once, nothing spent. */
        ensure(balance_field("balance_micros") == CREDIT, "nothing charged at launch");
        ensure(balance_field("held_micros") > 0, "the launch holds");
        _cleanup_resp_ HttpResponse *a = alloc_wait(id, "active");
        long long started =
            sql_for("SELECT billing_started_at FROM allocations WHERE id = '%s'", id);
        long long created = sql_for("SELECT created_at FROM allocations WHERE id = '%s'", id);
        ensure(started > created, "billing starts when active, not at launch");

        /* Charged while it runs; the burn rate and runway say so. */
        wait_sql("SELECT COALESCE(SUM(charged_micros), 0) FROM allocation_usage WHERE "
                 "allocation_id = '%s'",
                 id, 20000, "no usage charged while active");
        json_t *b = balance();
        ensure(json_integer_value(json_object_get(b, "burn_rate_micros_per_hour")) == PRICE,
               "burn rate");
        double runway = json_number_value(json_object_get(b, "runway_hours"));
        ensure(runway > 2.0 && runway < 2.8, "runway %f", runway);
        /* The hold shrinks as usage accrues: available + held = balance. */
        ensure(json_integer_value(json_object_get(b, "available_micros")) +
                       json_integer_value(json_object_get(b, "held_micros")) ==
                   json_integer_value(json_object_get(b, "balance_micros")),
               "available + held = balance");
        ensure(json_integer_value(json_object_get(b, "held_micros")) <
                   PRICE - (CREDIT - json_integer_value(json_object_get(b, "balance_micros"))) + 1,
               "usage counts against the hold");
        json_decref(b);

        /* Release: billing ends when it is asked for. */
        _cleanup_free_ char *rp = xasprintf("/api/v1/allocations/%s/release", id);
        _cleanup_resp_ HttpResponse *rel = api_post(T.c, rp, T.user.access, NULL);
        ensure(rel->status == 202, "release: %s", rel->body);
        _cleanup_resp_ HttpResponse *done = alloc_wait(id, "released");
        wait_sql("SELECT closed FROM allocation_meters WHERE allocation_id = '%s'", id, 1,
                 "the meter never closed");
        long long due = due_between(id);
        ensure(balance_field("balance_micros") == CREDIT - due,
               "charged exactly the active seconds: %lld, want %lld",
               CREDIT - balance_field("balance_micros"), due);
        ensure(balance_field("held_micros") == 0, "the hold is closed");
        ensure(sql_for("SELECT state = 'posted' FROM ledger_holds WHERE allocation_id = '%s'",
                       id) == 1,
               "the hold was posted into usage");
        pause_ms(2500);
        ensure(balance_field("balance_micros") == CREDIT - due, "nothing after the release");
        json_t *bb = balance();
        ensure(json_is_null(json_object_get(bb, "runway_hours")), "nothing runs: no runway");
        json_decref(bb);

        _cleanup_resp_ HttpResponse *u =
            api_get(T.c, "/api/v1/billing/usage?bucket=day", T.user.access);
        ensure(u->status == 200 && json_integer_value(jget(u, "total_micros")) == due,
               "the usage timeline adds up to the charge: %s", u->body);
        ensure(streq_ptr(jstr(u, "items.0.allocation_id"), id), "%s", u->body);
        _cleanup_resp_ HttpResponse *me = api_get(T.c, "/api/v1/me", T.user.access);
        ensure(json_is_false(jget(me, "first_run")), "%s", me->body);
        assert_ledger_sound();
        ctl_stop_clean(T.c);
}

Test(billing_e2e, a_failed_launch_is_never_charged_and_its_hold_is_voided)
{
        world_start();
        ensure(write_file(T.faults, "bind_vf\n") == 0, "faults");
        char id[64];
        launch("e2e-fail", id);
        _cleanup_resp_ HttpResponse *a = alloc_wait(id, "failed");
        ensure(streq_ptr(jstr(a, "failure_reason"), "vf_bind_failed"), "%s", a->body);
        pause_ms(2500);
        ensure(balance_field("balance_micros") == CREDIT, "a failed launch costs nothing");
        ensure(balance_field("available_micros") == CREDIT, "its hold is voided");
        ensure(sql_for("SELECT COUNT(*) FROM allocation_meters WHERE allocation_id = '%s'", id) ==
                   0,
               "no meter for a launch that never ran");
        ensure(sql_for("SELECT state = 'voided' FROM ledger_holds WHERE allocation_id = '%s'",
                       id) == 1,
               "voided");
        assert_ledger_sound();
        ctl_stop_clean(T.c);
}

Test(billing_e2e, a_failed_teardown_stops_billing)
{
        world_start();
        char id[64];
        launch("e2e-teardown", id);
        _cleanup_resp_ HttpResponse *a = alloc_wait(id, "active");
        ensure(write_file(T.faults, "reset\n") == 0, "faults");
        _cleanup_free_ char *rp = xasprintf("/api/v1/allocations/%s/release", id);
        _cleanup_resp_ HttpResponse *rel = api_post(T.c, rp, T.user.access, NULL);
        ensure(rel->status == 202, "release: %s", rel->body);
        _cleanup_resp_ HttpResponse *f = alloc_wait(id, "release_failed");
        ensure(json_is_true(jget(f, "billing_stopped")), "%s", f->body);
        wait_sql("SELECT closed FROM allocation_meters WHERE allocation_id = '%s'", id, 1,
                 "the meter never closed");
        long long due = due_between(id);
        ensure(balance_field("balance_micros") == CREDIT - due,
               "charged up to the release request: %lld, want %lld",
               CREDIT - balance_field("balance_micros"), due);
        pause_ms(2500);
        ensure(balance_field("balance_micros") == CREDIT - due,
               "nothing while release_failed (billing stopped)");
        ensure(balance_field("burn_rate_micros_per_hour") == 0, "it burns nothing");
        assert_ledger_sound();
        ctl_stop_clean(T.c);
}
