/* SPDX-License-Identifier: MIT */
/* Node onboarding end to end with the real processes on loopback: the
 * controller (harness), scripts/bootstrap.sh --prefix enrolling a simulated
 * host, and `gpuslice-agent run` dialing the controller. The journey from
 * adding a node to approved slots; a reused and an expired token through the
 * script; a certificate from another CA; a revoked node; the agent killed in
 * the middle of a discovery; the controller restarted under a connected
 * agent; heartbeat loss; approval refused by a failing invariant. test-link.c
 * pins the same rules against a test peer; this file shows the real binaries
 * keep them together.
 *
 * Every wait polls a condition until a generous deadline (a loaded 2-core
 * machine runs these with sanitizers). Children write their output to files
 * under the test's temp dirs; a failed check prints them. */
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

#include <sqlite3.h>

#include "ca.h"
#include "harness.h"
#include "test-peer.h"

#define NODES "/api/v1/admin/nodes"
#define AUDIT "/api/v1/admin/audit-logs"

/* How long anything may take on a loaded machine. */
#define DEADLINE_MS 30000

extern char **environ;

/* ---- one simulated host: its prefix, bootstrap output and agent ---- */

typedef struct Host {
        char *root;      /* temp dir owning everything below */
        char *prefix;    /* bootstrap.sh --prefix */
        char *conf;      /* prefix/etc/gpuslice/agent.conf */
        char *boot_out;  /* the last bootstrap.sh run's stdout and stderr */
        char *agent_log; /* the agent's stderr, appended over restarts */
        char node_id[64];
        pid_t agent; /* 0 when not running */
} Host;

#define MAX_HOSTS 4

/* The test's state: a failed assertion longjmps past the test body, so
 * teardown finds the children and temp dirs here. */
static struct {
        Controller *c;
        Tokens admin;
        Host *hosts[MAX_HOSTS];
        size_t n_hosts;
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

/* Everything a failed check needs to be understood. */
static void dump_logs(void)
{
        if (T.c)
                print_tail("controller stderr", T.c->stderr_path);
        for (size_t i = 0; i < T.n_hosts; i++) {
                print_tail("bootstrap.sh output", T.hosts[i]->boot_out);
                print_tail("agent log", T.hosts[i]->agent_log);
        }
}

/* cr_assert that first prints the children's logs. */
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

static char *agent_bin(void)
{
        const char *b = getenv("GPUSLICE_TEST_BUILD_ROOT");
        cr_assert(b && *b, "GPUSLICE_TEST_BUILD_ROOT is not set (run through meson test)");
        return xasprintf("%s/agent/gpuslice-agent", b);
}

/* The test's environment without GPUSLICE_* (the agent refuses unknown
 * GPUSLICE_AGENT_* variables; the runner sets GPUSLICE_TEST_*). */
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

/* fork + exec with stdout and stderr appended to out_path; the child dies
 * with the test process. */
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
                dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        return pid;
}

/* The raw wait status, or -ETIMEDOUT. */
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

static Host *host_new(const char *tag)
{
        cr_assert(T.n_hosts < MAX_HOSTS);
        Host *h = calloc(1, sizeof(*h));
        cr_assert(h);
        h->root = tmpdir_new(tag);
        h->prefix = xasprintf("%s/host", h->root);
        h->conf = xasprintf("%s/etc/gpuslice/agent.conf", h->prefix);
        h->boot_out = xasprintf("%s/bootstrap.out", h->root);
        h->agent_log = xasprintf("%s/agent.log", h->root);
        T.hosts[T.n_hosts++] = h;
        return h;
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

static void host_free(Host *h)
{
        agent_kill9(h);
        tmpdir_remove(h->root);
        free(h->root);
        free(h->prefix);
        free(h->conf);
        free(h->boot_out);
        free(h->agent_log);
        free(h);
}

/* Runs scripts/bootstrap.sh --controller URL --token TOKEN --simulate
 * --prefix PREFIX --agent-bin AGENT; returns its exit code (the output is in
 * h->boot_out, replaced at each run). */
static int bootstrap(Host *h, const char *token)
{
        _cleanup_free_ char *script = xasprintf("%s/scripts/bootstrap.sh", source_root());
        _cleanup_free_ char *agent = agent_bin();
        (void)unlink(h->boot_out);
        char *argv[] = {"/bin/bash", script,        "--controller", T.c->url,
                        "--token",   (char *)token, "--simulate",   "--prefix",
                        h->prefix,   "--agent-bin", agent,          NULL};
        pid_t pid = spawn(argv, h->boot_out);
        int status = wait_child(pid, 90000);
        if (status == -ETIMEDOUT) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
        ensure(status >= 0, "bootstrap.sh did not finish in time");
        return cli_exit_code(status);
}

static char *boot_output(Host *h)
{
        char *s = read_file(h->boot_out);
        cr_assert(s, "no bootstrap output at %s", h->boot_out);
        return s;
}

/* The node_id line of the agent config bootstrap.sh wrote. */
static void read_node_id(Host *h)
{
        _cleanup_free_ char *conf = read_file(h->conf);
        ensure(conf, "no agent config at %s", h->conf);
        const char *p = strstr(conf, "\nnode_id = ");
        ensure(p, "no node_id in %s", conf);
        p += strlen("\nnode_id = ");
        size_t n = strcspn(p, "\n");
        cr_assert_lt(n, sizeof(h->node_id));
        memcpy(h->node_id, p, n);
        h->node_id[n] = '\0';
}

/* gpuslice-agent run --config CONF [--simulate], the way bootstrap.sh says
 * to start it. */
static void agent_start(Host *h, bool simulate)
{
        cr_assert(h->agent == 0, "agent already running");
        _cleanup_free_ char *bin = agent_bin();
        char *argv[] = {bin, "run", "--config", h->conf, simulate ? "--simulate" : NULL, NULL};
        h->agent = spawn(argv, h->agent_log);
}

/* SIGTERM; the agent must exit 0 (an ASan report or a leak makes it fail). */
static void agent_stop_clean(Host *h)
{
        if (h->agent <= 0)
                return;
        kill(h->agent, SIGTERM);
        int status = wait_child(h->agent, DEADLINE_MS);
        if (status == -ETIMEDOUT)
                agent_kill9(h);
        else
                h->agent = 0;
        ensure(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "the agent did not exit 0 on SIGTERM (status %d)", status);
}

/* How often needle occurs in a file (a child's log). */
static int count_in_file(const char *path, const char *needle)
{
        _cleanup_free_ char *s = read_file(path);
        int n = 0;
        for (const char *p = s; p && (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static bool wait_in_file(const char *path, const char *needle, int times, long long timeout_ms)
{
        long long deadline = mono_ms() + timeout_ms;
        while (count_in_file(path, needle) < times) {
                if (mono_ms() > deadline)
                        return false;
                pause_ms(50);
        }
        return true;
}

/* ---- the controller and the admin API ---- */

static void controller_start(const char *const *extra_args)
{
        T.c = ctl_new();
        /* Agents beat every second (the welcome tells them). */
        ctl_args(T.c, "--heartbeat-interval-s", "1", NULL);
        for (size_t i = 0; extra_args && extra_args[i]; i++)
                ctl_args(T.c, extra_args[i], NULL);
        ctl_start_or_fail(T.c);
        admin_sign_in(T.c, "root@example.com", NULL, &T.admin);
}

/* POST /admin/nodes; returns the bootstrap token (malloc'ed). */
static char *node_create(const char *name, bool simulated, char node_id[static 64])
{
        _cleanup_free_ char *body =
            xasprintf("{\"name\":\"%s\",\"simulated\":%s}", name, simulated ? "true" : "false");
        _cleanup_resp_ HttpResponse *r = api_post(T.c, NODES, T.admin.access, body);
        ensure(r->status == 201, "POST %s: %ld %s", NODES, r->status, r->body);
        ensure(jstr(r, "bootstrap_token") && jstr(r, "node.id"), "%s", r->body);
        snprintf(node_id, 64, "%s", jstr(r, "node.id"));
        return strdup(jstr(r, "bootstrap_token"));
}

static HttpResponse *node_get(const char *node_id)
{
        _cleanup_free_ char *path = xasprintf(NODES "/%s", node_id);
        HttpResponse *r = api_get(T.c, path, T.admin.access);
        ensure(r->status == 200, "GET %s: %ld %s", path, r->status, r->body);
        return r;
}

/* A field of the node as text: strings as they are, booleans true/false. */
static void field_text(const HttpResponse *r, const char *field, char out[static 64])
{
        json_t *v = jget(r, field);
        snprintf(out, 64, "%s",
                 json_is_string(v)  ? json_string_value(v)
                 : json_is_true(v)  ? "true"
                 : json_is_false(v) ? "false"
                                    : "");
}

/* Polls the node until every field=want pair holds (NULL-terminated pairs). */
static bool wait_node(const char *node_id, long long timeout_ms, ...) __attribute__((sentinel));
static bool wait_node(const char *node_id, long long timeout_ms, ...)
{
        long long deadline = mono_ms() + timeout_ms;
        for (;;) {
                _cleanup_resp_ HttpResponse *r = node_get(node_id);
                bool all = true;
                va_list ap;
                va_start(ap, timeout_ms);
                for (const char *f = va_arg(ap, const char *); f; f = va_arg(ap, const char *)) {
                        const char *want = va_arg(ap, const char *);
                        char got[64];
                        field_text(r, f, got);
                        if (!streq(got, want))
                                all = false;
                }
                va_end(ap);
                if (all)
                        return true;
                if (mono_ms() > deadline) {
                        fprintf(stderr, "node %s, last seen: %s\n", node_id, r->body);
                        return false;
                }
                pause_ms(50);
        }
}

/* POST .../slice-topology/discovery; fills the discovery and command ids. */
static void discovery_request(const char *node_id, char discovery_id[static 64],
                              char command_id[static 64])
{
        _cleanup_free_ char *path = xasprintf(NODES "/%s/slice-topology/discovery", node_id);
        _cleanup_resp_ HttpResponse *r = api_post(T.c, path, T.admin.access, NULL);
        ensure(r->status == 202, "POST %s: %ld %s", path, r->status, r->body);
        ensure(jstr(r, "discovery_id") && jstr(r, "command_id"), "%s", r->body);
        snprintf(discovery_id, 64, "%s", jstr(r, "discovery_id"));
        snprintf(command_id, 64, "%s", jstr(r, "command_id"));
}

/* Polls the candidate until it is no longer running; returns it. */
static HttpResponse *candidate_wait(const char *node_id, const char *discovery_id)
{
        _cleanup_free_ char *path =
            xasprintf(NODES "/%s/slice-topology/candidates/%s", node_id, discovery_id);
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                HttpResponse *r = api_get(T.c, path, T.admin.access);
                ensure(r->status == 200, "GET %s: %ld %s", path, r->status, r->body);
                const char *state = jstr(r, "state");
                if (state && !streq(state, "running"))
                        return r;
                if (mono_ms() > deadline) {
                        dump_logs();
                        cr_assert_fail("discovery %s still running: %s", discovery_id, r->body);
                }
                http_response_free(r);
                pause_ms(100);
        }
}

static HttpResponse *approve(const char *node_id, const char *discovery_id, const char *body)
{
        _cleanup_free_ char *path =
            xasprintf(NODES "/%s/slice-topology/candidates/%s/approve", node_id, discovery_id);
        return api_post(T.c, path, T.admin.access, body);
}

/* How many audit rows with this action name the node, through the API. */
static int audit_count(const char *node_id, const char *action)
{
        _cleanup_free_ char *path =
            xasprintf(AUDIT "?target_id=%s&action=%s&limit=500", node_id, action);
        _cleanup_resp_ HttpResponse *r = api_get(T.c, path, T.admin.access);
        ensure(r->status == 200, "GET %s: %ld %s", path, r->status, r->body);
        json_t *items = jget(r, "items");
        ensure(json_is_array(items), "%s", r->body);
        return (int)json_array_size(items);
}

static long long db_count(const char *fmt, const char *arg)
{
        _cleanup_free_ char *sql = xasprintf(fmt, arg);
        return db_scalar(T.c, sql);
}

/* Bootstrap a new simulated node through the script and check what it wrote. */
static Host *enroll_host(const char *name)
{
        Host *h = host_new(name);
        char node_id[64];
        _cleanup_free_ char *token = node_create(name, true, node_id);
        int rc = bootstrap(h, token);
        ensure(rc == 0, "bootstrap.sh exited %d", rc);
        read_node_id(h);
        ensure(streq(h->node_id, node_id), "enrolled as %s, created %s", h->node_id, node_id);
        return h;
}

/* An enrolled host whose agent is connected. */
static Host *online_host(const char *name)
{
        Host *h = enroll_host(name);
        agent_start(h, true);
        ensure(wait_node(h->node_id, DEADLINE_MS, "online", "true", "state", "enrolled", NULL),
               "the agent never brought the node online");
        return h;
}

/* The controller epochs its log announced, in order (at most n). */
static size_t controller_epochs(unsigned long long *out, size_t n)
{
        _cleanup_free_ char *log = ctl_stderr(T.c);
        size_t k = 0;
        const char *needle = "msg=\"controller epoch\" epoch=";
        for (const char *p = log; p && k < n && (p = strstr(p, needle)); p += strlen(needle))
                out[k++] = strtoull(p + strlen(needle), NULL, 10);
        return k;
}

static void setup(void)
{
        T = (typeof(T)){0};
}

static void teardown(void)
{
        for (size_t i = 0; i < T.n_hosts; i++)
                host_free(T.hosts[i]);
        T.n_hosts = 0;
        if (T.c)
                ctl_free(T.c);
        T.c = NULL;
}

/* One timeout for every test (criterion 2.4.1 leaks when they differ). */
TestSuite(onboarding, .init = setup, .fini = teardown, .timeout = 150);

/* ---- the journey ---- */

typedef struct FileState {
        struct timespec mtime;
        mode_t mode;
        char *content;
} FileState;

static FileState file_state(const char *path)
{
        struct stat st;
        ensure(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
        return (FileState){
            .mtime = st.st_mtim, .mode = st.st_mode & 07777, .content = read_file(path)};
}

Test(onboarding, the_journey_from_a_new_node_to_approved_slots_with_real_processes)
{
        controller_start(NULL);
        Host *h = host_new("journey");

        /* the admin adds a simulated node */
        _cleanup_resp_ HttpResponse *add =
            api_post(T.c, NODES, T.admin.access, "{\"name\":\"sim-1\",\"simulated\":true}");
        ensure(add->status == 201, "%s", add->body);
        _cleanup_free_ char *token = strdup(jstr(add, "bootstrap_token"));
        const char *command = jstr(add, "bootstrap_command");
        ensure(command && strstr(command, token) && strstr(command, "--simulate"),
               "bootstrap_command: %s", add->body);
        ensure(streq(jstr(add, "node.state"), "pending_enrollment"), "%s", add->body);

        /* bootstrap.sh enrolls the host under the prefix */
        int rc = bootstrap(h, token);
        ensure(rc == 0, "bootstrap.sh exited %d", rc);
        read_node_id(h);
        ensure(streq(h->node_id, jstr(add, "node.id")), "enrolled as %s", h->node_id);
        _cleanup_free_ char *out = boot_output(h);
        ensure(strstr(out, "enrolled as nod_"), "%s", out);

        const char *names[] = {"agent.conf", "node.key", "node.crt", "ca.crt"};
        const mode_t modes[] = {0644, 0600, 0644, 0644};
        FileState before[4];
        for (size_t i = 0; i < 4; i++) {
                _cleanup_free_ char *p = xasprintf("%s/etc/gpuslice/%s", h->prefix, names[i]);
                before[i] = file_state(p);
                ensure(before[i].mode == modes[i], "%s has mode %04o, want %04o", names[i],
                       (unsigned)before[i].mode, (unsigned)modes[i]);
        }
        ensure(strstr(before[0].content, "simulate = true\n"), "%s", before[0].content);
        ensure(strstr(before[1].content, "PRIVATE KEY"), "the key file holds no key");
        _cleanup_free_ char *state_dir = xasprintf("%s/var/lib/gpuslice-agent", h->prefix);
        struct stat st;
        ensure(stat(state_dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700,
               "%s is not a 0700 directory", state_dir);
        ensure(wait_node(h->node_id, 1000, "state", "enrolled", "online", "false", NULL),
               "enrolled, not yet online");
        long long used_at =
            db_count("SELECT used_at FROM bootstrap_tokens WHERE node_id = '%s'", h->node_id);
        ensure(used_at > 0, "the token is not spent");

        /* the agent dials in and the node is online */
        agent_start(h, true);
        ensure(wait_node(h->node_id, DEADLINE_MS, "online", "true", "state", "enrolled", NULL),
               "the agent never brought the node online");
        {
                _cleanup_resp_ HttpResponse *n = node_get(h->node_id);
                ensure(json_is_true(jget(n, "simulated")), "%s", n->body);
                ensure(jstr(n, "last_seen_at"), "%s", n->body);
        }

        /* discovery: the simulated Tioga host, 8 GPUs with simulated SR-IOV */
        char discovery_id[64], command_id[64];
        discovery_request(h->node_id, discovery_id, command_id);
        _cleanup_resp_ HttpResponse *cand = candidate_wait(h->node_id, discovery_id);
        ensure(streq(jstr(cand, "state"), "completed"), "%s", cand->body);
        ensure(json_is_true(jget(cand, "ok")), "%s", cand->body);
        ensure(json_array_size(jget(cand, "slots")) == 8, "%s", cand->body);
        ensure(json_is_true(jget(cand, "document.simulated")), "the document is not simulated");
        ensure(wait_node(h->node_id, 1000, "state", "pending_approval", NULL), "not pending");

        /* approve all */
        _cleanup_resp_ HttpResponse *ap = approve(h->node_id, discovery_id, "{}");
        ensure(ap->status == 200, "approve: %ld %s", ap->status, ap->body);
        ensure(streq(jstr(ap, "node.state"), "active"), "%s", ap->body);
        ensure(json_integer_value(jget(ap, "node.slots")) == 8, "%s", ap->body);
        {
                _cleanup_resp_ HttpResponse *n = node_get(h->node_id);
                ensure(streq(jstr(n, "state"), "active") &&
                           json_integer_value(jget(n, "slots")) == 8 &&
                           json_is_true(jget(n, "online")),
                       "%s", n->body);
                _cleanup_free_ char *path = xasprintf(NODES "/%s/slots", h->node_id);
                _cleanup_resp_ HttpResponse *sl = api_get(T.c, path, T.admin.access);
                json_t *items = jget(sl, "items");
                ensure(sl->status == 200 && json_array_size(items) == 8, "%s", sl->body);
                size_t i;
                json_t *it;
                json_array_foreach(items, i, it)
                {
                        ensure(streq(json_string_value(json_object_get(it, "state")), "available"),
                               "slot %zu: %s", i, sl->body);
                        ensure(streq(json_string_value(json_object_get(it, "discovery_id")),
                                     discovery_id),
                               "%s", sl->body);
                }
        }

        /* every step is audited */
        const char *actions[] = {"node.create", "node.enroll", "node.discovery_requested",
                                 "node.discovery_completed", "node.approve"};
        for (size_t i = 0; i < ELEMENTSOF(actions); i++)
                ensure(audit_count(h->node_id, actions[i]) == 1, "%s is not audited once",
                       actions[i]);

        /* bootstrap.sh again: already enrolled, nothing changed, nothing spent */
        rc = bootstrap(h, token);
        ensure(rc == 0, "second bootstrap.sh exited %d", rc);
        _cleanup_free_ char *again = boot_output(h);
        ensure(strstr(again, "already enrolled as ") && strstr(again, h->node_id) &&
                   strstr(again, "nothing changed"),
               "%s", again);
        for (size_t i = 0; i < 4; i++) {
                _cleanup_free_ char *p = xasprintf("%s/etc/gpuslice/%s", h->prefix, names[i]);
                FileState now = file_state(p);
                ensure(now.mtime.tv_sec == before[i].mtime.tv_sec &&
                           now.mtime.tv_nsec == before[i].mtime.tv_nsec &&
                           now.mode == before[i].mode &&
                           streq(strempty(now.content), strempty(before[i].content)),
                       "%s changed on the second run", names[i]);
                free(now.content);
                free(before[i].content);
        }
        ensure(audit_count(h->node_id, "node.enroll") == 1, "enrolled twice");
        ensure(db_count("SELECT used_at FROM bootstrap_tokens WHERE node_id = '%s'", h->node_id) ==
                   used_at,
               "the token was spent again");
        ensure(wait_node(h->node_id, 1000, "state", "active", "online", "true", NULL),
               "the node changed");

        agent_stop_clean(h);
        ctl_stop_clean(T.c);
}

/* ---- token errors through the real script ---- */

Test(onboarding, a_reused_token_is_refused_by_the_script_with_what_to_do)
{
        controller_start(NULL);
        /* the first host enrolls with its token */
        Host *a = host_new("first");
        char a_id[64], b_id[64];
        _cleanup_free_ char *a_token = node_create("first", true, a_id);
        int rc = bootstrap(a, a_token);
        ensure(rc == 0, "bootstrap.sh exited %d", rc);
        long long used_at =
            db_count("SELECT used_at FROM bootstrap_tokens WHERE node_id = '%s'", a_id);

        /* a second host runs bootstrap.sh with the first node's spent token */
        _cleanup_free_ char *b_token = node_create("second", true, b_id);
        Host *b = host_new("second");
        rc = bootstrap(b, a_token);
        ensure(rc == 1, "bootstrap.sh with a spent token exited %d", rc);
        _cleanup_free_ char *out = boot_output(b);
        ensure(strstr(out, "bootstrap_token_used"), "%s", out);
        ensure(strstr(out, "next: ") && strstr(out, "ask an admin for a new one"), "%s", out);
        struct stat st;
        ensure(stat(b->conf, &st) < 0 && errno == ENOENT, "a refused enrollment wrote %s", b->conf);
        _cleanup_free_ char *key = xasprintf("%s/etc/gpuslice/node.key", b->prefix);
        ensure(stat(key, &st) < 0 && errno == ENOENT, "a refused enrollment left %s", key);

        /* nothing moved: the first node is enrolled once, the second still waits */
        ensure(wait_node(a_id, 1000, "state", "enrolled", NULL), "the first node moved");
        ensure(wait_node(b_id, 1000, "state", "pending_enrollment", NULL), "the second moved");
        ensure(audit_count(a_id, "node.enroll") == 1, "the spent token enrolled again");
        ensure(db_count("SELECT used_at FROM bootstrap_tokens WHERE node_id = '%s'", a_id) ==
                   used_at,
               "the spent token changed");
        ensure(db_count("SELECT COUNT(*) FROM bootstrap_tokens WHERE node_id = '%s' AND used_at "
                        "IS NULL",
                        b_id) == 1,
               "the second node's own token was touched");

        /* the second host with its own token: fine */
        rc = bootstrap(b, b_token);
        ensure(rc == 0, "bootstrap.sh with the right token exited %d", rc);
        read_node_id(b);
        ensure(streq(b->node_id, b_id), "enrolled as %s", b->node_id);
        ctl_stop_clean(T.c);
}

Test(onboarding, an_expired_token_is_refused_by_the_script)
{
        /* 10 s is the shortest TTL the controller takes. */
        const char *args[] = {"--bootstrap-token-ttl-s", "10", NULL};
        controller_start(args);
        Host *h = host_new("expired");
        char node_id[64];
        _cleanup_free_ char *token = node_create("late", true, node_id);
        long long expires_at =
            db_count("SELECT expires_at FROM bootstrap_tokens WHERE node_id = '%s'", node_id);
        /* Poll the wall clock past the expiry (the controller compares
         * microseconds since the epoch). */
        long long deadline = mono_ms() + DEADLINE_MS;
        for (;;) {
                struct timespec now;
                clock_gettime(CLOCK_REALTIME, &now);
                long long us = (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000;
                if (us > expires_at + 200000)
                        break;
                ensure(mono_ms() < deadline, "the token never expired");
                pause_ms(100);
        }
        int rc = bootstrap(h, token);
        ensure(rc == 1, "bootstrap.sh with an expired token exited %d", rc);
        _cleanup_free_ char *out = boot_output(h);
        ensure(strstr(out, "bootstrap_token_expired"), "%s", out);
        ensure(strstr(out, "ask an admin for a new one"), "%s", out);
        struct stat st;
        ensure(stat(h->conf, &st) < 0 && errno == ENOENT, "a refused enrollment wrote %s", h->conf);
        ensure(wait_node(node_id, 1000, "state", "pending_enrollment", NULL), "the node moved");
        ensure(audit_count(node_id, "node.enroll") == 0, "enrolled with an expired token");
        ctl_stop_clean(T.c);
}

/* ---- identity: another CA, a revoked node ---- */

Test(onboarding, a_certificate_from_another_ca_never_brings_the_node_online)
{
        controller_start(NULL);
        Host *h = enroll_host("foreign");
        /* Another CA signs a certificate with the same node id in it; the
         * host's key and certificate are swapped for it. */
        _cleanup_free_ char *dir = xasprintf("%s/other-ca", h->root);
        cr_assert(mkdir(dir, 0700) == 0);
        Ca *other = NULL;
        cr_assert(ca_open(dir, &other) == 0);
        _cleanup_free_ char *key = NULL, *csr = NULL, *cert = NULL;
        char serial[CA_SERIAL_MAX];
        int64_t not_after;
        cr_assert(ca_new_key_pem(&key) == 0 && ca_make_csr(key, "foreign", &csr) == 0);
        cr_assert(ca_sign_csr(other, csr, h->node_id, 30, serial, &not_after, &cert) == 0);
        ca_free(other);
        _cleanup_free_ char *key_path = xasprintf("%s/etc/gpuslice/node.key", h->prefix);
        _cleanup_free_ char *cert_path = xasprintf("%s/etc/gpuslice/node.crt", h->prefix);
        cr_assert(write_file(key_path, key) == 0 && chmod(key_path, 0600) == 0);
        cr_assert(write_file(cert_path, cert) == 0);

        agent_start(h, true);
        /* The TLS handshake fails (the controller requires a client
         * certificate from its CA): the agent keeps trying and never gets a
         * challenge. Two failed attempts show it tried and was refused. */
        ensure(wait_in_file(h->agent_log, "the TLS handshake failed", 2, DEADLINE_MS),
               "the agent did not report refused connections");
        ensure(count_in_file(h->agent_log, "msg=\"Welcomed by the controller\"") == 0,
               "a foreign certificate was welcomed");
        ensure(wait_node(h->node_id, 1000, "online", "false", "state", "enrolled", NULL),
               "the node moved");
        ensure(db_count("SELECT COUNT(*) FROM nodes WHERE id = '%s' AND last_seen_at IS NOT NULL",
                        h->node_id) == 0,
               "the controller saw the node");
        agent_stop_clean(h);
        ctl_stop_clean(T.c);
}

Test(onboarding, a_deleted_node_loses_its_link_and_its_redials_are_refused)
{
        controller_start(NULL);
        Host *h = online_host("revoked");
        _cleanup_free_ char *path = xasprintf(NODES "/%s", h->node_id);
        HttpRequest rq = {.method = "DELETE", .path = path, .bearer = T.admin.access};
        _cleanup_resp_ HttpResponse *d = http_send(T.c, &rq);
        ensure(d->status == 200, "DELETE: %ld %s", d->status, d->body);

        /* the open link is closed with certificate_revoked ... */
        ensure(wait_in_file(h->agent_log,
                            "msg=\"The controller refused the link\" code=certificate_revoked", 1,
                            DEADLINE_MS),
               "the agent was not told its certificate is revoked");
        ensure(wait_node(h->node_id, DEADLINE_MS, "online", "false", "state", "disabled", NULL),
               "the node is not offline and disabled");
        /* ... and the agent's redial is refused by the controller too */
        _cleanup_free_ char *refusal =
            xasprintf("msg=\"link refused: certificate revoked or unknown\" node=%s", h->node_id);
        ensure(wait_in_file(T.c->stderr_path, refusal, 1, DEADLINE_MS),
               "the controller did not refuse a redial");
        ensure(wait_in_file(h->agent_log,
                            "msg=\"The controller refused the link\" code=certificate_revoked", 2,
                            DEADLINE_MS),
               "the agent did not see its redial refused");
        ensure(count_in_file(h->agent_log, "msg=\"Welcomed by the controller\"") == 1,
               "the revoked node was welcomed again");
        ensure(wait_node(h->node_id, 1000, "online", "false", "state", "disabled", NULL),
               "the node came back");
        ensure(audit_count(h->node_id, "node.revoke") == 1, "no node.revoke audit row");
        agent_stop_clean(h);
        ctl_stop_clean(T.c);
}

/* ---- failures in the middle ---- */

Test(onboarding, an_agent_killed_during_a_discovery_completes_it_once_after_restart)
{
        controller_start(NULL);
        Host *h = online_host("killed");
        /* Stopped, the agent cannot read the command the controller sends:
         * killing it then is sure to happen before the reply exists. */
        cr_assert(kill(h->agent, SIGSTOP) == 0);
        char discovery_id[64], command_id[64];
        discovery_request(h->node_id, discovery_id, command_id);
        agent_kill9(h);
        ensure(wait_node(h->node_id, DEADLINE_MS, "online", "false", NULL),
               "the killed agent's link was not lost");
        ensure(db_count("SELECT COUNT(*) FROM node_commands WHERE id = '%s' AND state IN "
                        "('pending', 'sent')",
                        command_id) == 1,
               "the command is not open");
        {
                _cleanup_free_ char *p =
                    xasprintf(NODES "/%s/slice-topology/candidates/%s", h->node_id, discovery_id);
                _cleanup_resp_ HttpResponse *r = api_get(T.c, p, T.admin.access);
                ensure(streq(strempty(jstr(r, "state")), "running"), "%s", r->body);
        }

        /* restarted, it says hello; the controller resends the command */
        agent_start(h, true);
        _cleanup_resp_ HttpResponse *cand = candidate_wait(h->node_id, discovery_id);
        ensure(streq(jstr(cand, "state"), "completed") && json_is_true(jget(cand, "ok")) &&
                   json_array_size(jget(cand, "slots")) == 8,
               "%s", cand->body);
        ensure(
            wait_node(h->node_id, DEADLINE_MS, "online", "true", "state", "pending_approval", NULL),
            "the node is not back, pending approval");

        /* applied once, stored once */
        ensure(db_count("SELECT COUNT(*) FROM discoveries WHERE node_id = '%s'", h->node_id) == 1,
               "more than one discovery");
        ensure(db_count("SELECT COUNT(*) FROM node_commands WHERE id = '%s' AND state = 'done'",
                        command_id) == 1,
               "the command is not done");
        ensure(audit_count(h->node_id, "node.discovery_completed") == 1,
               "the discovery completed more than once");
        _cleanup_free_ char *reply =
            xasprintf("msg=\"reply\" node=%s command=%s ", h->node_id, command_id);
        ensure(count_in_file(T.c->stderr_path, reply) == 1, "the reply was recorded %d times",
               count_in_file(T.c->stderr_path, reply));
        _cleanup_free_ char *applied = xasprintf("msg=\"Applied\" type=command.discover "
                                                 "command_id=%s",
                                                 command_id);
        ensure(count_in_file(h->agent_log, applied) == 1, "the agent applied it %d times",
               count_in_file(h->agent_log, applied));
        /* the agent's journal holds the command once, done */
        _cleanup_free_ char *journal =
            xasprintf("%s/var/lib/gpuslice-agent/journal.sqlite", h->prefix);
        sqlite3 *db = NULL;
        cr_assert(sqlite3_open_v2(journal, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
        sqlite3_busy_timeout(db, 10000);
        sqlite3_stmt *s = NULL;
        cr_assert(sqlite3_prepare_v2(db,
                                     "SELECT COUNT(*), SUM(state = 'done') FROM commands WHERE "
                                     "id = ?",
                                     -1, &s, NULL) == SQLITE_OK);
        sqlite3_bind_text(s, 1, command_id, -1, SQLITE_TRANSIENT);
        cr_assert(sqlite3_step(s) == SQLITE_ROW);
        int rows = sqlite3_column_int(s, 0), done = sqlite3_column_int(s, 1);
        sqlite3_finalize(s);
        sqlite3_close(db);
        ensure(rows == 1 && done == 1, "journal rows %d, done %d", rows, done);

        agent_stop_clean(h);
        ctl_stop_clean(T.c);
}

Test(onboarding, a_restarted_controller_gets_its_agent_back_with_a_new_epoch)
{
        /* The agent's config holds the link endpoint: the controller must come
         * back on the same port. */
        char listen[64];
        snprintf(listen, sizeof(listen), "127.0.0.1:%u", free_port());
        const char *args[] = {"--agent-listen", listen, NULL};
        controller_start(args);
        Host *h = online_host("restart");
        unsigned long long epochs[4];
        ensure(controller_epochs(epochs, 4) == 1, "no epoch in the controller log");

        ctl_stop_clean(T.c); /* SIGTERM with the agent connected: exits 0 */
        ctl_start_or_fail(T.c);
        size_t n = controller_epochs(epochs, 4);
        ensure(n == 2 && epochs[1] > epochs[0], "epochs: %zu, %llu -> %llu", n, epochs[0],
               n > 1 ? epochs[1] : 0);
        /* A new controller process: the admin's access token is still valid
         * (sessions live in the database). */
        ensure(wait_node(h->node_id, DEADLINE_MS, "online", "true", "state", "enrolled", NULL),
               "the agent did not come back by itself");
        _cleanup_free_ char *welcomed =
            xasprintf("msg=\"Welcomed by the controller\" epoch=%llu ", epochs[1]);
        ensure(wait_in_file(h->agent_log, welcomed, 1, DEADLINE_MS),
               "the agent did not get the new epoch");
        ensure(h->agent > 0 && waitpid(h->agent, NULL, WNOHANG) == 0, "the agent exited");
        agent_stop_clean(h);
        ctl_stop_clean(T.c);
}

Test(onboarding, a_silent_agent_goes_offline_and_returns_to_its_state)
{
        const char *args[] = {"--heartbeat-timeout-s", "3", NULL};
        controller_start(args);
        Host *h = online_host("silent");
        /* The agent hangs with its connection open. */
        cr_assert(kill(h->agent, SIGSTOP) == 0);
        long long t0 = mono_ms();
        ensure(wait_node(h->node_id, DEADLINE_MS, "online", "false", "state", "offline", NULL),
               "the silent node never went offline");
        /* The last heartbeat may be up to an interval (1 s) old at the stop. */
        ensure(mono_ms() - t0 >= 1500, "offline after %lld ms, before the 3 s timeout",
               mono_ms() - t0);

        cr_assert(kill(h->agent, SIGCONT) == 0);
        ensure(wait_node(h->node_id, DEADLINE_MS, "online", "true", "state", "enrolled", NULL),
               "the node did not return to enrolled");
        agent_stop_clean(h);
        ctl_stop_clean(T.c);
}

/* ---- approval with a failing invariant ---- */

Test(onboarding, approval_is_refused_when_the_real_agent_reports_a_failing_invariant)
{
        controller_start(NULL);
        Host *h = enroll_host("pascal");
        /* Not simulated: the agent discovers from a real machine's hwloc
         * export (LLNL CTS-1, 2 P100s), where the NIC's SR-IOV capacity is
         * unknown, so per_slot_vf cannot be verified. */
        _cleanup_free_ char *conf = read_file(h->conf);
        ensure(conf, "no config");
        char *sim = strstr(conf, "simulate = true\n");
        ensure(sim, "%s", conf);
        memmove(sim, sim + strlen("simulate = true\n"),
                strlen(sim + strlen("simulate = true\n")) + 1);
        _cleanup_free_ char *new_conf =
            xasprintf("%shwloc_xml = %s/tests/fixtures/topology/mpibind/cts1-pascal.xml\n", conf,
                      source_root());
        cr_assert(write_file(h->conf, new_conf) == 0);
        agent_start(h, false);
        ensure(wait_node(h->node_id, DEADLINE_MS, "online", "true", "state", "enrolled", NULL),
               "the agent never brought the node online");

        char discovery_id[64], command_id[64];
        discovery_request(h->node_id, discovery_id, command_id);
        _cleanup_resp_ HttpResponse *cand = candidate_wait(h->node_id, discovery_id);
        ensure(streq(jstr(cand, "state"), "completed"), "%s", cand->body);
        ensure(json_is_false(jget(cand, "ok")), "%s", cand->body);
        json_t *slots = jget(cand, "slots");
        ensure(json_array_size(slots) == 2, "%s", cand->body);
        ensure(json_is_false(jget(cand, "document.simulated")) || !jget(cand, "document.simulated"),
               "a real fixture reported as simulated");
        bool per_slot_vf_failed = false;
        size_t i;
        json_t *inv;
        json_array_foreach(jget(cand, "invariants"), i, inv)
        {
                if (streq(strempty(json_string_value(json_object_get(inv, "name"))), "per_slot_vf"))
                        per_slot_vf_failed = json_is_false(json_object_get(inv, "ok"));
        }
        ensure(per_slot_vf_failed, "per_slot_vf holds: %s", cand->body);
        ensure(wait_node(h->node_id, 1000, "state", "pending_approval", NULL), "not pending");

        /* all, and one slot alone: refused, nothing written */
        _cleanup_resp_ HttpResponse *all = approve(h->node_id, discovery_id, "{}");
        assert_error(all, 409, "invariants_failed");
        ensure(json_array_size(jget(all, "error.details.failing")) > 0, "%s", all->body);
        const char *slot = json_string_value(json_object_get(json_array_get(slots, 0), "id"));
        ensure(slot, "%s", cand->body);
        _cleanup_free_ char *one = xasprintf("{\"slots\":[\"%s\"]}", slot);
        _cleanup_resp_ HttpResponse *sub = approve(h->node_id, discovery_id, one);
        assert_error(sub, 409, "invariants_failed");
        /* a slot the discovery does not have */
        _cleanup_resp_ HttpResponse *unknown =
            approve(h->node_id, discovery_id, "{\"slots\":[\"slot-0000:ff:00.0\"]}");
        assert_invalid_field(unknown, "slots");

        ensure(db_count("SELECT COUNT(*) FROM node_resource_slots WHERE node_id = '%s'",
                        h->node_id) == 0,
               "slots were written");
        ensure(audit_count(h->node_id, "node.approve") == 0, "an approval was audited");
        ensure(wait_node(h->node_id, 1000, "state", "pending_approval", NULL), "the node moved");
        {
                _cleanup_resp_ HttpResponse *n = node_get(h->node_id);
                ensure(json_integer_value(jget(n, "slots")) == 0, "%s", n->body);
        }
        agent_stop_clean(h);
        ctl_stop_clean(T.c);
}
