/* SPDX-License-Identifier: MIT */
#pragma once

/* A test-only controller end of the agent link: an nng pair1 listener over
 * tls+tcp on loopback with mutual TLS, speaking the messages of
 * docs/agent-link.md by hand, plus the certificates both ends need (made
 * with the openssl command line, as bootstrap.sh and a CA would). Every
 * wait is bounded by a deadline. */

#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/tls/tls.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include "macro.h"
#include "proto.h"

#define PEER_NODE_ID "nod_AAAAAAAAAAAAAAAAAAAAAA"

/* How long a test waits for something that should happen "soon". The tests
 * share loaded machines (sanitizers, parallel builds), so this is a deadline
 * for a hang, never a measure of speed: assertions about timing use lower
 * bounds (it waited at least so long) or counts, which a slow machine cannot
 * break. */
#define PEER_WAIT_MS 30000

typedef struct Certs {
        char *dir;
        char *ca, *server_cert, *server_key, *node_cert, *node_key;
        char *rogue_cert, *rogue_key; /* a server identity from another CA */
} Certs;

static inline long long peer_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void sh(const char *fmt, ...)
{
        va_list ap;
        char *cmd;
        va_start(ap, fmt);
        cr_assert(vasprintf(&cmd, fmt, ap) >= 0);
        va_end(ap);
        int st = system(cmd);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "command failed: %s", cmd);
        free(cmd);
}

static inline char *pathf(const char *dir, const char *name)
{
        char *p;
        cr_assert(asprintf(&p, "%s/%s", dir, name) >= 0);
        return p;
}

/* A CA, a server certificate for 127.0.0.1/localhost, a node certificate
 * (CN = PEER_NODE_ID) and a rogue server certificate from another CA. */
static inline void certs_make(Certs *c)
{
        char tmpl[] = "/tmp/gpuslice-certs-XXXXXX";
        cr_assert(mkdtemp(tmpl));
        c->dir = strdup(tmpl);
        const char *d = c->dir;
        const char *ec = "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out";
        sh("cd %s && %s ca.key 2>/dev/null && openssl req -x509 -new -key ca.key -subj "
           "/CN=gpuslice-test-ca -days 2 -out ca.crt 2>/dev/null",
           d, ec);
        sh("cd %s && printf "
           "'subjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1\\nextendedKeyUsage="
           "serverAuth\\n' > srv.ext && "
           "%s server.key 2>/dev/null && openssl req -new -key server.key -subj /CN=localhost "
           "-out server.csr 2>/dev/null && openssl x509 -req -in server.csr -CA ca.crt -CAkey "
           "ca.key -CAcreateserial -days 2 -extfile srv.ext -out server.crt 2>/dev/null",
           d, ec);
        sh("cd %s && printf 'extendedKeyUsage=clientAuth\\n' > node.ext && %s node.key 2>/dev/null "
           "&& "
           "openssl req -new -key node.key -subj /CN=%s -out node.csr 2>/dev/null && openssl x509 "
           "-req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile node.ext "
           "-out node.crt 2>/dev/null && chmod 600 node.key",
           d, ec, PEER_NODE_ID);
        sh("cd %s && %s rogue-ca.key 2>/dev/null && openssl req -x509 -new -key rogue-ca.key "
           "-subj /CN=rogue -days 2 -out rogue-ca.crt 2>/dev/null && %s rogue.key 2>/dev/null && "
           "openssl req -new -key rogue.key -subj /CN=localhost -out rogue.csr 2>/dev/null && "
           "openssl x509 -req -in rogue.csr -CA rogue-ca.crt -CAkey rogue-ca.key -CAcreateserial "
           "-days 2 -extfile srv.ext -out rogue.crt 2>/dev/null",
           d, ec, ec);
        c->ca = pathf(d, "ca.crt");
        c->server_cert = pathf(d, "server.crt");
        c->server_key = pathf(d, "server.key");
        c->node_cert = pathf(d, "node.crt");
        c->node_key = pathf(d, "node.key");
        c->rogue_cert = pathf(d, "rogue.crt");
        c->rogue_key = pathf(d, "rogue.key");
}

static inline void certs_free(Certs *c)
{
        if (c->dir && startswith(c->dir, "/tmp/gpuslice-"))
                sh("rm -rf '%s'", c->dir);
        free(c->dir);
        free(c->ca);
        free(c->server_cert);
        free(c->server_key);
        free(c->node_cert);
        free(c->node_key);
        free(c->rogue_cert);
        free(c->rogue_key);
        memset(c, 0, sizeof(*c));
}

static inline char *slurp(const char *path)
{
        FILE *f = fopen(path, "re");
        cr_assert(f, "open %s", path);
        char *buf = NULL;
        size_t n = 0;
        cr_assert(getdelim(&buf, &n, '\0', f) >= 0);
        fclose(f);
        return buf;
}

typedef struct Peer {
        nng_socket sock;
        nng_listener listener;
        nng_tls_config *tls;
        int port;
        atomic_int pipes_added, pipes_removed;
        uint64_t epoch;
} Peer;

static void peer_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
        Peer *peer = arg;
        if (ev == NNG_PIPE_EV_ADD_POST)
                atomic_fetch_add(&peer->pipes_added, 1);
        else if (ev == NNG_PIPE_EV_REM_POST)
                atomic_fetch_add(&peer->pipes_removed, 1);
}

/* Listens on 127.0.0.1:port (0: a free one) with cert/key as the server. */
static inline void peer_start(Peer *p, const Certs *c, const char *cert, const char *key, int port)
{
        char url[64];
        p->epoch = 7;
        cr_assert_eq(nng_pair1_open(&p->sock), 0);
        nng_socket_set_ms(p->sock, NNG_OPT_RECVTIMEO, 200);
        /* A send may wait for the agent's (re)dialed pipe to attach. */
        nng_socket_set_ms(p->sock, NNG_OPT_SENDTIMEO, PEER_WAIT_MS);
        nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, PROTO_MAX_MESSAGE);
        /* Queue what arrives while the test is not reading, so the pipe keeps
         * reading and notices when the agent hangs up. */
        nng_socket_set_int(p->sock, NNG_OPT_RECVBUF, 128);
        nng_pipe_notify(p->sock, NNG_PIPE_EV_ADD_POST, peer_pipe_cb, p);
        nng_pipe_notify(p->sock, NNG_PIPE_EV_REM_POST, peer_pipe_cb, p);
        cr_assert_eq(nng_tls_config_alloc(&p->tls, NNG_TLS_MODE_SERVER), 0);
        cr_assert_eq(nng_tls_config_auth_mode(p->tls, NNG_TLS_AUTH_MODE_REQUIRED), 0);
        cr_assert_eq(nng_tls_config_ca_file(p->tls, c->ca), 0);
        char *cp = slurp(cert), *kp = slurp(key);
        cr_assert_eq(nng_tls_config_own_cert(p->tls, cp, kp, NULL), 0);
        free(cp);
        free(kp);
        snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", port);
        cr_assert_eq(nng_listener_create(&p->listener, p->sock, url), 0);
        cr_assert_eq(nng_listener_set_ptr(p->listener, NNG_OPT_TLS_CONFIG, p->tls), 0);
        int rv = nng_listener_start(p->listener, 0);
        cr_assert_eq(rv, 0, "listen %s: %s", url, nng_strerror(rv));
        cr_assert_eq(nng_listener_get_int(p->listener, NNG_OPT_TCP_BOUND_PORT, &p->port), 0);
}

static inline void peer_stop(Peer *p)
{
        nng_close(p->sock);
        if (p->tls)
                nng_tls_config_free(p->tls);
        p->tls = NULL;
}

static inline char *peer_endpoint(const Peer *p)
{
        char *e;
        cr_assert(asprintf(&e, "tls+tcp://127.0.0.1:%d", p->port) >= 0);
        return e;
}

/* Waits until pred holds or the deadline passes. */
#define WAIT_UNTIL(cond, timeout_ms)                                                               \
        ({                                                                                         \
                long long _dl_ = peer_now_ms() + (timeout_ms);                                     \
                bool _ok_;                                                                         \
                while (!(_ok_ = (cond)) && peer_now_ms() < _dl_) {                                 \
                        struct timespec _ts_ = {0, 10 * 1000 * 1000};                              \
                        nanosleep(&_ts_, NULL);                                                    \
                }                                                                                  \
                _ok_;                                                                              \
        })

/* Next message of the given type (others are skipped, heartbeats too
 * unless asked for), decoded; NULL at the deadline. */
static inline ProtoEnvelope *peer_recv_type(Peer *p, const char *type, long long timeout_ms)
{
        long long dl = peer_now_ms() + timeout_ms;
        while (peer_now_ms() < dl) {
                nng_msg *m;
                if (nng_recvmsg(p->sock, &m, 0) != 0)
                        continue;
                ProtoEnvelope *env = NULL;
                char *reason = NULL;
                int r = proto_decode(nng_msg_body(m), nng_msg_len(m), &env, &reason);
                nng_msg_free(m);
                cr_assert_eq(r, 0, "the agent sent a message the codec refuses: %s", reason);
                free(reason);
                if (!type || streq(env->type, type))
                        return env;
                proto_envelope_free(env);
        }
        return NULL;
}

static inline void peer_send_raw(Peer *p, const void *buf, size_t len)
{
        nng_msg *m;
        cr_assert_eq(nng_msg_alloc(&m, 0), 0);
        cr_assert_eq(nng_msg_append(m, buf, len), 0);
        int rv = nng_sendmsg(p->sock, m, 0);
        cr_assert_eq(rv, 0, "peer send: %s", nng_strerror(rv));
}

static inline void peer_send(Peer *p, const char *type, const char *id, ProtoWriter *body)
{
        void *buf = NULL;
        size_t len;
        const ProtoHeader h = {.type = type, .id = id, .node = PEER_NODE_ID, .epoch = p->epoch};
        int r = body ? proto_encode_writer(&h, body, &buf, &len)
                     : proto_encode(&h, NULL, 0, &buf, &len);
        cr_assert_eq(r, 0);
        peer_send_raw(p, buf, len);
        free(buf);
}

static inline void peer_send_challenge(Peer *p, unsigned char nonce[32])
{
        for (int i = 0; i < 32; i++)
                nonce[i] = (unsigned char)(rand() & 0xff);
        ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_key(&w, "nonce");
        proto_write_bin(&w, nonce, 32);
        proto_write_kv_uint(&w, "controller_epoch", p->epoch);
        proto_write_end(&w);
        peer_send(p, "link.challenge", "msg_challenge", &w);
        proto_writer_done(&w);
}

static inline void peer_send_welcome(Peer *p, unsigned interval_s, unsigned timeout_s)
{
        ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_uint(&w, "epoch", p->epoch);
        proto_write_kv_uint(&w, "heartbeat_interval_s", interval_s);
        proto_write_kv_uint(&w, "heartbeat_timeout_s", timeout_s);
        proto_write_end(&w);
        peer_send(p, "link.welcome", "msg_welcome", &w);
        proto_writer_done(&w);
}

static inline void peer_ack(Peer *p, const ProtoEnvelope *hb)
{
        uint64_t seq = 0;
        cr_assert_eq(proto_get_uint(&hb->body, "seq", PROTO_REQUIRED, &seq, NULL), 1);
        ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_uint(&w, "seq", seq);
        proto_write_end(&w);
        peer_send(p, "link.heartbeat_ack", "msg_ack", &w);
        proto_writer_done(&w);
}
