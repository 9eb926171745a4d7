/* SPDX-License-Identifier: MIT */
/* Console sessions, agent side. One Term per session: the hook's process on
 * a PTY, a uv_poll on the PTY's master, a timer for retries and deadlines.
 * A Term only ever sends what the controller's credit allows, and keeps at
 * most one read chunk (CHUNK_MAX) and the input window in memory. */
#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hooks.h"
#include "inventory.h"
#include "log.h"
#include "macro.h"
#include "timeutil.h"

#define CHUNK_MAX        16384 /* terminal bytes per console.data */
#define SESSION_ID_MAX   64
#define CELLS_MAX        1000
#define TICK_MS          20
#define DRAIN_QUIET_USEC (200 * USEC_PER_MSEC) /* after the exit: output has stopped */
#define DRAIN_MAX_USEC   (2 * USEC_PER_SEC)    /* after the exit: give up on slow credit */
#define DEFAULT_SESSIONS 32
#define DEFAULT_WINDOW   (64 * 1024)
#define DEFAULT_GRACE_MS 2000
#define TERM_ENV         "GPUSLICE_TERM=xterm-256color"

typedef struct Term {
        Consoles *c;
        struct Term *next;
        char id[SESSION_ID_MAX], allocation_id[SESSION_ID_MAX];
        pid_t pid;
        int master;
        uv_poll_t poll;
        uv_timer_t timer;
        int poll_events;
        unsigned open_handles;

        /* output: PTY -> controller */
        uint64_t out_offset, out_limit;
        uint8_t pending[CHUNK_MAX]; /* read, not yet accepted by the link */
        size_t pending_len;
        usec_t last_read;

        /* input: controller -> PTY; `in` holds received bytes not yet written */
        uint8_t *in;
        size_t in_len;
        uint64_t in_received, ack_limit_sent;
        uint64_t resize_gen;

        bool need_opened, need_ack, retry;
        bool eof, exited, close_requested, killed_hard, silent, destroyed;
        int code; /* exit status, 128 + signal when killed */
        usec_t exited_at, kill_at;
} Term;

struct Consoles {
        ConsolesOptions o;
        Term *head;
        size_t terms; /* allocated, including those whose handles are closing */
        uv_signal_t sigchld;
        bool closing, sigchld_closed;
        void (*done)(void *userdata);
        void *done_userdata;
        ConsolesStats stats;
};

void console_hook_done(ConsoleHook *h)
{
        free(h->hook_dir);
        free(h->hook);
        free(h->slot_id);
        free(h->runtime_dir);
        strv_free(h->vfio_devices);
        strv_free(h->env);
        *h = (ConsoleHook){0};
}

/* ---- messages to the controller ---- */

static int send_closed(Consoles *c, const char *session_id, const char *reason, bool has_code,
                       int code, const char *message)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", session_id);
        proto_write_kv_str(&w, "reason", reason);
        proto_write_key(&w, "code");
        if (has_code)
                proto_write_int(&w, code);
        else
                proto_write_nil(&w);
        if (message)
                proto_write_kv_str(&w, "message", message);
        proto_write_end(&w);
        return c->o.send(c->o.userdata, "console.closed", &w);
}

static uint64_t input_limit(const Term *t)
{
        return t->in_received - t->in_len + t->c->o.input_window;
}

static int send_opened(Term *t)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", t->id);
        proto_write_kv_uint(&w, "window", input_limit(t));
        proto_write_kv_uint(&w, "pid", (uint64_t)t->pid);
        proto_write_end(&w);
        return t->c->o.send(t->c->o.userdata, "console.opened", &w);
}

static int send_ack(Term *t)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        uint64_t limit = input_limit(t);
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", t->id);
        proto_write_kv_uint(&w, "offset", t->in_received);
        proto_write_kv_uint(&w, "limit", limit);
        proto_write_kv_uint(&w, "resize_gen", t->resize_gen);
        proto_write_kv_uint(&w, "out_limit", t->out_limit);
        proto_write_end(&w);
        int r = t->c->o.send(t->c->o.userdata, "console.ack", &w);
        if (r >= 0)
                t->ack_limit_sent = limit;
        return r;
}

static int send_data(Term *t)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", t->id);
        proto_write_kv_uint(&w, "offset", t->out_offset);
        proto_write_key(&w, "data");
        proto_write_bin(&w, t->pending, t->pending_len);
        proto_write_end(&w);
        return t->c->o.send(t->c->o.userdata, "console.data", &w);
}

/* ---- a session's life ---- */

static void consoles_maybe_done(Consoles *c);

static void on_handle_closed(uv_handle_t *h)
{
        Term *t = h->data;
        if (--t->open_handles > 0)
                return;
        Consoles *c = t->c;
        free(t->in);
        free(t);
        c->terms--;
        consoles_maybe_done(c);
}

/* Unlinks and frees the session (once its handles are closed). The child is
 * reaped by now; whatever is left of its process group is killed. */
static void term_destroy(Term *t)
{
        Consoles *c = t->c;
        if (t->destroyed)
                return;
        t->destroyed = true;
        for (Term **p = &c->head; *p; p = &(*p)->next)
                if (*p == t) {
                        *p = t->next;
                        break;
                }
        c->stats.sessions--;
        c->stats.closed++;
        if (t->pid > 0)
                (void)kill(-t->pid, SIGKILL); /* background leftovers of the group */
        log_info("Console session ended | session=%s allocation=%s code=%d reason=%s", t->id,
                 t->allocation_id, t->code,
                 t->silent            ? "link_lost"
                 : t->close_requested ? "closed"
                                      : "exited");
        uv_poll_stop(&t->poll);
        uv_timer_stop(&t->timer);
        uv_close((uv_handle_t *)&t->poll, on_handle_closed);
        uv_close((uv_handle_t *)&t->timer, on_handle_closed);
        close(t->master); /* hangs the terminal up */
        t->master = -1;
}

/* The hook's process and its group. The group exists only once the child
 * has called setsid() inside forkpty; a close can come before that, so the
 * process itself is signalled too (it has every signal blocked until its
 * dispositions are the defaults: the signal waits for it). */
static void term_signal(Term *t, int sig)
{
        (void)kill(t->pid, sig);
        (void)kill(-t->pid, sig);
}

static void term_request_close(Term *t)
{
        if (t->close_requested || t->exited) {
                t->close_requested = true;
                return;
        }
        t->close_requested = true;
        /* An interactive shell ignores SIGTERM but not SIGHUP; other
         * programs the other way round. */
        term_signal(t, SIGHUP);
        term_signal(t, SIGTERM);
        term_signal(t, SIGCONT);
        t->kill_at = now_mono_usec() + (usec_t)t->c->o.kill_grace_ms * USEC_PER_MSEC;
}

static void on_poll(uv_poll_t *p, int status, int events);
static void on_timer(uv_timer_t *timer);

static bool term_finished(const Term *t, usec_t now)
{
        if (!t->exited || t->pending_len > 0)
                return false;
        if (t->eof || t->close_requested || t->silent)
                return true;
        return now - t->last_read >= DRAIN_QUIET_USEC || now - t->exited_at >= DRAIN_MAX_USEC;
}

/* Sends what is due, sets the PTY events to watch, finishes the session. */
static void term_flush(Term *t)
{
        Consoles *c = t->c;
        usec_t now = now_mono_usec();
        int r;
        t->retry = false;
        if (t->silent) {
                t->need_opened = t->need_ack = false;
                t->pending_len = 0;
        }
        if (t->need_opened) {
                r = send_opened(t);
                if (r == -EAGAIN)
                        t->retry = true;
                else
                        t->need_opened = false;
        }
        if (!t->retry && t->pending_len > 0 && !t->close_requested) {
                r = send_data(t);
                if (r == -EAGAIN)
                        t->retry = true;
                else {
                        t->out_offset += t->pending_len;
                        c->stats.bytes_out += t->pending_len;
                }
                if (r != -EAGAIN)
                        t->pending_len = 0;
        } else if (t->close_requested)
                t->pending_len = 0;
        if (!t->retry && !t->silent) {
                uint64_t limit = input_limit(t);
                size_t window = c->o.input_window;
                bool due = t->need_ack || limit - t->ack_limit_sent >= window / 4 ||
                           (t->in_received >= t->ack_limit_sent && limit > t->ack_limit_sent);
                if (due) {
                        r = send_ack(t);
                        if (r == -EAGAIN)
                                t->retry = true;
                        else
                                t->need_ack = false;
                }
        }

        if (t->close_requested && !t->exited && !t->killed_hard && now >= t->kill_at) {
                log_warning("Console session did not end on SIGHUP/SIGTERM: SIGKILL | session=%s "
                            "pid=%d",
                            t->id, (int)t->pid);
                term_signal(t, SIGKILL);
                t->killed_hard = true;
        }

        if (term_finished(t, now)) {
                if (!t->silent) {
                        r = send_closed(c, t->id, t->close_requested ? "closed" : "exited", true,
                                        t->code, NULL);
                        if (r == -EAGAIN) {
                                t->retry = true;
                                goto arm;
                        }
                }
                term_destroy(t);
                return;
        }

        int events = 0;
        if (!t->eof && t->pending_len == 0 && !t->close_requested && !t->silent &&
            t->out_offset < t->out_limit)
                events |= UV_READABLE;
        if (t->in_len > 0 && !t->close_requested && !t->silent)
                events |= UV_WRITABLE;
        if (events != t->poll_events) {
                t->poll_events = events;
                if (events)
                        uv_poll_start(&t->poll, events, on_poll);
                else
                        uv_poll_stop(&t->poll);
        }
arm:;
        /* The timer runs while something is time-bound: a retry, a kill
         * deadline, the drain after the exit. */
        bool timed = t->retry || (t->close_requested && !t->exited && !t->killed_hard) || t->exited;
        if (timed && !uv_is_active((uv_handle_t *)&t->timer))
                uv_timer_start(&t->timer, on_timer, TICK_MS, TICK_MS);
        else if (!timed)
                uv_timer_stop(&t->timer);
}

static void on_timer(uv_timer_t *timer)
{
        term_flush(timer->data);
}

static void term_read(Term *t)
{
        size_t n = (size_t)MIN((uint64_t)CHUNK_MAX, t->out_limit - t->out_offset);
        if (n == 0 || t->pending_len > 0)
                return;
        ssize_t got = read(t->master, t->pending, n);
        if (got > 0) {
                t->pending_len = (size_t)got;
                t->last_read = now_mono_usec();
        } else if (got == 0 || (errno != EAGAIN && errno != EINTR))
                t->eof = true; /* EIO: every slave descriptor is closed */
}

static void term_write(Term *t)
{
        ssize_t put = write(t->master, t->in, t->in_len);
        if (put > 0) {
                memmove(t->in, t->in + put, t->in_len - (size_t)put);
                t->in_len -= (size_t)put;
                t->c->stats.bytes_in += (uint64_t)put;
        } else if (put < 0 && errno != EAGAIN && errno != EINTR)
                t->in_len = 0; /* nobody can read it any more */
}

static void on_poll(uv_poll_t *p, int status, int events)
{
        Term *t = p->data;
        if (status < 0)
                t->eof = true;
        else {
                if (events & UV_READABLE)
                        term_read(t);
                if (events & UV_WRITABLE)
                        term_write(t);
        }
        term_flush(t);
}

static Term *term_find(Consoles *c, const char *id)
{
        for (Term *t = c->head; t; t = t->next)
                if (streq(t->id, id))
                        return t;
        return NULL;
}

/* ---- children ---- */

static void on_sigchld(uv_signal_t *s, int signum)
{
        Consoles *c = s->data;
        (void)signum;
        /* Only our own children: others (hooks run by commands) are reaped
         * by whoever started them. */
        for (Term *t = c->head, *next; t; t = next) {
                next = t->next;
                if (t->exited || t->pid <= 0)
                        continue;
                int st;
                pid_t w = waitpid(t->pid, &st, WNOHANG);
                if (w != t->pid)
                        continue;
                t->exited = true;
                t->exited_at = now_mono_usec();
                t->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                log_info("Console process exited | session=%s pid=%d code=%d", t->id, (int)t->pid,
                         t->code);
                term_flush(t);
        }
}

/* In the child: a clean signal state, no inherited descriptors, the hook. */
_noreturn_ static void exec_hook(const ConsoleHook *h, const char *allocation_id)
{
        /* Every signal is blocked since before the fork (see term_open):
         * default dispositions first, then unblock, so a SIGHUP sent in
         * between is pending and acts now instead of reaching a handler
         * inherited from the agent. */
        for (int sig = 1; sig < NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        signal(sig, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        (void)syscall(SYS_close_range, 3, ~0u, 0);

        size_t n_dev = strv_length(h->vfio_devices), n_env = strv_length(h->env);
        const char *env[n_env + 2];
        for (size_t i = 0; i < n_env; i++)
                env[i] = h->env[i];
        env[n_env] = TERM_ENV;
        env[n_env + 1] = NULL;
        const HookContext ctx = {
            .slot_id = h->slot_id,
            .allocation_id = allocation_id,
            .vfio_devices = (const char *const *)h->vfio_devices,
            .n_vfio_devices = n_dev,
            .runtime_dir = h->runtime_dir,
            .env = env,
            .n_env = n_env + 1,
        };
        int r = hook_exec(h->hook_dir, h->hook, HOOK_CONSOLE, &ctx);
        dprintf(STDERR_FILENO, "gpuslice: cannot run the console hook %s/%s: %s\r\n", h->hook_dir,
                h->hook, strerror(-r));
        _exit(127);
}

/* ---- messages from the controller ---- */

static void refuse(Consoles *c, const char *session_id, const char *reason, const char *message)
{
        c->stats.refused++;
        log_warning("Console refused | session=%s reason=%s message=\"%s\"", session_id, reason,
                    message);
        (void)send_closed(c, session_id, reason, false, 0, message);
}

static void on_open(Consoles *c, const ProtoEnvelope *env)
{
        static const ProtoField fields[] = {
            {"session_id", PROTO_TYPE_STR, PROTO_REQUIRED, SESSION_ID_MAX - 1, false},
            {"allocation_id", PROTO_TYPE_STR, PROTO_REQUIRED, SESSION_ID_MAX - 1, false},
            {"cols", PROTO_TYPE_UINT, PROTO_REQUIRED, 0, false},
            {"rows", PROTO_TYPE_UINT, PROTO_REQUIRED, 0, false},
            {"window", PROTO_TYPE_UINT, PROTO_REQUIRED, 0, false},
        };
        char sid[SESSION_ID_MAX], alloc[SESSION_ID_MAX];
        uint64_t cols, rows, window;
        _cleanup_free_ char *reason = NULL;
        if (proto_check_fields(&env->body, fields, ELEMENTSOF(fields), &reason) < 0 ||
            proto_get_str(&env->body, "session_id", PROTO_REQUIRED, sid, sizeof(sid), &reason) <
                0 ||
            proto_get_str(&env->body, "allocation_id", PROTO_REQUIRED, alloc, sizeof(alloc),
                          &reason) < 0 ||
            proto_get_uint(&env->body, "cols", PROTO_REQUIRED, &cols, &reason) < 0 ||
            proto_get_uint(&env->body, "rows", PROTO_REQUIRED, &rows, &reason) < 0 ||
            proto_get_uint(&env->body, "window", PROTO_REQUIRED, &window, &reason) < 0) {
                log_warning("Refused console.open | reason=\"%s\"", strempty(reason));
                return;
        }
        Term *t = term_find(c, sid);
        if (t) { /* our opened was lost, or the open came twice */
                t->need_opened = !t->close_requested;
                term_flush(t);
                return;
        }
        if (cols < 1 || cols > CELLS_MAX || rows < 1 || rows > CELLS_MAX ||
            !hook_id_is_valid(alloc))
                return refuse(c, sid, "invalid_request", "bad size or allocation id");
        if (c->closing)
                return refuse(c, sid, "shutting_down", "the agent is stopping");
        if (c->stats.sessions >= c->o.max_sessions)
                return refuse(c, sid, "too_many_sessions",
                              "this node has too many console sessions open");

        _cleanup_(console_hook_done) ConsoleHook h = {0};
        int r = c->o.resolve(c->o.userdata, alloc, &h);
        if (r == -ENOENT)
                return refuse(c, sid, "console_unavailable",
                              "the allocation is not running on this node");
        if (r < 0 || !h.hook_dir || !h.hook || !h.slot_id)
                return refuse(c, sid, "console_unavailable",
                              "this node has no runtime hook for a console");
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s", h.hook_dir, h.hook) < 0)
                return refuse(c, sid, "console_unavailable", "out of memory");
        if (access(path, X_OK) < 0)
                return refuse(c, sid, "console_unavailable",
                              "the runtime hook is missing or not executable");

        t = calloc(1, sizeof(*t));
        uint8_t *in = malloc(c->o.input_window);
        if (!t || !in) {
                free(t);
                free(in);
                return refuse(c, sid, "console_unavailable", "out of memory");
        }
        struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        int master = -1;
        sigset_t all, saved;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        pid_t pid = forkpty(&master, NULL, NULL, &ws);
        if (pid != 0)
                pthread_sigmask(SIG_SETMASK, &saved, NULL);
        if (pid < 0) {
                int e = errno;
                free(t);
                free(in);
                log_error_errno(-e, "Cannot open a PTY for a console | session=%s: %m", sid);
                return refuse(c, sid, "console_unavailable", "cannot open a terminal");
        }
        if (pid == 0)
                exec_hook(&h, alloc);
        (void)fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
        (void)fcntl(master, F_SETFD, FD_CLOEXEC);

        t->c = c;
        t->in = in;
        t->pid = pid;
        t->master = master;
        snprintf(t->id, sizeof(t->id), "%s", sid);
        snprintf(t->allocation_id, sizeof(t->allocation_id), "%s", alloc);
        t->out_limit = window;
        t->last_read = now_mono_usec();
        t->need_opened = true;
        uv_poll_init(c->o.loop, &t->poll, master);
        uv_timer_init(c->o.loop, &t->timer);
        t->poll.data = t->timer.data = t;
        t->open_handles = 2;
        t->ack_limit_sent = input_limit(t); /* console.opened carries it */
        t->next = c->head;
        c->head = t;
        c->terms++;
        c->stats.sessions++;
        c->stats.opened++;
        log_info("Console session opened | session=%s allocation=%s pid=%d hook=%s cols=%u "
                 "rows=%u",
                 sid, alloc, (int)pid, h.hook, (unsigned)cols, (unsigned)rows);
        term_flush(t);
}

static void on_data(Term *t, const ProtoEnvelope *env)
{
        uint64_t offset;
        const void *data;
        size_t n;
        if (proto_get_uint(&env->body, "offset", PROTO_REQUIRED, &offset, NULL) < 0 ||
            proto_get_bin(&env->body, "data", PROTO_REQUIRED, CHUNK_MAX * 4, &data, &n, NULL) < 0)
                return;
        if (offset <= t->in_received && offset + n > t->in_received && !t->close_requested) {
                /* In order (or overlapping a resend): take the new part, as
                 * much as the window holds; the controller never sends more. */
                size_t skip = (size_t)(t->in_received - offset);
                size_t take = MIN(n - skip, t->c->o.input_window - t->in_len);
                memcpy(t->in + t->in_len, (const uint8_t *)data + skip, take);
                t->in_len += take;
                t->in_received += take;
                t->c->stats.peak_input_buffered = MAX(t->c->stats.peak_input_buffered, t->in_len);
                term_write(t);
        }
        /* Acknowledge every delivery, a duplicate or a gap too: the
         * controller resends from our offset. */
        t->need_ack = true;
        term_flush(t);
}

static void on_window(Term *t, const ProtoEnvelope *env)
{
        uint64_t limit;
        if (proto_get_uint(&env->body, "limit", PROTO_REQUIRED, &limit, NULL) < 0)
                return;
        t->out_limit = MAX(t->out_limit, limit);
        t->need_ack = true; /* tells the controller the limit arrived */
        term_flush(t);
}

static void on_resize(Term *t, const ProtoEnvelope *env)
{
        uint64_t gen, cols, rows;
        if (proto_get_uint(&env->body, "gen", PROTO_REQUIRED, &gen, NULL) < 0 ||
            proto_get_uint(&env->body, "cols", PROTO_REQUIRED, &cols, NULL) < 0 ||
            proto_get_uint(&env->body, "rows", PROTO_REQUIRED, &rows, NULL) < 0)
                return;
        if (gen > t->resize_gen && cols >= 1 && cols <= CELLS_MAX && rows >= 1 &&
            rows <= CELLS_MAX) {
                struct winsize ws = {.ws_row = (unsigned short)rows,
                                     .ws_col = (unsigned short)cols};
                if (ioctl(t->master, TIOCSWINSZ, &ws) < 0)
                        log_warning("Cannot resize a console | session=%s: %m", t->id);
                t->resize_gen = gen;
        }
        t->need_ack = true;
        term_flush(t);
}

void consoles_message(Consoles *c, const ProtoEnvelope *env)
{
        char sid[SESSION_ID_MAX];
        if (proto_get_str(&env->body, "session_id", PROTO_REQUIRED, sid, sizeof(sid), NULL) < 0) {
                log_warning("Console message without a session ignored | type=%s", env->type);
                return;
        }
        if (streq(env->type, "console.open"))
                return on_open(c, env);
        Term *t = term_find(c, sid);
        if (!t) {
                /* A session we do not have: say so, so the controller ends it. */
                if (!streq(env->type, "console.closed"))
                        (void)send_closed(c, sid, "unknown_session", false, 0, NULL);
                return;
        }
        if (streq(env->type, "console.data"))
                on_data(t, env);
        else if (streq(env->type, "console.window"))
                on_window(t, env);
        else if (streq(env->type, "console.resize"))
                on_resize(t, env);
        else if (streq(env->type, "console.close")) {
                term_request_close(t);
                term_flush(t);
        } else
                log_warning("Unknown console message ignored | type=%s", env->type);
}

/* ---- life cycle ---- */

int consoles_new(const ConsolesOptions *o, Consoles **ret)
{
        Consoles *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->o = *o;
        if (!c->o.max_sessions)
                c->o.max_sessions = DEFAULT_SESSIONS;
        if (!c->o.input_window)
                c->o.input_window = DEFAULT_WINDOW;
        if (!c->o.kill_grace_ms)
                c->o.kill_grace_ms = DEFAULT_GRACE_MS;
        uv_signal_init(o->loop, &c->sigchld);
        c->sigchld.data = c;
        uv_signal_start(&c->sigchld, on_sigchld, SIGCHLD);
        uv_unref((uv_handle_t *)&c->sigchld); /* never keeps the loop alive by itself */
        *ret = c;
        return 0;
}

void consoles_link_lost(Consoles *c)
{
        for (Term *t = c->head; t; t = t->next) {
                if (!t->silent)
                        log_info("Console session ends with the link | session=%s", t->id);
                t->silent = true;
                term_request_close(t);
        }
        for (Term *t = c->head, *next; t; t = next) {
                next = t->next;
                term_flush(t);
        }
}

static void on_sigchld_closed(uv_handle_t *h)
{
        Consoles *c = h->data;
        void (*done)(void *) = c->done;
        void *userdata = c->done_userdata;
        free(c);
        if (done)
                done(userdata);
}

static void consoles_maybe_done(Consoles *c)
{
        if (!c->closing || c->terms > 0 || c->sigchld_closed)
                return;
        c->sigchld_closed = true;
        uv_close((uv_handle_t *)&c->sigchld, on_sigchld_closed);
}

void consoles_close(Consoles *c, void (*done)(void *userdata), void *userdata)
{
        if (!c) {
                if (done)
                        done(userdata);
                return;
        }
        c->closing = true;
        c->done = done;
        c->done_userdata = userdata;
        /* The children must be reaped before the loop ends. */
        uv_ref((uv_handle_t *)&c->sigchld);
        consoles_link_lost(c);
        consoles_maybe_done(c);
}

ConsolesStats consoles_stats(const Consoles *c)
{
        return c ? c->stats : (ConsolesStats){0};
}
