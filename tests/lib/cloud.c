/* SPDX-License-Identifier: MIT */
#include "cloud.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* The cloud whose logs a failed ensure() prints. */
static Cloud *current;

void pause_ms(long ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
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

void cloud_dump_logs(void)
{
        if (!current)
                return;
        if (current->c)
                print_tail("controller stderr", current->c->stderr_path);
        for (size_t i = 0; i < current->n_hosts; i++) {
                print_tail("bootstrap.sh output", current->hosts[i]->boot_out);
                print_tail("agent log", current->hosts[i]->agent_log);
        }
}

/* ---- child processes ---- */

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

void cloud_agent_start(CloudHost *h)
{
        cr_assert(h->agent == 0);
        _cleanup_free_ char *bin = agent_bin();
        char *argv[] = {bin, "run", "--config", h->conf, "--simulate", NULL};
        h->agent = spawn(argv, h->agent_log);
}

void cloud_agent_kill9(CloudHost *h)
{
        if (h->agent <= 0)
                return;
        kill(h->agent, SIGKILL);
        while (waitpid(h->agent, NULL, 0) < 0 && errno == EINTR)
                ;
        h->agent = 0;
}

void cloud_agent_freeze(CloudHost *h, bool frozen)
{
        cr_assert(h->agent > 0);
        kill(h->agent, frozen ? SIGSTOP : SIGCONT);
}

void cloud_set_faults(CloudHost *h, const char *rules)
{
        ensure(write_file(h->faults, rules) == 0, "cannot write %s", h->faults);
}

static void host_free(CloudHost *h)
{
        cloud_agent_kill9(h);
        tmpdir_remove(h->root);
        free(h->root);
        free(h->prefix);
        free(h->conf);
        free(h->boot_out);
        free(h->agent_log);
        free(h->faults);
        free(h);
}

/* ---- the API ---- */

HttpResponse *cloud_get(Cloud *cl, const char *token, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *path = NULL;
        cr_assert(vasprintf(&path, fmt, ap) >= 0);
        va_end(ap);
        return api_get(cl->c, path, token);
}

bool cloud_node_online(Cloud *cl, const CloudHost *h, bool want)
{
        long long deadline = mono_ms() + CLOUD_DEADLINE_MS;
        for (;;) {
                _cleanup_resp_ HttpResponse *r =
                    cloud_get(cl, cl->admin.access, "/api/v1/admin/nodes/%s", h->node_id);
                if (r->status == 200 && json_is_true(jget(r, "online")) == want)
                        return true;
                if (mono_ms() > deadline)
                        return false;
                pause_ms(100);
        }
}

char *cloud_admin_create(Cloud *cl, const char *path, const char *body)
{
        _cleanup_resp_ HttpResponse *r = api_post(cl->c, path, cl->admin.access, body);
        ensure(r->status == 201, "POST %s: %ld %s", path, r->status, r->body);
        return strdup(jstr(r, "id"));
}

void cloud_credit(Cloud *cl, const Tokens *user, long long micros)
{
        _cleanup_free_ char *path = xasprintf("/api/v1/admin/users/%s/credits", user->user_id);
        _cleanup_free_ char *body =
            xasprintf("{\"amount_micros\":%lld,\"reason\":\"test credit\"}", micros);
        _cleanup_resp_ HttpResponse *r = api_post(cl->c, path, cl->admin.access, body);
        ensure(r->status == 201, "POST %s: %ld %s", path, r->status, r->body);
}

void cloud_user(Cloud *cl, const char *email, Tokens *t, long long credit_micros)
{
        ensure(api_signup(cl->c, email, CLOUD_PASSWORD, "Tenant", t) == 201, "signup %s", email);
        if (credit_micros > 0)
                cloud_credit(cl, t, credit_micros);
}

char *cloud_launch_body(Cloud *cl, unsigned gpus)
{
        return xasprintf("{\"sku_id\":\"%s\",\"gpu_count\":%u,\"image_id\":\"%s\","
                         "\"network_id\":\"%s\",\"ssh_key_ids\":[]}",
                         cl->sku_id, gpus, cl->image_id, cl->network_id);
}

HttpResponse *cloud_launch(Cloud *cl, const char *token, const char *key, const char *body)
{
        _cleanup_free_ char *hdr = key ? xasprintf("Idempotency-Key: %s", key) : NULL;
        HttpRequest rq = {.method = "POST",
                          .path = "/api/v1/allocations",
                          .body = body,
                          .bearer = token,
                          .extra_header = hdr};
        return http_send(cl->c, &rq);
}

HttpResponse *cloud_task_wait(Cloud *cl, const char *token, const char *task_id)
{
        long long deadline = mono_ms() + CLOUD_DEADLINE_MS;
        for (;;) {
                HttpResponse *r = cloud_get(cl, token, "/api/v1/tasks/%s", task_id);
                ensure(r->status == 200, "GET task %s: %ld %s", task_id, r->status, r->body);
                if (!streq(jstr(r, "state"), "running"))
                        return r;
                ensure(mono_ms() < deadline, "task %s still running: %s", task_id, r->body);
                http_response_free(r);
                pause_ms(100);
        }
}

void cloud_launch_active(Cloud *cl, const Tokens *u, unsigned gpus, const char *key,
                         char id[static 64])
{
        _cleanup_free_ char *body = cloud_launch_body(cl, gpus);
        _cleanup_resp_ HttpResponse *r = cloud_launch(cl, u->access, key, body);
        ensure(r->status == 202, "launch: %ld %s", r->status, r->body);
        snprintf(id, 64, "%s", jstr(r, "allocation.id"));
        _cleanup_resp_ HttpResponse *t = cloud_task_wait(cl, u->access, jstr(r, "task_id"));
        ensure(streq(jstr(t, "state"), "succeeded"), "provision task: %s", t->body);
}

HttpResponse *cloud_alloc_get(Cloud *cl, const char *token, const char *id)
{
        HttpResponse *r = cloud_get(cl, token, "/api/v1/allocations/%s", id);
        ensure(r->status == 200, "GET allocation %s: %ld %s", id, r->status, r->body);
        return r;
}

HttpResponse *cloud_alloc_wait(Cloud *cl, const char *token, const char *id, const char *state)
{
        long long deadline = mono_ms() + CLOUD_DEADLINE_MS;
        for (;;) {
                HttpResponse *r = cloud_alloc_get(cl, token, id);
                if (streq(jstr(r, "state"), state))
                        return r;
                ensure(mono_ms() < deadline, "allocation %s never %s: %s", id, state, r->body);
                http_response_free(r);
                pause_ms(100);
        }
}

/* ---- the database ---- */

long long cloud_slots_in_state(Cloud *cl, const CloudHost *h, const char *state)
{
        _cleanup_free_ char *sql =
            h ? xasprintf("SELECT count(*) FROM node_resource_slots WHERE node_id = '%s' AND "
                          "state = '%s'",
                          h->node_id, state)
              : xasprintf("SELECT count(*) FROM node_resource_slots WHERE state = '%s'", state);
        return db_scalar(cl->c, sql);
}

bool cloud_wait_slots(Cloud *cl, const CloudHost *h, const char *state, long long n)
{
        long long deadline = mono_ms() + CLOUD_DEADLINE_MS;
        while (cloud_slots_in_state(cl, h, state) != n) {
                if (mono_ms() > deadline)
                        return false;
                pause_ms(100);
        }
        return true;
}

bool cloud_wait_no_running_tasks(Cloud *cl, long long timeout_ms)
{
        long long deadline = mono_ms() + timeout_ms;
        while (db_scalar(cl->c, "SELECT count(*) FROM tasks WHERE state = 'running'") > 0) {
                if (mono_ms() > deadline)
                        return false;
                pause_ms(200);
        }
        return true;
}

static void expect_none(Cloud *cl, const char *what, const char *sql)
{
        long long n = db_scalar(cl->c, sql);
        ensure(n == 0, "%s: %lld row(s) of %s", what, n, sql);
}

void cloud_check_invariants(Cloud *cl)
{
        expect_none(cl, "a slot is held by two allocations",
                    "SELECT count(*) FROM (SELECT slot_id FROM allocation_slots WHERE state = "
                    "'held' GROUP BY slot_id HAVING count(*) > 1)");
        expect_none(cl, "a slot is in two unfinished allocations",
                    "SELECT count(*) FROM (SELECT x.slot_id FROM allocation_slots x JOIN "
                    "allocations a ON a.id = x.allocation_id WHERE x.state != 'returned' AND "
                    "a.state IN ('pending', 'provisioning', 'active', 'releasing') GROUP BY "
                    "x.slot_id HAVING count(*) > 1)");
        expect_none(cl, "an allocation in no contract state",
                    "SELECT count(*) FROM allocations WHERE state NOT IN ('pending', "
                    "'provisioning', 'active', 'releasing', 'released', 'failed', "
                    "'release_failed')");
        expect_none(cl, "a failed allocation without its reason",
                    "SELECT count(*) FROM allocations WHERE state = 'failed' AND "
                    "failure_reason IS NULL");
        expect_none(cl, "a release_failed allocation without its reason or still billed",
                    "SELECT count(*) FROM allocations WHERE state = 'release_failed' AND "
                    "(release_failed_reason IS NULL OR billing_stopped = 0)");
        expect_none(cl, "a released allocation without released_at",
                    "SELECT count(*) FROM allocations WHERE state = 'released' AND released_at "
                    "IS NULL");
        expect_none(cl, "an active allocation not billed",
                    "SELECT count(*) FROM allocations WHERE state = 'active' AND "
                    "billing_started_at IS NULL");
        expect_none(cl, "a slot in a state no table has",
                    "SELECT count(*) FROM node_resource_slots WHERE state NOT IN ('available', "
                    "'reserved', 'assigned', 'cleaning', 'quarantined', 'disabled')");
        expect_none(cl, "an available slot still naming an allocation",
                    "SELECT count(*) FROM node_resource_slots WHERE state IN ('available', "
                    "'disabled') AND allocation_id IS NOT NULL");
        expect_none(cl, "a taken slot naming no allocation",
                    "SELECT count(*) FROM node_resource_slots WHERE state IN ('reserved', "
                    "'assigned', 'cleaning') AND allocation_id IS NULL");
        expect_none(cl, "a slot's allocation_id without its allocation_slots row",
                    "SELECT count(*) FROM node_resource_slots s WHERE s.allocation_id IS NOT "
                    "NULL AND NOT EXISTS (SELECT 1 FROM allocation_slots x WHERE x.slot_id = "
                    "s.id AND x.allocation_id = s.allocation_id AND x.state != 'returned')");
        expect_none(cl, "a slot held by an unfinished allocation but naming another",
                    "SELECT count(*) FROM allocation_slots x JOIN allocations a ON a.id = "
                    "x.allocation_id JOIN node_resource_slots s ON s.id = x.slot_id WHERE "
                    "x.state = 'held' AND a.state IN ('pending', 'provisioning', 'active', "
                    "'releasing') AND s.allocation_id IS NOT x.allocation_id");
        expect_none(cl, "a reserved or assigned slot without a live allocation",
                    "SELECT count(*) FROM node_resource_slots s WHERE s.state IN ('reserved', "
                    "'assigned') AND NOT EXISTS (SELECT 1 FROM allocation_slots x JOIN "
                    "allocations a ON a.id = x.allocation_id WHERE x.slot_id = s.id AND "
                    "x.state = 'held' AND a.state IN ('provisioning', 'active'))");
        expect_none(cl, "an assigned slot whose allocation is not active",
                    "SELECT count(*) FROM node_resource_slots s JOIN allocations a ON a.id = "
                    "s.allocation_id WHERE s.state = 'assigned' AND a.state != 'active'");
        expect_none(cl, "a reserved slot whose allocation is not provisioning",
                    "SELECT count(*) FROM node_resource_slots s JOIN allocations a ON a.id = "
                    "s.allocation_id WHERE s.state = 'reserved' AND a.state NOT IN ('pending', "
                    "'provisioning')");
        expect_none(cl, "an active allocation with a slot not assigned",
                    "SELECT count(*) FROM allocations a WHERE a.state = 'active' AND EXISTS "
                    "(SELECT 1 FROM allocation_slots x JOIN node_resource_slots s ON s.id = "
                    "x.slot_id WHERE x.allocation_id = a.id AND (s.state != 'assigned' OR "
                    "s.allocation_id IS NOT a.id))");
        expect_none(cl, "an allocation with the wrong number of slots",
                    "SELECT count(*) FROM allocations a WHERE (SELECT count(*) FROM "
                    "allocation_slots x WHERE x.allocation_id = a.id) != a.gpu_count");
}

void cloud_check_ledger(Cloud *cl)
{
        expect_none(cl, "the ledger does not sum to zero",
                    "SELECT COALESCE(SUM(amount_micros), 0) != 0 FROM ledger_entries");
        expect_none(cl, "a cached balance differs from its entries",
                    "SELECT COUNT(*) FROM ledger_accounts a WHERE balance_micros != (SELECT "
                    "COALESCE(SUM(amount_micros), 0) FROM ledger_entries e WHERE e.account_id = "
                    "a.id)");
        expect_none(cl, "an unbalanced transaction",
                    "SELECT COUNT(*) FROM (SELECT txn_id FROM ledger_entries GROUP BY txn_id "
                    "HAVING SUM(amount_micros) != 0)");
        expect_none(cl, "a hold pending for a released or failed allocation",
                    "SELECT COUNT(*) FROM ledger_holds h JOIN allocations a ON a.id = "
                    "h.allocation_id WHERE h.state = 'pending' AND a.state IN ('released', "
                    "'failed')");
        expect_none(cl, "a hold without its allocation",
                    "SELECT COUNT(*) FROM ledger_holds h WHERE NOT EXISTS (SELECT 1 FROM "
                    "allocations a WHERE a.id = h.allocation_id)");
}

/* ---- concurrency ---- */

static size_t sink(char *p, size_t size, size_t n, void *u)
{
        (void)p;
        (void)u;
        return size * n;
}

void cloud_post_many(Cloud *cl, const char *token, int n, const char *path_fmt, const char *body,
                     const char *key_prefix, long *statuses)
{
        _cleanup_free_ char *auth = xasprintf("Authorization: Bearer %s", token);
        CURLM *m = curl_multi_init();
        CURL **h = calloc((size_t)n, sizeof(CURL *));
        struct curl_slist **hdrs = calloc((size_t)n, sizeof(struct curl_slist *));
        char **urls = calloc((size_t)n, sizeof(char *));
        cr_assert(m && h && hdrs && urls);
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *path = NULL;
                cr_assert(asprintf(&path, path_fmt, i) >= 0);
                urls[i] = xasprintf("%s%s", cl->c->url, path);
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
                curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, sink);
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
        free(h);
        free(hdrs);
        free(urls);
}

/* ---- building the cloud ---- */

Cloud *cloud_new_empty(void)
{
        Cloud *cl = calloc(1, sizeof(Cloud));
        cr_assert(cl);
        current = cl;
        return cl;
}

void cloud_controller_start(Cloud *cl, const CloudOptions *o)
{
        cr_assert(!cl->c);
        cl->c = ctl_new();
        ctl_args(cl->c, "--heartbeat-interval-s", "1", "--rate-limit-session-rps", "0",
                 "--rate-limit-address-rps", "0", NULL);
        if (o && o->fixed_ports) {
                char listen[64], agent_listen[64];
                snprintf(listen, sizeof(listen), "127.0.0.1:%u", free_port());
                snprintf(agent_listen, sizeof(agent_listen), "127.0.0.1:%u", free_port());
                ctl_args(cl->c, "--listen", listen, "--agent-listen", agent_listen, NULL);
        }
        for (size_t i = 0; o && o->controller_args && o->controller_args[i]; i++)
                ctl_args(cl->c, o->controller_args[i], NULL);
        ctl_start_or_fail(cl->c);
        admin_sign_in(cl->c, "root@example.com", NULL, &cl->admin);
}

void cloud_controller_restart(Cloud *cl)
{
        Controller *c = cl->c;
        int r = ctl_start(c);
        long long deadline = mono_ms() + 2 * CLOUD_DEADLINE_MS;
        while (r == -ETIMEDOUT) {
                _cleanup_free_ char *url = read_file(c->ready_file);
                if (url && url[0]) {
                        url[strcspn(url, "\r\n")] = '\0';
                        snprintf(c->url, sizeof(c->url), "%s", url);
                        r = 0;
                        break;
                }
                int status;
                if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
                        c->pid = 0;
                        c->wait_status = status;
                        r = -ECHILD;
                        break;
                }
                if (mono_ms() > deadline)
                        break;
                pause_ms(50);
        }
        ensure(r == 0, "the controller did not come back (%s, status %d)", strerror(-r),
               c->wait_status);
}

/* Discovery through the admin API until it finished; the candidates. */
static HttpResponse *discover(Cloud *cl, CloudHost *h)
{
        _cleanup_free_ char *dpath =
            xasprintf("/api/v1/admin/nodes/%s/slice-topology/discovery", h->node_id);
        _cleanup_resp_ HttpResponse *d = api_post(cl->c, dpath, cl->admin.access, NULL);
        ensure(d->status == 202, "%s", d->body);
        long long deadline = mono_ms() + CLOUD_DEADLINE_MS;
        for (;;) {
                HttpResponse *cand = cloud_get(
                    cl, cl->admin.access, "/api/v1/admin/nodes/%s/slice-topology/candidates/%s",
                    h->node_id, jstr(d, "discovery_id"));
                if (cand->status == 200 && !streq(jstr(cand, "state"), "running"))
                        return cand;
                ensure(mono_ms() < deadline, "discovery never finished: %s", cand->body);
                http_response_free(cand);
                pause_ms(100);
        }
}

CloudHost *cloud_host_add(Cloud *cl, const char *topology, CloudApprove approve)
{
        cr_assert(cl->n_hosts < CLOUD_MAX_HOSTS);
        CloudHost *h = calloc(1, sizeof(CloudHost));
        cr_assert(h);
        cl->hosts[cl->n_hosts++] = h;
        if (!cl->host)
                cl->host = h;
        snprintf(h->name, sizeof(h->name), "sim-%zu", cl->n_hosts);
        h->root = tmpdir_new("cloud-host");
        h->prefix = xasprintf("%s/host", h->root);
        h->conf = xasprintf("%s/etc/gpuslice/agent.conf", h->prefix);
        h->boot_out = xasprintf("%s/bootstrap.out", h->root);
        h->agent_log = xasprintf("%s/agent.log", h->root);
        h->faults = xasprintf("%s/var/lib/gpuslice-agent/simulated-host/faults", h->prefix);

        /* Added by an admin, enrolled by the bootstrap script, online. */
        _cleanup_free_ char *add_body = xasprintf("{\"name\":\"%s\",\"simulated\":true}", h->name);
        _cleanup_resp_ HttpResponse *add =
            api_post(cl->c, "/api/v1/admin/nodes", cl->admin.access, add_body);
        ensure(add->status == 201, "%s", add->body);
        snprintf(h->node_id, sizeof(h->node_id), "%s", jstr(add, "node.id"));
        const char *src = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        cr_assert(src && *src, "GPUSLICE_TEST_SOURCE_ROOT is not set (run through meson test)");
        _cleanup_free_ char *script = xasprintf("%s/scripts/bootstrap.sh", src);
        _cleanup_free_ char *agent = agent_bin();
        char *argv[16] = {"/bin/bash",   script,     "--controller",
                          cl->c->url,    "--token",  (char *)jstr(add, "bootstrap_token"),
                          "--simulate",  "--prefix", h->prefix,
                          "--agent-bin", agent};
        size_t n = 11;
        if (topology) {
                argv[n++] = "--simulate-topology";
                argv[n++] = (char *)topology;
        }
        argv[n] = NULL;
        int status = wait_child(spawn(argv, h->boot_out), 90000);
        ensure(status >= 0 && cli_exit_code(status) == 0, "bootstrap.sh failed (%d)", status);
        cloud_agent_start(h);
        ensure(cloud_node_online(cl, h, true), "the agent never brought %s online", h->name);

        /* Discovered, and the slots approved (those with a drive, or all). */
        _cleanup_resp_ HttpResponse *cand = discover(cl, h);
        ensure(streq(jstr(cand, "state"), "completed"), "%s", cand->body);
        const char *gpu_addr = json_string_value(
            json_array_get(json_object_get(json_array_get(jget(cand, "slots"), 0), "gpus"), 0));
        size_t i;
        json_t *dev;
        json_array_foreach(jget(cand, "document.devices"), i, dev)
        {
                if (streq_ptr(json_string_value(json_object_get(dev, "address")), gpu_addr))
                        snprintf(h->pci_id, sizeof(h->pci_id), "%s:%s",
                                 json_string_value(json_object_get(dev, "vendor")),
                                 json_string_value(json_object_get(dev, "device")));
        }
        ensure(h->pci_id[0], "no GPU device in the discovery: %s", cand->body);
        _cleanup_(json_decrefp) json_t *body = json_object();
        if (approve == CLOUD_APPROVE_NVME) {
                json_t *keys = json_array();
                json_t *slot;
                json_array_foreach(jget(cand, "slots"), i, slot)
                {
                        if (json_is_string(json_object_get(slot, "nvme")))
                                json_array_append(keys, json_object_get(slot, "id"));
                }
                ensure(json_array_size(keys) > 0, "no slot with an NVMe drive: %s", cand->body);
                json_object_set_new(body, "slots", keys);
        }
        _cleanup_free_ char *body_text = json_dumps(body, JSON_COMPACT);
        _cleanup_free_ char *apath =
            xasprintf("/api/v1/admin/nodes/%s/slice-topology/candidates/%s/approve", h->node_id,
                      jstr(cand, "discovery_id"));
        _cleanup_resp_ HttpResponse *ap = api_post(cl->c, apath, cl->admin.access, body_text);
        ensure(ap->status == 200, "approve: %ld %s", ap->status, ap->body);
        json_t *slot;
        json_array_foreach(jget(ap, "slots"), i, slot)
        {
                ensure(h->n_slots < CLOUD_MAX_SLOTS, "more slots than CLOUD_MAX_SLOTS");
                snprintf(h->slot_ids[h->n_slots], 64, "%s",
                         json_string_value(json_object_get(slot, "id")));
                const char *nvme = json_string_value(json_object_get(slot, "nvme"));
                snprintf(h->slot_nvme[h->n_slots], 16, "%s", nvme ? nvme : "");
                h->n_slots++;
        }
        ensure(h->n_slots > 0, "nothing approved: %s", ap->body);
        return h;
}

void cloud_catalog_create(Cloud *cl, long long price_per_gpu_hour_micros)
{
        cr_assert(cl->host, "a catalog sells what a host has: add one first");
        _cleanup_free_ char *sku = xasprintf(
            "{\"name\":\"sim-gpu\",\"gpu_model\":\"Simulated GPU\",\"gpu_memory_gb\":64,"
            "\"pci_ids\":[\"%s\"],\"gpu_counts\":[1,2,4,8],\"price_per_gpu_hour_micros\":%lld,"
            "\"topology\":\"node\"}",
            cl->host->pci_id, price_per_gpu_hour_micros);
        _cleanup_free_ char *sku_id = cloud_admin_create(cl, "/api/v1/admin/skus", sku);
        _cleanup_free_ char *img_id = cloud_admin_create(
            cl, "/api/v1/admin/images", "{\"name\":\"ubuntu-24.04\",\"ssh_user\":\"ubuntu\"}");
        _cleanup_free_ char *net_id =
            cloud_admin_create(cl, "/api/v1/admin/networks", "{\"name\":\"tenant\",\"vlan\":100}");
        snprintf(cl->sku_id, sizeof(cl->sku_id), "%s", sku_id);
        snprintf(cl->image_id, sizeof(cl->image_id), "%s", img_id);
        snprintf(cl->network_id, sizeof(cl->network_id), "%s", net_id);
}

Cloud *cloud_new(const CloudOptions *o)
{
        static const CloudOptions defaults = {0};
        if (!o)
                o = &defaults;
        Cloud *cl = cloud_new_empty();
        cloud_controller_start(cl, o);
        size_t n = o->n_hosts ? o->n_hosts : 1;
        for (size_t i = 0; i < n; i++)
                cloud_host_add(cl, o->topology, o->approve);
        if (!o->no_catalog)
                cloud_catalog_create(cl, o->price_per_gpu_hour_micros ? o->price_per_gpu_hour_micros
                                                                      : 2000000);
        return cl;
}

/* CLOUD_TEST_KEEP_DIR=DIR: each cloud's controller and host directories
 * (logs, the SQLite file, the simulated hosts' records) are copied under
 * DIR/<pid>/ before they are removed, to read a failure afterwards. */
static void keep_dirs(Cloud *cl)
{
        const char *keep = getenv("CLOUD_TEST_KEEP_DIR");
        if (!keep || !*keep)
                return;
        _cleanup_free_ char *dest = xasprintf("%s/%d", keep, (int)getpid());
        _cleanup_free_ char *ctl = cl->c ? xasprintf(" '%s'", cl->c->root) : strdup("");
        _cleanup_free_ char *cmd = xasprintf("mkdir -p '%s' && cp -a%s", dest, ctl);
        for (size_t i = 0; i < cl->n_hosts; i++) {
                char *more = xasprintf("%s '%s'", cmd, cl->hosts[i]->root);
                free(cmd);
                cmd = more;
        }
        char *full = xasprintf("%s '%s' 2>/dev/null", cmd, dest);
        if (system(full) != 0)
                fprintf(stderr, "cannot keep the cloud's directories under %s\n", dest);
        else
                fprintf(stderr, "the cloud's directories are kept under %s\n", dest);
        free(full);
}

void cloud_free(Cloud *cl)
{
        if (!cl)
                return;
        keep_dirs(cl);
        for (size_t i = 0; i < cl->n_hosts; i++)
                host_free(cl->hosts[i]);
        if (cl->c)
                ctl_free(cl->c);
        if (current == cl)
                current = NULL;
        free(cl);
}
