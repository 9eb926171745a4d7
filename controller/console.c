/* SPDX-License-Identifier: MIT */
/* The console relay, controller side. A session has two ends: the browser's
 * WebSocket (h2o socket + wslay) and the agent's console session (console.*
 * link messages). Each end has its own small state; the session is freed
 * once both are done, by the timer, never from inside a callback, so no
 * caller ever holds a pointer to freed memory.
 *
 * Why not h2o_upgrade_to_websocket(): its proceed loop restarts reading after
 * every write, so a client that pastes faster than the terminal takes could
 * not be paused. The same few lines over h2o_http1_upgrade() let us stop
 * reading (TCP then pushes back on the client) while input credit is out. */
#include "console.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <h2o/http1.h>
#include <h2o/websocket.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <uv.h>
#include <wslay/wslay.h>

#include "agent-link.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "macro.h"
#include "server.h"
#include "timeutil.h"

#define CHUNK_MAX         16384           /* terminal bytes per link message */
#define WS_MSG_MAX        65536           /* largest message a browser may send */
#define WRITE_BATCH       65536           /* frames gathered into one socket write */
#define INFLIGHT_MAX      (2 * CHUNK_MAX) /* input sent to the agent, not yet acknowledged */
#define RTO_USEC          (200 * USEC_PER_MSEC)
#define TICK_MS           50
#define STATE_CHECK_USEC  (1 * USEC_PER_SEC)
#define OPEN_TIMEOUT_USEC (30 * USEC_PER_SEC)
#define AGENT_CLOSE_USEC  (5 * USEC_PER_SEC)
#define WS_CLOSE_USEC     (2 * USEC_PER_SEC)
#define BUCKETS           256
#define REASON_MAX        48
#define MESSAGE_MAX       256

typedef enum {
        AGENT_OPENING, /* console.open sent (again every RTO) */
        AGENT_OPEN,    /* console.opened received */
        AGENT_CLOSING, /* console.close sent (again every RTO, for a while) */
        AGENT_DONE,
} AgentSide;

typedef struct Buf {
        uint8_t *data;
        size_t len, cap;
} Buf;

typedef struct Session {
        Console *console;
        struct Session *next, *prev, *next_in_bucket;
        char id[ID_MAX], user_id[ID_MAX], allocation_id[ID_MAX], node_id[ID_MAX];
        usec_t created_mono, last_activity;

        /* the browser */
        h2o_socket_t *sock;
        wslay_event_context_ptr ws;
        bool upgrade_done;     /* h2o called back (with the socket or with NULL) */
        bool browser_done;     /* the socket is closed (or never came) */
        bool ending;           /* the final frame is queued, the close frame follows it */
        uint16_t close_status; /* our close frame's status, 0: none yet */
        bool close_queued;
        bool read_paused;
        bool recv_kick; /* wslay may hold unread frames from before a pause */
        unsigned depth; /* inside ws_proceed: nested calls do nothing */
        Buf wpending, winflight;
        usec_t ws_close_deadline;

        /* the agent */
        AgentSide agent;
        usec_t open_sent_at, close_sent_at, agent_close_deadline;
        char close_reason[REASON_MAX];
        unsigned cols, rows;
        uint64_t resize_gen, resize_acked;
        usec_t resize_sent_at;

        /* output, agent -> browser */
        uint64_t out_received;    /* bytes received, the next expected offset */
        uint64_t out_limit_sent;  /* the agent may send up to this offset */
        uint64_t agent_out_limit; /* the limit the agent says it has */
        usec_t out_limit_sent_at;

        /* input, browser -> agent; `in` holds the bytes from in_acked on */
        Buf in;
        uint64_t in_acked, in_sent, in_limit;
        usec_t in_unacked_since;

        /* accounting */
        uint64_t bytes_in, bytes_out, resent, stalls;
        size_t peak_out, peak_in;
        bool held_back; /* output credit withheld until the browser reads */
        char end_reason[REASON_MAX];
        bool dead; /* both ends done: the timer frees it */
} Session;

struct Console {
        Server *server;
        Session *head;
        Session *buckets[BUCKETS];
        uv_timer_t tick;
        bool tick_armed, shutting_down;
        usec_t next_state_check;
        size_t window;
        usec_t idle_timeout;
        ConsoleStats stats;
};

/* ---- small buffers ---- */

static int buf_append(Buf *b, const void *p, size_t n)
{
        if (b->len + n > b->cap) {
                size_t cap = MAX(b->cap * 2, b->len + n);
                cap = MAX(cap, (size_t)4096);
                uint8_t *d = realloc(b->data, cap);
                if (!d)
                        return -ENOMEM;
                b->data = d;
                b->cap = cap;
        }
        memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
}

static void buf_consume(Buf *b, size_t n)
{
        n = MIN(n, b->len);
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
}

static void buf_free(Buf *b)
{
        free(b->data);
        *b = (Buf){0};
}

/* ---- the session table ---- */

static unsigned bucket_of(const char *id)
{
        uint32_t h = 2166136261u;
        for (; *id; id++)
                h = (h ^ (uint8_t)*id) * 16777619u;
        return h % BUCKETS;
}

static Session *session_find(Console *c, const char *id)
{
        for (Session *s = c->buckets[bucket_of(id)]; s; s = s->next_in_bucket)
                if (streq(s->id, id))
                        return s;
        return NULL;
}

static void arm_tick(Console *c);

static void session_link(Console *c, Session *s)
{
        unsigned b = bucket_of(s->id);
        s->next_in_bucket = c->buckets[b];
        c->buckets[b] = s;
        s->next = c->head;
        if (c->head)
                c->head->prev = s;
        c->head = s;
        c->stats.sessions++;
        c->stats.opened++;
        server_job_started(c->server);
        arm_tick(c);
}

static void session_unlink(Console *c, Session *s)
{
        for (Session **p = &c->buckets[bucket_of(s->id)]; *p; p = &(*p)->next_in_bucket)
                if (*p == s) {
                        *p = s->next_in_bucket;
                        break;
                }
        if (s->prev)
                s->prev->next = s->next;
        else
                c->head = s->next;
        if (s->next)
                s->next->prev = s->prev;
        c->stats.sessions--;
        c->stats.ended++;
        server_job_finished(c->server);
}

static void session_free(Session *s)
{
        if (s->sock)
                h2o_socket_close(s->sock);
        if (s->ws)
                wslay_event_context_free(s->ws);
        buf_free(&s->wpending);
        buf_free(&s->winflight);
        buf_free(&s->in);
        free(s);
}

/* Marks the session for the timer once both ends are done. */
static void session_check_done(Session *s)
{
        if (s->dead || !s->browser_done || s->agent != AGENT_DONE || !s->upgrade_done)
                return;
        s->dead = true;
        arm_tick(s->console);
}

static void set_end_reason(Session *s, const char *reason)
{
        if (!s->end_reason[0])
                snprintf(s->end_reason, sizeof(s->end_reason), "%s", reason);
}

/* ---- sending to the agent ---- */

static int link_send(Session *s, const char *type, ProtoWriter *w)
{
        int r = agent_link_send(s->console->server->link, s->node_id, type, w);
        if (r < 0)
                log_debug("console link send failed | session=%s type=%s error=%d", s->id, type, r);
        return r;
}

static void send_open(Session *s)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", s->id);
        proto_write_kv_str(&w, "allocation_id", s->allocation_id);
        proto_write_kv_uint(&w, "cols", s->cols);
        proto_write_kv_uint(&w, "rows", s->rows);
        proto_write_kv_uint(&w, "window", s->out_limit_sent);
        proto_write_end(&w);
        if (s->open_sent_at)
                s->resent++;
        s->open_sent_at = now_mono_usec();
        (void)link_send(s, "console.open", &w);
}

static int send_data(Session *s, uint64_t offset, const uint8_t *p, size_t n)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", s->id);
        proto_write_kv_uint(&w, "offset", offset);
        proto_write_key(&w, "data");
        proto_write_bin(&w, p, n);
        proto_write_end(&w);
        return link_send(s, "console.data", &w);
}

static void send_window(Session *s)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", s->id);
        proto_write_kv_uint(&w, "limit", s->out_limit_sent);
        proto_write_end(&w);
        s->out_limit_sent_at = now_mono_usec();
        (void)link_send(s, "console.window", &w);
}

static void send_resize(Session *s)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", s->id);
        proto_write_kv_uint(&w, "gen", s->resize_gen);
        proto_write_kv_uint(&w, "cols", s->cols);
        proto_write_kv_uint(&w, "rows", s->rows);
        proto_write_end(&w);
        s->resize_sent_at = now_mono_usec();
        (void)link_send(s, "console.resize", &w);
}

static void send_close_to(Console *c, const char *node_id, const char *session_id,
                          const char *reason)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", session_id);
        proto_write_kv_str(&w, "reason", reason);
        proto_write_end(&w);
        (void)agent_link_send(c->server->link, node_id, "console.close", &w);
}

static void send_close(Session *s)
{
        s->close_sent_at = now_mono_usec();
        send_close_to(s->console, s->node_id, s->id, s->close_reason);
}

/* Asks the agent to end its side (the browser is gone or the session ends). */
static void agent_close(Session *s, const char *reason)
{
        if (s->agent != AGENT_OPENING && s->agent != AGENT_OPEN)
                return;
        snprintf(s->close_reason, sizeof(s->close_reason), "%s", reason);
        s->agent = AGENT_CLOSING;
        s->agent_close_deadline = now_mono_usec() + AGENT_CLOSE_USEC;
        send_close(s);
}

/* Sends what input credit allows: at most INFLIGHT_MAX unacknowledged. */
static void flush_input(Session *s)
{
        if (s->agent != AGENT_OPEN)
                return;
        uint64_t end = s->in_acked + s->in.len;
        while (s->in_sent < end && s->in_sent < s->in_limit &&
               s->in_sent - s->in_acked < INFLIGHT_MAX) {
                uint64_t n = MIN((uint64_t)CHUNK_MAX, end - s->in_sent);
                n = MIN(n, s->in_limit - s->in_sent);
                n = MIN(n, INFLIGHT_MAX - (s->in_sent - s->in_acked));
                if (s->in_sent == s->in_acked)
                        s->in_unacked_since = now_mono_usec();
                if (send_data(s, s->in_sent, s->in.data + (s->in_sent - s->in_acked), n) < 0)
                        break; /* the timer tries again */
                s->in_sent += n;
        }
}

/* ---- the browser's WebSocket ---- */

static size_t out_buffered(const Session *s)
{
        return (s->ws ? wslay_event_get_queued_msg_length(s->ws) : 0) + s->wpending.len +
               s->winflight.len;
}

/* Grants the agent more output as the browser's socket drains: it may be
 * ahead of the browser by at most the window. Small grants wait until a
 * quarter window is free, unless the agent is out of credit. */
static void grant_credit(Session *s)
{
        if (s->agent != AGENT_OPEN || s->browser_done || s->ending)
                return;
        size_t window = s->console->window, buffered = out_buffered(s);
        uint64_t limit = s->out_received + (buffered < window ? window - buffered : 0);
        bool starved = s->out_received >= s->out_limit_sent;
        if (limit <= s->out_limit_sent) {
                if (starved && !s->held_back) {
                        /* The agent is out of credit and the browser has a
                         * whole window unread: the terminal waits. */
                        s->held_back = true;
                        s->stalls++;
                        if (s->stalls == 1)
                                log_info("console output held back: the browser is behind | "
                                         "session=%s buffered=%zu window=%zu",
                                         s->id, buffered, window);
                }
                return;
        }
        s->held_back = false;
        if (!starved && limit - s->out_limit_sent < window / 4)
                return;
        s->out_limit_sent = limit;
        send_window(s);
}

static void note_out_buffered(Session *s)
{
        size_t b = out_buffered(s);
        s->peak_out = MAX(s->peak_out, b);
        s->console->stats.peak_out_buffered = MAX(s->console->stats.peak_out_buffered, b);
}

static void ws_finish(Session *s);
static void ws_proceed(Session *s);
static void session_end(Session *s, const char *code, const char *message, int exit_code);

static void on_ws_written(h2o_socket_t *sock, const char *err)
{
        Session *s = sock->data;
        s->winflight.len = 0;
        if (err) {
                set_end_reason(s, "client_gone");
                ws_finish(s);
                return;
        }
        ws_proceed(s);
        grant_credit(s);
}

static void on_ws_read(h2o_socket_t *sock, const char *err)
{
        Session *s = sock->data;
        if (err) {
                set_end_reason(s, "client_gone");
                ws_finish(s);
                return;
        }
        ws_proceed(s);
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *user)
{
        Session *s = user;
        (void)flags;
        if (!s->sock || s->read_paused || s->sock->input->size == 0) {
                wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
                return -1;
        }
        len = MIN(len, s->sock->input->size);
        memcpy(buf, s->sock->input->bytes, len);
        h2o_buffer_consume(&s->sock->input, len);
        return (ssize_t)len;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *user)
{
        Session *s = user;
        (void)flags;
        if (s->wpending.len >= WRITE_BATCH) {
                wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
                return -1;
        }
        len = MIN(len, WRITE_BATCH - s->wpending.len);
        if (buf_append(&s->wpending, data, len) < 0) {
                wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
                return -1;
        }
        return (ssize_t)len;
}

static void queue_text(Session *s, json_t *obj)
{
        _cleanup_free_ char *txt = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
        json_decref(obj);
        if (!txt || !s->ws)
                return;
        struct wslay_event_msg m = {
            .opcode = WSLAY_TEXT_FRAME, .msg = (const uint8_t *)txt, .msg_length = strlen(txt)};
        (void)wslay_event_queue_msg(s->ws, &m);
}

static void on_resize_request(Session *s, json_t *msg)
{
        json_t *cols = json_object_get(msg, "cols"), *rows = json_object_get(msg, "rows");
        if (!json_is_integer(cols) || !json_is_integer(rows) || json_integer_value(cols) < 1 ||
            json_integer_value(cols) > 1000 || json_integer_value(rows) < 1 ||
            json_integer_value(rows) > 1000 || json_object_size(msg) != 3)
                return session_end(s, "invalid_request",
                                   "resize takes integer cols and rows, 1 to 1000", 0);
        s->cols = (unsigned)json_integer_value(cols);
        s->rows = (unsigned)json_integer_value(rows);
        s->resize_gen++;
        if (s->agent == AGENT_OPEN)
                send_resize(s);
}

static void on_ws_message(wslay_event_context_ptr ctx,
                          const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
        Session *s = user;
        (void)ctx;
        if (s->ending)
                return;
        if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
                /* wslay answers the close frame itself. */
                set_end_reason(s, "client_closed");
                s->ending = true;
                s->ws_close_deadline = now_mono_usec() + WS_CLOSE_USEC;
                agent_close(s, "client_closed");
                return;
        }
        if (arg->opcode == WSLAY_BINARY_FRAME) {
                s->last_activity = now_mono_usec();
                if (arg->msg_length == 0)
                        return;
                if (buf_append(&s->in, arg->msg, arg->msg_length) < 0)
                        return session_end(s, "internal", "out of memory", 0);
                s->bytes_in += arg->msg_length;
                s->peak_in = MAX(s->peak_in, s->in.len);
                s->console->stats.peak_in_buffered =
                    MAX(s->console->stats.peak_in_buffered, s->in.len);
                if (s->in.len >= s->console->window)
                        s->read_paused = true; /* until the agent takes some */
                flush_input(s);
                return;
        }
        if (arg->opcode == WSLAY_TEXT_FRAME) {
                _cleanup_(json_decrefp) json_t *msg =
                    json_loadb((const char *)arg->msg, arg->msg_length, 0, NULL);
                const char *type = json_string_value(json_object_get(msg, "type"));
                if (!json_is_object(msg) || !type)
                        return session_end(s, "invalid_request",
                                           "text frames carry JSON objects with a type", 0);
                if (streq(type, "resize")) {
                        s->last_activity = now_mono_usec();
                        return on_resize_request(s, msg);
                }
                return session_end(s, "invalid_request", "unknown control message type", 0);
        }
        /* ping and pong: wslay handles them */
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .on_msg_recv_callback = on_ws_message,
};

/* Runs wslay until nothing more can happen now: frames out (one socket write
 * at a time, WRITE_BATCH bytes at most), frames in (unless paused). */
static void ws_proceed(Session *s)
{
        if (!s->sock || s->browser_done || s->depth > 0)
                return;
        s->depth++;
        bool failed = false, progress;
        do {
                progress = false;
                if (s->close_status && !s->close_queued &&
                    wslay_event_get_queued_msg_count(s->ws) == 0) {
                        (void)wslay_event_queue_close(s->ws, s->close_status, NULL, 0);
                        s->close_queued = true;
                }
                if (wslay_event_want_write(s->ws) && s->wpending.len < WRITE_BATCH) {
                        size_t before = s->wpending.len;
                        if (wslay_event_send(s->ws) != 0) {
                                failed = true;
                                break;
                        }
                        progress = s->wpending.len != before;
                }
                if (!s->read_paused && (s->sock->input->size > 0 || s->recv_kick) &&
                    wslay_event_want_read(s->ws)) {
                        s->recv_kick = false;
                        if (wslay_event_recv(s->ws) != 0) {
                                failed = true;
                                break;
                        }
                        progress = true;
                }
        } while (progress);

        if (!failed && s->winflight.len == 0 && s->wpending.len > 0) {
                Buf t = s->winflight;
                s->winflight = s->wpending;
                s->wpending = t;
                h2o_iovec_t v = h2o_iovec_init(s->winflight.data, s->winflight.len);
                h2o_socket_write(s->sock, &v, 1, on_ws_written);
        }
        bool finished = false;
        if (!failed) {
                bool want_read = wslay_event_want_read(s->ws);
                bool want_write = wslay_event_want_write(s->ws);
                if (want_read && !s->read_paused)
                        h2o_socket_read_start(s->sock, on_ws_read);
                else
                        h2o_socket_read_stop(s->sock);
                /* Both close frames went: the WebSocket is over. */
                finished =
                    !want_read && !want_write && s->winflight.len == 0 && s->wpending.len == 0;
        }
        s->depth--;
        if (failed) {
                set_end_reason(s, "client_protocol_error");
                ws_finish(s);
        } else if (finished)
                ws_finish(s);
}

/* The browser's end is over: close the socket, end the agent's side. */
static void ws_finish(Session *s)
{
        if (s->browser_done)
                return;
        s->browser_done = true;
        if (s->sock) {
                h2o_socket_close(s->sock);
                s->sock = NULL;
        }
        if (s->ws) {
                wslay_event_context_free(s->ws);
                s->ws = NULL;
        }
        buf_free(&s->wpending);
        buf_free(&s->winflight);
        set_end_reason(s, "client_closed");
        agent_close(s, "client_closed");
        session_check_done(s);
}

/* Ends the session: a final text frame (exit with its code when code is
 * NULL, else an error), the close frame, and the agent's side. */
static void session_end(Session *s, const char *code, const char *message, int exit_code)
{
        set_end_reason(s, code ? code : "exited");
        if (!s->ending && !s->browser_done && s->ws) {
                s->ending = true;
                s->ws_close_deadline = now_mono_usec() + WS_CLOSE_USEC;
                if (code)
                        queue_text(s, json_pack("{s:s, s:s, s:s}", "type", "error", "code", code,
                                                "message", message ? message : code));
                else
                        queue_text(s, json_pack("{s:s, s:i}", "type", "exit", "code", exit_code));
                uint16_t status = !code                          ? WSLAY_CODE_NORMAL_CLOSURE
                                  : streq(code, "shutting_down") ? WSLAY_CODE_GOING_AWAY
                                  : streq(code, "invalid_request")
                                      ? WSLAY_CODE_POLICY_VIOLATION
                                      : WSLAY_CODE_INTERNAL_SERVER_ERROR;
                /* Queued once the frames before it are out: wslay sends
                 * control frames ahead of queued messages. */
                s->close_status = status;
                if (s->read_paused) { /* read the client's close frame */
                        s->read_paused = false;
                        s->recv_kick = true;
                }
                note_out_buffered(s);
        }
        agent_close(s, code ? code : "exited");
        ws_proceed(s);
        session_check_done(s);
}

/* ---- HTTP upgrade ---- */

/* RFC 6455 4.2.2: base64(SHA-1(key || GUID)). libh2o 2.2.5 declares
 * h2o_websocket_create_accept_key() but does not export it. */
static void accept_key(const char *client_key, char out[static 29])
{
        static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        unsigned char src[24 + sizeof(guid) - 1], digest[SHA_DIGEST_LENGTH];
        memcpy(src, client_key, 24);
        memcpy(src + 24, guid, sizeof(guid) - 1);
        SHA1(src, sizeof(src), digest);
        EVP_EncodeBlock((unsigned char *)out, digest, sizeof(digest));
}

static void on_upgraded(void *data, h2o_socket_t *sock, size_t reqsize)
{
        Session *s = data;
        s->upgrade_done = true;
        if (!sock) {
                set_end_reason(s, "client_gone");
                s->browser_done = true;
                agent_close(s, "client_closed");
                session_check_done(s);
                return;
        }
        s->sock = sock;
        sock->data = s;
        h2o_buffer_consume(&sock->input, reqsize);
        if (s->browser_done) { /* ended while the 101 was on its way */
                h2o_socket_close(s->sock);
                s->sock = NULL;
                session_check_done(s);
                return;
        }
        ws_proceed(s);
}

int console_attach(Console *c, Request *r, const char *client_key, const ConsoleTarget *t,
                   const char *session_id)
{
        if (c->shutting_down)
                return -ESHUTDOWN;
        Session *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->console = c;
        snprintf(s->id, sizeof(s->id), "%s", session_id);
        if (session_find(c, s->id) ||
            wslay_event_context_server_init(&s->ws, &ws_callbacks, s) != 0) {
                free(s);
                return -ENOMEM;
        }
        wslay_event_config_set_max_recv_msg_length(s->ws, WS_MSG_MAX);
        snprintf(s->user_id, sizeof(s->user_id), "%s", t->user_id);
        snprintf(s->allocation_id, sizeof(s->allocation_id), "%s", t->allocation_id);
        snprintf(s->node_id, sizeof(s->node_id), "%s", t->node_id);
        s->cols = t->cols ? t->cols : 80;
        s->rows = t->rows ? t->rows : 24;
        s->created_mono = s->last_activity = now_mono_usec();
        s->out_limit_sent = c->window;

        h2o_req_t *req = r->req;
        char accept[29];
        accept_key(client_key, accept);
        req->res.status = 101;
        req->res.reason = "Switching Protocols";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL,
                       H2O_STRLIT("websocket"));
        http_add_header(r, "sec-websocket-accept", accept);
        http_add_header(r, "x-request-id", r->request_id);
        http_add_header(r, "x-console-session", s->id);
        r->responded = true;
        session_link(c, s);
        log_info("console session opening | session=%s allocation=%s user=%s node=%s cols=%u "
                 "rows=%u",
                 s->id, s->allocation_id, s->user_id, s->node_id, s->cols, s->rows);
        send_open(s); /* while the 101 is on its way */
        h2o_http1_upgrade(req, NULL, 0, on_upgraded, s);
        return 0;
}

/* ---- messages from the agent ---- */

static void on_opened(Session *s, const ProtoEnvelope *env)
{
        uint64_t window = 0;
        (void)proto_get_uint(&env->body, "window", PROTO_OPTIONAL, &window, NULL);
        if (s->agent != AGENT_OPENING)
                return; /* a duplicate: our open went twice */
        s->agent = AGENT_OPEN;
        s->in_limit = window;
        s->agent_out_limit = s->out_limit_sent; /* console.open carried it */
        log_info("console session open | session=%s node=%s open_ms=%" PRIu64, s->id, s->node_id,
                 (uint64_t)((now_mono_usec() - s->created_mono) / USEC_PER_MSEC));
        if (s->resize_gen > s->resize_acked)
                send_resize(s);
        flush_input(s);
}

/* An acknowledgement: console.ack's body, or the `ack` map of the agent's
 * console.data (sent with the echo of the input it acknowledges). */
static void apply_ack(Session *s, const ProtoValue *ack)
{
        uint64_t offset = s->in_acked, limit = 0, gen = 0, out_limit = 0;
        (void)proto_get_uint(ack, "offset", PROTO_OPTIONAL, &offset, NULL);
        (void)proto_get_uint(ack, "limit", PROTO_OPTIONAL, &limit, NULL);
        (void)proto_get_uint(ack, "resize_gen", PROTO_OPTIONAL, &gen, NULL);
        (void)proto_get_uint(ack, "out_limit", PROTO_OPTIONAL, &out_limit, NULL);
        if (s->agent != AGENT_OPEN)
                return;
        if (offset > s->in_acked && offset <= s->in_sent) {
                buf_consume(&s->in, offset - s->in_acked);
                s->in_acked = offset;
                s->in_unacked_since = now_mono_usec();
        }
        s->in_limit = MAX(s->in_limit, limit);
        s->resize_acked = MAX(s->resize_acked, MIN(gen, s->resize_gen));
        s->agent_out_limit = MAX(s->agent_out_limit, out_limit);
        flush_input(s);
        if (s->read_paused && !s->ending && s->in.len < s->console->window) {
                s->read_paused = false;
                s->recv_kick = true;
                ws_proceed(s);
        }
}

static void on_ack(Session *s, const ProtoEnvelope *env)
{
        apply_ack(s, &env->body);
}

static void on_data(Session *s, const ProtoEnvelope *env)
{
        uint64_t offset;
        const void *data;
        size_t n;
        _cleanup_free_ char *reason = NULL;
        if (proto_get_uint(&env->body, "offset", PROTO_REQUIRED, &offset, &reason) < 0 ||
            proto_get_bin(&env->body, "data", PROTO_REQUIRED, WS_MSG_MAX, &data, &n, &reason) < 0) {
                log_warning("console message refused | session=%s type=%s reason=\"%s\"", s->id,
                            env->type, strempty(reason));
                return session_end(s, "protocol_error", "the agent sent a malformed message", 0);
        }
        ProtoValue ack;
        if (proto_get_map(&env->body, "ack", PROTO_OPTIONAL, 8, &ack, NULL) == 1)
                apply_ack(s, &ack);
        if (s->agent != AGENT_OPEN || offset + n <= s->out_received)
                return; /* late or a duplicate */
        if (offset != s->out_received || offset + n > s->out_limit_sent) {
                log_warning(
                    "console output out of order or beyond credit | session=%s offset=%" PRIu64
                    " expected=%" PRIu64 " bytes=%zu limit=%" PRIu64,
                    s->id, offset, s->out_received, n, s->out_limit_sent);
                return session_end(s, "protocol_error",
                                   "the agent broke the console's flow control", 0);
        }
        s->out_received += n;
        s->last_activity = now_mono_usec();
        if (s->browser_done || s->ending || !s->ws || n == 0)
                return;
        s->bytes_out += n;
        struct wslay_event_msg m = {.opcode = WSLAY_BINARY_FRAME, .msg = data, .msg_length = n};
        if (wslay_event_queue_msg(s->ws, &m) != 0)
                return session_end(s, "internal", "cannot queue terminal output", 0);
        note_out_buffered(s);
        ws_proceed(s);
        grant_credit(s);
}

static void on_closed(Session *s, const ProtoEnvelope *env)
{
        char reason[REASON_MAX] = "", message[MESSAGE_MAX] = "";
        int64_t code = -1;
        (void)proto_get_str(&env->body, "reason", PROTO_OPTIONAL, reason, sizeof(reason), NULL);
        (void)proto_get_str(&env->body, "message", PROTO_OPTIONAL, message, sizeof(message), NULL);
        (void)proto_get_int(&env->body, "code", PROTO_OPTIONAL, &code, NULL);
        AgentSide was = s->agent;
        s->agent = AGENT_DONE;
        log_info("console session closed by the agent | session=%s reason=%s code=%" PRId64, s->id,
                 reason[0] ? reason : "-", code);
        if (was == AGENT_CLOSING)
                return session_check_done(s); /* we asked */
        if (streq(reason, "exited"))
                return session_end(s, NULL, NULL, (int)code);
        session_end(s, reason[0] ? reason : "console_closed",
                    message[0] ? message : "the node's agent closed the console", 0);
}

void console_on_link_message(Console *c, const char *node_id, const ProtoEnvelope *env)
{
        char sid[ID_MAX];
        _cleanup_free_ char *reason = NULL;
        if (!c)
                return;
        if (proto_get_str(&env->body, "session_id", PROTO_REQUIRED, sid, sizeof(sid), &reason) <
            0) {
                log_warning("console message without a session refused | node=%s type=%s "
                            "reason=\"%s\"",
                            node_id, env->type, strempty(reason));
                return;
        }
        Session *s = session_find(c, sid);
        if (!s || !streq(s->node_id, node_id) || s->agent == AGENT_DONE) {
                /* A session we forgot (or never had): the agent ends its side. */
                if (!streq(env->type, "console.closed"))
                        send_close_to(c, node_id, sid, "unknown_session");
                return;
        }
        if (streq(env->type, "console.data"))
                on_data(s, env);
        else if (streq(env->type, "console.ack"))
                on_ack(s, env);
        else if (streq(env->type, "console.opened"))
                on_opened(s, env);
        else if (streq(env->type, "console.closed"))
                on_closed(s, env);
        else
                log_warning("unknown console message ignored | node=%s type=%s", node_id,
                            env->type);
}

void console_on_node_lost(Console *c, const char *node_id)
{
        if (!c)
                return;
        for (Session *s = c->head; s; s = s->next) {
                if (!streq(s->node_id, node_id) || s->agent == AGENT_DONE)
                        continue;
                bool ours = s->agent == AGENT_CLOSING;
                s->agent = AGENT_DONE;
                if (ours)
                        session_check_done(s);
                else
                        session_end(s, "agent_disconnected",
                                    "the connection to the node's agent was lost", 0);
        }
}

/* ---- the timer: resends, deadlines, idle sessions, allocation states ---- */

/* Whether the allocation is still active (a read of allocations.c's table). */
static int allocation_state(Db *db, const char *allocation_id, char state[static 32])
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st =
            db_stmt(db, "SELECT state FROM allocations WHERE id = ?");
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, allocation_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
                snprintf(state, 32, "deleted");
                return 0;
        }
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        snprintf(state, 32, "%s", strempty(db_column_text(st, 0)));
        return 0;
}

static void session_tick(Session *s, usec_t now, bool check_state)
{
        Console *c = s->console;
        switch (s->agent) {
        case AGENT_OPENING:
                if (now - s->created_mono >= OPEN_TIMEOUT_USEC) {
                        session_end(s, "agent_timeout",
                                    "the node's agent did not open the console in time", 0);
                        break;
                }
                if (now - s->open_sent_at >= RTO_USEC)
                        send_open(s);
                break;
        case AGENT_OPEN:
                if (s->in_sent > s->in_acked && now - s->in_unacked_since >= RTO_USEC) {
                        s->in_sent = s->in_acked; /* go back: send the unacknowledged again */
                        s->resent++;
                }
                flush_input(s);
                if (s->out_limit_sent > s->agent_out_limit &&
                    now - s->out_limit_sent_at >= RTO_USEC) {
                        s->resent++;
                        send_window(s);
                }
                if (s->resize_gen > s->resize_acked && now - s->resize_sent_at >= RTO_USEC) {
                        s->resent++;
                        send_resize(s);
                }
                if (!s->ending && now - s->last_activity >= c->idle_timeout) {
                        session_end(s, "idle_timeout", "no input or output for too long", 0);
                        break;
                }
                break;
        case AGENT_CLOSING:
                if (now >= s->agent_close_deadline) {
                        log_warning("console: the agent never confirmed the close | session=%s",
                                    s->id);
                        s->agent = AGENT_DONE;
                        session_check_done(s);
                } else if (now - s->close_sent_at >= RTO_USEC) {
                        s->resent++;
                        send_close(s);
                }
                break;
        case AGENT_DONE:
                break;
        }
        if (check_state && !s->ending && !s->browser_done &&
            (s->agent == AGENT_OPENING || s->agent == AGENT_OPEN)) {
                char state[32];
                if (allocation_state(c->server->db, s->allocation_id, state) >= 0 &&
                    !streq(state, "active")) {
                        char msg[96];
                        snprintf(msg, sizeof(msg), "the allocation is %s", state);
                        session_end(s, "allocation_not_active", msg, 0);
                }
        }
        if (s->ending && !s->browser_done && now >= s->ws_close_deadline)
                ws_finish(s); /* the client never answered our close frame */
}

static void reap(Console *c, Session *s)
{
        session_unlink(c, s);
        c->stats.resent += s->resent;
        log_info("console session ended | session=%s allocation=%s user=%s reason=%s "
                 "bytes_in=%" PRIu64 " bytes_out=%" PRIu64
                 " peak_out_buffered=%zu peak_in_buffered=%zu window=%zu resent=%" PRIu64
                 " stalls=%" PRIu64 " seconds=%.1f",
                 s->id, s->allocation_id, s->user_id, s->end_reason[0] ? s->end_reason : "-",
                 s->bytes_in, s->bytes_out, s->peak_out, s->peak_in, c->window, s->resent,
                 s->stalls, (double)(now_mono_usec() - s->created_mono) / USEC_PER_SEC);
        session_free(s);
}

static void on_tick(uv_timer_t *t)
{
        Console *c = t->data;
        usec_t now = now_mono_usec();
        bool check_state = now >= c->next_state_check;
        if (check_state)
                c->next_state_check = now + STATE_CHECK_USEC;
        for (Session *s = c->head, *next; s; s = next) {
                next = s->next;
                if (!s->dead)
                        session_tick(s, now, check_state);
                if (s->dead)
                        reap(c, s);
        }
        if (!c->head) {
                uv_timer_stop(&c->tick);
                c->tick_armed = false;
        }
}

static void arm_tick(Console *c)
{
        if (c->tick_armed)
                return;
        c->tick_armed = true;
        uv_timer_start(&c->tick, on_tick, TICK_MS, TICK_MS);
}

/* ---- life cycle ---- */

int console_new(Server *s, Console **ret)
{
        Console *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->server = s;
        c->window = (size_t)config_get_int(s->config, "console_window_bytes");
        c->idle_timeout =
            (usec_t)config_get_int(s->config, "console_idle_timeout_s") * USEC_PER_SEC;
        uv_timer_init(s->loop, &c->tick);
        c->tick.data = c;
        *ret = c;
        return 0;
}

void console_shutdown(Console *c)
{
        if (!c || c->shutting_down)
                return;
        c->shutting_down = true;
        for (Session *s = c->head; s; s = s->next) {
                if (s->dead)
                        continue;
                session_end(s, "shutting_down", "the controller is stopping", 0);
                /* One close to the agent, no waiting for its answer. */
                if (s->agent == AGENT_CLOSING) {
                        s->agent = AGENT_DONE;
                        session_check_done(s);
                }
        }
}

void console_free(Console *c)
{
        if (!c)
                return;
        for (Session *s = c->head, *next; s; s = next) {
                next = s->next;
                session_unlink(c, s);
                session_free(s);
        }
        uv_close((uv_handle_t *)&c->tick, NULL);
        uv_run(c->server->loop, UV_RUN_NOWAIT); /* finish the closes before the memory goes */
        free(c);
}

size_t console_count_allocation(const Console *c, const char *allocation_id)
{
        size_t n = 0;
        for (Session *s = c ? c->head : NULL; s; s = s->next)
                n += !s->browser_done && !s->ending && streq(s->allocation_id, allocation_id);
        return n;
}

size_t console_count_user(const Console *c, const char *user_id)
{
        size_t n = 0;
        for (Session *s = c ? c->head : NULL; s; s = s->next)
                n += !s->browser_done && !s->ending && streq(s->user_id, user_id);
        return n;
}

ConsoleStats console_stats(const Console *c)
{
        return c ? c->stats : (ConsoleStats){0};
}
