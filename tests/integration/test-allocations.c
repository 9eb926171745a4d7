/* SPDX-License-Identifier: MIT */
/* Allocations end to end with the real processes on loopback: the controller
 * (harness), scripts/bootstrap.sh enrolling a simulated host and the real
 * `gpuslice-agent run --simulate` carrying out command.allocation.assign and
 * .release. Catalog rows and credit go through the admin API. The journeys:
 * quote, launch, watch the task, read the SSH command, release; idempotent
 * launches; another tenant sees nothing; concurrent launches never share a
 * slot; a controller restart mid-provision resumes; a provision past its
 * deadline fails with agent_timeout and its slots are cleaned; a failed wipe
 * ends release_failed with the slot quarantined and billing stopped, and the
 * retry succeeds; force release and slot verification by an admin.
 *
 * Every wait polls a condition until a generous deadline (a loaded 2-core
 * machine runs these with sanitizers). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "test-peer.h"

#define DEADLINE_MS 60000

extern char **environ;

typedef struct Host {
        char *root, *prefix, *conf, *boot_out, *agent_log, *faults;
        char node_id[64];
        pid_t agent;
} Host;

/* The test's state: a failed assertion longjmps past the body, so teardown
 * finds the children and temp dirs here. */
static struct {
        Controller *c;
        Tokens admin;
        Host *host;
        char sku_id[64], image_id[64], network_id[64];
        char slot_ids[8][64];
        size_t n_slots;
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
        fprintf(stderr, "---- %s (%s, last 8000 bytes) ----\n%s\n", title, path,
                n > 8000 ? s + n - 8000 : s);
}

static void dump_logs(void)
{
        if (T.c)
                print_tail("controller stderr", T.c->stderr_path);
        if (T.host) {
                print_tail("bootstrap.sh output", T.host->boot_out);
                print_tail("agent log", T.host->agent_log);
        }
}

#define ensure(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        dump_logs();                                                               \
                        cr_assert_fail(__VA_ARGS__);                                               \
                }                                                                                  \
        } while (0)

/* ---- the simulated host (as in test-onboarding-e2e.c) ---- */

static char **child_env(void)
{
        size_t n = 0;
        for (char **e = environ; *e; e++)
                n++;
        char **env = calloc(n + 1, sizeof(char *));
        cr_assert(env);
        size_t k = 0;
        for (char **e = environ; *e; e++)
                if (strncmp(*e, "GPUSLICE_", 9) != 0)
                        env[k++] = *e;
        return env;
}

static pid_t spawn(char *const *argv, const char *out_path)
{
        _cleanup_free_ char **envp = child_env();
        pid_t parent = getpid();
        pid_t pid = fork();
        cr_assert(pid >= 0, "fork: %s", strerror(errno));
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

static char *agent_bin(void)
{
        const char *b = getenv("GPUSLICE_TEST_BUILD_ROOT");
        cr_assert(b && *b, "GPUSLICE_TEST_BUILD_ROOT is not set (run through meson test)");
        return xasprintf("%s/agent/gpuslice-agent", b);
}

static void agent_start(Host *h)
{
        cr_assert(h->agent == 0);
        _cleanup_free_ char *bin = agent_bin();
        char *argv[] = {bin, "run", "--config", h->conf, "--simulate", NULL};
        h->agent = spawn(argv, h->agent_log);
}

static void agent_kill9(Host *h)
{
        if (h->agent <= 0)
                return;
        kill(h->agent, SIGKILL);
        while (waitpid(h->agent, NULL, 0) < 0 && errno == EINTR)
                ;
        h->agent = 0;
}

/* A frozen agent keeps its connection: the node stays online for the
 * controller (until the heartbeat timeout) while nothing is answered. */
static void agent_freeze(Host *h, bool frozen)
{
        cr_assert(h->agent > 0);
        kill(h->agent, frozen ? SIGSTOP : SIGCONT);
}

static void host_free(Host *h)
{
        agent_kill9(h);
        tmpdir_remove(h->root);
        free(h->root);
        free(h->prefix);
        free(h->conf);
        free(h->boot_out);
        free(h->agent_log);
        free(h->faults);
        free(h);
}

static void set_faults(const char *rules)
{
        ensure(write_file(T.host->faults, rules) == 0, "cannot write %s", T.host->faults);
}

/* ---- the API ---- */

static HttpResponse *get_as(const char *token, const char *fmt, ...) _printf_(2, 3);
static HttpResponse *get_as(const char *token, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *path = NULL;
        cr_assert(vasprintf(&path, fmt, ap) >= 0);
        va_end(ap);
        return api_get(T.c, path, token);
}

static HttpResponse *launch(const char *token, const char *key, const char *body)
{
        _cleanup_free_ char *hdr = key ? xasprintf("Idempotency-Key: %s", key) : NULL;
        HttpRequest rq = {.method = "POST",
                          .path = "/api/v1/allocations",
                          .body = body,
                          .bearer = token,
                          .extra_header = hdr};
        return http_send(T.c, &rq);
}

static char *launch_body(unsigned gpus)
{
        return xasprintf("{\"sku_id\":\"%s\",\"gpu_count\":%u,\"image_id\":\"%s\","
                         "\"network_id\":\"%s\",\"ssh_key_ids\":[]}",
                         T.sku_id, gpus, T.image_id, T.network_id);
}

static char *admin_create(const char *path, const char *body)
{
        _cleanup_resp_ HttpResponse *r = api_post(T.c, path, T.admin.access, body);
        ensure(r->status == 201, "POST %s: %ld %s", path, r->status, r->body);
        return strdup(jstr(r, "id"));
}

static void credit(const Tokens *user, long long micros)
{
        _cleanup_free_ char *path = xasprintf("/api/v1/admin/users/%s/credits", user->user_id);
        _cleanup_free_ char *body =
            xasprintf("{\"amount_micros\":%lld,\"reason\":\"test credit\"}", micros);
        _cleanup_resp_ HttpResponse *r = api_post(T.c, path, T.admin.access, body);
        ensure(r->status == 200 || r->status == 201, "POST %s: %ld %s", path, r->status, r->body);
}

static void user_sign_up(const char *email, Tokens *t, long long credit_micros)
{
        ensure(api_signup(T.c, email, "correct horse battery", "Tenant", t) == 201, "signup %s",
               email);
        if (credit_micros)
                credit(t, credit_micros);
}

/* Polls the task until it leaves running; returns it. */
static HttpResponse *task_wait(const char *token, const char *task_id)
{
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                HttpResponse *r = get_as(token, "/api/v1/tasks/%s", task_id);
                ensure(r->status == 200, "GET task %s: %ld %s", task_id, r->status, r->body);
                if (!streq(jstr(r, "state"), "running"))
                        return r;
                if (mono_ms() > deadline) {
                        dump_logs();
                        cr_assert_fail("task %s still running: %s", task_id, r->body);
                }
                http_response_free(r);
                pause_ms(100);
        }
}

static HttpResponse *alloc_get(const char *token, const char *id)
{
        HttpResponse *r = get_as(token, "/api/v1/allocations/%s", id);
        ensure(r->status == 200, "GET allocation %s: %ld %s", id, r->status, r->body);
        return r;
}

/* Polls until the allocation is in state. */
static HttpResponse *alloc_wait(const char *token, const char *id, const char *state)
{
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                HttpResponse *r = alloc_get(token, id);
                if (streq(jstr(r, "state"), state))
                        return r;
                if (mono_ms() > deadline) {
                        dump_logs();
                        cr_assert_fail("allocation %s never %s: %s", id, state, r->body);
                }
                http_response_free(r);
                pause_ms(100);
        }
}

static long long slots_in_state(const char *state)
{
        _cleanup_free_ char *sql = xasprintf(
            "SELECT count(*) FROM node_resource_slots WHERE node_id = '%s' AND state = '%s'",
            T.host->node_id, state);
        return db_scalar(T.c, sql);
}

static bool wait_slots(const char *state, long long n)
{
        long long deadline = mono_ms() + DEADLINE_MS;
        while (slots_in_state(state) != n) {
                if (mono_ms() > deadline)
                        return false;
                pause_ms(100);
        }
        return true;
}

static bool node_online(bool want)
{
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                _cleanup_resp_ HttpResponse *r =
                    get_as(T.admin.access, "/api/v1/admin/nodes/%s", T.host->node_id);
                if (r->status == 200 && json_is_true(jget(r, "online")) == want)
                        return true;
                if (mono_ms() > deadline)
                        return false;
                pause_ms(100);
        }
}

/* ---- the fixture: controller, enrolled and approved host, catalog ---- */

static void controller_start(const char *const *extra)
{
        T.c = ctl_new();
        ctl_args(T.c, "--heartbeat-interval-s", "1", "--rate-limit-session-rps", "0",
                 "--rate-limit-address-rps", "0", NULL);
        for (size_t i = 0; extra && extra[i]; i++)
                ctl_args(T.c, extra[i], NULL);
        ctl_start_or_fail(T.c);
        admin_sign_in(T.c, "root@example.com", NULL, &T.admin);
}

static void enroll_and_approve(void)
{
        Host *h = T.host = calloc(1, sizeof(Host));
        cr_assert(h);
        h->root = tmpdir_new("alloc-host");
        h->prefix = xasprintf("%s/host", h->root);
        h->conf = xasprintf("%s/etc/gpuslice/agent.conf", h->prefix);
        h->boot_out = xasprintf("%s/bootstrap.out", h->root);
        h->agent_log = xasprintf("%s/agent.log", h->root);
        h->faults = xasprintf("%s/var/lib/gpuslice-agent/simulated-host/faults", h->prefix);

        _cleanup_resp_ HttpResponse *add = api_post(T.c, "/api/v1/admin/nodes", T.admin.access,
                                                    "{\"name\":\"sim-1\",\"simulated\":true}");
        ensure(add->status == 201, "%s", add->body);
        snprintf(h->node_id, sizeof(h->node_id), "%s", jstr(add, "node.id"));
        const char *src = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        cr_assert(src);
        _cleanup_free_ char *script = xasprintf("%s/scripts/bootstrap.sh", src);
        _cleanup_free_ char *agent = agent_bin();
        char *argv[] = {"/bin/bash",   script,     "--controller",
                        T.c->url,      "--token",  (char *)jstr(add, "bootstrap_token"),
                        "--simulate",  "--prefix", h->prefix,
                        "--agent-bin", agent,      NULL};
        pid_t pid = spawn(argv, h->boot_out);
        int status = wait_child(pid, 90000);
        ensure(status >= 0 && cli_exit_code(status) == 0, "bootstrap.sh failed (%d)", status);
        agent_start(h);
        ensure(node_online(true), "the agent never brought the node online");

        _cleanup_free_ char *dpath =
            xasprintf("/api/v1/admin/nodes/%s/slice-topology/discovery", h->node_id);
        _cleanup_resp_ HttpResponse *d = api_post(T.c, dpath, T.admin.access, NULL);
        ensure(d->status == 202, "%s", d->body);
        _cleanup_free_ char *cpath =
            xasprintf("/api/v1/admin/nodes/%s/slice-topology/candidates/%s", h->node_id,
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
        ensure(streq(jstr(cand, "state"), "completed"), "%s", cand->body);
        /* The SKU sells the GPU model the simulated host has. */
        const char *gpu_addr = json_string_value(
            json_array_get(json_object_get(json_array_get(jget(cand, "slots"), 0), "gpus"), 0));
        char pci_id[16] = "";
        size_t i;
        json_t *dev;
        json_array_foreach(jget(cand, "document.devices"), i, dev)
        {
                if (streq_ptr(json_string_value(json_object_get(dev, "address")), gpu_addr))
                        snprintf(pci_id, sizeof(pci_id), "%s:%s",
                                 json_string_value(json_object_get(dev, "vendor")),
                                 json_string_value(json_object_get(dev, "device")));
        }
        ensure(pci_id[0], "no GPU device in the discovery: %s", cand->body);
        _cleanup_free_ char *apath = xasprintf("%s/approve", cpath);
        http_response_free(cand);
        _cleanup_resp_ HttpResponse *ap = api_post(T.c, apath, T.admin.access, "{}");
        ensure(ap->status == 200, "approve: %s", ap->body);
        json_t *slot;
        json_array_foreach(jget(ap, "slots"), i, slot)
        {
                if (T.n_slots < ELEMENTSOF(T.slot_ids))
                        snprintf(T.slot_ids[T.n_slots++], 64, "%s",
                                 json_string_value(json_object_get(slot, "id")));
        }
        ensure(T.n_slots == 8, "%s", ap->body);

        _cleanup_free_ char *sku = xasprintf(
            "{\"name\":\"sim-gpu\",\"gpu_model\":\"Simulated GPU\",\"gpu_memory_gb\":64,"
            "\"pci_ids\":[\"%s\"],\"gpu_counts\":[1,2,4,8],\"price_per_gpu_hour_micros\":2000000,"
            "\"topology\":\"node\"}",
            pci_id);
        _cleanup_free_ char *sku_id = admin_create("/api/v1/admin/skus", sku);
        _cleanup_free_ char *img_id = admin_create(
            "/api/v1/admin/images", "{\"name\":\"ubuntu-24.04\",\"ssh_user\":\"ubuntu\"}");
        _cleanup_free_ char *net_id =
            admin_create("/api/v1/admin/networks", "{\"name\":\"tenant\",\"vlan\":100}");
        snprintf(T.sku_id, sizeof(T.sku_id), "%s", sku_id);
        snprintf(T.image_id, sizeof(T.image_id), "%s", img_id);
        snprintf(T.network_id, sizeof(T.network_id), "%s", net_id);
}

static void setup(void)
{
        T = (typeof(T)){0};
}

static void teardown(void)
{
        if (T.host)
                host_free(T.host);
        if (T.c)
                ctl_free(T.c);
        T.host = NULL;
        T.c = NULL;
}

TestSuite(allocations, .init = setup, .fini = teardown, .timeout = 240);

/* Launches and waits for active; fills the allocation id. */
static void launch_active(const Tokens *u, unsigned gpus, const char *key, char id[static 64])
{
        _cleanup_free_ char *body = launch_body(gpus);
        _cleanup_resp_ HttpResponse *r = launch(u->access, key, body);
        ensure(r->status == 202, "launch: %ld %s", r->status, r->body);
        snprintf(id, 64, "%s", jstr(r, "allocation.id"));
        _cleanup_resp_ HttpResponse *t = task_wait(u->access, jstr(r, "task_id"));
        ensure(streq(jstr(t, "state"), "succeeded"), "provision task: %s", t->body);
}

/* ---- the journey ---- */

Test(allocations, quote_launch_watch_ssh_and_release_on_a_simulated_host)
{
        controller_start(NULL);
        enroll_and_approve();
        Tokens u;
        user_sign_up("tenant@example.com", &u, 0);

        /* the catalog shows what the host can take */
        {
                _cleanup_resp_ HttpResponse *s = api_get(T.c, "/api/v1/catalog/skus", u.access);
                ensure(s->status == 200, "%s", s->body);
                json_t *sku = json_array_get(jget(s, "items"), 0);
                ensure(json_array_size(json_object_get(sku, "available_gpu_counts")) == 4, "%s",
                       s->body);
        }

        /* no balance: the quote says so, the launch is refused, nothing written */
        _cleanup_free_ char *body = launch_body(2);
        {
                _cleanup_resp_ HttpResponse *q =
                    api_post(T.c, "/api/v1/allocations/quote", u.access, body);
                ensure(q->status == 200, "%s", q->body);
                ensure(json_integer_value(jget(q, "hourly_cost_micros")) == 4000000, "%s", q->body);
                ensure(json_is_false(jget(q, "ok")), "%s", q->body);
                json_t *pc = json_array_get(jget(q, "prechecks"), 0);
                ensure(streq_ptr(json_string_value(json_object_get(pc, "code")),
                                 "insufficient_balance"),
                       "%s", q->body);
                _cleanup_resp_ HttpResponse *l = launch(u.access, "k-poor", body);
                assert_error(l, 409, "insufficient_balance");
                ensure(db_scalar(T.c, "SELECT count(*) FROM allocations") == 0, "written");
                ensure(slots_in_state("available") == 8, "a slot moved");
        }
        credit(&u, 100000000);
        {
                _cleanup_resp_ HttpResponse *q =
                    api_post(T.c, "/api/v1/allocations/quote", u.access, body);
                ensure(json_is_true(jget(q, "ok")) && json_array_size(jget(q, "prechecks")) == 0,
                       "%s", q->body);
                ensure(db_scalar(T.c, "SELECT count(*) FROM allocations") == 0,
                       "a quote has no side effects");
                _cleanup_free_ char *bad = launch_body(3);
                _cleanup_resp_ HttpResponse *q3 =
                    api_post(T.c, "/api/v1/allocations/quote", u.access, bad);
                json_t *pc = json_array_get(jget(q3, "prechecks"), 0);
                ensure(
                    streq_ptr(json_string_value(json_object_get(pc, "code")), "invalid_gpu_count"),
                    "%s", q3->body);
        }

        /* launch without a key: 400; with one: 202, Location, the task */
        {
                _cleanup_resp_ HttpResponse *nokey = launch(u.access, NULL, body);
                assert_invalid_field(nokey, "Idempotency-Key");
        }
        _cleanup_resp_ HttpResponse *l = launch(u.access, "journey-1", body);
        ensure(l->status == 202, "%ld %s", l->status, l->body);
        const char *alloc_id = jstr(l, "allocation.id");
        const char *task_id = jstr(l, "task_id");
        ensure(alloc_id && task_id, "%s", l->body);
        ensure(streq(jstr(l, "allocation.state"), "provisioning"), "%s", l->body);
        ensure(json_array_size(jget(l, "allocation.slots")) == 2, "%s", l->body);
        ensure(db_scalar(T.c, "SELECT count(*) FROM ledger_holds WHERE state = 'pending'") == 1,
               "one hour is held");

        _cleanup_resp_ HttpResponse *t = task_wait(u.access, task_id);
        ensure(streq(jstr(t, "state"), "succeeded"), "%s", t->body);
        ensure(streq(jstr(t, "kind"), "provision"), "%s", t->body);
        json_t *steps = jget(t, "steps");
        ensure(json_array_size(steps) >= 3, "%s", t->body);
        json_t *first = json_array_get(steps, 0);
        ensure(streq_ptr(json_string_value(json_object_get(first, "name")), "reserve_slots") &&
                   json_is_string(json_object_get(first, "started_at")) &&
                   json_is_string(json_object_get(first, "finished_at")),
               "%s", t->body);

        _cleanup_resp_ HttpResponse *a = alloc_get(u.access, alloc_id);
        ensure(streq(jstr(a, "state"), "active"), "%s", a->body);
        const char *ssh = jstr(a, "connection.ssh_command");
        ensure(ssh && strncmp(ssh, "ssh -p ", 7) == 0 && strstr(ssh, "ubuntu@"), "%s", a->body);
        ensure(jstr(a, "billing_started_at"), "billing started: %s", a->body);
        ensure(slots_in_state("assigned") == 2 && slots_in_state("available") == 6,
               "2 assigned, 6 available");
        {
                _cleanup_resp_ HttpResponse *ls =
                    get_as(u.access, "/api/v1/allocations?state=active&q=%s", alloc_id);
                ensure(json_array_size(jget(ls, "items")) == 1, "%s", ls->body);
                _cleanup_resp_ HttpResponse *none =
                    get_as(u.access, "/api/v1/allocations?state=released");
                ensure(json_array_size(jget(none, "items")) == 0, "%s", none->body);
                _cleanup_resp_ HttpResponse *sku =
                    get_as(u.access, "/api/v1/allocations?q=sim-gpu");
                ensure(json_array_size(jget(sku, "items")) == 1, "q by SKU name: %s", sku->body);
        }

        /* release: 202 and a task; the slots come back after a clean teardown */
        _cleanup_free_ char *rpath = xasprintf("/api/v1/allocations/%s/release", alloc_id);
        _cleanup_resp_ HttpResponse *rel = api_post(T.c, rpath, u.access, NULL);
        ensure(rel->status == 202, "%ld %s", rel->status, rel->body);
        ensure(streq(jstr(rel, "allocation.state"), "releasing"), "%s", rel->body);
        ensure(jstr(rel, "allocation.billing_ended_at"), "billing ended: %s", rel->body);
        _cleanup_resp_ HttpResponse *rt = task_wait(u.access, jstr(rel, "task_id"));
        ensure(streq(jstr(rt, "state"), "succeeded") && streq(jstr(rt, "kind"), "release"), "%s",
               rt->body);
        _cleanup_resp_ HttpResponse *done = alloc_get(u.access, alloc_id);
        ensure(streq(jstr(done, "state"), "released"), "%s", done->body);
        ensure(json_is_null(jget(done, "connection")), "%s", done->body);
        ensure(wait_slots("available", 8), "the slots are not available again");
        {
                _cleanup_resp_ HttpResponse *again = api_post(T.c, rpath, u.access, NULL);
                assert_error(again, 409, "invalid_state");
                ensure(streq_ptr(jstr(again, "error.details.state"), "released"), "%s",
                       again->body);
        }
        _cleanup_free_ char *ev = xasprintf("SELECT count(*) FROM events WHERE type = "
                                            "'allocation.state_changed' AND subject_id = '%s'",
                                            alloc_id);
        ensure(db_scalar(T.c, ev) == 4, "pending>provisioning>active>releasing>released");
        ensure(db_scalar(T.c, "SELECT count(*) FROM ledger_holds WHERE state = 'pending'") == 0,
               "the hold is closed");
        ctl_stop_clean(T.c);
}

Test(allocations, the_same_key_and_body_answer_the_same_allocation)
{
        controller_start(NULL);
        enroll_and_approve();
        Tokens u;
        user_sign_up("idem@example.com", &u, 100000000);
        _cleanup_free_ char *one = launch_body(1), *two = launch_body(2);
        _cleanup_resp_ HttpResponse *a = launch(u.access, "same-key", one);
        ensure(a->status == 202, "%s", a->body);
        /* the same body with its keys in another order is the same body */
        _cleanup_free_ char *reordered = xasprintf(
            "{\"gpu_count\":1,\"ssh_key_ids\":[],\"network_id\":\"%s\",\"image_id\":\"%s\","
            "\"sku_id\":\"%s\"}",
            T.network_id, T.image_id, T.sku_id);
        _cleanup_resp_ HttpResponse *b = launch(u.access, "same-key", reordered);
        ensure(b->status == 202, "%s", b->body);
        ensure(streq(jstr(a, "allocation.id"), jstr(b, "allocation.id")) &&
                   streq(jstr(a, "task_id"), jstr(b, "task_id")) &&
                   json_is_true(jget(b, "replayed")),
               "%s vs %s", a->body, b->body);
        _cleanup_resp_ HttpResponse *c = launch(u.access, "same-key", two);
        assert_error(c, 409, "idempotency_conflict");
        ensure(db_scalar(T.c, "SELECT count(*) FROM allocations") == 1, "one allocation");
        ensure(db_scalar(T.c, "SELECT count(*) FROM allocation_slots") == 1, "one slot");
        /* another user may use the same key */
        Tokens v;
        user_sign_up("idem2@example.com", &v, 100000000);
        _cleanup_resp_ HttpResponse *d = launch(v.access, "same-key", one);
        ensure(d->status == 202 && !streq(jstr(d, "allocation.id"), jstr(a, "allocation.id")), "%s",
               d->body);
        ctl_stop_clean(T.c);
}

Test(allocations, another_tenant_sees_nothing_of_it)
{
        controller_start(NULL);
        enroll_and_approve();
        Tokens u, other;
        user_sign_up("owner@example.com", &u, 100000000);
        user_sign_up("other@example.com", &other, 100000000);
        char id[64];
        launch_active(&u, 1, "mine", id);
        _cleanup_resp_ HttpResponse *g = get_as(other.access, "/api/v1/allocations/%s", id);
        assert_error(g, 404, "not_found");
        _cleanup_free_ char *rpath = xasprintf("/api/v1/allocations/%s/release", id);
        _cleanup_resp_ HttpResponse *rel = api_post(T.c, rpath, other.access, NULL);
        assert_error(rel, 404, "not_found");
        _cleanup_resp_ HttpResponse *mine = alloc_get(u.access, id);
        _cleanup_resp_ HttpResponse *task =
            get_as(other.access, "/api/v1/tasks/%s", jstr(mine, "task_id"));
        assert_error(task, 404, "not_found");
        _cleanup_resp_ HttpResponse *list = get_as(other.access, "/api/v1/allocations");
        ensure(json_array_size(jget(list, "items")) == 0, "%s", list->body);
        _cleanup_resp_ HttpResponse *admin_task =
            get_as(T.admin.access, "/api/v1/tasks/%s", jstr(mine, "task_id"));
        ensure(admin_task->status == 200, "an admin reads any task: %s", admin_task->body);
        _cleanup_resp_ HttpResponse *admin_list =
            get_as(T.admin.access, "/api/v1/admin/allocations?state=active");
        ensure(json_array_size(jget(admin_list, "items")) == 1, "%s", admin_list->body);
        _cleanup_resp_ HttpResponse *still = alloc_wait(u.access, id, "active");
        ensure(streq(jstr(still, "state"), "active"), "%s", still->body);
        ctl_stop_clean(T.c);
}

/* ---- concurrency ---- */

/* POSTs n requests at once (curl multi, one connection each) and fills
 * statuses (0: no answer, the controller died). path_fmt gets i; body may be
 * NULL; key_prefix non-NULL adds "Idempotency-Key: <prefix>-<i>". */
static void post_many(const char *token, int n, const char *path_fmt, const char *body,
                      const char *key_prefix, long *statuses)
{
        _cleanup_free_ char *auth = xasprintf("Authorization: Bearer %s", token);
        CURLM *m = curl_multi_init();
        CURL **h = calloc((size_t)n, sizeof(CURL *));
        struct curl_slist **hdrs = calloc((size_t)n, sizeof(struct curl_slist *));
        char **urls = calloc((size_t)n, sizeof(char *));
        cr_assert(m && h && hdrs && urls);
        FILE *sink = fopen("/dev/null", "we");
        cr_assert(sink);
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *path = NULL;
                cr_assert(asprintf(&path, path_fmt, i) >= 0);
                urls[i] = xasprintf("%s%s", T.c->url, path);
                hdrs[i] = curl_slist_append(NULL, auth);
                hdrs[i] = curl_slist_append(hdrs[i], "Content-Type: application/json");
                if (key_prefix) {
                        _cleanup_free_ char *key =
                            xasprintf("Idempotency-Key: %s-%d", key_prefix, i);
                        hdrs[i] = curl_slist_append(hdrs[i], key);
                }
                h[i] = curl_easy_init();
                curl_easy_setopt(h[i], CURLOPT_URL, urls[i]);
                curl_easy_setopt(h[i], CURLOPT_HTTPHEADER, hdrs[i]);
                curl_easy_setopt(h[i], CURLOPT_POSTFIELDS, body ? body : "");
                curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, fwrite);
                curl_easy_setopt(h[i], CURLOPT_WRITEDATA, sink);
                curl_easy_setopt(h[i], CURLOPT_TIMEOUT_MS, 60000L);
                curl_easy_setopt(h[i], CURLOPT_NOSIGNAL, 1L);
                curl_multi_add_handle(m, h[i]);
        }
        int running = 1;
        while (running) {
                curl_multi_perform(m, &running);
                if (running)
                        curl_multi_poll(m, NULL, 0, 100, NULL);
        }
        for (int i = 0; i < n; i++) {
                statuses[i] = 0;
                curl_easy_getinfo(h[i], CURLINFO_RESPONSE_CODE, &statuses[i]);
                curl_multi_remove_handle(m, h[i]);
                curl_easy_cleanup(h[i]);
                curl_slist_free_all(hdrs[i]);
                free(urls[i]);
        }
        curl_multi_cleanup(m);
        fclose(sink);
        free(h);
        free(hdrs);
        free(urls);
}

#define CONCURRENT 14

Test(allocations, concurrent_launches_never_share_a_slot)
{
        controller_start(NULL);
        enroll_and_approve();
        Tokens u;
        user_sign_up("many@example.com", &u, 1000000000);
        _cleanup_free_ char *body = launch_body(1);
        long st[CONCURRENT];
        post_many(u.access, CONCURRENT, "/api/v1/allocations", body, "race", st);
        int accepted = 0, sold_out = 0;
        for (int i = 0; i < CONCURRENT; i++) {
                accepted += st[i] == 202;
                sold_out += st[i] == 409;
        }
        ensure(accepted == 8 && sold_out == CONCURRENT - 8, "accepted %d, refused %d", accepted,
               sold_out);
        ensure(db_scalar(T.c, "SELECT count(*) FROM (SELECT slot_id FROM allocation_slots GROUP "
                              "BY slot_id HAVING count(*) > 1)") == 0,
               "a slot is in two allocations");
        ensure(db_scalar(T.c, "SELECT count(DISTINCT slot_id) FROM allocation_slots") == 8,
               "eight slots taken");
        ensure(wait_slots("assigned", 8), "every launch got its slot assigned");
        ctl_stop_clean(T.c);
}

/* What must hold whatever happened: no slot held twice, every allocation in
 * a contract state, slot and allocation states that agree. */
static void check_invariants(void)
{
        ensure(db_scalar(T.c, "SELECT count(*) FROM (SELECT slot_id FROM allocation_slots WHERE "
                              "state = 'held' GROUP BY slot_id HAVING count(*) > 1)") == 0,
               "a slot is held by two allocations");
        ensure(db_scalar(T.c, "SELECT count(*) FROM allocations WHERE state NOT IN ('pending', "
                              "'provisioning', 'active', 'releasing', 'released', 'failed', "
                              "'release_failed')") == 0,
               "an allocation in no contract state");
        ensure(db_scalar(T.c, "SELECT count(*) FROM node_resource_slots s WHERE s.state IN "
                              "('reserved', 'assigned') AND NOT EXISTS (SELECT 1 FROM "
                              "allocation_slots x JOIN allocations a ON a.id = x.allocation_id "
                              "WHERE x.slot_id = s.id AND x.state = 'held' AND a.state IN "
                              "('provisioning', 'active'))") == 0,
               "a reserved or assigned slot without a live allocation");
        ensure(db_scalar(T.c, "SELECT count(*) FROM allocations a WHERE a.state = 'active' AND "
                              "EXISTS (SELECT 1 FROM allocation_slots x JOIN node_resource_slots "
                              "s ON s.id = x.slot_id WHERE x.allocation_id = a.id AND s.state != "
                              "'assigned')") == 0,
               "an active allocation with a slot not assigned");
}

static bool wait_no_running_tasks(void)
{
        long long deadline = mono_ms() + 2 * DEADLINE_MS;
        while (db_scalar(T.c, "SELECT count(*) FROM tasks WHERE state = 'running'") > 0) {
                if (mono_ms() > deadline)
                        return false;
                pause_ms(200);
        }
        return true;
}

#define CHAOS 40

Test(allocations, kill_9_during_concurrent_launches_and_releases_leaves_nothing_half_done)
{
        char listen[64];
        snprintf(listen, sizeof(listen), "127.0.0.1:%u", free_port());
        const char *args[] = {"--agent-listen", listen, NULL};
        controller_start(args);
        enroll_and_approve();
        Tokens u;
        user_sign_up("chaos@example.com", &u, 1000000000);
        _cleanup_free_ char *body = launch_body(1);
        srand((unsigned)getpid());
        for (int round = 0; round < 3; round++) {
                /* launches race a kill -9 at a random moment */
                long st[CHAOS];
                char prefix[32];
                snprintf(prefix, sizeof(prefix), "chaos-%d", round);
                pid_t killer = fork();
                cr_assert(killer >= 0);
                if (killer == 0) {
                        pause_ms(20 + rand() % 400);
                        kill(T.c->pid, SIGKILL);
                        _exit(0);
                }
                post_many(u.access, CHAOS, "/api/v1/allocations", body, prefix, st);
                waitpid(killer, NULL, 0);
                ctl_kill9(T.c); /* reaps it (already dead, or killed now) */
                ctl_start_or_fail(T.c);
                ensure(node_online(true), "the agent came back (round %d)", round);
                check_invariants();
                ensure(wait_no_running_tasks(), "tasks still running after restart (round %d)",
                       round);
                check_invariants();

                /* releases of every active allocation race another kill -9 */
                long long active =
                    db_scalar(T.c, "SELECT count(*) FROM allocations WHERE state = 'active'");
                if (active > 0) {
                        /* The ids through the API (the tenant's own list). */
                        _cleanup_resp_ HttpResponse *ls =
                            get_as(u.access, "/api/v1/allocations?state=active&limit=200");
                        size_t n = json_array_size(jget(ls, "items"));
                        ensure((long long)n == active, "%zu listed, %lld active", n, active);
                        pid_t k2 = fork();
                        cr_assert(k2 >= 0);
                        if (k2 == 0) {
                                pause_ms(rand() % 300);
                                kill(T.c->pid, SIGKILL);
                                _exit(0);
                        }
                        for (size_t i = 0; i < n; i++) {
                                const char *id = json_string_value(
                                    json_object_get(json_array_get(jget(ls, "items"), i), "id"));
                                _cleanup_free_ char *path =
                                    xasprintf("/api/v1/allocations/%s/release", id);
                                long rs[1];
                                post_many(u.access, 1, path, NULL, NULL, rs);
                        }
                        waitpid(k2, NULL, 0);
                        ctl_kill9(T.c);
                        ctl_start_or_fail(T.c);
                        ensure(node_online(true), "the agent came back after releases");
                        check_invariants();
                        /* releases the kill cut short are asked again */
                        _cleanup_resp_ HttpResponse *left =
                            get_as(u.access, "/api/v1/allocations?state=active&limit=200");
                        size_t i;
                        json_t *it;
                        json_array_foreach(jget(left, "items"), i, it)
                        {
                                _cleanup_free_ char *path =
                                    xasprintf("/api/v1/allocations/%s/release",
                                              json_string_value(json_object_get(it, "id")));
                                _cleanup_resp_ HttpResponse *r =
                                    api_post(T.c, path, u.access, NULL);
                                ensure(r->status == 202, "%s", r->body);
                        }
                        ensure(wait_no_running_tasks(), "release tasks still running");
                        check_invariants();
                }
                ensure(db_scalar(T.c, "SELECT count(*) FROM allocations WHERE state IN "
                                      "('pending', 'provisioning', 'releasing', 'active')") == 0,
                       "every allocation settled (round %d)", round);
                ensure(wait_slots("available", 8), "every slot available again (round %d)", round);
        }
        ctl_stop_clean(T.c);
}

/* ---- restart and deadlines ---- */

Test(allocations, a_controller_restart_mid_provision_resumes_it)
{
        /* The node still counts as online for a heartbeat timeout while its
         * agent is frozen, so the launch is placed and its command waits; the
         * agent, thawed, finds the link dead within that timeout and redials
         * the restarted controller on the same port. */
        char listen[64];
        snprintf(listen, sizeof(listen), "127.0.0.1:%u", free_port());
        const char *args[] = {"--heartbeat-timeout-s", "8", "--agent-listen", listen, NULL};
        controller_start(args);
        enroll_and_approve();
        Tokens u;
        user_sign_up("restart@example.com", &u, 100000000);
        agent_freeze(T.host, true);
        _cleanup_free_ char *body = launch_body(4);
        _cleanup_resp_ HttpResponse *l = launch(u.access, "restart-1", body);
        ensure(l->status == 202, "%ld %s", l->status, l->body);
        char id[64];
        snprintf(id, sizeof(id), "%s", jstr(l, "allocation.id"));
        ensure(streq(jstr(l, "allocation.state"), "provisioning"), "%s", l->body);

        ctl_kill9(T.c);
        ctl_start_or_fail(T.c);
        agent_freeze(T.host, false);
        ensure(node_online(true), "the agent came back");
        _cleanup_resp_ HttpResponse *a = alloc_wait(u.access, id, "active");
        ensure(jstr(a, "connection.ssh_command"), "%s", a->body);
        _cleanup_resp_ HttpResponse *t = task_wait(u.access, jstr(l, "task_id"));
        ensure(streq(jstr(t, "state"), "succeeded"), "%s", t->body);
        ensure(slots_in_state("assigned") == 4, "four slots assigned");
        ctl_stop_clean(T.c);
}

Test(allocations, a_provision_past_its_deadline_fails_and_its_slots_are_cleaned)
{
        const char *args[] = {"--heartbeat-timeout-s", "60", "--provision-timeout-s", "2", NULL};
        controller_start(args);
        enroll_and_approve();
        Tokens u;
        user_sign_up("late@example.com", &u, 100000000);
        agent_freeze(T.host, true);
        _cleanup_free_ char *body = launch_body(2);
        _cleanup_resp_ HttpResponse *l = launch(u.access, "late-1", body);
        ensure(l->status == 202, "%ld %s", l->status, l->body);
        const char *id = jstr(l, "allocation.id");
        _cleanup_resp_ HttpResponse *a = alloc_wait(u.access, id, "failed");
        ensure(streq_ptr(jstr(a, "failure_reason"), "agent_timeout"), "%s", a->body);
        _cleanup_resp_ HttpResponse *t = task_wait(u.access, jstr(l, "task_id"));
        ensure(streq(jstr(t, "state"), "failed") && streq_ptr(jstr(t, "error"), "agent_timeout"),
               "%s", t->body);
        ensure(slots_in_state("cleaning") == 2, "the slots wait for a cleaning release");
        ensure(db_scalar(T.c, "SELECT count(*) FROM ledger_holds WHERE state = 'pending'") == 0,
               "the hold is voided");
        agent_freeze(T.host, false);
        ensure(wait_slots("available", 8), "the cleanup release returned the slots");
        ctl_stop_clean(T.c);
}

/* ---- failures on the host ---- */

/* The simulated Tioga slots carry no NVMe drive, so the teardown failure
 * here is the reset (reset_failed); the wipe's reason travels the same way. */
Test(allocations, a_failed_teardown_ends_release_failed_and_the_retry_succeeds)
{
        controller_start(NULL);
        enroll_and_approve();
        Tokens u;
        user_sign_up("wipe@example.com", &u, 100000000);
        char id[64];
        launch_active(&u, 2, "wipe-1", id);
        set_faults("reset\n");
        _cleanup_free_ char *rpath = xasprintf("/api/v1/allocations/%s/release", id);
        _cleanup_resp_ HttpResponse *rel = api_post(T.c, rpath, u.access, NULL);
        ensure(rel->status == 202, "%s", rel->body);
        _cleanup_resp_ HttpResponse *a = alloc_wait(u.access, id, "release_failed");
        ensure(streq_ptr(jstr(a, "release_failed_reason"), "reset_failed"), "%s", a->body);
        ensure(json_is_true(jget(a, "billing_stopped")), "%s", a->body);
        ensure(slots_in_state("quarantined") == 2, "the slots are quarantined");
        _cleanup_resp_ HttpResponse *t = task_wait(u.access, jstr(rel, "task_id"));
        ensure(streq(jstr(t, "state"), "failed"), "%s", t->body);

        set_faults("");
        _cleanup_resp_ HttpResponse *retry = api_post(T.c, rpath, u.access, NULL);
        ensure(retry->status == 202, "the same call retries: %s", retry->body);
        _cleanup_resp_ HttpResponse *b = alloc_wait(u.access, id, "released");
        ensure(json_is_null(jget(b, "release_failed_reason")), "%s", b->body);
        ensure(wait_slots("available", 8), "the slots are back");
        ctl_stop_clean(T.c);
}

Test(allocations, a_failed_bind_fails_the_launch_and_cleans_the_slot)
{
        controller_start(NULL);
        enroll_and_approve();
        Tokens u;
        user_sign_up("bind@example.com", &u, 100000000);
        set_faults("bind_vf\n");
        _cleanup_free_ char *body = launch_body(1);
        _cleanup_resp_ HttpResponse *l = launch(u.access, "bind-1", body);
        ensure(l->status == 202, "%s", l->body);
        _cleanup_resp_ HttpResponse *a = alloc_wait(u.access, jstr(l, "allocation.id"), "failed");
        ensure(streq_ptr(jstr(a, "failure_reason"), "vf_bind_failed"), "%s", a->body);
        set_faults("");
        ensure(wait_slots("available", 8), "the cleanup release returned the slot");
        ctl_stop_clean(T.c);
}

Test(allocations, force_release_needs_a_reason_and_quarantines_until_verified)
{
        controller_start(NULL);
        enroll_and_approve();
        Tokens u;
        user_sign_up("force@example.com", &u, 100000000);
        char id[64];
        launch_active(&u, 1, "force-1", id);
        _cleanup_free_ char *path = xasprintf("/api/v1/admin/allocations/%s/force-release", id);
        {
                _cleanup_resp_ HttpResponse *r = api_post(T.c, path, T.admin.access, "{}");
                assert_invalid_field(r, "reason");
                _cleanup_resp_ HttpResponse *blank =
                    api_post(T.c, path, T.admin.access, "{\"reason\":\"  \"}");
                assert_invalid_field(blank, "reason");
                _cleanup_resp_ HttpResponse *user =
                    api_post(T.c, path, u.access, "{\"reason\":\"mine\"}");
                assert_error(user, 403, "forbidden");
        }
        /* the teardown fails on the host: the slot stays quarantined */
        set_faults("reset\n");
        _cleanup_resp_ HttpResponse *f =
            api_post(T.c, path, T.admin.access, "{\"reason\":\"tenant abuse report\"}");
        ensure(f->status == 200, "%ld %s", f->status, f->body);
        ensure(streq(jstr(f, "allocation.state"), "released"), "%s", f->body);
        ensure(json_is_true(jget(f, "allocation.billing_stopped")), "%s", f->body);
        _cleanup_free_ char *ev = xasprintf(
            "SELECT count(*) FROM events WHERE type = 'provisioning.force_release_requested' AND "
            "subject_id = '%s'",
            id);
        ensure(db_scalar(T.c, ev) == 1, "the event is in the outbox");
        _cleanup_free_ char *au = xasprintf("SELECT count(*) FROM audit_logs WHERE action = "
                                            "'allocation.force_release' AND target_id = '%s' AND "
                                            "reason = 'tenant abuse report'",
                                            id);
        ensure(db_scalar(T.c, au) == 1, "the audit row");
        ensure(slots_in_state("quarantined") == 1, "quarantined");
        _cleanup_resp_ HttpResponse *t = task_wait(T.admin.access, jstr(f, "task_id"));
        ensure(slots_in_state("quarantined") == 1, "a failed teardown keeps it quarantined");
        _cleanup_resp_ HttpResponse *again =
            api_post(T.c, path, T.admin.access, "{\"reason\":\"twice\"}");
        assert_error(again, 409, "invalid_state");

        /* an admin checks the slot and returns it */
        _cleanup_free_ char *q = xasprintf("SELECT count(*) FROM node_resource_slots WHERE state "
                                           "= 'quarantined' AND id = '%s'",
                                           T.slot_ids[0]);
        const char *slot = db_scalar(T.c, q) == 1 ? T.slot_ids[0] : NULL;
        for (size_t i = 0; !slot && i < T.n_slots; i++) {
                _cleanup_free_ char *qi = xasprintf("SELECT count(*) FROM node_resource_slots "
                                                    "WHERE state = 'quarantined' AND id = '%s'",
                                                    T.slot_ids[i]);
                if (db_scalar(T.c, qi) == 1)
                        slot = T.slot_ids[i];
        }
        ensure(slot, "which slot is quarantined?");
        _cleanup_free_ char *vpath =
            xasprintf("/api/v1/admin/nodes/%s/slots/%s/verify", T.host->node_id, slot);
        _cleanup_resp_ HttpResponse *v =
            api_post(T.c, vpath, T.admin.access, "{\"reason\":\"wiped by hand\"}");
        ensure(v->status == 200, "%ld %s", v->status, v->body);
        ensure(slots_in_state("available") == 8, "verified back to available");
        _cleanup_resp_ HttpResponse *v2 = api_post(T.c, vpath, T.admin.access, NULL);
        assert_error(v2, 409, "invalid_state");
        ctl_stop_clean(T.c);
}
