/* SPDX-License-Identifier: MIT */
/* The agent's end of the link against a test controller (link-peer.h):
 * mutual TLS, the challenge and its proof, hello, welcome, heartbeats, and
 * every way a connection ends (closed, hung, refused, version mismatch,
 * untrusted controller) leading to a redial with backoff, never a spin.
 *
 * The machine running these may be loaded: waits are generous deadlines
 * (PEER_WAIT_MS), the agent's own timeouts are long wherever the test is not
 * about them, states that last only a moment are observed through counters
 * (a poll can miss them), and timing claims are lower bounds. */

#include <pthread.h>
#include <uv.h>

#include "link-peer.h"
#include "link.h"
#include "proof.h"
#include "version.h"

typedef struct Agent {
        uv_loop_t loop;
        uv_async_t stop;
        pthread_t thread;
        Link *link;
        bool running; /* the loop thread runs: teardown stops it, also after a failure */
        atomic_int state;
        atomic_int commands;
        atomic_int dials_seen;
        atomic_int backoffs_seen;
} Agent;

static Certs certs;
static Peer peer;
static Agent agent;

static int hello(void *userdata, ProtoWriter *w)
{
        proto_write_map_begin(w);
        proto_write_kv_str(w, "agent_version", GPUSLICE_VERSION);
        proto_write_kv_str(w, "fingerprint", "sha256:test");
        proto_write_kv_bool(w, "simulated", true);
        proto_write_key(w, "applied");
        proto_write_array_begin(w);
        proto_write_str(w, "cmd_old");
        proto_write_end(w);
        proto_write_key(w, "assignments");
        proto_write_map_begin(w);
        proto_write_end(w);
        return proto_write_end(w);
}

static void on_state(void *userdata, LinkState s)
{
        Agent *a = userdata;
        atomic_store(&a->state, (int)s);
        if (s == LINK_DIALING)
                atomic_fetch_add(&a->dials_seen, 1);
        else if (s == LINK_BACKOFF)
                atomic_fetch_add(&a->backoffs_seen, 1);
}

static void on_command(void *userdata, const ProtoEnvelope *env)
{
        Agent *a = userdata;
        atomic_fetch_add(&a->commands, 1);
}

static void on_stop(uv_async_t *h)
{
        Agent *a = h->data;
        link_close(a->link, NULL, NULL);
        uv_close((uv_handle_t *)&a->stop, NULL);
}

static void *loop_thread(void *arg)
{
        Agent *a = arg;
        uv_run(&a->loop, UV_RUN_DEFAULT);
        return NULL;
}

static void agent_start(const char *cert, unsigned hb_interval, unsigned hb_timeout)
{
        char *ep = peer_endpoint(&peer);
        memset(&agent, 0, sizeof(agent));
        cr_assert_eq(uv_loop_init(&agent.loop), 0);
        const LinkOptions o = {
            .endpoint = ep,
            .node_id = PEER_NODE_ID,
            .key_file = certs.node_key,
            .cert_file = cert ? cert : certs.node_cert,
            .ca_file = certs.ca,
            .heartbeat_interval_s = hb_interval,
            .heartbeat_timeout_s = hb_timeout,
        };
        const LinkCallbacks cb = {
            .hello = hello, .command = on_command, .state_changed = on_state, .userdata = &agent};
        cr_assert_eq(link_new(&agent.loop, &o, &cb, &agent.link), 0);
        free(ep);
        uv_async_init(&agent.loop, &agent.stop, on_stop);
        agent.stop.data = &agent;
        link_start(agent.link);
        cr_assert_eq(pthread_create(&agent.thread, NULL, loop_thread, &agent), 0);
        agent.running = true;
}

/* Closes the link on its own loop thread and joins it. Teardown calls this
 * too: a failed assertion ends the test function early, and the loop thread
 * must not outlive the peer, the certificates and the process's exit
 * handlers (that ended in crashes and hangs after the failure). */
static void agent_stop(void)
{
        if (!agent.running)
                return;
        agent.running = false;
        uv_async_send(&agent.stop);
        pthread_join(agent.thread, NULL);
        cr_expect_eq(uv_loop_close(&agent.loop), 0, "every handle closed");
}

static void setup(void)
{
        certs_make(&certs);
        peer_start(&peer, &certs, certs.server_cert, certs.server_key, 0);
}

static void teardown(void)
{
        agent_stop();
        peer_stop(&peer);
        certs_free(&certs);
}

/* One timeout for every test: criterion 2.4.1 leaks when they differ. Above
 * the longest sum of PEER_WAIT_MS deadlines a failing test can reach. */
TestSuite(link, .init = setup, .fini = teardown, .timeout = 180);

/* The agent's own heartbeat timeout where a test is not about it: it also
 * bounds the wait for the challenge and the welcome, which the test thread
 * sends only when the scheduler lets it. */
#define AGENT_PATIENT_S 60

/* Challenge -> auth (verified as the controller would) -> hello -> welcome.
 * Returns the time just before the welcome was sent: the agent's heartbeat
 * clock starts after it. */
static long long handshake(unsigned interval_s, unsigned timeout_s)
{
        int before = atomic_load(&peer.pipes_added);
        cr_assert(WAIT_UNTIL(atomic_load(&peer.pipes_added) > before ||
                                 atomic_load(&agent.state) == LINK_AWAIT_CHALLENGE,
                             PEER_WAIT_MS),
                  "the agent connects");
        unsigned char nonce[32];
        peer_send_challenge(&peer, nonce);
        ProtoEnvelope *auth = peer_recv_type(&peer, "link.auth", PEER_WAIT_MS);
        cr_assert(auth, "the agent answers the challenge");
        cr_expect_str_eq(auth->node, PEER_NODE_ID);
        char *pem = NULL;
        const void *sig;
        size_t sig_len;
        cr_assert_eq(
            proto_get_strdup(&auth->body, "certificate_pem", PROTO_REQUIRED, 0, &pem, NULL), 1);
        cr_assert_eq(
            proto_get_bin(&auth->body, "signature", PROTO_REQUIRED, 0, &sig, &sig_len, NULL), 1);
        cr_expect_eq(proof_verify(pem, nonce, 32, PEER_NODE_ID, sig, sig_len), 0,
                     "the signature verifies with the certificate's key");
        unsigned char other[32] = {0};
        cr_expect_eq(proof_verify(pem, other, 32, PEER_NODE_ID, sig, sig_len), -EBADMSG,
                     "and only for this nonce");
        cr_expect_eq(proof_verify(pem, nonce, 32, "nod_BBBBBBBBBBBBBBBBBBBBBB", sig, sig_len),
                     -EBADMSG, "and only for this node id");
        char *want = slurp(certs.node_cert);
        cr_expect_str_eq(pem, want);
        free(want);
        free(pem);
        proto_envelope_free(auth);

        ProtoEnvelope *h = peer_recv_type(&peer, "link.hello", PEER_WAIT_MS);
        cr_assert(h, "hello follows the proof");
        char v[32];
        cr_expect_eq(proto_get_str(&h->body, "agent_version", PROTO_REQUIRED, v, sizeof(v), NULL),
                     1);
        cr_expect_str_eq(v, GPUSLICE_VERSION);
        ProtoValue applied;
        size_t n;
        cr_expect_eq(proto_get_array(&h->body, "applied", PROTO_REQUIRED, 256, &applied, &n, NULL),
                     1);
        cr_expect_eq(n, 1);
        proto_envelope_free(h);
        long long t_welcome = peer_now_ms();
        peer_send_welcome(&peer, interval_s, timeout_s);
        cr_assert(WAIT_UNTIL(atomic_load(&agent.state) == LINK_READY, PEER_WAIT_MS), "welcomed");
        return t_welcome;
}

Test(link, handshake_heartbeats_and_commands)
{
        /* Heartbeats every second, but a late ack (a busy test thread) must
         * not count as a hung connection here. */
        agent_start(NULL, 1, AGENT_PATIENT_S);
        handshake(1, AGENT_PATIENT_S);
        for (int i = 0; i < 3; i++) {
                ProtoEnvelope *hb = peer_recv_type(&peer, "link.heartbeat", PEER_WAIT_MS);
                cr_assert(hb, "heartbeat %d arrives at the welcome's interval", i);
                uint64_t seq;
                cr_expect_eq(proto_get_uint(&hb->body, "seq", PROTO_REQUIRED, &seq, NULL), 1);
                cr_expect_eq(seq, (uint64_t)i + 1);
                cr_expect_eq(hb->epoch, peer.epoch, "the agent echoes the controller's epoch");
                peer_ack(&peer, hb);
                proto_envelope_free(hb);
        }
        cr_expect_eq(atomic_load(&agent.state), LINK_READY, "acked heartbeats keep the link up");
        cr_expect_eq(atomic_load(&peer.pipes_added), 1, "one connection all along");

        ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "discovery_id", "dsc_1");
        proto_write_end(&w);
        peer_send(&peer, "command.discover", "cmd_1", &w);
        proto_writer_done(&w);
        cr_expect(WAIT_UNTIL(atomic_load(&agent.commands) == 1, PEER_WAIT_MS),
                  "commands reach the table");
        agent_stop();
}

Test(link, a_hung_connection_is_detected_by_missing_acks)
{
        /* Patient until the welcome, which then asks for a 2 s timeout. */
        agent_start(NULL, 1, AGENT_PATIENT_S);
        long long t0 = handshake(1, 2);
        /* The controller's end stays open but never acks. */
        cr_assert(WAIT_UNTIL(atomic_load(&agent.state) != LINK_READY, PEER_WAIT_MS),
                  "the agent gives up on the hung connection");
        long long waited = peer_now_ms() - t0;
        cr_expect(waited >= 2000, "not before the timeout (%lld ms)", waited);
        cr_assert(WAIT_UNTIL(atomic_load(&peer.pipes_added) >= 2, PEER_WAIT_MS),
                  "and redials (removed %d)", atomic_load(&peer.pipes_removed));
        handshake(1, AGENT_PATIENT_S);
        agent_stop();
}

Test(link, a_closed_connection_redials_with_backoff)
{
        agent_start(NULL, 1, AGENT_PATIENT_S);
        handshake(1, AGENT_PATIENT_S);
        int port = peer.port;
        int dials = atomic_load(&agent.dials_seen);
        long long t0 = peer_now_ms();
        peer_stop(&peer);
        /* Redials fail while the controller is down: the first waits at least
         * 0.5 s - 25 %, the next 1 s - 25 %. A spin would be done in moments. */
        cr_assert(WAIT_UNTIL(atomic_load(&agent.dials_seen) >= dials + 2, PEER_WAIT_MS),
                  "the agent redials");
        long long waited = peer_now_ms() - t0;
        cr_expect(waited >= 375 + 750, "backoff, not a spin: two redials in %lld ms", waited);
        memset(&peer, 0, sizeof(peer));
        peer_start(&peer, &certs, certs.server_cert, certs.server_key, port);
        handshake(1, AGENT_PATIENT_S);
        agent_stop();
}

/* After a refusal the agent backs off: a few dials in 1.5 s at most (a slow
 * machine makes fewer, never more). */
static void expect_no_spin(void)
{
        int before = atomic_load(&peer.pipes_added);
        WAIT_UNTIL(false, 1500);
        cr_expect_leq(atomic_load(&peer.pipes_added) - before, 2, "no spin after a refusal");
}

Test(link, a_refusal_from_the_controller_backs_off)
{
        agent_start(NULL, 1, AGENT_PATIENT_S);
        cr_assert(WAIT_UNTIL(atomic_load(&peer.pipes_added) >= 1, PEER_WAIT_MS));
        unsigned char nonce[32];
        peer_send_challenge(&peer, nonce);
        ProtoEnvelope *auth = peer_recv_type(&peer, "link.auth", PEER_WAIT_MS);
        cr_assert(auth);
        proto_envelope_free(auth);
        ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "code", "certificate_revoked");
        proto_write_kv_str(&w, "message", "node deleted");
        proto_write_end(&w);
        int backoffs = atomic_load(&agent.backoffs_seen);
        peer_send(&peer, "link.error", "msg_err", &w);
        proto_writer_done(&w);
        /* BACKOFF lasts about 0.5 s before the redial: count it, not poll it. */
        cr_assert(WAIT_UNTIL(atomic_load(&agent.backoffs_seen) > backoffs, PEER_WAIT_MS),
                  "the agent backs off");
        expect_no_spin();
        agent_stop();
}

Test(link, another_protocol_version_is_refused_clearly)
{
        agent_start(NULL, 1, AGENT_PATIENT_S);
        cr_assert(WAIT_UNTIL(atomic_load(&peer.pipes_added) >= 1, PEER_WAIT_MS));
        int backoffs = atomic_load(&agent.backoffs_seen);
        /* A challenge from a controller speaking version 2: byte 3 is `v`. */
        void *buf;
        size_t len;
        const ProtoHeader h = {.type = "link.challenge", .id = "m1", .node = "", .epoch = 1};
        cr_assert_eq(proto_encode(&h, NULL, 0, &buf, &len), 0);
        cr_assert_eq(((unsigned char *)buf)[3], 1);
        ((unsigned char *)buf)[3] = 2;
        peer_send_raw(&peer, buf, len);
        free(buf);
        ProtoEnvelope *e = peer_recv_type(&peer, "link.error", PEER_WAIT_MS);
        cr_assert(e, "the agent says why it refuses");
        char code[32];
        uint64_t ours = 0, theirs = 0;
        cr_expect_eq(proto_get_str(&e->body, "code", PROTO_REQUIRED, code, sizeof(code), NULL), 1);
        cr_expect_str_eq(code, "version_mismatch");
        cr_expect_eq(proto_get_uint(&e->body, "ours", PROTO_REQUIRED, &ours, NULL), 1);
        cr_expect_eq(proto_get_uint(&e->body, "theirs", PROTO_REQUIRED, &theirs, NULL), 1);
        cr_expect_eq(ours, PROTO_VERSION);
        cr_expect_eq(theirs, 2);
        proto_envelope_free(e);
        cr_assert(WAIT_UNTIL(atomic_load(&agent.backoffs_seen) > backoffs, PEER_WAIT_MS),
                  "the agent backs off");
        expect_no_spin();
        agent_stop();
}

Test(link, a_silent_controller_is_left_after_the_timeout)
{
        agent_start(NULL, 1, 1);
        cr_assert(WAIT_UNTIL(atomic_load(&peer.pipes_added) >= 1, PEER_WAIT_MS));
        /* No challenge: the agent hangs up after heartbeat_timeout_s and redials. */
        cr_assert(WAIT_UNTIL(atomic_load(&peer.pipes_added) >= 2, PEER_WAIT_MS), "redialed");
        agent_stop();
}

Test(link, a_controller_with_another_ca_is_not_trusted)
{
        peer_stop(&peer);
        memset(&peer, 0, sizeof(peer));
        peer_start(&peer, &certs, certs.rogue_cert, certs.rogue_key, 0);
        agent_start(NULL, 1, AGENT_PATIENT_S);
        cr_assert(WAIT_UNTIL(atomic_load(&agent.dials_seen) >= 2, PEER_WAIT_MS),
                  "the failed handshake leads to a redial");
        cr_expect_eq(atomic_load(&peer.pipes_added), 0, "no pipe: the TLS handshake failed");
        cr_expect_neq(atomic_load(&agent.state), LINK_AWAIT_CHALLENGE);
        agent_stop();
}

Test(link, sending_before_the_welcome_is_refused)
{
        agent_start(NULL, 1, AGENT_PATIENT_S);
        /* link_send is loop-thread only; before any welcome the state says no. */
        cr_assert(WAIT_UNTIL(atomic_load(&peer.pipes_added) >= 1, PEER_WAIT_MS));
        cr_expect_neq(atomic_load(&agent.state), LINK_READY);
        agent_stop();
}

Test(link, bad_options_are_refused_naming_the_problem)
{
        uv_loop_t loop;
        uv_loop_init(&loop);
        Link *l = NULL;
        const LinkCallbacks cb = {.hello = hello};
        LinkOptions o = {.endpoint = "tcp://127.0.0.1:1",
                         .node_id = PEER_NODE_ID,
                         .key_file = certs.node_key,
                         .cert_file = certs.node_cert,
                         .ca_file = certs.ca};
        cr_expect_eq(link_new(&loop, &o, &cb, &l), -EINVAL, "tls+tcp only");
        o.endpoint = "tls+tcp://127.0.0.1:1";
        o.node_id = "";
        cr_expect_eq(link_new(&loop, &o, &cb, &l), -EINVAL, "node id required");
        o.node_id = PEER_NODE_ID;
        o.key_file = "/nonexistent/node.key";
        cr_expect_eq(link_new(&loop, &o, &cb, &l), -ENOENT, "missing key file");
        o.key_file = certs.node_cert;
        cr_expect_lt(link_new(&loop, &o, &cb, &l), 0, "a certificate is not a key");
        cr_expect_eq(uv_loop_close(&loop), 0);
}
