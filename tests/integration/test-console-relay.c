/* SPDX-License-Identifier: MIT */
/* The controller's console relay against a scripted agent: the test peer
 * (tests/lib/test-peer.c) is the node, and this file answers its console.*
 * messages itself, so it can lose, refuse, overrun and withhold the way a
 * real agent on a bad day (or nng's polyamorous pair1, which drops when a
 * pipe's queue is full) would. The browser is the real WebSocket client
 * (tests/lib/ws-client.c). What the relay must do: send a lost open and lost
 * input again, in order and once; pass an agent's refusal on as an error
 * frame; end a session whose agent breaks the credit; keep a client's input
 * within the agent's credit and stop reading the client until the agent
 * takes more, then deliver every byte; resend a resize until it is
 * acknowledged; close sessions nobody has; refuse malformed control
 * messages. The allocation row is written straight into the database: the
 * relay only needs an active allocation on a node with a link. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "test-peer.h"
#include "timeutil.h"
#include "ws-client.h"

#define DEADLINE_MS 30000
#define WINDOW      4096 /* console_window_bytes for these tests */

/* The scripted agent: what it does and what it saw, under lock. */
static struct {
        pthread_mutex_t lock;
        /* behaviour */
        int drop_opens;        /* ignore this many console.open */
        int drop_data;         /* ignore this many console.data */
        int drop_resize_acks;  /* take this many resizes without acknowledging */
        bool refuse;           /* answer console.open with console_unavailable */
        bool echo;             /* answer input with "echo:" + input */
        bool overrun;          /* answer the first input with more output than the credit */
        uint64_t input_window; /* input credit granted (from what was received) */
        bool grant_input;      /* acknowledge input with credit (else the limit stays) */
        /* what it saw */
        int opens, closes, resizes, data_msgs;
        char session[64];
        char input[1 << 18];
        size_t input_len;
        uint64_t in_limit, out_offset, out_limit, resize_gen;
        unsigned cols, rows;
        char close_reason[64];
        char unknown_close[64]; /* console.close for a session it made up */
} A;

static struct {
        Controller *c;
        Tokens admin, user;
        EnrolledNode node;
        TestPeer *peer;
        char alloc[64];
} T;

static void pause_ms(long ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
}

static void dump_logs(void)
{
        if (!T.c)
                return;
        _cleanup_free_ char *log = ctl_stderr(T.c);
        size_t n = log ? strlen(log) : 0;
        fprintf(stderr, "---- controller stderr (last 6000 bytes) ----\n%s\n",
                n > 6000 ? log + n - 6000 : strempty(log));
        _cleanup_free_ char *cl = ws_client_log() ? read_file(ws_client_log()) : NULL;
        fprintf(stderr, "---- client stderr ----\n%s\n", strempty(cl));
}

#define ensure(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        dump_logs();                                                               \
                        cr_assert_fail(__VA_ARGS__);                                               \
                }                                                                                  \
        } while (0)

/* ---- the scripted agent (runs on the peer's thread) ---- */

static void send_closed(TestPeer *p, const char *sid, const char *reason, int code,
                        const char *message)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", sid);
        proto_write_kv_str(&w, "reason", reason);
        proto_write_key(&w, "code");
        if (code >= 0)
                proto_write_int(&w, code);
        else
                proto_write_nil(&w);
        if (message)
                proto_write_kv_str(&w, "message", message);
        proto_write_end(&w);
        peer_send_message(p, "console.closed", &w);
}

/* Called with A.lock held. */
static void send_ack(TestPeer *p)
{
        if (A.grant_input)
                A.in_limit = A.input_len + A.input_window;
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", A.session);
        proto_write_kv_uint(&w, "offset", A.input_len);
        proto_write_kv_uint(&w, "limit", A.in_limit);
        proto_write_kv_uint(&w, "resize_gen", A.resize_gen);
        proto_write_kv_uint(&w, "out_limit", A.out_limit);
        proto_write_end(&w);
        peer_send_message(p, "console.ack", &w);
}

static void send_output(TestPeer *p, const void *data, size_t n)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", A.session);
        proto_write_kv_uint(&w, "offset", A.out_offset);
        proto_write_key(&w, "data");
        proto_write_bin(&w, data, n);
        proto_write_end(&w);
        A.out_offset += n;
        peer_send_message(p, "console.data", &w);
}

static void on_console(TestPeer *p, const ProtoEnvelope *env, void *userdata)
{
        (void)userdata;
        char sid[64] = "";
        (void)proto_get_str(&env->body, "session_id", PROTO_OPTIONAL, sid, sizeof(sid), NULL);
        pthread_mutex_lock(&A.lock);
        if (streq(env->type, "console.open")) {
                A.opens++;
                uint64_t window = 0, cols = 0, rows = 0;
                (void)proto_get_uint(&env->body, "window", PROTO_REQUIRED, &window, NULL);
                (void)proto_get_uint(&env->body, "cols", PROTO_REQUIRED, &cols, NULL);
                (void)proto_get_uint(&env->body, "rows", PROTO_REQUIRED, &rows, NULL);
                if (A.drop_opens > 0) {
                        A.drop_opens--;
                } else if (A.refuse) {
                        send_closed(p, sid, "console_unavailable", -1, "no hook here");
                } else {
                        snprintf(A.session, sizeof(A.session), "%s", sid);
                        A.out_limit = MAX(A.out_limit, window);
                        A.cols = (unsigned)cols;
                        A.rows = (unsigned)rows;
                        A.in_limit = A.input_window;
                        _cleanup_(proto_writer_done) ProtoWriter w;
                        proto_writer_init(&w);
                        proto_write_map_begin(&w);
                        proto_write_kv_str(&w, "session_id", sid);
                        proto_write_kv_uint(&w, "window", A.in_limit);
                        proto_write_kv_uint(&w, "pid", 1);
                        proto_write_end(&w);
                        peer_send_message(p, "console.opened", &w);
                }
        } else if (streq(env->type, "console.data")) {
                uint64_t offset = 0;
                const void *d = NULL;
                size_t n = 0;
                (void)proto_get_uint(&env->body, "offset", PROTO_REQUIRED, &offset, NULL);
                (void)proto_get_bin(&env->body, "data", PROTO_REQUIRED, 0, &d, &n, NULL);
                A.data_msgs++;
                if (!streq(sid, A.session)) {
                        /* not ours */
                } else if (A.drop_data > 0) {
                        A.drop_data--;
                } else {
                        size_t before = A.input_len;
                        if (offset <= A.input_len && offset + n > A.input_len &&
                            offset + n <= sizeof(A.input)) {
                                size_t skip = A.input_len - offset;
                                memcpy(A.input + A.input_len, (const char *)d + skip, n - skip);
                                A.input_len += n - skip;
                        }
                        send_ack(p);
                        if (A.overrun) {
                                static char big[WINDOW + 512];
                                memset(big, 'o', sizeof(big));
                                send_output(p, big, sizeof(big));
                                A.overrun = false;
                        } else if (A.echo && A.input_len > before) {
                                char out[512];
                                int k = snprintf(out, sizeof(out), "echo:%.*s",
                                                 (int)MIN(A.input_len - before, (size_t)400),
                                                 A.input + before);
                                send_output(p, out, (size_t)k);
                        }
                }
        } else if (streq(env->type, "console.window")) {
                uint64_t limit = 0;
                (void)proto_get_uint(&env->body, "limit", PROTO_REQUIRED, &limit, NULL);
                A.out_limit = MAX(A.out_limit, limit);
                send_ack(p);
        } else if (streq(env->type, "console.resize")) {
                uint64_t gen = 0, cols = 0, rows = 0;
                (void)proto_get_uint(&env->body, "gen", PROTO_REQUIRED, &gen, NULL);
                (void)proto_get_uint(&env->body, "cols", PROTO_REQUIRED, &cols, NULL);
                (void)proto_get_uint(&env->body, "rows", PROTO_REQUIRED, &rows, NULL);
                A.resizes++;
                A.cols = (unsigned)cols;
                A.rows = (unsigned)rows;
                if (A.drop_resize_acks > 0)
                        A.drop_resize_acks--;
                else {
                        A.resize_gen = MAX(A.resize_gen, gen);
                        send_ack(p);
                }
        } else if (streq(env->type, "console.close")) {
                A.closes++;
                (void)proto_get_str(&env->body, "reason", PROTO_OPTIONAL, A.close_reason,
                                    sizeof(A.close_reason), NULL);
                if (streq(sid, A.session))
                        send_closed(p, sid, "closed", 129, NULL);
                else
                        snprintf(A.unknown_close, sizeof(A.unknown_close), "%s", sid);
        }
        pthread_mutex_unlock(&A.lock);
}

/* Reads one field of A under the lock. */
#define AGENT(expr)                                                                                \
        ({                                                                                         \
                pthread_mutex_lock(&A.lock);                                                       \
                __typeof__(expr) v_ = (expr);                                                      \
                pthread_mutex_unlock(&A.lock);                                                     \
                v_;                                                                                \
        })

#define WAIT_AGENT(cond, ...)                                                                      \
        do {                                                                                       \
                long long dl_ = mono_ms() + DEADLINE_MS;                                           \
                while (!AGENT(cond)) {                                                             \
                        ensure(mono_ms() < dl_, __VA_ARGS__);                                      \
                        pause_ms(20);                                                              \
                }                                                                                  \
        } while (0)

/* ---- fixture ---- */

static void setup(void)
{
        T = (typeof(T)){0};
        pthread_mutex_init(&A.lock, NULL);
        A.input_window = 1 << 16;
        A.grant_input = true;
        A.echo = true;
}

static void teardown(void)
{
        ws_client_stop();
        /* The controller goes first: closing the peer's nng socket while its
         * pipe is up can hang in nng 1.5.2's nng_close() under load. */
        if (T.c)
                ctl_free(T.c);
        peer_stop(T.peer);
        enrolled_node_done(&T.node);
        T = (typeof(T)){0};
}

TestSuite(console_relay, .init = setup, .fini = teardown, .timeout = 120);

static void start_with(const char *public_url)
{
        T.c = ctl_new();
        ctl_args(T.c, "--heartbeat-interval-s", "1", "--console-window-bytes", "4096", NULL);
        if (public_url)
                ctl_args(T.c, "--public-url", public_url, NULL);
        ctl_start_or_fail(T.c);
        admin_sign_in(T.c, "root@example.com", NULL, &T.admin);
        node_create_and_enroll(T.c, T.admin.access, "relay-node", &T.node);
        const PeerOptions o = {.endpoint = T.node.endpoint,
                               .node_id = T.node.node_id,
                               .tls_cert = T.node.cert_pem,
                               .tls_key = T.node.key_pem,
                               .ca_pem = T.node.ca_pem,
                               .heartbeat_ms = 1000,
                               .on_message = on_console};
        T.peer = peer_start(&o);
        ensure(peer_wait_welcomes(T.peer, 1, DEADLINE_MS), "the peer was never welcomed");
        ensure(api_signup(T.c, "tenant@example.com", "correct horse battery", "T", &T.user) == 201,
               "signup");
        snprintf(T.alloc, sizeof(T.alloc), "alc_relaytestallocation00A");
        _cleanup_free_ char *sql = xasprintf(
            "INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, node_id, image_id, "
            "network_id, hourly_cost_micros, created_at, updated_at) VALUES ('%s', '%s', "
            "'active', 'sku_relay', 1, '%s', 'img_relay', 'net_relay', 0, 1, 1)",
            T.alloc, T.user.user_id, T.node.node_id);
        db_exec_rw(T.c, sql);
        ws_client_dump = dump_logs;
        ws_client_start();
}

static void start(void)
{
        start_with(NULL);
}

static char *url(void)
{
        _cleanup_free_ char *path = xasprintf("/api/v1/allocations/%s/terminal-token", T.alloc);
        _cleanup_resp_ HttpResponse *r = api_post(T.c, path, T.user.access, NULL);
        ensure(r->status == 200, "terminal-token: %ld %s", r->status, r->body);
        return strdup(jstr(r, "websocket_url"));
}

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
                pause_ms(50);
        }
}

static long long field_of(const char *line, const char *key)
{
        _cleanup_free_ char *k = xasprintf(" %s=", key);
        const char *p = strstr(line, k);
        ensure(p, "no %s in: %s", key, line);
        return strtoll(p + strlen(k), NULL, 10);
}

/* ---- the rules ---- */

Test(console_relay, a_lost_open_is_sent_again)
{
        A.drop_opens = 1;
        start();
        _cleanup_free_ char *u = url();
        _cleanup_free_ char *session = ws_connect("a", u);
        ws_send("a", "hi");
        ws_expect_output("a", "echo:hi", 20000);
        ensure(AGENT(A.opens) == 2, "opens: %d", AGENT(A.opens));
        ws_simple("close", "a");
        ws_expect_closed("a", 1000);
        _cleanup_free_ char *line = session_end_line(session);
        ensure(field_of(line, "resent") >= 1, "%s", line);
        WAIT_AGENT(A.closes >= 1, "no console.close after the client left");
        ensure(AGENT(streq(A.close_reason, "client_closed")), "reason %s", A.close_reason);
}

Test(console_relay, lost_input_is_sent_again_in_order_and_once)
{
        A.drop_data = 1;
        start();
        _cleanup_free_ char *u = url();
        _cleanup_free_ char *session = ws_connect("a", u);
        ws_send("a", "abc");
        ws_expect_output("a", "echo:abc", 20000);
        ws_send("a", "def");
        ws_expect_output("a", "echo:def", 20000);
        pthread_mutex_lock(&A.lock);
        bool same = A.input_len == 6 && memcmp(A.input, "abcdef", 6) == 0;
        int msgs = A.data_msgs;
        pthread_mutex_unlock(&A.lock);
        ensure(same, "the agent got \"%.*s\"", (int)A.input_len, A.input);
        ensure(msgs >= 3, "the lost message was not sent again (%d messages)", msgs);
}

Test(console_relay, the_agents_refusal_is_an_error_frame)
{
        A.refuse = true;
        start();
        _cleanup_free_ char *u = url();
        _cleanup_free_ char *session = ws_connect("a", u);
        ws_expect_end("a", 1011, "error", "console_unavailable", 0);
        _cleanup_(json_decrefp) json_t *out = ws_output("a");
        json_t *last = json_array_get(json_object_get(out, "controls"), 0);
        ensure(streq_ptr(json_string_value(json_object_get(last, "message")), "no hook here"),
               "the agent's message is passed on");
        _cleanup_free_ char *line = session_end_line(session);
        ensure(strstr(line, "reason=console_unavailable"), "%s", line);
}

Test(console_relay, output_beyond_the_credit_ends_the_session)
{
        A.overrun = true;
        start();
        _cleanup_free_ char *u = url();
        _cleanup_free_ char *session = ws_connect("a", u);
        ws_send("a", "x");
        ws_expect_end("a", 1011, "error", "protocol_error", 0);
        WAIT_AGENT(A.closes >= 1, "the agent was not told to close");
        _cleanup_(json_decrefp) json_t *out = ws_output("a");
        ensure(json_integer_value(json_object_get(out, "bytes")) == 0,
               "output beyond the credit reached the client");
}

Test(console_relay, input_waits_for_the_agents_credit_then_every_byte_arrives)
{
        A.input_window = 1024;
        A.grant_input = false; /* the credit stays at 1024 until we say so */
        A.echo = false;
        start();
        _cleanup_free_ char *u = url();
        _cleanup_free_ char *session = ws_connect("a", u);
        /* 192 KiB in 4 KiB messages, a pattern that shows order. */
        char chunk[4097];
        for (int i = 0; i < 48; i++) {
                for (int k = 0; k < 4096; k++)
                        chunk[k] = (char)('a' + (i + k / 64) % 26);
                chunk[4096] = '\0';
                ws_send("a", chunk);
        }
        WAIT_AGENT(A.input_len == 1024, "the agent did not get its credit's worth");
        /* Give the controller every chance to send more than the credit. */
        for (int i = 0; i < 20; i++) {
                pause_ms(25);
                ensure(AGENT(A.input_len) == 1024, "input beyond the credit: %zu",
                       AGENT(A.input_len));
        }
        /* The agent takes everything now: the rest arrives, in order. */
        pthread_mutex_lock(&A.lock);
        A.grant_input = true;
        A.input_window = 1 << 17;
        send_ack(T.peer);
        pthread_mutex_unlock(&A.lock);
        WAIT_AGENT(A.input_len == 48 * 4096, "only %zu bytes arrived", A.input_len);
        pthread_mutex_lock(&A.lock);
        bool ordered = true;
        for (int i = 0; i < 48 && ordered; i++)
                for (int k = 0; k < 4096 && ordered; k++)
                        ordered = A.input[i * 4096 + k] == (char)('a' + (i + k / 64) % 26);
        pthread_mutex_unlock(&A.lock);
        ensure(ordered, "the input arrived out of order");
        ws_simple("close", "a");
        ws_expect_closed("a", 1000);
        _cleanup_free_ char *line = session_end_line(session);
        /* At most the window before reading stops, plus one message and what
         * wslay had already read. */
        long long peak = field_of(line, "peak_in_buffered");
        ensure(peak >= WINDOW && peak <= WINDOW + 4096 + 4096, "peak_in_buffered %lld: %s", peak,
               line);
        ensure(field_of(line, "bytes_in") == 48 * 4096, "%s", line);
}

Test(console_relay, a_resize_is_sent_until_acknowledged)
{
        A.drop_resize_acks = 1;
        start();
        _cleanup_free_ char *u = url();
        _cleanup_free_ char *sized = xasprintf("%s&cols=90&rows=20", u);
        _cleanup_free_ char *session = ws_connect("a", sized);
        WAIT_AGENT(A.opens == 1, "no open");
        ensure(AGENT(A.cols) == 90 && AGENT(A.rows) == 20, "first size %ux%u", A.cols, A.rows);
        ws_resize("a", 150, 50);
        WAIT_AGENT(A.resize_gen == 1, "the resize was never acknowledged");
        ensure(AGENT(A.resizes) >= 2 && AGENT(A.cols) == 150 && AGENT(A.rows) == 50,
               "resizes %d, size %ux%u", A.resizes, A.cols, A.rows);
}

Test(console_relay, sessions_nobody_has_are_closed)
{
        start();
        _cleanup_free_ char *u = url();
        _cleanup_free_ char *session = ws_connect("a", u);
        ws_send("a", "hi");
        ws_expect_output("a", "echo:hi", 20000);
        /* The agent talks about a session the controller never had. */
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "session_id", "cns_madeupmadeupmadeup0A");
        proto_write_kv_uint(&w, "offset", 0);
        proto_write_key(&w, "data");
        proto_write_bin(&w, "boo", 3);
        proto_write_end(&w);
        peer_send_message(T.peer, "console.data", &w);
        WAIT_AGENT(streq(A.unknown_close, "cns_madeupmadeupmadeup0A"),
                   "no console.close for the unknown session");
        ensure(AGENT(streq(A.close_reason, "unknown_session")), "reason %s", A.close_reason);
        /* The real session is untouched. */
        ws_send("a", "still");
        ws_expect_output("a", "echo:still", 20000);
}

Test(console_relay, malformed_control_messages_end_the_session)
{
        start();
        _cleanup_free_ char *u1 = url();
        free(ws_connect("a", u1));
        ws_send_text("a", "not json");
        ws_expect_end("a", 1008, "error", "invalid_request", 0);
        _cleanup_free_ char *u2 = url();
        free(ws_connect("b", u2));
        ws_send_text("b", "{\"type\":\"resize\",\"cols\":0,\"rows\":5}");
        ws_expect_end("b", 1008, "error", "invalid_request", 0);
        _cleanup_free_ char *u3 = url();
        free(ws_connect("c", u3));
        ws_send_text("c", "{\"type\":\"paste\",\"data\":\"x\"}");
        ws_expect_end("c", 1008, "error", "invalid_request", 0);
        WAIT_AGENT(A.closes >= 3, "the agent was not told to close every session");
}

Test(console_relay, the_websocket_url_follows_public_url)
{
        start_with("https://console.example.com/gpu/");
        _cleanup_free_ char *path = xasprintf("/api/v1/allocations/%s/terminal-token", T.alloc);
        _cleanup_resp_ HttpResponse *r = api_post(T.c, path, T.user.access, NULL);
        ensure(r->status == 200, "%ld %s", r->status, r->body);
        _cleanup_free_ char *want =
            xasprintf("wss://console.example.com/gpu/api/v1/terminal?token=%s", jstr(r, "token"));
        ensure(streq_ptr(jstr(r, "websocket_url"), want), "%s", r->body);
        usec_t expires;
        ensure(parse_rfc3339(jstr(r, "expires_at"), &expires) == 0, "%s", r->body);
        usec_t now = now_usec();
        ensure(expires > now && expires <= now + 61 * USEC_PER_SEC, "%s", r->body);
}
