/* SPDX-License-Identifier: MIT */
#include "link.h"

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdatomic.h>

#include "id.h"
#include "log.h"
#include "macro.h"
#include "proof.h"
#include "timeutil.h"

/* nng's own redial would race ours: each socket dials once, we redial. */
#define NNG_NO_REDIAL_MS (24 * 3600 * 1000)
#define SEND_QUEUE       64
/* After we send link.error the pipe stays open this long (or until the
 * controller hangs up), so the error can leave: nng_close discards what is
 * still queued. */
#define ERROR_LINGER_USEC (2 * USEC_PER_SEC)

typedef enum {
        EVENT_MESSAGE,
        EVENT_PIPE_GONE,
} EventKind;

typedef struct Event {
        struct Event *next;
        EventKind kind;
        uint64_t gen; /* the connection it came from */
        nng_msg *msg;
} Event;

/* One connection attempt: its own socket, dialer and receive aio. */
typedef struct Conn {
        pthread_mutex_t mu; /* guards link for the nng callbacks */
        Link *link;         /* NULL once released: callbacks reach nothing */
        atomic_int refs;    /* the link's (or the closer's), and a running dial's */
        uint64_t gen;
        nng_socket sock;
        nng_dialer dialer;
        nng_aio *rx;
        uv_work_t dial_work;
        int dial_rv;
        bool dial_running;
        bool abandoned;  /* released while the dial ran; after_dial drops its ref */
        bool error_sent; /* a link.error went out: linger before closing */
        usec_t close_at; /* lingering: closed then at the latest */
        struct Conn *next_lingering;
} Conn;

struct Link {
        uv_loop_t *loop;
        LinkCallbacks cb;
        char *endpoint, *node_id, *server_name;
        char *cert_pem;
        EVP_PKEY *key;
        nng_tls_config *tls;
        unsigned hb_interval_s, hb_timeout_s;   /* configured */
        unsigned cur_interval_s, cur_timeout_s; /* in force (welcome may change them) */
        Backoff backoff;
        LinkState state;
        uint64_t epoch;
        uint64_t gen;
        Conn *conn;
        Conn *lingering; /* dropped after a link.error, closed soon */

        uint64_t hb_seq;
        usec_t last_ack;

        uv_async_t wake;
        uv_timer_t redial_timer, deadline_timer, heartbeat_timer, linger_timer;
        int open_handles;
        void (*closed)(void *userdata);
        void *closed_userdata;

        pthread_mutex_t lock;
        Event *head, *tail;

        LinkStats stats;
};

const char *link_state_to_string(LinkState s)
{
        static const char *const names[] = {
            [LINK_BACKOFF] = "backoff",
            [LINK_DIALING] = "dialing",
            [LINK_AWAIT_CHALLENGE] = "await_challenge",
            [LINK_AWAIT_WELCOME] = "await_welcome",
            [LINK_READY] = "ready",
            [LINK_STOPPED] = "stopped",
        };
        return (unsigned)s < ELEMENTSOF(names) ? names[s] : "?";
}

static void set_state(Link *l, LinkState s)
{
        if (l->state == s)
                return;
        log_debug("Link state | from=%s to=%s", link_state_to_string(l->state),
                  link_state_to_string(s));
        l->state = s;
        if (l->cb.state_changed)
                l->cb.state_changed(l->cb.userdata, s);
}

/* ---- events from nng threads ---- */

static void push_event(Link *l, EventKind kind, uint64_t gen, nng_msg *msg)
{
        Event *e = calloc(1, sizeof(*e));
        if (!e) {
                if (msg)
                        nng_msg_free(msg);
                return;
        }
        e->kind = kind;
        e->gen = gen;
        e->msg = msg;
        pthread_mutex_lock(&l->lock);
        if (l->tail)
                l->tail->next = e;
        else
                l->head = e;
        l->tail = e;
        pthread_mutex_unlock(&l->lock);
        uv_async_send(&l->wake);
}

/* Pushes an event of c to its link, unless c was released (then the link
 * may be gone: the event is dropped). */
static void conn_push(Conn *c, EventKind kind, nng_msg *msg)
{
        pthread_mutex_lock(&c->mu);
        if (c->link)
                push_event(c->link, kind, c->gen, msg);
        else if (msg)
                nng_msg_free(msg);
        pthread_mutex_unlock(&c->mu);
}

static void rx_done(void *arg)
{
        Conn *c = arg;
        int rv = nng_aio_result(c->rx);
        if (rv != 0)
                return; /* closed or cancelled: the socket is going away */
        conn_push(c, EVENT_MESSAGE, nng_aio_get_msg(c->rx));
        nng_recv_aio(c->sock, c->rx);
}

static void pipe_removed(nng_pipe p, nng_pipe_ev ev, void *arg)
{
        Conn *c = arg;
        conn_push(c, EVENT_PIPE_GONE, NULL);
}

/* ---- connections ---- */

/* Closing a connection. nng 1.5's nng_close and nng_aio_stop can block for
 * good when they race the pipe's teardown (close deadlocks fixed in later
 * nng releases, e.g. nng 1.8's "fix deadlock on socket close"); on the loop
 * thread that froze the whole agent: no redial, no replies, no heartbeats.
 * So a released connection is first cut off from the link (its callbacks
 * reach nothing any more, at once), then closed on a thread of its own; a
 * close that never returns costs that thread and the connection, nothing
 * else. */

static pthread_mutex_t closers_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t closers_cond = PTHREAD_COND_INITIALIZER;
static unsigned closers; /* closes still running */

static void conn_unref(Conn *c)
{
        if (atomic_fetch_sub(&c->refs, 1) != 1)
                return;
        if (c->rx)
                nng_aio_free(c->rx);
        pthread_mutex_destroy(&c->mu);
        free(c);
}

static void conn_silence(Conn *c)
{
        nng_close(c->sock);
        if (c->rx)
                nng_aio_stop(c->rx);
}

static void *closer_main(void *arg)
{
        Conn *c = arg;
        usec_t start = now_mono_usec();
        conn_silence(c);
        usec_t took = now_mono_usec() - start;
        if (took > USEC_PER_SEC)
                log_warning("Closing a link connection took long | ms=%llu",
                            (unsigned long long)(took / USEC_PER_MSEC));
        conn_unref(c);
        pthread_mutex_lock(&closers_lock);
        closers--;
        pthread_cond_broadcast(&closers_cond);
        pthread_mutex_unlock(&closers_lock);
        return NULL;
}

/* Releases the link's reference: cut off from the link now, closed on a
 * closer thread (or here, when no thread can be made). A dial still blocked
 * in the thread pool returns once the socket is closed, and after_dial drops
 * the dial's reference; neither touches the link. */
static void conn_release(Conn *c)
{
        pthread_mutex_lock(&c->mu);
        c->link = NULL;
        pthread_mutex_unlock(&c->mu);
        if (c->dial_running)
                c->abandoned = true;
        pthread_attr_t attr;
        pthread_t t;
        bool started = false;
        pthread_mutex_lock(&closers_lock);
        closers++;
        pthread_mutex_unlock(&closers_lock);
        if (pthread_attr_init(&attr) == 0) {
                (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                started = pthread_create(&t, &attr, closer_main, c) == 0;
                pthread_attr_destroy(&attr);
        }
        if (!started)
                closer_main(c);
}

/* Waits (bounded) for the closes still running: at a stop everything is
 * closed before the agent goes on, as long as nng lets go. */
static void wait_closers(unsigned timeout_ms)
{
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&closers_lock);
        while (closers > 0)
                if (pthread_cond_timedwait(&closers_cond, &closers_lock, &until) != 0)
                        break;
        unsigned left = closers;
        pthread_mutex_unlock(&closers_lock);
        if (left > 0)
                log_warning("A link connection is still closing; going on without it | "
                            "count=%u",
                            left);
}

static void on_linger_timer(uv_timer_t *t);

static void arm_linger_timer(Link *l)
{
        if (!l->lingering) {
                uv_timer_stop(&l->linger_timer);
                return;
        }
        usec_t first = l->lingering->close_at;
        for (Conn *c = l->lingering; c; c = c->next_lingering)
                first = MIN(first, c->close_at);
        usec_t now = now_mono_usec();
        uint64_t ms = first > now ? (first - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC : 0;
        uv_timer_start(&l->linger_timer, on_linger_timer, ms, 0);
}

/* Closes the lingering connections that are due (all with force). */
static void release_lingering(Link *l, bool force, uint64_t gen_gone)
{
        usec_t now = now_mono_usec();
        for (Conn **p = &l->lingering; *p;) {
                Conn *c = *p;
                if (force || c->close_at <= now || c->gen == gen_gone) {
                        *p = c->next_lingering;
                        conn_release(c);
                } else
                        p = &c->next_lingering;
        }
        if (!force)
                arm_linger_timer(l);
}

static void on_linger_timer(uv_timer_t *t)
{
        release_lingering(t->data, false, 0);
}

static void schedule_redial(Link *l);

/* Ends the current connection (if any). One that just sent link.error is
 * closed a moment later, unless the link is stopping. */
static void conn_drop(Link *l)
{
        Conn *c = TAKE_PTR(l->conn);
        uv_timer_stop(&l->deadline_timer);
        uv_timer_stop(&l->heartbeat_timer);
        if (!c)
                return;
        if (c->error_sent && l->state != LINK_STOPPED) {
                /* Its events no longer match l->conn: they are dropped. */
                c->close_at = now_mono_usec() + ERROR_LINGER_USEC;
                c->next_lingering = l->lingering;
                l->lingering = c;
                arm_linger_timer(l);
        } else
                conn_release(c);
}

static void drop_and_redial(Link *l)
{
        conn_drop(l);
        if (l->state != LINK_STOPPED)
                schedule_redial(l);
}

static void arm_deadline(Link *l, unsigned seconds);

static void dial_work(uv_work_t *w)
{
        Conn *c = w->data;
        c->dial_rv = nng_dialer_start(c->dialer, 0); /* blocks until connected or failed */
}

static void after_dial(uv_work_t *w, int status)
{
        Conn *c = w->data;
        c->dial_running = false;
        if (c->abandoned) {
                conn_unref(c); /* the link may be freed already */
                return;
        }
        conn_unref(c); /* the dial's; the link holds its own */
        Link *l = c->link;
        if (c != l->conn)
                return; /* lingering after a link.error: release_lingering closes it */
        if (c->dial_rv != 0) {
                const char *hint = "";
                if (c->dial_rv == NNG_ECONNREFUSED || c->dial_rv == NNG_EADDRINVAL ||
                    c->dial_rv == NNG_EUNREACHABLE)
                        hint = "; is the controller running and agent_endpoint right?";
                else if (c->dial_rv == NNG_EPEERAUTH || c->dial_rv == NNG_ECRYPTO)
                        hint = "; the TLS handshake failed: check that ca_file is the "
                               "controller's CA and that the node certificate is still valid";
                log_warning("Cannot connect to the controller | endpoint=%s error=\"%s%s\"",
                            l->endpoint, nng_strerror(c->dial_rv), hint);
                drop_and_redial(l);
                return;
        }
        l->stats.connects++;
        /* The challenge may have been handled already: the controller sends it
         * as soon as the pipe exists, and its message can reach the loop
         * before this completion does. */
        if (l->state != LINK_DIALING)
                return;
        log_info("Connected; waiting for the challenge | endpoint=%s", l->endpoint);
        set_state(l, LINK_AWAIT_CHALLENGE);
        arm_deadline(l, l->hb_timeout_s);
}

static int conn_new(Link *l, Conn **ret)
{
        Conn *c = calloc(1, sizeof(*c));
        int rv;
        if (!c)
                return -ENOMEM;
        pthread_mutex_init(&c->mu, NULL);
        atomic_init(&c->refs, 1);
        c->link = l;
        c->gen = ++l->gen;
        if ((rv = nng_pair1_open(&c->sock)) != 0) {
                pthread_mutex_destroy(&c->mu);
                free(c);
                return log_error_errno(-ENOMEM, "nng_pair1_open: %s", nng_strerror(rv));
        }
        nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, PROTO_MAX_MESSAGE);
        nng_socket_set_int(c->sock, NNG_OPT_SENDBUF, SEND_QUEUE);
        if ((rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, pipe_removed, c)) != 0 ||
            (rv = nng_aio_alloc(&c->rx, rx_done, c)) != 0 ||
            (rv = nng_dialer_create(&c->dialer, c->sock, l->endpoint)) != 0 ||
            (rv = nng_dialer_set_ptr(c->dialer, NNG_OPT_TLS_CONFIG, l->tls)) != 0 ||
            (rv = nng_dialer_set_ms(c->dialer, NNG_OPT_RECONNMINT, NNG_NO_REDIAL_MS)) != 0 ||
            (rv = nng_dialer_set_ms(c->dialer, NNG_OPT_RECONNMAXT, NNG_NO_REDIAL_MS)) != 0) {
                int r = log_error_errno(-EINVAL,
                                        "Cannot set up the link socket | endpoint=%s "
                                        "error=\"%s\"",
                                        l->endpoint, nng_strerror(rv));
                conn_release(c);
                return r;
        }
        nng_recv_aio(c->sock, c->rx);
        *ret = c;
        return 0;
}

static void dial(Link *l)
{
        Conn *c = NULL;
        if (l->state == LINK_STOPPED)
                return;
        l->stats.dials++;
        set_state(l, LINK_DIALING);
        if (conn_new(l, &c) < 0) {
                schedule_redial(l);
                return;
        }
        l->conn = c;
        c->dial_work.data = c;
        c->dial_running = true;
        atomic_fetch_add(&c->refs, 1); /* the dial's, dropped by after_dial */
        int r = uv_queue_work(l->loop, &c->dial_work, dial_work, after_dial);
        if (r < 0) {
                c->dial_running = false;
                atomic_fetch_sub(&c->refs, 1);
                log_error("Cannot start dialing: %s", uv_strerror(r));
                drop_and_redial(l);
        }
}

static void on_redial_timer(uv_timer_t *t)
{
        dial(t->data);
}

static void schedule_redial(Link *l)
{
        uint64_t ms = backoff_next(&l->backoff);
        l->stats.last_backoff_ms = ms;
        set_state(l, LINK_BACKOFF);
        log_info("Redialing the controller later | in_ms=%llu", (unsigned long long)ms);
        uv_timer_start(&l->redial_timer, on_redial_timer, ms, 0);
}

/* ---- sending ---- */

static int send_envelope(Link *l, const char *type, const void *body, size_t len)
{
        char id[ID_MAX];
        int r = id_new("msg", id);
        if (r < 0)
                return r;
        /* A message may arrive (and be answered) before the dial's completion
         * runs; the socket is this connection's own, so sending is safe. */
        if (!l->conn)
                return -ENOTCONN;
        const ProtoHeader h = {.type = type, .id = id, .node = l->node_id, .epoch = l->epoch};
        _cleanup_free_ void *buf = NULL;
        size_t n;
        r = proto_encode(&h, body, len, &buf, &n);
        if (r < 0)
                return log_error_errno(r, "Cannot encode a link message | type=%s", type);
        nng_msg *m;
        if (nng_msg_alloc(&m, 0) != 0)
                return log_oom();
        if (nng_msg_append(m, buf, n) != 0) {
                nng_msg_free(m);
                return log_oom();
        }
        int rv = nng_sendmsg(l->conn->sock, m, NNG_FLAG_NONBLOCK);
        if (rv != 0) {
                nng_msg_free(m);
                return log_warning_errno(rv == NNG_EAGAIN ? -EAGAIN : -EIO,
                                         "Cannot send a link message | type=%s error=\"%s\"", type,
                                         nng_strerror(rv));
        }
        log_debug("Sent | type=%s bytes=%zu", type, n);
        return 0;
}

static int send_writer(Link *l, const char *type, const ProtoWriter *w)
{
        const void *body;
        size_t len;
        int r = proto_writer_data(w, &body, &len);
        if (r < 0)
                return log_error_errno(r, "Cannot build a link message | type=%s", type);
        return send_envelope(l, type, body, len);
}

int link_send(Link *l, const char *type, const ProtoWriter *body)
{
        if (l->state != LINK_READY)
                return -ENOTCONN;
        return send_writer(l, type, body);
}

int link_send_body(Link *l, const char *type, const void *body, size_t len)
{
        if (l->state != LINK_READY)
                return -ENOTCONN;
        return send_envelope(l, type, body, len);
}

static void send_link_error(Link *l, const char *code, const char *message, uint64_t theirs)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "code", code);
        proto_write_kv_str(&w, "message", message);
        if (theirs) {
                proto_write_kv_uint(&w, "ours", PROTO_VERSION);
                proto_write_kv_uint(&w, "theirs", theirs);
        }
        proto_write_end(&w);
        if (send_writer(l, "link.error", &w) >= 0)
                l->conn->error_sent = true;
}

/* ---- timers ---- */

static void on_deadline(uv_timer_t *t)
{
        Link *l = t->data;
        log_warning("No %s from the controller in time; redialing | timeout_s=%u",
                    l->state == LINK_AWAIT_CHALLENGE ? "challenge" : "welcome", l->hb_timeout_s);
        drop_and_redial(l);
}

static void arm_deadline(Link *l, unsigned seconds)
{
        uv_timer_start(&l->deadline_timer, on_deadline, (uint64_t)seconds * 1000, 0);
}

static void on_heartbeat(uv_timer_t *t)
{
        Link *l = t->data;
        if (l->state != LINK_READY)
                return;
        usec_t now = now_mono_usec();
        if (now - l->last_ack > (usec_t)l->cur_timeout_s * USEC_PER_SEC) {
                l->stats.hung++;
                log_warning("No heartbeat ack from the controller; the connection is hung, "
                            "redialing | timeout_s=%u",
                            l->cur_timeout_s);
                drop_and_redial(l);
                return;
        }
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_uint(&w, "seq", ++l->hb_seq);
        proto_write_kv_uint(&w, "sent_at_ms", now_usec() / USEC_PER_MSEC);
        proto_write_end(&w);
        if (send_writer(l, "link.heartbeat", &w) >= 0)
                l->stats.heartbeats_sent++;
}

/* ---- receiving ---- */

static void on_challenge(Link *l, const ProtoEnvelope *env)
{
        static const ProtoField fields[] = {
            {"nonce", PROTO_TYPE_BIN, PROTO_REQUIRED, 256},
            {"controller_epoch", PROTO_TYPE_UINT, PROTO_REQUIRED, 0},
        };
        _cleanup_free_ char *reason = NULL;
        const void *nonce;
        size_t nonce_len;
        uint64_t epoch;
        if (proto_check_fields(&env->body, fields, ELEMENTSOF(fields), &reason) < 0 ||
            proto_get_bin(&env->body, "nonce", PROTO_REQUIRED, 256, &nonce, &nonce_len, &reason) <
                0 ||
            proto_get_uint(&env->body, "controller_epoch", PROTO_REQUIRED, &epoch, &reason) < 0) {
                log_warning("Refused link.challenge | reason=\"%s\"", strempty(reason));
                send_link_error(l, "invalid_request", reason ? reason : "bad challenge", 0);
                drop_and_redial(l);
                return;
        }
        if (nonce_len < 16) {
                log_warning("Refused link.challenge: nonce too short | bytes=%zu", nonce_len);
                drop_and_redial(l);
                return;
        }
        l->epoch = epoch;

        _cleanup_free_ unsigned char *sig = NULL;
        size_t sig_len;
        if (proof_sign(l->key, nonce, nonce_len, l->node_id, &sig, &sig_len) < 0) {
                drop_and_redial(l);
                return;
        }
        _cleanup_(proto_writer_done) ProtoWriter auth;
        proto_writer_init(&auth);
        proto_write_map_begin(&auth);
        proto_write_kv_str(&auth, "certificate_pem", l->cert_pem);
        proto_write_key(&auth, "signature");
        proto_write_bin(&auth, sig, sig_len);
        proto_write_end(&auth);
        if (send_writer(l, "link.auth", &auth) < 0) {
                drop_and_redial(l);
                return;
        }

        /* The hello follows the proof at once; the controller reads them in order. */
        _cleanup_(proto_writer_done) ProtoWriter hello;
        proto_writer_init(&hello);
        int r = l->cb.hello ? l->cb.hello(l->cb.userdata, &hello) : -EINVAL;
        if (r < 0 || send_writer(l, "link.hello", &hello) < 0) {
                log_error_errno(r < 0 ? r : -EIO, "Cannot send link.hello");
                drop_and_redial(l);
                return;
        }
        set_state(l, LINK_AWAIT_WELCOME);
        arm_deadline(l, l->hb_timeout_s);
}

static void on_welcome(Link *l, const ProtoEnvelope *env)
{
        uint64_t epoch = l->epoch, interval = 0, timeout = 0;
        _cleanup_free_ char *reason = NULL;
        if (proto_get_uint(&env->body, "epoch", PROTO_OPTIONAL, &epoch, &reason) < 0 ||
            proto_get_uint(&env->body, "heartbeat_interval_s", PROTO_OPTIONAL, &interval, &reason) <
                0 ||
            proto_get_uint(&env->body, "heartbeat_timeout_s", PROTO_OPTIONAL, &timeout, &reason) <
                0) {
                log_warning("Refused link.welcome | reason=\"%s\"", strempty(reason));
                drop_and_redial(l);
                return;
        }
        l->epoch = epoch;
        l->cur_interval_s =
            interval > 0 && interval <= 3600 ? (unsigned)interval : l->hb_interval_s;
        l->cur_timeout_s = timeout > 0 && timeout <= 3600 ? (unsigned)timeout : l->hb_timeout_s;
        if (l->cur_timeout_s <= l->cur_interval_s)
                l->cur_timeout_s = l->cur_interval_s * 2; /* an ack can never beat the next tick */
        uv_timer_stop(&l->deadline_timer);
        l->stats.welcomes++;
        l->last_ack = now_mono_usec();
        backoff_reset(&l->backoff);
        log_info("Welcomed by the controller | epoch=%llu heartbeat_interval_s=%u "
                 "heartbeat_timeout_s=%u",
                 (unsigned long long)epoch, l->cur_interval_s, l->cur_timeout_s);
        uint64_t ms = (uint64_t)l->cur_interval_s * 1000;
        uv_timer_start(&l->heartbeat_timer, on_heartbeat, ms, ms);
        set_state(l, LINK_READY);
}

static void on_link_error(Link *l, const ProtoEnvelope *env)
{
        char code[64] = "", message[512] = "";
        uint64_t ours = 0, theirs = 0;
        (void)proto_get_str(&env->body, "code", PROTO_OPTIONAL, code, sizeof(code), NULL);
        (void)proto_get_str(&env->body, "message", PROTO_OPTIONAL, message, sizeof(message), NULL);
        (void)proto_get_uint(&env->body, "ours", PROTO_OPTIONAL, &ours, NULL);
        (void)proto_get_uint(&env->body, "theirs", PROTO_OPTIONAL, &theirs, NULL);
        if (streq(code, "version_mismatch")) {
                l->stats.version_mismatches++;
                log_error("The controller refused our protocol version: controller speaks %llu, "
                          "we speak %d; upgrade the agent or the controller",
                          (unsigned long long)(ours ? ours : 0), PROTO_VERSION);
        } else {
                l->stats.refused++;
                log_error("The controller refused the link | code=%s message=\"%s\"", code,
                          message);
        }
        drop_and_redial(l);
}

static void handle_message(Link *l, nng_msg *m)
{
        const void *buf = nng_msg_body(m);
        size_t len = nng_msg_len(m);
        _cleanup_proto_envelope_ ProtoEnvelope *env = NULL;
        _cleanup_free_ char *reason = NULL;
        int r = proto_decode(buf, len, &env, &reason);
        if (r == -EPROTONOSUPPORT) {
                uint64_t theirs = 0;
                (void)proto_peek_version(buf, len, &theirs, NULL);
                l->stats.version_mismatches++;
                log_error("Refused the controller's message: controller speaks %llu, we speak %d; "
                          "upgrade the agent or the controller",
                          (unsigned long long)theirs, PROTO_VERSION);
                _cleanup_free_ char *msg = NULL;
                if (asprintf(&msg, "peer speaks %llu, we speak %d", (unsigned long long)theirs,
                             PROTO_VERSION) < 0)
                        msg = NULL;
                send_link_error(l, "version_mismatch", msg ? msg : "version mismatch",
                                theirs ? theirs : 1);
                drop_and_redial(l);
                return;
        }
        if (r < 0) {
                log_warning("Refused a malformed message from the controller | reason=\"%s\"",
                            strempty(reason));
                send_link_error(l, "invalid_message", reason ? reason : "malformed", 0);
                drop_and_redial(l);
                return;
        }
        log_debug("Received | type=%s id=%s", env->type, env->id);

        if (streq(env->type, "link.error")) {
                on_link_error(l, env);
        } else if (streq(env->type, "link.challenge")) {
                if (l->state != LINK_AWAIT_CHALLENGE && l->state != LINK_DIALING) {
                        log_warning("Unexpected link.challenge; redialing | state=%s",
                                    link_state_to_string(l->state));
                        drop_and_redial(l);
                        return;
                }
                on_challenge(l, env);
        } else if (streq(env->type, "link.welcome")) {
                if (l->state != LINK_AWAIT_WELCOME) {
                        log_warning("Unexpected link.welcome | state=%s",
                                    link_state_to_string(l->state));
                        return;
                }
                on_welcome(l, env);
        } else if (streq(env->type, "link.heartbeat_ack")) {
                uint64_t seq = 0;
                (void)proto_get_uint(&env->body, "seq", PROTO_OPTIONAL, &seq, NULL);
                if (l->state == LINK_READY && seq <= l->hb_seq) {
                        l->last_ack = now_mono_usec();
                        l->stats.acks++;
                }
        } else if (startswith(env->type, "command.")) {
                if (l->state != LINK_READY) {
                        log_warning("Ignored a command before the welcome | type=%s id=%s",
                                    env->type, env->id);
                        return;
                }
                if (env->epoch > l->epoch)
                        l->epoch = env->epoch;
                if (l->cb.command)
                        l->cb.command(l->cb.userdata, env);
        } else if (startswith(env->type, "console.")) {
                if (l->state == LINK_READY && l->cb.console)
                        l->cb.console(l->cb.userdata, env);
        } else
                log_warning("Ignored an unknown message type | type=%s", env->type);
}

static void on_wake(uv_async_t *a)
{
        Link *l = a->data;
        for (;;) {
                pthread_mutex_lock(&l->lock);
                Event *e = l->head;
                if (e) {
                        l->head = e->next;
                        if (!l->head)
                                l->tail = NULL;
                }
                pthread_mutex_unlock(&l->lock);
                if (!e)
                        return;
                bool current = l->conn && l->conn->gen == e->gen && l->state != LINK_STOPPED;
                if (!current && e->kind == EVENT_PIPE_GONE)
                        /* A lingering connection the controller hung up: done. */
                        release_lingering(l, false, e->gen);
                else if (current && e->kind == EVENT_PIPE_GONE) {
                        log_warning("The connection to the controller closed | state=%s",
                                    link_state_to_string(l->state));
                        drop_and_redial(l);
                } else if (current && e->kind == EVENT_MESSAGE)
                        handle_message(l, e->msg);
                if (e->msg)
                        nng_msg_free(e->msg);
                free(e);
        }
}

/* ---- life cycle ---- */

static int host_of_endpoint(const char *endpoint, char **ret)
{
        const char *p = strstr(endpoint, "://");
        if (!p)
                return -EINVAL;
        p += 3;
        const char *end;
        if (*p == '[') {
                p++;
                end = strchr(p, ']');
        } else
                end = strrchr(p, ':');
        if (!end || end == p)
                return -EINVAL;
        *ret = strndup(p, end - p);
        return *ret ? 0 : -ENOMEM;
}

static void link_free(Link *l)
{
        Event *e = l->head;
        while (e) {
                Event *n = e->next;
                if (e->msg)
                        nng_msg_free(e->msg);
                free(e);
                e = n;
        }
        pthread_mutex_destroy(&l->lock);
        if (l->tls)
                nng_tls_config_free(l->tls);
        if (l->key)
                EVP_PKEY_free(l->key);
        free(l->cert_pem);
        free(l->endpoint);
        free(l->node_id);
        free(l->server_name);
        free(l);
}

int link_new(uv_loop_t *loop, const LinkOptions *o, const LinkCallbacks *cb, Link **ret)
{
        int r, rv;
        if (!o->endpoint || !startswith(o->endpoint, "tls+tcp://"))
                return log_error_errno(-EINVAL,
                                       "agent_endpoint must be tls+tcp://HOST:PORT | endpoint=%s",
                                       strempty(o->endpoint));
        if (!o->node_id || !*o->node_id)
                return log_error_errno(-EINVAL, "node_id is not set (enroll the host first)");

        Link *l = calloc(1, sizeof(*l));
        if (!l)
                return log_oom();
        pthread_mutex_init(&l->lock, NULL);
        l->loop = loop;
        l->cb = *cb;
        l->state = LINK_BACKOFF;
        l->hb_interval_s = o->heartbeat_interval_s ? o->heartbeat_interval_s : 5;
        l->hb_timeout_s = o->heartbeat_timeout_s ? o->heartbeat_timeout_s : 15;
        l->cur_interval_s = l->hb_interval_s;
        l->cur_timeout_s = l->hb_timeout_s;
        backoff_init(&l->backoff, o->random, o->random_userdata);
        l->endpoint = strdup(o->endpoint);
        l->node_id = strdup(o->node_id);
        if (!l->endpoint || !l->node_id) {
                r = log_oom();
                goto fail;
        }
        if (o->server_name && *o->server_name)
                l->server_name = strdup(o->server_name);
        else if (host_of_endpoint(o->endpoint, &l->server_name) < 0) {
                r = log_error_errno(-EINVAL,
                                    "Cannot find the host in agent_endpoint | "
                                    "endpoint=%s",
                                    o->endpoint);
                goto fail;
        }

        if ((r = proof_load_key(o->key_file, &l->key)) < 0 ||
            (r = proof_read_pem(o->cert_file, &l->cert_pem)) < 0)
                goto fail;
        if (access(o->ca_file, R_OK) < 0) {
                r = log_error_errno(errno, "Cannot read the CA file | path=%s: %m", o->ca_file);
                goto fail;
        }

        if ((rv = nng_tls_config_alloc(&l->tls, NNG_TLS_MODE_CLIENT)) != 0) {
                r = log_error_errno(-ENOMEM, "nng_tls_config_alloc: %s", nng_strerror(rv));
                goto fail;
        }
        if ((rv = nng_tls_config_auth_mode(l->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
            (rv = nng_tls_config_ca_file(l->tls, o->ca_file)) != 0) {
                r = log_error_errno(-EINVAL, "Cannot use the CA file | path=%s error=\"%s\"",
                                    o->ca_file, nng_strerror(rv));
                goto fail;
        }
        {
                _cleanup_free_ char *key_pem = NULL;
                if ((r = proof_read_pem(o->key_file, &key_pem)) < 0)
                        goto fail;
                rv = nng_tls_config_own_cert(l->tls, l->cert_pem, key_pem, NULL);
                explicit_bzero(key_pem, strlen(key_pem));
                if (rv != 0) {
                        r = log_error_errno(-EINVAL,
                                            "Cannot use the node certificate and key | cert=%s "
                                            "key=%s error=\"%s\"",
                                            o->cert_file, o->key_file, nng_strerror(rv));
                        goto fail;
                }
        }
        if ((rv = nng_tls_config_server_name(l->tls, l->server_name)) != 0) {
                r = log_error_errno(-EINVAL, "Cannot set the TLS server name | name=%s",
                                    l->server_name);
                goto fail;
        }

        uv_async_init(loop, &l->wake, on_wake);
        uv_timer_init(loop, &l->redial_timer);
        uv_timer_init(loop, &l->deadline_timer);
        uv_timer_init(loop, &l->heartbeat_timer);
        uv_timer_init(loop, &l->linger_timer);
        l->wake.data = l->redial_timer.data = l->deadline_timer.data = l->heartbeat_timer.data =
            l->linger_timer.data = l;
        l->open_handles = 5;
        *ret = l;
        return 0;
fail:
        link_free(l);
        return r;
}

void link_start(Link *l)
{
        dial(l);
}

static void on_handle_closed(uv_handle_t *h)
{
        Link *l = h->data;
        if (--l->open_handles > 0)
                return;
        void (*done)(void *) = l->closed;
        void *ud = l->closed_userdata;
        link_free(l);
        if (done)
                done(ud);
}

void link_close(Link *l, void (*done)(void *userdata), void *userdata)
{
        set_state(l, LINK_STOPPED);
        /* Every connection is cut off before the handles close: after this no
         * nng thread calls uv_async_send on l->wake or touches l, which is
         * freed once the handles are closed (their sockets close on closer
         * threads, waited for a bounded time). */
        conn_drop(l);
        release_lingering(l, true, 0);
        wait_closers(5000);
        l->closed = done;
        l->closed_userdata = userdata;
        uv_close((uv_handle_t *)&l->wake, on_handle_closed);
        uv_close((uv_handle_t *)&l->redial_timer, on_handle_closed);
        uv_close((uv_handle_t *)&l->deadline_timer, on_handle_closed);
        uv_close((uv_handle_t *)&l->heartbeat_timer, on_handle_closed);
        uv_close((uv_handle_t *)&l->linger_timer, on_handle_closed);
}

LinkState link_state(const Link *l)
{
        return l->state;
}

uint64_t link_epoch(const Link *l)
{
        return l->epoch;
}

const LinkStats *link_stats(const Link *l)
{
        return &l->stats;
}
