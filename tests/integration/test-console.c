/* SPDX-License-Identifier: MIT */
/* The console end to end with the real processes on loopback: the controller
 * (harness), scripts/bootstrap.sh enrolling a simulated host, the real
 * `gpuslice-agent run --simulate` (its hooks/simulated-shell console verb is a
 * bash in the allocation's workspace), an allocation launched through the API,
 * and a real WebSocket client (tests/node/console-client.mjs on npm `ws`,
 * pinned in tests/node/package-lock.json) that the test drives line by line.
 *
 * The journeys: type a command and read its output, resize (stty size shows
 * it), the exit code; token reuse, expiry, another user's allocation and
 * another user's sign-in refused before the upgrade; the session limits with
 * many sessions at once; the idle timeout; a slow reader (the client stops
 * reading while the shell prints megabytes: the controller holds back and its
 * per-session backlog stays within the window, read from its log); the agent
 * killed mid-session (error frame, then the close); the allocation released
 * under an open session; the controller stopped under open sessions.
 *
 * Every wait polls a condition until a generous deadline (a loaded 2-core
 * machine runs these with sanitizers); nothing asserts on timing. */
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
#include "ws-client.h"

#define DEADLINE_MS 60000
#define WINDOW      65536

extern char **environ;

typedef struct Host {
        char *root, *prefix, *conf, *boot_out, *agent_log;
        char node_id[64];
        pid_t agent;
} Host;

static struct {
        Controller *c;
        Tokens admin;
        Host *host;
        char sku_id[64], image_id[64], network_id[64];
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
        print_tail("console client stderr", ws_client_log());
}

#define ensure(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        dump_logs();                                                               \
                        cr_assert_fail(__VA_ARGS__);                                               \
                }                                                                                  \
        } while (0)

static const char *source_root(void)
{
        const char *s = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        cr_assert(s && *s, "GPUSLICE_TEST_SOURCE_ROOT is not set (run through meson test)");
        return s;
}

/* ---- child processes ---- */

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

/* fork + exec; stdin from in_fd (or /dev/null), stdout to out_fd (or the
 * log), stderr to the log; the child dies with the test. */
static pid_t spawn_io(char *const *argv, int in_fd, int out_fd, const char *log_path)
{
        _cleanup_free_ char **envp = child_env();
        pid_t parent = getpid();
        pid_t pid = fork();
        cr_assert(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                int in = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
                int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
                if (in < 0 || log < 0)
                        _exit(127);
                dup2(in, STDIN_FILENO);
                dup2(out_fd >= 0 ? out_fd : log, STDOUT_FILENO);
                dup2(log, STDERR_FILENO);
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

static void kill9(pid_t *pid)
{
        if (*pid <= 0)
                return;
        kill(*pid, SIGKILL);
        while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
                ;
        *pid = 0;
}

/* ---- the platform: controller, simulated host, catalog, a tenant ---- */

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
        h->agent = spawn_io(argv, -1, -1, h->agent_log);
}

static void host_free(Host *h)
{
        kill9(&h->agent);
        tmpdir_remove(h->root);
        free(h->root);
        free(h->prefix);
        free(h->conf);
        free(h->boot_out);
        free(h->agent_log);
        free(h);
}

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

static char *admin_create(const char *path, const char *body)
{
        _cleanup_resp_ HttpResponse *r = api_post(T.c, path, T.admin.access, body);
        ensure(r->status == 201, "POST %s: %ld %s", path, r->status, r->body);
        return strdup(jstr(r, "id"));
}

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

/* Enrolls a simulated host, approves its slots, and makes a catalog for it. */
static void enroll_and_approve(void)
{
        Host *h = T.host = calloc(1, sizeof(Host));
        cr_assert(h);
        h->root = tmpdir_new("console-host");
        h->prefix = xasprintf("%s/host", h->root);
        h->conf = xasprintf("%s/etc/gpuslice/agent.conf", h->prefix);
        h->boot_out = xasprintf("%s/bootstrap.out", h->root);
        h->agent_log = xasprintf("%s/agent.log", h->root);

        _cleanup_resp_ HttpResponse *add = api_post(T.c, "/api/v1/admin/nodes", T.admin.access,
                                                    "{\"name\":\"sim-1\",\"simulated\":true}");
        ensure(add->status == 201, "%s", add->body);
        snprintf(h->node_id, sizeof(h->node_id), "%s", jstr(add, "node.id"));
        _cleanup_free_ char *script = xasprintf("%s/scripts/bootstrap.sh", source_root());
        _cleanup_free_ char *agent = agent_bin();
        char *argv[] = {"/bin/bash",   script,     "--controller",
                        T.c->url,      "--token",  (char *)jstr(add, "bootstrap_token"),
                        "--simulate",  "--prefix", h->prefix,
                        "--agent-bin", agent,      NULL};
        pid_t pid = spawn_io(argv, -1, -1, h->boot_out);
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
                if (cand->status == 200 && !streq_ptr(jstr(cand, "state"), "running"))
                        break;
                ensure(mono_ms() < deadline, "discovery never finished: %s", cand->body);
                http_response_free(cand);
                pause_ms(100);
        }
        ensure(streq_ptr(jstr(cand, "state"), "completed"), "%s", cand->body);
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

static void tenant(const char *email, Tokens *t)
{
        ensure(api_signup(T.c, email, "correct horse battery", "Tenant", t) == 201, "signup %s",
               email);
        _cleanup_free_ char *path = xasprintf("/api/v1/admin/users/%s/credits", t->user_id);
        _cleanup_resp_ HttpResponse *r =
            api_post(T.c, path, T.admin.access,
                     "{\"amount_micros\":100000000,\"reason\":\"console test credit\"}");
        ensure(r->status == 200 || r->status == 201, "credit: %ld %s", r->status, r->body);
}

/* Launches a one-GPU allocation and waits until it is active. */
static void launch_active(const Tokens *u, const char *key, char id[static 64])
{
        _cleanup_free_ char *body =
            xasprintf("{\"sku_id\":\"%s\",\"gpu_count\":1,\"image_id\":\"%s\","
                      "\"network_id\":\"%s\",\"ssh_key_ids\":[]}",
                      T.sku_id, T.image_id, T.network_id);
        _cleanup_free_ char *hdr = xasprintf("Idempotency-Key: %s", key);
        HttpRequest rq = {.method = "POST",
                          .path = "/api/v1/allocations",
                          .body = body,
                          .bearer = u->access,
                          .extra_header = hdr};
        _cleanup_resp_ HttpResponse *r = http_send(T.c, &rq);
        ensure(r->status == 202, "launch: %ld %s", r->status, r->body);
        snprintf(id, 64, "%s", jstr(r, "allocation.id"));
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                _cleanup_resp_ HttpResponse *a = get_as(u->access, "/api/v1/allocations/%s", id);
                const char *state = jstr(a, "state");
                if (streq_ptr(state, "active"))
                        return;
                ensure(!streq_ptr(state, "failed") && mono_ms() < deadline,
                       "allocation %s never active: %s", id, a->body);
                pause_ms(100);
        }
}

/* POST .../terminal-token as u: the websocket_url (malloc'ed). */
static char *terminal_url(const Tokens *u, const char *alloc_id)
{
        _cleanup_free_ char *path = xasprintf("/api/v1/allocations/%s/terminal-token", alloc_id);
        _cleanup_resp_ HttpResponse *r = api_post(T.c, path, u->access, NULL);
        ensure(r->status == 200, "terminal-token: %ld %s", r->status, r->body);
        const char *token = jstr(r, "token"), *url = jstr(r, "websocket_url");
        ensure(token && strncmp(token, "gst_", 4) == 0 && jstr(r, "expires_at"), "%s", r->body);
        _cleanup_free_ char *want =
            xasprintf("ws://%s/api/v1/terminal?token=%s", T.c->url + strlen("http://"), token);
        ensure(streq_ptr(url, want), "websocket_url %s, want %s", url, want);
        return strdup(url);
}

static HttpResponse *token_request(const Tokens *u, const char *alloc_id)
{
        _cleanup_free_ char *path = xasprintf("/api/v1/allocations/%s/terminal-token", alloc_id);
        return api_post(T.c, path, u->access, NULL);
}

/* Everything up to an active allocation of a signed-up tenant. */
static void platform(const char *const *extra, Tokens *u, char alloc_id[static 64])
{
        controller_start(extra);
        enroll_and_approve();
        tenant("tenant@example.com", u);
        launch_active(u, "console-1", alloc_id);
        ws_client_dump = dump_logs;
        ws_client_start();
}

/* The controller's log line that ends a session. */
static char *session_end_line(const char *session)
{
        _cleanup_free_ char *needle =
            xasprintf("msg=\"console session ended\" session=%s ", session);
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                _cleanup_free_ char *log = ctl_stderr(T.c);
                const char *p = log ? strstr(log, needle) : NULL;
                if (p)
                        return strndup(p, strcspn(p, "\n"));
                ensure(mono_ms() < deadline, "no \"%s\" in the controller's log", needle);
                pause_ms(100);
        }
}

static long long field_of(const char *line, const char *key)
{
        _cleanup_free_ char *k = xasprintf(" %s=", key);
        const char *p = strstr(line, k);
        ensure(p, "no %s in: %s", key, line);
        return strtoll(p + strlen(k), NULL, 10);
}

static bool log_has(const char *needle, long long timeout_ms)
{
        long long deadline = mono_ms() + timeout_ms;
        for (;;) {
                _cleanup_free_ char *log = ctl_stderr(T.c);
                if (log && strstr(log, needle))
                        return true;
                if (mono_ms() > deadline)
                        return false;
                pause_ms(100);
        }
}

static void setup(void)
{
        T = (typeof(T)){0};
}

static void teardown(void)
{
        ws_client_stop();
        if (T.host)
                host_free(T.host);
        if (T.c)
                ctl_free(T.c);
        T = (typeof(T)){0};
}

TestSuite(console, .init = setup, .fini = teardown, .timeout = 300);

/* ---- the journeys ---- */

Test(console, type_read_resize_exit_and_every_refusal_before_the_upgrade)
{
        Tokens u, other;
        char alloc[64];
        platform(NULL, &u, alloc);
        tenant("other@example.com", &other);

        _cleanup_free_ char *url = terminal_url(&u, alloc);
        /* Not a WebSocket handshake: 400, and the token is not spent by it. */
        {
                _cleanup_resp_ HttpResponse *plain =
                    api_get(T.c, url + strlen("ws://") + strcspn(url + 5, "/"), NULL);
                assert_error(plain, 400, "invalid_request");
        }
        _cleanup_free_ char *sized = xasprintf("%s&cols=100&rows=30", url);
        _cleanup_free_ char *session = ws_connect("a", sized);
        ws_expect_output("a", ":~", 20000); /* the prompt */
        ws_send("a", "echo hello-$((6*7))\r");
        ws_expect_output("a", "hello-42", 20000);
        ws_send("a", "pwd; stty size\r");
        ws_expect_output("a", "30 100", 20000);
        ws_expect_output("a", "/workspace", 20000);
        ws_resize("a", 132, 43);
        ws_send("a", "stty size\r");
        ws_expect_output("a", "43 132", 20000);

        /* The token was spent: a second use is refused before any upgrade. */
        {
                _cleanup_(json_decrefp) json_t *d = ws_refused(sized, NULL, 401, "unauthenticated");
                ensure(streq_ptr(json_string_value(json_object_get(d, "token")), "used"), "used");
        }
        /* An expired token. */
        {
                _cleanup_free_ char *u2 = terminal_url(&u, alloc);
                db_exec_rw(T.c, "UPDATE terminal_tokens SET expires_at = 1 WHERE used_at IS NULL");
                _cleanup_(json_decrefp) json_t *d = ws_refused(u2, NULL, 401, "unauthenticated");
                ensure(streq_ptr(json_string_value(json_object_get(d, "token")), "expired"),
                       "expired");
        }
        /* Unknown and missing tokens. */
        {
                _cleanup_free_ char *bogus = xasprintf(
                    "ws://%s/api/v1/terminal?token=gst_notatoken", T.c->url + strlen("http://"));
                _cleanup_(json_decrefp) json_t *d = ws_refused(bogus, NULL, 401, "unauthenticated");
                ensure(streq_ptr(json_string_value(json_object_get(d, "token")), "unknown"), "?");
                _cleanup_free_ char *none =
                    xasprintf("ws://%s/api/v1/terminal", T.c->url + strlen("http://"));
                _cleanup_(json_decrefp) json_t *d2 = ws_refused(none, NULL, 401, "unauthenticated");
                ensure(streq_ptr(json_string_value(json_object_get(d2, "token")), "missing"), "?");
        }
        /* Another tenant: no token for this allocation (it does not exist for
         * them), and this tenant's token does not work under their sign-in. */
        {
                _cleanup_resp_ HttpResponse *r = token_request(&other, alloc);
                assert_error(r, 404, "not_found");
                _cleanup_free_ char *u3 = terminal_url(&u, alloc);
                _cleanup_(json_decrefp) json_t *d = ws_refused(u3, other.access, 403, "forbidden");
                (void)d;
        }
        /* The exit code ends the session: the exit frame, then close 1000. */
        ws_send("a", "exit 3\r");
        ws_expect_end("a", 1000, "exit", NULL, 3);
        _cleanup_free_ char *line = session_end_line(session);
        ensure(field_of(line, "bytes_out") > 0 && field_of(line, "bytes_in") > 0, "%s", line);
        _cleanup_free_ char *audit = xasprintf(
            "SELECT count(*) FROM audit_logs WHERE action = 'console.open' AND target_id = '%s' "
            "AND actor_id = '%s' AND details LIKE '%%%s%%'",
            alloc, u.user_id, session);
        ensure(db_scalar(T.c, audit) == 1, "no console.open audit row for %s", session);
}

Test(console, many_sessions_at_once_within_the_limits_and_a_clean_stop)
{
        const char *args[] = {"--console-max-sessions-per-allocation", "6",
                              "--console-max-sessions-per-user", "8", NULL};
        Tokens u;
        char a1[64], a2[64];
        platform(args, &u, a1);
        launch_active(&u, "console-2", a2);

        /* Six sessions on one allocation, two on the other, all at once. */
        char *urls[8];
        for (int i = 0; i < 8; i++)
                urls[i] = terminal_url(&u, i < 6 ? a1 : a2);
        for (int i = 0; i < 8; i++) {
                char id[8];
                snprintf(id, sizeof(id), "s%d", i);
                free(ws_connect(id, urls[i]));
                free(urls[i]);
        }
        for (int i = 0; i < 8; i++) {
                char id[8], cmd[64];
                snprintf(id, sizeof(id), "s%d", i);
                snprintf(cmd, sizeof(cmd), "echo session-%d-$((%d*11))\r", i, i);
                ws_send(id, cmd);
        }
        for (int i = 0; i < 8; i++) {
                char id[8], want[32];
                snprintf(id, sizeof(id), "s%d", i);
                snprintf(want, sizeof(want), "session-%d-%d", i, i * 11);
                ws_expect_output(id, want, 30000);
        }
        /* A seventh on the first allocation, a ninth for the user: refused. */
        {
                _cleanup_resp_ HttpResponse *r = token_request(&u, a1);
                assert_error(r, 409, "too_many_sessions");
                ensure(streq_ptr(jstr(r, "error.details.scope"), "allocation") &&
                           json_integer_value(jget(r, "error.details.limit")) == 6,
                       "%s", r->body);
                _cleanup_resp_ HttpResponse *r2 = token_request(&u, a2);
                assert_error(r2, 409, "too_many_sessions");
                ensure(streq_ptr(jstr(r2, "error.details.scope"), "user"), "%s", r2->body);
        }
        /* One leaves: there is room again. */
        ws_simple("close", "s0");
        ws_expect_closed("s0", 1000);
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                _cleanup_resp_ HttpResponse *r = token_request(&u, a1);
                if (r->status == 200)
                        break;
                ensure(mono_ms() < deadline, "no room after a close: %s", r->body);
                pause_ms(100);
        }
        ensure(log_has("reason=client_closed", DEADLINE_MS), "the closed session never ended");

        /* SIGTERM with seven sessions open: each gets shutting_down (close
         * 1001) and the controller exits 0 (no leak, no error). */
        ctl_stop_clean(T.c);
        for (int i = 1; i < 8; i++) {
                char id[8];
                snprintf(id, sizeof(id), "s%d", i);
                ws_expect_end(id, 1001, "error", "shutting_down", 0);
        }
}

Test(console, an_idle_session_is_closed)
{
        const char *args[] = {"--console-idle-timeout-s", "2", NULL};
        Tokens u;
        char alloc[64];
        platform(args, &u, alloc);
        _cleanup_free_ char *url = terminal_url(&u, alloc);
        _cleanup_free_ char *session = ws_connect("a", url);
        ws_expect_end("a", 1011, "error", "idle_timeout", 0);
        _cleanup_free_ char *line = session_end_line(session);
        ensure(strstr(line, "reason=idle_timeout"), "%s", line);
}

Test(console, a_slow_reader_holds_the_terminal_back_within_the_window)
{
        const char *args[] = {"--console-window-bytes", "65536", NULL};
        Tokens u;
        char alloc[64];
        platform(args, &u, alloc);
        _cleanup_free_ char *url = terminal_url(&u, alloc);
        _cleanup_free_ char *session = ws_connect("a", url);
        ws_expect_output("a", ":~", 20000);
        /* About 25 MB of output, far more than the sockets' buffers hold. */
        ws_send("a", "seq 1 3000000; echo flood-$((4*5))-done\r");
        ws_simple("pause", "a");
        _cleanup_free_ char *held = xasprintf(
            "msg=\"console output held back: the browser is behind\" session=%s ", session);
        ensure(log_has(held, 120000), "the controller never held the output back");
        ws_simple("resume", "a");
        ws_expect_output("a", "flood-20-done", 240000);
        {
                _cleanup_(json_decrefp) json_t *r = ws_output("a");
                ensure(json_integer_value(json_object_get(r, "lines")) >= 3000000,
                       "lost output: %lld lines",
                       (long long)json_integer_value(json_object_get(r, "lines")));
        }
        ws_send("a", "exit\r");
        ws_expect_end("a", 1000, "exit", NULL, 0);
        _cleanup_free_ char *line = session_end_line(session);
        fprintf(stderr, "slow reader: %s\n", line);
        long long peak = field_of(line, "peak_out_buffered");
        ensure(field_of(line, "bytes_out") >= 3000000LL * 7, "%s", line);
        ensure(field_of(line, "stalls") >= 1, "%s", line);
        /* The window, plus a few frame headers. */
        ensure(peak > 0 && peak <= WINDOW + 1024, "per-session backlog %lld > window: %s", peak,
               line);
}

Test(console, the_agent_killed_mid_session_ends_it_with_an_error)
{
        Tokens u;
        char alloc[64];
        platform(NULL, &u, alloc);
        _cleanup_free_ char *url = terminal_url(&u, alloc);
        _cleanup_free_ char *session = ws_connect("a", url);
        ws_send("a", "echo alive-$((3*3))\r");
        ws_expect_output("a", "alive-9", 20000);
        kill9(&T.host->agent);
        ws_expect_end("a", 1011, "error", "agent_disconnected", 0);
        _cleanup_free_ char *line = session_end_line(session);
        ensure(strstr(line, "reason=agent_disconnected"), "%s", line);
        /* No agent, no console. */
        ensure(node_online(false), "the node stayed online");
        _cleanup_resp_ HttpResponse *r = token_request(&u, alloc);
        assert_error(r, 409, "node_offline");
}

Test(console, releasing_the_allocation_ends_its_sessions)
{
        Tokens u;
        char alloc[64];
        platform(NULL, &u, alloc);
        _cleanup_free_ char *url = terminal_url(&u, alloc);
        _cleanup_free_ char *session = ws_connect("a", url);
        ws_send("a", "echo before-$((5*5))\r");
        ws_expect_output("a", "before-25", 20000);
        _cleanup_free_ char *rpath = xasprintf("/api/v1/allocations/%s/release", alloc);
        _cleanup_resp_ HttpResponse *rel = api_post(T.c, rpath, u.access, NULL);
        ensure(rel->status == 202, "release: %ld %s", rel->status, rel->body);
        ws_expect_end("a", 1011, "error", "allocation_not_active", 0);
        _cleanup_resp_ HttpResponse *r = token_request(&u, alloc);
        assert_error(r, 409, "invalid_state");
        const char *state = jstr(r, "error.details.state");
        ensure(streq_ptr(state, "releasing") || streq_ptr(state, "released"), "%s", r->body);
}
