/* SPDX-License-Identifier: MIT */
#include "test-peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/transport/tls/tls.h>

#include "ca.h"
#include "node-commands.h"
#include "proto.h"

/* ---- admin and enrollment ---- */

void admin_sign_in(Controller *c, const char *email, const char *role, Tokens *t)
{
        const char *argv[] = {"x",
                              "create-admin",
                              "--state-dir",
                              c->state_dir,
                              "--email",
                              email,
                              "--password-scrypt-log-n",
                              "10",
                              "--role",
                              role ? role : "admin",
                              NULL};
        CliResult res;
        int status = cli_run(argv, NULL, 60000, &res);
        cr_assert_eq(cli_exit_code(status), 0, "create-admin: %s", res.err);
        res.out[strcspn(res.out, "\n")] = '\0';
        cr_assert_eq(api_login(c, email, res.out, t), 200, "admin login");
        cli_result_done(&res);
}

void node_create_and_enroll(Controller *c, const char *admin, const char *name, EnrolledNode *ret)
{
        *ret = (EnrolledNode){0};
        char body[256];
        snprintf(body, sizeof(body), "{\"name\":\"%s\"}", name);
        _cleanup_resp_ HttpResponse *r = api_post(c, "/api/v1/admin/nodes", admin, body);
        cr_assert_eq(r->status, 201, "%s", r->body);
        ret->token = strdup(jstr(r, "bootstrap_token"));
        cr_assert(ca_new_key_pem(&ret->key_pem) == 0);
        _cleanup_free_ char *csr = NULL;
        cr_assert(ca_make_csr(ret->key_pem, "whatever-the-host-says", &csr) == 0);
        json_t *req = json_pack("{s:s, s:s, s:{s:s}}", "bootstrap_token", ret->token, "csr_pem",
                                csr, "facts", "hostname", name);
        _cleanup_free_ char *text = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        _cleanup_resp_ HttpResponse *e = api_post(c, "/api/v1/agent/enroll", NULL, text);
        cr_assert_eq(e->status, 200, "%s", e->body);
        snprintf(ret->node_id, sizeof(ret->node_id), "%s", jstr(e, "node_id"));
        ret->cert_pem = strdup(jstr(e, "certificate_pem"));
        ret->ca_pem = strdup(jstr(e, "ca_pem"));
        ret->endpoint = strdup(jstr(e, "agent_endpoint"));
}

void enrolled_node_done(EnrolledNode *n)
{
        free(n->token);
        free(n->key_pem);
        free(n->cert_pem);
        free(n->ca_pem);
        free(n->endpoint);
        *n = (EnrolledNode){0};
}

unsigned free_port(void)
{
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
        getsockname(fd, (struct sockaddr *)&a, &len);
        close(fd);
        return ntohs(a.sin_port);
}

/* ---- the peer ---- */

struct TestPeer {
        PeerOptions o;
        nng_socket sock;
        nng_dialer dialer;
        nng_tls_config *tls;
        pthread_t thread;
        pthread_mutex_t lock;
        volatile bool stop;
        PeerStats stats;
        uint64_t hb_seq;
        long long next_hb;
        bool welcomed;
        char *discovery_text;
};

static void peer_send(TestPeer *p, const char *type, const char *id, ProtoWriter *w)
{
        _cleanup_free_ void *buf = NULL;
        size_t len;
        char mid[ID_MAX];
        if (!id) {
                id_new("msg", mid);
                id = mid;
        }
        const ProtoHeader h = {.type = type, .id = id, .node = p->o.node_id, .epoch = 1};
        if (proto_encode_writer(&h, w, &buf, &len) < 0)
                return;
        /* The reference encoder writes "v" first: 86 a1 76 <v>. */
        if (p->o.version && p->o.version != PROTO_VERSION && p->o.version < 128)
                ((uint8_t *)buf)[3] = (uint8_t)p->o.version;
        nng_send(p->sock, buf, len, 0);
}

void peer_send_message(TestPeer *p, const char *type, ProtoWriter *body)
{
        peer_send(p, type, NULL, body);
}

static void send_auth_and_hello(TestPeer *p, const void *nonce, size_t nonce_len)
{
        const char *cert = p->o.proof_cert ? p->o.proof_cert : p->o.tls_cert;
        const char *key = p->o.proof_key ? p->o.proof_key : p->o.tls_key;
        uint8_t msg[256];
        size_t n = 0, idl = strlen(p->o.node_id);
        memcpy(msg, "gpuslice-link-v1", 17);
        n = 17;
        memcpy(msg + n, nonce, nonce_len);
        n += nonce_len;
        memcpy(msg + n, p->o.node_id, idl);
        n += idl;
        _cleanup_free_ unsigned char *sig = NULL;
        size_t sig_len = 0;
        if (ca_sign_data(key, msg, n, &sig, &sig_len) < 0)
                return;
        {
                _cleanup_(proto_writer_done) ProtoWriter w;
                proto_writer_init(&w);
                proto_write_map_begin(&w);
                proto_write_kv_str(&w, "certificate_pem", cert);
                proto_write_key(&w, "signature");
                proto_write_bin(&w, sig, sig_len);
                proto_write_end(&w);
                peer_send(p, "link.auth", NULL, &w);
        }
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "agent_version",
                           p->o.agent_version ? p->o.agent_version : "test-peer/1");
        proto_write_kv_str(&w, "fingerprint", "");
        proto_write_kv_bool(&w, "simulated", true);
        proto_write_key(&w, "applied");
        proto_write_array_begin(&w);
        proto_write_end(&w);
        proto_write_end(&w);
        peer_send(p, "link.hello", NULL, &w);
}

static void answer_command(TestPeer *p, ProtoEnvelope *env)
{
        char discovery_id[64] = "";
        (void)proto_get_str(&env->body, "discovery_id", PROTO_OPTIONAL, discovery_id,
                            sizeof(discovery_id), NULL);
        _cleanup_(json_decrefp) json_t *doc =
            p->discovery_text ? json_loads(p->discovery_text, 0, NULL) : NULL;
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "command_id", env->id);
        bool ok = streq(env->type, "command.discover") && doc;
        proto_write_kv_bool(&w, "ok", ok);
        proto_write_key(&w, "result");
        if (ok) {
                proto_write_map_begin(&w);
                proto_write_kv_str(&w, "discovery_id", discovery_id);
                proto_write_key(&w, "discovery");
                proto_write_json(&w, doc);
                proto_write_end(&w);
                proto_write_key(&w, "error");
                proto_write_nil(&w);
        } else {
                proto_write_nil(&w);
                proto_write_key(&w, "error");
                proto_write_map_begin(&w);
                proto_write_kv_str(&w, "code", "unsupported");
                proto_write_kv_str(&w, "message", "the test peer cannot do this");
                proto_write_end(&w);
        }
        proto_write_end(&w);
        for (int i = 0; i < (p->o.reply_twice ? 2 : 1); i++) {
                peer_send(p, "reply", NULL, &w);
                pthread_mutex_lock(&p->lock);
                p->stats.replies++;
                pthread_mutex_unlock(&p->lock);
        }
}

static void handle(TestPeer *p, const void *buf, size_t len)
{
        _cleanup_proto_envelope_ ProtoEnvelope *env = NULL;
        if (proto_decode(buf, len, &env, NULL) < 0)
                return;
        pthread_mutex_lock(&p->lock);
        if (streq(env->type, "link.challenge")) {
                p->stats.challenges++;
                (void)proto_get_uint(&env->body, "controller_epoch", PROTO_OPTIONAL,
                                     &p->stats.last_epoch, NULL);
                pthread_mutex_unlock(&p->lock);
                const void *nonce;
                size_t nl;
                if (proto_get_bin(&env->body, "nonce", PROTO_REQUIRED, 64, &nonce, &nl, NULL) >= 0)
                        send_auth_and_hello(p, nonce, nl);
                return;
        }
        if (streq(env->type, "link.welcome")) {
                p->stats.welcomes++;
                p->welcomed = true;
                p->next_hb = mono_ms();
        } else if (streq(env->type, "link.heartbeat_ack"))
                p->stats.acks++;
        else if (streq(env->type, "link.error")) {
                (void)proto_get_str(&env->body, "code", PROTO_OPTIONAL, p->stats.last_error,
                                    sizeof(p->stats.last_error), NULL);
                p->welcomed = false;
        } else if (startswith(env->type, "command.")) {
                p->stats.commands++;
                memcpy(p->stats.last_command_id, env->id,
                       MIN(strlen(env->id) + 1, sizeof(p->stats.last_command_id) - 1));
                pthread_mutex_unlock(&p->lock);
                if (!p->o.ignore_commands)
                        answer_command(p, env);
                return;
        } else if (p->o.on_message && !startswith(env->type, "link.")) {
                pthread_mutex_unlock(&p->lock);
                p->o.on_message(p, env, p->o.userdata);
                return;
        }
        pthread_mutex_unlock(&p->lock);
}

static void *peer_thread(void *arg)
{
        TestPeer *p = arg;
        while (!p->stop) {
                void *buf = NULL;
                size_t len = 0;
                int rv = nng_recv(p->sock, &buf, &len, NNG_FLAG_ALLOC);
                if (rv == 0) {
                        handle(p, buf, len);
                        nng_free(buf, len);
                } else if (rv == NNG_ECLOSED)
                        break;
                if (p->welcomed && p->o.heartbeat_ms && mono_ms() >= p->next_hb) {
                        p->next_hb = mono_ms() + p->o.heartbeat_ms;
                        _cleanup_(proto_writer_done) ProtoWriter w;
                        proto_writer_init(&w);
                        proto_write_map_begin(&w);
                        proto_write_kv_uint(&w, "seq", ++p->hb_seq);
                        proto_write_kv_uint(&w, "sent_at_ms", (uint64_t)mono_ms());
                        proto_write_end(&w);
                        peer_send(p, "link.heartbeat", NULL, &w);
                }
        }
        return NULL;
}

TestPeer *peer_start(const PeerOptions *o)
{
        TestPeer *p = calloc(1, sizeof(*p));
        cr_assert(p);
        p->o = *o;
        if (o->discovery)
                p->discovery_text = json_dumps(o->discovery, JSON_COMPACT);
        pthread_mutex_init(&p->lock, NULL);
        cr_assert_eq(nng_pair1_open(&p->sock), 0);
        nng_socket_set_ms(p->sock, NNG_OPT_RECVTIMEO, 50);
        nng_socket_set_ms(p->sock, NNG_OPT_SENDTIMEO, 1000);
        nng_socket_set_ms(p->sock, NNG_OPT_RECONNMINT, o->no_redial ? 3600000 : 100);
        nng_socket_set_ms(p->sock, NNG_OPT_RECONNMAXT, o->no_redial ? 3600000 : 300);
        nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, PROTO_MAX_MESSAGE);
        cr_assert_eq(nng_tls_config_alloc(&p->tls, NNG_TLS_MODE_CLIENT), 0);
        cr_assert_eq(nng_tls_config_own_cert(p->tls, o->tls_cert, o->tls_key, NULL), 0);
        cr_assert_eq(nng_tls_config_ca_chain(p->tls, o->ca_pem, NULL), 0);
        nng_tls_config_server_name(p->tls, "127.0.0.1");
        nng_tls_config_auth_mode(p->tls, NNG_TLS_AUTH_MODE_REQUIRED);
        cr_assert_eq(nng_dialer_create(&p->dialer, p->sock, o->endpoint), 0, "%s", o->endpoint);
        cr_assert_eq(nng_dialer_set_ptr(p->dialer, NNG_OPT_TLS_CONFIG, p->tls), 0);
        cr_assert_eq(nng_dialer_start(p->dialer, NNG_FLAG_NONBLOCK), 0);
        cr_assert_eq(pthread_create(&p->thread, NULL, peer_thread, p), 0);
        return p;
}

/* nng 1.5.2's nng_close can block for good when it races a pipe's teardown
 * (fixed in later nng); a test must end on its own, so the close runs on a
 * thread of its own and is waited for a bounded time. A peer whose close
 * does not return is abandoned (kept reachable, reported on stderr). */
#define PEER_STOP_MS 15000

static struct {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        TestPeer *abandoned[16];
        size_t n_abandoned;
} stops = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0};

typedef struct PeerClose {
        nng_socket sock;
        bool done;
} PeerClose;

static void *close_main(void *arg)
{
        PeerClose *c = arg;
        nng_close(c->sock);
        pthread_mutex_lock(&stops.lock);
        c->done = true;
        pthread_cond_broadcast(&stops.cond);
        pthread_mutex_unlock(&stops.lock);
        return NULL;
}

static bool close_bounded(TestPeer *p)
{
        PeerClose *c = calloc(1, sizeof(*c));
        cr_assert(c);
        c->sock = p->sock;
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, close_main, c), 0);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += PEER_STOP_MS / 1000;
        pthread_mutex_lock(&stops.lock);
        while (!c->done)
                if (pthread_cond_timedwait(&stops.cond, &stops.lock, &until) != 0)
                        break;
        bool done = c->done;
        pthread_mutex_unlock(&stops.lock);
        if (!done) {
                (void)pthread_detach(t); /* c stays with the thread */
                return false;
        }
        pthread_join(t, NULL);
        free(c);
        struct timespec jt;
        clock_gettime(CLOCK_REALTIME, &jt);
        jt.tv_sec += PEER_STOP_MS / 1000;
        return pthread_timedjoin_np(p->thread, NULL, &jt) == 0;
}

void peer_stop(TestPeer *p)
{
        if (!p)
                return;
        p->stop = true;
        if (!close_bounded(p)) {
                fprintf(stderr,
                        "test-peer: nng_close or the peer thread did not finish in %d ms "
                        "(nng 1.5.2 close race); the peer is abandoned\n",
                        PEER_STOP_MS);
                pthread_mutex_lock(&stops.lock);
                if (stops.n_abandoned < sizeof(stops.abandoned) / sizeof(stops.abandoned[0]))
                        stops.abandoned[stops.n_abandoned++] = p;
                pthread_mutex_unlock(&stops.lock);
                return;
        }
        nng_tls_config_free(p->tls);
        pthread_mutex_destroy(&p->lock);
        free(p->discovery_text);
        free(p);
}

PeerStats peer_stats(TestPeer *p)
{
        pthread_mutex_lock(&p->lock);
        PeerStats s = p->stats;
        pthread_mutex_unlock(&p->lock);
        return s;
}

bool peer_wait(TestPeer *p, bool (*pred)(const PeerStats *s, void *u), void *u,
               long long timeout_ms)
{
        long long deadline = mono_ms() + timeout_ms;
        for (;;) {
                PeerStats s = peer_stats(p);
                if (pred(&s, u))
                        return true;
                if (mono_ms() > deadline)
                        return false;
                struct timespec ts = {0, 5 * 1000000L};
                nanosleep(&ts, NULL);
        }
}

static bool have_welcomes(const PeerStats *s, void *u)
{
        return s->welcomes >= *(int *)u;
}

bool peer_wait_welcomes(TestPeer *p, int n, long long timeout_ms)
{
        return peer_wait(p, have_welcomes, &n, timeout_ms);
}

static bool have_error(const PeerStats *s, void *u)
{
        return streq(s->last_error, u);
}

bool peer_wait_error(TestPeer *p, const char *code, long long timeout_ms)
{
        return peer_wait(p, have_error, (void *)code, timeout_ms);
}
