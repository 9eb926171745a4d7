/* SPDX-License-Identifier: MIT */
#include "ws-client.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

void (*ws_client_dump)(void);

static struct {
        pid_t pid;
        int to, from; /* its stdin, its stdout */
        char *dir, *log;
        char buf[1 << 20];
        size_t len;
} C;

#define fail(...)                                                                                  \
        do {                                                                                       \
                if (ws_client_dump)                                                                \
                        ws_client_dump();                                                          \
                cr_assert_fail(__VA_ARGS__);                                                       \
        } while (0)
#define check(cond, ...)                                                                           \
        do {                                                                                       \
                if (!(cond))                                                                       \
                        fail(__VA_ARGS__);                                                         \
        } while (0)

void ws_client_start(void)
{
        const char *src = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        cr_assert(src && *src, "GPUSLICE_TEST_SOURCE_ROOT is not set (run through meson test)");
        cr_assert(C.pid == 0, "the client is running already");
        _cleanup_free_ char *script = xasprintf("%s/tests/node/console-client.mjs", src);
        _cleanup_free_ char *ws = xasprintf("%s/tests/node/node_modules/ws", src);
        cr_assert(access(ws, R_OK) == 0, "npm ws is missing: run (cd tests/node && npm ci)");
        C.dir = tmpdir_new("ws-client");
        C.log = xasprintf("%s/client.log", C.dir);
        C.len = 0;
        int in[2], out[2];
        cr_assert(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0);
        pid_t parent = getpid();
        C.pid = fork();
        cr_assert(C.pid >= 0, "fork: %s", strerror(errno));
        if (C.pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                int log = open(C.log, O_WRONLY | O_CREAT | O_APPEND, 0600);
                if (log < 0 || dup2(in[0], STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0 ||
                    dup2(log, STDERR_FILENO) < 0)
                        _exit(127);
                execlp("node", "node", script, (char *)NULL);
                dprintf(STDERR_FILENO, "exec node: %s\n", strerror(errno));
                _exit(127);
        }
        close(in[0]);
        close(out[1]);
        C.to = in[1];
        C.from = out[0];
}

void ws_client_stop(void)
{
        if (C.pid > 0) {
                kill(C.pid, SIGKILL);
                while (waitpid(C.pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                close(C.to);
                close(C.from);
        }
        if (C.dir)
                tmpdir_remove(C.dir);
        free(C.dir);
        free(C.log);
        C.pid = 0;
        C.dir = C.log = NULL;
}

const char *ws_client_log(void)
{
        return C.log;
}

json_t *ws_call(json_t *cmd)
{
        cr_assert(cmd && C.pid > 0);
        _cleanup_free_ char *line = json_dumps(cmd, JSON_COMPACT);
        json_t *t = json_object_get(cmd, "timeout_ms");
        long long timeout = (t ? json_integer_value(t) : 20000) + 30000;
        json_decref(cmd);
        cr_assert(line);
        size_t n = strlen(line);
        line[n] = '\n';
        check(write(C.to, line, n + 1) == (ssize_t)n + 1, "writing to the client: %m");
        line[n] = '\0';
        long long deadline = mono_ms() + timeout;
        for (;;) {
                char *nl = memchr(C.buf, '\n', C.len);
                if (nl) {
                        *nl = '\0';
                        json_t *r = json_loads(C.buf, 0, NULL);
                        check(r, "the client answered no JSON: %s", C.buf);
                        size_t used = (size_t)(nl + 1 - C.buf);
                        memmove(C.buf, nl + 1, C.len - used);
                        C.len -= used;
                        return r;
                }
                long long left = deadline - mono_ms();
                check(left > 0, "the client did not answer %s", line);
                struct pollfd p = {.fd = C.from, .events = POLLIN};
                if (poll(&p, 1, (int)MIN(left, 1000LL)) <= 0)
                        continue;
                check(C.len < sizeof(C.buf), "answer too long");
                ssize_t got = read(C.from, C.buf + C.len, sizeof(C.buf) - C.len);
                check(got > 0, "the client exited (%zd); its log: %s", got, C.log);
                C.len += (size_t)got;
        }
}

static bool ok(json_t *r)
{
        return json_is_true(json_object_get(r, "ok"));
}

static char *dumps(json_t *r)
{
        char *s = json_dumps(r, JSON_COMPACT);
        return s ? s : strdup("?");
}

char *ws_connect(const char *id, const char *url)
{
        _cleanup_(json_decrefp) json_t *r =
            ws_call(json_pack("{s:s, s:s, s:s}", "cmd", "connect", "id", id, "url", url));
        _cleanup_free_ char *s = dumps(r);
        check(ok(r), "connect %s: %s", id, s);
        const char *session = json_string_value(json_object_get(r, "session"));
        check(session && strncmp(session, "cns_", 4) == 0, "no X-Console-Session: %s", s);
        return strdup(session);
}

json_t *ws_refused(const char *url, const char *bearer, long status, const char *code)
{
        json_t *headers = json_object();
        if (bearer)
                json_object_set_new(headers, "Authorization", json_sprintf("Bearer %s", bearer));
        _cleanup_(json_decrefp) json_t *r =
            ws_call(json_pack("{s:s, s:s, s:s, s:o}", "cmd", "connect", "id", "refused", "url", url,
                              "headers", headers));
        _cleanup_free_ char *s = dumps(r);
        check(!ok(r), "the connect was not refused: %s", s);
        check(json_integer_value(json_object_get(r, "status")) == status, "want %ld: %s", status,
              s);
        json_t *err = json_object_get(json_object_get(r, "body"), "error");
        check(streq_ptr(json_string_value(json_object_get(err, "code")), code), "want %s: %s", code,
              s);
        return json_incref(json_object_get(err, "details"));
}

static void simple(json_t *cmd)
{
        _cleanup_free_ char *s = dumps(cmd);
        _cleanup_(json_decrefp) json_t *r = ws_call(cmd);
        check(ok(r), "%s failed", s);
}

void ws_send(const char *id, const char *data)
{
        simple(json_pack("{s:s, s:s, s:s}", "cmd", "send", "id", id, "data", data));
}

void ws_send_text(const char *id, const char *text)
{
        simple(json_pack("{s:s, s:s, s:s}", "cmd", "send_text", "id", id, "text", text));
}

void ws_resize(const char *id, int cols, int rows)
{
        simple(json_pack("{s:s, s:s, s:i, s:i}", "cmd", "resize", "id", id, "cols", cols, "rows",
                         rows));
}

void ws_simple(const char *cmd, const char *id)
{
        simple(json_pack("{s:s, s:s}", "cmd", cmd, "id", id));
}

void ws_expect_output(const char *id, const char *needle, long long timeout_ms)
{
        _cleanup_(json_decrefp) json_t *r =
            ws_call(json_pack("{s:s, s:s, s:s, s:I}", "cmd", "wait_output", "id", id, "includes",
                              needle, "timeout_ms", (json_int_t)timeout_ms));
        _cleanup_free_ char *s = dumps(r);
        check(ok(r), "no \"%s\" on %s: %s", needle, id, s);
}

void ws_expect_end(const char *id, long close_code, const char *type, const char *code,
                   long long exit_code)
{
        _cleanup_(json_decrefp) json_t *r = ws_call(
            json_pack("{s:s, s:s, s:i}", "cmd", "wait_closed", "id", id, "timeout_ms", 45000));
        _cleanup_free_ char *s = dumps(r);
        check(ok(r), "%s did not close: %s", id, s);
        check(json_integer_value(json_object_get(r, "code")) == close_code, "close code: %s", s);
        json_t *controls = json_object_get(r, "controls");
        json_t *last = json_array_get(controls, json_array_size(controls) - 1);
        check(streq_ptr(json_string_value(json_object_get(last, "type")), type),
              "last control message: %s", s);
        if (code)
                check(streq_ptr(json_string_value(json_object_get(last, "code")), code) &&
                          json_is_string(json_object_get(last, "message")),
                      "error code: %s", s);
        else
                check(json_integer_value(json_object_get(last, "code")) == exit_code,
                      "exit code: %s", s);
}

void ws_expect_closed(const char *id, long close_code)
{
        _cleanup_(json_decrefp) json_t *r = ws_call(
            json_pack("{s:s, s:s, s:i}", "cmd", "wait_closed", "id", id, "timeout_ms", 45000));
        _cleanup_free_ char *s = dumps(r);
        check(ok(r) && json_integer_value(json_object_get(r, "code")) == close_code,
              "%s: want close %ld: %s", id, close_code, s);
}

json_t *ws_output(const char *id)
{
        json_t *r = ws_call(json_pack("{s:s, s:s}", "cmd", "output", "id", id));
        check(ok(r), "output of %s", id);
        return r;
}
