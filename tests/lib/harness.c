/* SPDX-License-Identifier: MIT */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <sqlite3.h>

extern char **environ;

#define READY_TIMEOUT_MS 30000
#define POLL_STEP_MS     5

/* ---- small utilities ---- */

long long mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One poll step: a short pause between checks of a condition, never a wait by itself. */
static void poll_pause(void)
{
        struct timespec ts = {.tv_sec = 0, .tv_nsec = POLL_STEP_MS * 1000000L};
        nanosleep(&ts, NULL);
}

static char *xstrdup(const char *s)
{
        char *d = strdup(s);
        cr_assert(d, "out of memory");
        return d;
}

char *xasprintf(const char *fmt, ...)
{
        va_list ap;
        char *s = NULL;
        va_start(ap, fmt);
        int n = vasprintf(&s, fmt, ap);
        va_end(ap);
        cr_assert(n >= 0, "out of memory");
        return s;
}

char *ssh_test_public_key(unsigned seed, const char *comment)
{
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        /* string "ssh-ed25519", string of 32 key bytes (RFC 4251 wire format) */
        unsigned char blob[4 + 11 + 4 + 32] = {0,   0,   0,   11,  's', 's', 'h', '-', 'e', 'd',
                                               '2', '5', '5', '1', '9', 0,   0,   0,   32};
        uint32_t x = seed * 2654435761u + 12345u;
        for (size_t i = 19; i < sizeof(blob); i++) {
                x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift32 */
                blob[i] = (unsigned char)x;
        }
        char enc[4 * ((sizeof(blob) + 2) / 3) + 1];
        size_t o = 0;
        for (size_t i = 0; i < sizeof(blob); i += 3) {
                uint32_t v = (uint32_t)blob[i] << 16;
                if (i + 1 < sizeof(blob))
                        v |= (uint32_t)blob[i + 1] << 8;
                if (i + 2 < sizeof(blob))
                        v |= blob[i + 2];
                enc[o++] = b64[v >> 18 & 63];
                enc[o++] = b64[v >> 12 & 63];
                enc[o++] = i + 1 < sizeof(blob) ? b64[v >> 6 & 63] : '=';
                enc[o++] = i + 2 < sizeof(blob) ? b64[v & 63] : '=';
        }
        enc[o] = '\0';
        return xasprintf("ssh-ed25519 %s%s%s", enc, comment ? " " : "", comment ? comment : "");
}

char *tmpdir_new(const char *tag)
{
        const char *base = getenv("TMPDIR");
        char *t = xasprintf("%s/gpuslice-%s-XXXXXX", base && *base ? base : "/tmp", tag);
        cr_assert(mkdtemp(t), "mkdtemp %s: %s", t, strerror(errno));
        return t;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        (void)remove(path);
        return 0;
}

void tmpdir_remove(const char *path)
{
        if (path)
                (void)nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int write_file(const char *path, const char *content)
{
        FILE *f = fopen(path, "we");
        if (!f)
                return -errno;
        fputs(content, f);
        return fclose(f) == 0 ? 0 : -errno;
}

char *read_file(const char *path)
{
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        size_t cap = 4096, len = 0;
        char *buf = malloc(cap);
        while (buf) {
                size_t n = fread(buf + len, 1, cap - len - 1, f);
                len += n;
                if (n == 0)
                        break;
                if (cap - len - 1 == 0) {
                        char *nb = realloc(buf, cap * 2);
                        if (!nb) {
                                free(buf);
                                buf = NULL;
                                break;
                        }
                        buf = nb;
                        cap *= 2;
                }
        }
        fclose(f);
        if (buf)
                buf[len] = '\0';
        return buf;
}

/* ---- cleanup of what a failed assertion leaves behind ----
 * A failing cr_assert longjmps out of the test, past every _cleanup_; the
 * registry lets an atexit handler still kill the children and remove their
 * temp dirs (and keeps LeakSanitizer quiet about them). */

static Controller *live[32];
static size_t n_live;
static bool atexit_done;

static void cleanup_at_exit(void)
{
        while (n_live > 0)
                ctl_free(live[n_live - 1]);
}

static void registry_add(Controller *c)
{
        if (!atexit_done) {
                atexit(cleanup_at_exit);
                atexit_done = true;
        }
        cr_assert(n_live < ELEMENTSOF(live), "too many controllers in one test");
        live[n_live++] = c;
}

static void registry_remove(Controller *c)
{
        for (size_t i = 0; i < n_live; i++)
                if (live[i] == c) {
                        live[i] = live[--n_live];
                        return;
                }
}

/* ---- processes ---- */

static const char *controller_bin(void)
{
        const char *bin = getenv("GPUSLICE_CONTROLLER_BIN");
        cr_assert(bin && *bin, "GPUSLICE_CONTROLLER_BIN is not set (meson sets it)");
        return bin;
}

/* The test's environment minus GPUSLICE_* (the controller rejects unknown
 * GPUSLICE_ variables, and the test runner sets some), plus extra. */
static char **child_env(char *const *extra, size_t n_extra)
{
        size_t n = 0;
        for (char **e = environ; *e; e++)
                n++;
        char **env = calloc(n + n_extra + 1, sizeof(char *));
        cr_assert(env);
        size_t k = 0;
        for (char **e = environ; *e; e++)
                if (strncmp(*e, "GPUSLICE_", 9) != 0)
                        env[k++] = *e;
        for (size_t i = 0; i < n_extra; i++)
                env[k++] = extra[i];
        env[k] = NULL;
        return env;
}

/* fork + exec with stdout/stderr sent to the given fds. The child dies with
 * the test process (PR_SET_PDEATHSIG), so a crashed test leaves no server. */
static pid_t spawn(char *const *argv, char *const *envp, int out_fd, int err_fd)
{
        pid_t parent = getpid();
        pid_t pid = fork();
        cr_assert(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                int devnull = open("/dev/null", O_RDONLY);
                if (devnull >= 0)
                        dup2(devnull, STDIN_FILENO);
                if (out_fd >= 0)
                        dup2(out_fd, STDOUT_FILENO);
                if (err_fd >= 0)
                        dup2(err_fd, STDERR_FILENO);
                execve(argv[0], argv, envp);
                dprintf(STDERR_FILENO, "harness: exec %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        return pid;
}

/* waitpid until exit or deadline; returns the raw status or -ETIMEDOUT. */
static int wait_deadline(pid_t pid, long long deadline_ms)
{
        for (;;) {
                int status;
                pid_t r = waitpid(pid, &status, WNOHANG);
                if (r == pid)
                        return status;
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (mono_ms() >= deadline_ms)
                        return -ETIMEDOUT;
                poll_pause();
        }
}

int cli_exit_code(int wait_status)
{
        if (wait_status >= 0 && WIFEXITED(wait_status))
                return WEXITSTATUS(wait_status);
        return -1;
}

Controller *ctl_new(void)
{
        Controller *c = calloc(1, sizeof(*c));
        cr_assert(c);
        c->root = tmpdir_new("ctl");
        c->state_dir = xasprintf("%s/state", c->root);
        c->ready_file = xasprintf("%s/ready", c->root);
        c->stderr_path = xasprintf("%s/controller.stderr", c->root);
        c->wait_status = -1;
        registry_add(c);
        return c;
}

void ctl_args(Controller *c, ...)
{
        va_list ap;
        va_start(ap, c);
        for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *)) {
                cr_assert(c->n_args < HARNESS_MAX_ARGS, "too many arguments");
                c->args[c->n_args++] = xstrdup(a);
        }
        va_end(ap);
}

void ctl_env(Controller *c, const char *key_value)
{
        cr_assert(c->n_env < HARNESS_MAX_ENV, "too many environment variables");
        c->env[c->n_env++] = xstrdup(key_value);
}

static void read_url(Controller *c)
{
        _cleanup_free_ char *s = read_file(c->ready_file);
        cr_assert(s, "ready file vanished");
        s[strcspn(s, "\r\n")] = '\0';
        cr_assert(strlen(s) < sizeof(c->url), "ready file too long");
        snprintf(c->url, sizeof(c->url), "%s", s);
}

int ctl_start(Controller *c)
{
        cr_assert(c->pid == 0, "controller already running");
        (void)unlink(c->ready_file);
        c->url[0] = '\0';

        char *argv[HARNESS_MAX_ARGS + 16];
        size_t n = 0;
        argv[n++] = (char *)controller_bin();
        argv[n++] = "--listen";
        argv[n++] = "127.0.0.1:0";
        argv[n++] = "--state-dir";
        argv[n++] = c->state_dir;
        argv[n++] = "--ready-file";
        argv[n++] = c->ready_file;
        argv[n++] = "--password-scrypt-log-n";
        argv[n++] = "10";
        argv[n++] = "--agent-listen"; /* parallel controllers must not share 7443 */
        argv[n++] = "127.0.0.1:0";
        for (size_t i = 0; i < c->n_args; i++)
                argv[n++] = c->args[i];
        argv[n] = NULL;

        int err_fd = open(c->stderr_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        cr_assert(err_fd >= 0, "open %s: %s", c->stderr_path, strerror(errno));
        _cleanup_free_ char **envp = child_env(c->env, c->n_env);
        c->pid = spawn(argv, envp, err_fd, err_fd);
        close(err_fd);

        long long deadline = mono_ms() + READY_TIMEOUT_MS;
        for (;;) {
                if (access(c->ready_file, F_OK) == 0) {
                        read_url(c);
                        return 0;
                }
                int status;
                pid_t r = waitpid(c->pid, &status, WNOHANG);
                if (r == c->pid) {
                        c->pid = 0;
                        c->wait_status = status;
                        return -ECHILD;
                }
                if (mono_ms() >= deadline)
                        return -ETIMEDOUT;
                poll_pause();
        }
}

void ctl_start_or_fail(Controller *c)
{
        int r = ctl_start(c);
        if (r < 0) {
                _cleanup_free_ char *err = ctl_stderr(c);
                cr_assert_fail("controller did not become ready (%s, status %d); stderr:\n%s",
                               strerror(-r), c->wait_status, err ? err : "");
        }
}

int ctl_wait_exit(Controller *c, long long timeout_ms)
{
        if (c->pid == 0)
                return c->wait_status;
        int status = wait_deadline(c->pid, mono_ms() + timeout_ms);
        if (status >= 0) {
                c->pid = 0;
                c->wait_status = status;
        }
        return status;
}

int ctl_stop(Controller *c, int sig, long long timeout_ms)
{
        if (c->pid == 0)
                return c->wait_status;
        kill(c->pid, sig);
        int status = ctl_wait_exit(c, timeout_ms);
        if (status == -ETIMEDOUT)
                ctl_kill9(c);
        return status;
}

void ctl_stop_clean(Controller *c)
{
        int status = ctl_stop(c, SIGTERM, 30000);
        if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                _cleanup_free_ char *err = ctl_stderr(c);
                cr_assert_fail("controller did not exit 0 on SIGTERM (status %d: %s %d); "
                               "stderr:\n%s",
                               status,
                               status < 0            ? "timeout"
                               : WIFSIGNALED(status) ? "signal"
                                                     : "exit",
                               status < 0            ? 0
                               : WIFSIGNALED(status) ? WTERMSIG(status)
                                                     : WEXITSTATUS(status),
                               err ? err : "");
        }
}

void ctl_kill9(Controller *c)
{
        if (c->pid == 0)
                return;
        kill(c->pid, SIGKILL);
        int status;
        while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
                ;
        c->pid = 0;
        c->wait_status = status;
}

char *ctl_stderr(Controller *c)
{
        return read_file(c->stderr_path);
}

void ctl_free(Controller *c)
{
        if (!c)
                return;
        registry_remove(c);
        ctl_kill9(c);
        tmpdir_remove(c->root);
        free(c->root);
        free(c->state_dir);
        free(c->ready_file);
        free(c->stderr_path);
        free(c->cainfo);
        for (size_t i = 0; i < c->n_args; i++)
                free(c->args[i]);
        for (size_t i = 0; i < c->n_env; i++)
                free(c->env[i]);
        free(c);
}

void ctl_host_port(const Controller *c, char host[static 64], unsigned *port)
{
        const char *p = strstr(c->url, "://");
        cr_assert(p, "no url (controller not started?)");
        p += 3;
        const char *colon = strrchr(p, ':');
        cr_assert(colon && (size_t)(colon - p) < 64);
        memcpy(host, p, (size_t)(colon - p));
        host[colon - p] = '\0';
        *port = (unsigned)atoi(colon + 1);
}

int cli_run(const char *const *argv_in, const char *const *extra_env, long long timeout_ms,
            CliResult *ret)
{
        char *argv[HARNESS_MAX_ARGS + 2];
        size_t n = 0;
        argv[n++] = (char *)controller_bin();
        for (size_t i = 1; argv_in[i]; i++) {
                cr_assert(n < HARNESS_MAX_ARGS);
                argv[n++] = (char *)argv_in[i];
        }
        argv[n] = NULL;
        char *extra[HARNESS_MAX_ENV];
        size_t n_extra = 0;
        for (size_t i = 0; extra_env && extra_env[i]; i++)
                extra[n_extra++] = (char *)extra_env[i];

        FILE *out = tmpfile(), *err = tmpfile();
        cr_assert(out && err, "tmpfile: %s", strerror(errno));
        _cleanup_free_ char **envp = child_env(extra, n_extra);
        pid_t pid = spawn(argv, envp, fileno(out), fileno(err));
        int status = wait_deadline(pid, mono_ms() + timeout_ms);
        if (status == -ETIMEDOUT) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
        *ret = (CliResult){.status = status};
        FILE *files[2] = {out, err};
        char **dst[2] = {&ret->out, &ret->err};
        for (int i = 0; i < 2; i++) {
                long len;
                fflush(files[i]);
                fseek(files[i], 0, SEEK_END);
                len = ftell(files[i]);
                rewind(files[i]);
                *dst[i] = calloc(1, (size_t)(len > 0 ? len : 0) + 1);
                cr_assert(*dst[i]);
                if (len > 0)
                        (void)!fread(*dst[i], 1, (size_t)len, files[i]);
                fclose(files[i]);
        }
        return status;
}

void cli_result_done(CliResult *r)
{
        free(r->out);
        free(r->err);
        r->out = r->err = NULL;
}

/* ---- HTTP ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
        curl_global_init(CURL_GLOBAL_DEFAULT);
}

typedef struct Buf {
        char *data;
        size_t len, cap;
} Buf;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        Buf *b = userdata;
        size_t n = size * nmemb;
        if (b->len + n + 1 > b->cap) {
                size_t cap = MAX(b->cap * 2, b->len + n + 1);
                char *d = realloc(b->data, cap);
                if (!d)
                        return 0;
                b->data = d;
                b->cap = cap;
        }
        memcpy(b->data + b->len, ptr, n);
        b->len += n;
        b->data[b->len] = '\0';
        return n;
}

static void take_header(char **dst, const char *line, size_t len, const char *name)
{
        size_t nl = strlen(name);
        if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
                return;
        const char *v = line + nl + 1;
        const char *end = line + len;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
                end--;
        free(*dst);
        *dst = strndup(v, (size_t)(end - v));
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        HttpResponse *r = userdata;
        size_t n = size * nmemb;
        take_header(&r->request_id, ptr, n, "x-request-id");
        take_header(&r->retry_after, ptr, n, "retry-after");
        take_header(&r->allow, ptr, n, "allow");
        take_header(&r->content_type, ptr, n, "content-type");
        return n;
}

HttpResponse *http_send(const Controller *c, const HttpRequest *rq)
{
        pthread_once(&curl_once, curl_init_once);
        HttpResponse *r = calloc(1, sizeof(*r));
        cr_assert(r);
        CURL *h = curl_easy_init();
        cr_assert(h);
        _cleanup_free_ char *url = xasprintf("%s%s", c->url, rq->path);
        struct curl_slist *hdrs = NULL;
        Buf body = {0};

        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 60000L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(h, CURLOPT_HTTP_VERSION,
                         rq->http_version ? rq->http_version : (long)CURL_HTTP_VERSION_1_1);
        if (c->cainfo)
                curl_easy_setopt(h, CURLOPT_CAINFO, c->cainfo);
        if (rq->source_ip)
                curl_easy_setopt(h, CURLOPT_INTERFACE, rq->source_ip);

        const char *method = rq->method ? rq->method : (rq->body ? "POST" : "GET");
        if (rq->body) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                                 (curl_off_t)(rq->body_len ? rq->body_len : strlen(rq->body)));
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body);
        }
        if (streq(method, "HEAD"))
                curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        else if (!streq(method, rq->body ? "POST" : "GET"))
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);

        /* No "Expect: 100-continue" round trip: tests want the answer to the body. */
        hdrs = curl_slist_append(hdrs, "Expect:");
        _cleanup_free_ char *ct = NULL, *auth = NULL, *rid = NULL;
        if (rq->content_type)
                ct = rq->content_type[0] ? xasprintf("Content-Type: %s", rq->content_type)
                                         : xstrdup("Content-Type:");
        else if (rq->body)
                ct = xstrdup("Content-Type: application/json");
        if (ct)
                hdrs = curl_slist_append(hdrs, ct);
        if (rq->bearer) {
                auth = xasprintf("Authorization: Bearer %s", rq->bearer);
                hdrs = curl_slist_append(hdrs, auth);
        }
        if (rq->request_id) {
                rid = xasprintf("X-Request-Id: %s", rq->request_id);
                hdrs = curl_slist_append(hdrs, rid);
        }
        if (rq->extra_header)
                hdrs = curl_slist_append(hdrs, rq->extra_header);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);

        r->curl_code = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
        curl_easy_getinfo(h, CURLINFO_HTTP_VERSION, &r->http_version);
        curl_easy_cleanup(h);
        curl_slist_free_all(hdrs);

        r->body = body.data ? body.data : xstrdup("");
        r->body_len = body.len;
        if (r->body_len > 0)
                r->json = json_loadb(r->body, r->body_len, 0, NULL);
        return r;
}

void http_response_free(HttpResponse *r)
{
        if (!r)
                return;
        free(r->body);
        json_decref(r->json);
        free(r->request_id);
        free(r->retry_after);
        free(r->allow);
        free(r->content_type);
        free(r);
}

static HttpResponse *checked(HttpResponse *r, const char *method, const char *path)
{
        cr_assert(r->curl_code == CURLE_OK, "%s %s: %s", method, path,
                  curl_easy_strerror(r->curl_code));
        return r;
}

HttpResponse *api_get(const Controller *c, const char *path, const char *bearer)
{
        HttpRequest rq = {.method = "GET", .path = path, .bearer = bearer};
        return checked(http_send(c, &rq), "GET", path);
}

HttpResponse *api_post(const Controller *c, const char *path, const char *bearer, const char *body)
{
        HttpRequest rq = {.method = "POST", .path = path, .bearer = bearer, .body = body};
        return checked(http_send(c, &rq), "POST", path);
}

json_t *jget(const HttpResponse *r, const char *dotted)
{
        json_t *v = r->json;
        char key[128];
        const char *p = dotted;
        while (v && *p) {
                size_t n = strcspn(p, ".");
                if (n >= sizeof(key))
                        return NULL;
                memcpy(key, p, n);
                key[n] = '\0';
                if (json_is_array(v) && n > 0 && strspn(key, "0123456789") == n)
                        v = json_array_get(v, strtoul(key, NULL, 10)); /* "items.0.id" */
                else
                        v = json_is_object(v) ? json_object_get(v, key) : NULL;
                p += n;
                if (*p == '.')
                        p++;
        }
        return v;
}

const char *jstr(const HttpResponse *r, const char *dotted)
{
        json_t *v = jget(r, dotted);
        return json_is_string(v) ? json_string_value(v) : NULL;
}

void assert_error(const HttpResponse *r, long status, const char *code)
{
        cr_assert_eq(r->status, status, "expected HTTP %ld, got %ld: %s", status, r->status,
                     r->body);
        cr_assert(r->json, "error body is not JSON: %s", r->body);
        cr_assert_str_eq(strempty(jstr(r, "error.code")), code, "body: %s", r->body);
        const char *msg = jstr(r, "error.message");
        cr_assert(msg && *msg, "error.message missing: %s", r->body);
        cr_assert(json_is_object(jget(r, "error.details")), "error.details not an object: %s",
                  r->body);
        cr_assert(r->request_id && *r->request_id, "no X-Request-Id header");
        cr_assert_str_eq(strempty(jstr(r, "error.request_id")), r->request_id,
                         "error.request_id differs from the X-Request-Id header");
        cr_assert(r->content_type && startswith(r->content_type, "application/json"),
                  "content-type %s", strempty(r->content_type));
}

void assert_invalid_field(const HttpResponse *r, const char *field)
{
        assert_error(r, 400, "invalid_request");
        cr_assert_str_eq(strempty(jstr(r, "error.details.field")), field, "body: %s", r->body);
}

/* ---- sign-in helpers ---- */

static long token_call(const Controller *c, const char *path, json_t *body, Tokens *t)
{
        _cleanup_free_ char *s = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        cr_assert(s);
        _cleanup_(http_response_freep) HttpResponse *r = api_post(c, path, NULL, s);
        if ((r->status == 200 || r->status == 201) && t) {
                const char *a = jstr(r, "access_token"), *rf = jstr(r, "refresh_token"),
                           *id = jstr(r, "user.id");
                cr_assert(a && rf && id, "token response incomplete: %s", r->body);
                snprintf(t->access, sizeof(t->access), "%s", a);
                snprintf(t->refresh, sizeof(t->refresh), "%s", rf);
                snprintf(t->user_id, sizeof(t->user_id), "%s", id);
        }
        return r->status;
}

long api_signup(const Controller *c, const char *email, const char *password, const char *name,
                Tokens *t)
{
        return token_call(
            c, "/api/v1/auth/personal/signup",
            json_pack("{s:s, s:s, s:s}", "email", email, "password", password, "name", name), t);
}

long api_login(const Controller *c, const char *email, const char *password, Tokens *t)
{
        return token_call(c, "/api/v1/auth/personal/login",
                          json_pack("{s:s, s:s}", "email", email, "password", password), t);
}

long api_refresh(const Controller *c, const char *refresh_token, Tokens *t)
{
        return token_call(c, "/api/v1/auth/token/refresh",
                          json_pack("{s:s}", "refresh_token", refresh_token), t);
}

/* ---- database ---- */

static sqlite3 *db_open_path(const Controller *c, int flags)
{
        _cleanup_free_ char *path = xasprintf("%s/gpuslice.db", c->state_dir);
        sqlite3 *db = NULL;
        int rc = sqlite3_open_v2(path, &db, flags, NULL);
        cr_assert(rc == SQLITE_OK, "open %s: %s", path, db ? sqlite3_errmsg(db) : "?");
        sqlite3_busy_timeout(db, 10000);
        return db;
}

long long db_scalar(const Controller *c, const char *sql)
{
        sqlite3 *db = db_open_path(c, SQLITE_OPEN_READONLY);
        sqlite3_stmt *s = NULL;
        int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
        cr_assert(rc == SQLITE_OK, "prepare %s: %s", sql, sqlite3_errmsg(db));
        rc = sqlite3_step(s);
        cr_assert(rc == SQLITE_ROW, "step %s: %s", sql, sqlite3_errmsg(db));
        long long v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        sqlite3_close(db);
        return v;
}

DbCounts db_counts(const Controller *c)
{
        return (DbCounts){
            .users = db_scalar(c, "SELECT COUNT(*) FROM users"),
            .sessions = db_scalar(c, "SELECT COUNT(*) FROM sessions"),
            .live_sessions = db_scalar(c, "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL"),
            .access_tokens = db_scalar(c, "SELECT COUNT(*) FROM access_tokens"),
            .refresh_tokens = db_scalar(c, "SELECT COUNT(*) FROM refresh_tokens"),
        };
}

void assert_counts_equal(DbCounts a, DbCounts b)
{
        cr_assert(a.users == b.users && a.sessions == b.sessions &&
                      a.live_sessions == b.live_sessions && a.access_tokens == b.access_tokens &&
                      a.refresh_tokens == b.refresh_tokens,
                  "database changed: users %lld->%lld sessions %lld->%lld live %lld->%lld "
                  "access %lld->%lld refresh %lld->%lld",
                  a.users, b.users, a.sessions, b.sessions, a.live_sessions, b.live_sessions,
                  a.access_tokens, b.access_tokens, a.refresh_tokens, b.refresh_tokens);
}

void db_exec_rw(const Controller *c, const char *sql)
{
        sqlite3 *db = db_open_path(c, SQLITE_OPEN_READWRITE);
        char *msg = NULL;
        int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
        cr_assert(rc == SQLITE_OK, "exec %s: %s", sql, msg ? msg : "?");
        sqlite3_close(db);
}

/* ---- raw sockets ---- */

int tcp_connect(const Controller *c)
{
        char host[64];
        unsigned port;
        ctl_host_port(c, host, &port);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
                return -EINVAL;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
                int e = errno;
                close(fd);
                return -e;
        }
        return fd;
}

int tcp_read_until_closed(int fd, char *buf, size_t size, long long deadline_ms)
{
        size_t len = strlen(buf);
        for (;;) {
                long long left = deadline_ms - mono_ms();
                if (left <= 0)
                        return 0;
                struct pollfd p = {.fd = fd, .events = POLLIN};
                int n = poll(&p, 1, (int)MIN(left, 1000));
                if (n < 0 && errno != EINTR)
                        return 1;
                if (n <= 0)
                        continue;
                char tmp[4096];
                ssize_t k = recv(fd, tmp, sizeof(tmp), 0);
                if (k == 0 || (k < 0 && errno == ECONNRESET))
                        return 1;
                if (k < 0)
                        continue;
                size_t copy = MIN((size_t)k, size - 1 - len);
                memcpy(buf + len, tmp, copy);
                len += copy;
                buf[len] = '\0';
        }
}

void tls_self_signed_cert(const char *dir, char **cert, char **key)
{
        cr_assert(asprintf(cert, "%s/cert.pem", dir) > 0);
        cr_assert(asprintf(key, "%s/key.pem", dir) > 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                int devnull = open("/dev/null", O_WRONLY);
                dup2(devnull, STDOUT_FILENO);
                dup2(devnull, STDERR_FILENO);
                execlp("openssl", "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                       "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", *key, "-out", *cert,
                       "-days", "1", "-subj", "/CN=localhost", "-addext",
                       "subjectAltName=IP:127.0.0.1,DNS:localhost", (char *)NULL);
                _exit(127);
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "openssl req failed (%d)", status);
}
