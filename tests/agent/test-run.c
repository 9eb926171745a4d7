/* SPDX-License-Identifier: MIT */
/* The real `gpuslice-agent run --simulate` process against the test
 * controller end (link-peer.h): command.discover answered with the simulated
 * host's discovery document, a repeated command id answered from the journal
 * without applying it again, the journal surviving a clean restart and a
 * kill -9 in the middle of a discovery, refusals for unknown commands. */

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "link-peer.h"

static Certs certs;
static Peer peer;
static char *dir, *conf, *log_path;
static pid_t agent_pid;
static int pipes_before_spawn; /* the connection the last spawned agent makes comes after these */

static char *agent_bin(void)
{
        const char *b = getenv("GPUSLICE_TEST_BUILD_ROOT");
        cr_assert(b, "GPUSLICE_TEST_BUILD_ROOT is not set (run through meson test)");
        return pathf(b, "agent/gpuslice-agent");
}

static void write_conf(void)
{
        const char *src = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        cr_assert(src);
        FILE *f = fopen(conf, "we");
        cr_assert(f);
        fprintf(f,
                "# written by test-run.c\nagent_endpoint = tls+tcp://127.0.0.1:%d\n"
                "node_id = %s\nkey_file = %s\ncert_file = %s\nca_file = %s\n"
                "state_dir = %s/state\nsimulate = true\n"
                "simulate_topology = %s/tests/fixtures/topology/mpibind/eas-tioga.xml\n"
                /* Heartbeats flow, but the timeout is long: the test thread
                 * answers the challenge and acks only when the (possibly
                 * loaded) machine lets it, and a redial would lose a reply. */
                "heartbeat_interval_s = 1\nheartbeat_timeout_s = 60\nlog_level = info\n",
                peer.port, PEER_NODE_ID, certs.node_key, certs.node_cert, certs.ca, dir, src);
        fclose(f);
}

static void agent_spawn(const char *extra_env)
{
        _cleanup_free_ char *bin = agent_bin();
        /* Counted before the fork: the agent may connect before we look. */
        pipes_before_spawn = atomic_load(&peer.pipes_added);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                if (fd < 0)
                        _exit(127);
                dup2(fd, 2);
                if (extra_env)
                        putenv((char *)extra_env);
                execl(bin, bin, "run", "--config", conf, "--simulate", (char *)NULL);
                _exit(127);
        }
        agent_pid = pid;
}

static int agent_wait(long long timeout_ms)
{
        long long dl = peer_now_ms() + timeout_ms;
        int st;
        while (peer_now_ms() < dl) {
                pid_t r = waitpid(agent_pid, &st, WNOHANG);
                if (r == agent_pid) {
                        agent_pid = 0;
                        return st;
                }
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        return -1;
}

static void agent_kill9(void)
{
        if (agent_pid > 0) {
                kill(agent_pid, SIGKILL);
                waitpid(agent_pid, NULL, 0);
                agent_pid = 0;
        }
}

static bool log_contains(const char *needle)
{
        FILE *f = fopen(log_path, "re");
        if (!f)
                return false;
        char *buf = NULL;
        size_t n = 0;
        bool found = getdelim(&buf, &n, '\0', f) >= 0 && strstr(buf, needle);
        free(buf);
        fclose(f);
        return found;
}

static void setup(void)
{
        certs_make(&certs);
        peer_start(&peer, &certs, certs.server_cert, certs.server_key, 0);
        char tmpl[] = "/tmp/gpuslice-run-XXXXXX";
        cr_assert(mkdtemp(tmpl));
        dir = strdup(tmpl);
        conf = pathf(dir, "agent.conf");
        log_path = pathf(dir, "agent.log");
        write_conf();
}

static void teardown(void)
{
        agent_kill9();
        peer_stop(&peer);
        certs_free(&certs);
        if (dir && startswith(dir, "/tmp/gpuslice-"))
                sh("rm -rf '%s'", dir);
        free(dir);
        free(conf);
        free(log_path);
}

/* One timeout for every test (criterion 2.4.1 leaks when they differ), above
 * the deadlines a failing test can add up. */
TestSuite(run, .init = setup, .fini = teardown, .timeout = 240);

/* Waits for the spawned agent's connection, proves it, returns the hello. */
static ProtoEnvelope *handshake(void)
{
        cr_assert(WAIT_UNTIL(atomic_load(&peer.pipes_added) > pipes_before_spawn, PEER_WAIT_MS),
                  "the agent connects");
        unsigned char nonce[32];
        peer_send_challenge(&peer, nonce);
        ProtoEnvelope *auth = peer_recv_type(&peer, "link.auth", PEER_WAIT_MS);
        cr_assert(auth, "the agent proves its identity");
        proto_envelope_free(auth);
        ProtoEnvelope *hello = peer_recv_type(&peer, "link.hello", PEER_WAIT_MS);
        cr_assert(hello);
        peer_send_welcome(&peer, 1, 60);
        return hello;
}

static void send_discover(const char *id, const char *discovery_id)
{
        ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        if (discovery_id)
                proto_write_kv_str(&w, "discovery_id", discovery_id);
        proto_write_end(&w);
        peer_send(&peer, "command.discover", id, &w);
        proto_writer_done(&w);
}

/* The next reply (heartbeats are acked while waiting). */
static ProtoEnvelope *recv_reply(long long timeout_ms)
{
        long long dl = peer_now_ms() + timeout_ms;
        while (peer_now_ms() < dl) {
                ProtoEnvelope *e = peer_recv_type(&peer, NULL, 500);
                if (!e)
                        continue;
                if (streq(e->type, "link.heartbeat"))
                        peer_ack(&peer, e);
                else if (streq(e->type, "reply"))
                        return e;
                proto_envelope_free(e);
        }
        return NULL;
}

static bool applied_contains(const ProtoEnvelope *hello, const char *id)
{
        ProtoValue a, v;
        size_t n;
        char buf[PROTO_ID_MAX + 1];
        cr_assert_eq(proto_get_array(&hello->body, "applied", PROTO_REQUIRED, 256, &a, &n, NULL),
                     1);
        for (size_t i = 0; i < n; i++)
                if (proto_array_at(&a, i, &v) == 0 &&
                    proto_value_str(&v, buf, sizeof(buf), NULL) == 0 && streq(buf, id))
                        return true;
        return false;
}

static void expect_discovery_reply(ProtoEnvelope *r, const char *id, const char *discovery_id)
{
        char s[128];
        bool ok = false;
        cr_assert_eq(proto_get_str(&r->body, "command_id", PROTO_REQUIRED, s, sizeof(s), NULL), 1);
        cr_expect_str_eq(s, id);
        cr_assert_eq(proto_get_bool(&r->body, "ok", PROTO_REQUIRED, &ok, NULL), 1);
        cr_assert(ok, "discovery succeeded");
        ProtoValue result, doc, slots, invs, inv;
        size_t n;
        cr_assert_eq(proto_get_map(&r->body, "result", PROTO_REQUIRED, 0, &result, NULL), 1);
        cr_assert_eq(proto_get_str(&result, "discovery_id", PROTO_REQUIRED, s, sizeof(s), NULL), 1);
        cr_expect_str_eq(s, discovery_id);
        cr_assert_eq(proto_get_map(&result, "discovery", PROTO_REQUIRED, 0, &doc, NULL), 1);
        bool simulated = false;
        cr_assert_eq(proto_get_bool(&doc, "simulated", PROTO_REQUIRED, &simulated, NULL), 1);
        cr_expect(simulated, "the document says simulated");
        cr_assert_eq(proto_get_array(&doc, "slots", PROTO_REQUIRED, 0, &slots, &n, NULL), 1);
        cr_expect_eq(n, 8, "Tioga has 8 GPUs, so 8 slots");
        cr_assert_eq(proto_get_str(&doc, "fingerprint", PROTO_REQUIRED, s, sizeof(s), NULL), 1);
        cr_expect(startswith(s, "sha256:"));
        cr_assert_eq(proto_get_array(&doc, "invariants", PROTO_REQUIRED, 0, &invs, &n, NULL), 1);
        cr_expect_eq(n, 3);
        for (size_t i = 0; i < n; i++) {
                bool iok = false;
                cr_assert_eq(proto_array_at(&invs, i, &inv), 0);
                cr_assert_eq(proto_get_bool(&inv, "ok", PROTO_REQUIRED, &iok, NULL), 1);
                cr_expect(iok, "invariant %zu holds on the simulated host", i);
        }
}

Test(run, discover_is_applied_once_and_a_repeat_gets_the_stored_reply)
{
        agent_spawn(NULL);
        ProtoEnvelope *hello = handshake();
        bool simulated = false;
        char fp[128];
        cr_expect_eq(proto_get_bool(&hello->body, "simulated", PROTO_REQUIRED, &simulated, NULL),
                     1);
        cr_expect(simulated, "hello says simulated");
        cr_expect_eq(
            proto_get_str(&hello->body, "fingerprint", PROTO_REQUIRED, fp, sizeof(fp), NULL), 1);
        cr_expect(!applied_contains(hello, "cmd_1"));
        proto_envelope_free(hello);

        send_discover("cmd_1", "dsc_1");
        ProtoEnvelope *r1 = recv_reply(PEER_WAIT_MS);
        cr_assert(r1, "a reply arrives");
        expect_discovery_reply(r1, "cmd_1", "dsc_1");

        send_discover("cmd_1", "dsc_1"); /* delivered again, e.g. after a lost reply */
        ProtoEnvelope *r2 = recv_reply(PEER_WAIT_MS);
        cr_assert(r2, "the repeat is answered");
        expect_discovery_reply(r2, "cmd_1", "dsc_1");
        cr_expect_eq(r1->size, r2->size, "the same stored reply");
        cr_expect(log_contains("Command already applied; sending the stored reply"),
                  "and not applied again");
        proto_envelope_free(r1);
        proto_envelope_free(r2);

        kill(agent_pid, SIGTERM);
        int st = agent_wait(PEER_WAIT_MS);
        cr_assert(st != -1, "SIGTERM stops the agent");
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "cleanly (status %d)", st);

        /* After a restart the journal still knows cmd_1. */
        agent_spawn(NULL);
        hello = handshake();
        cr_expect(applied_contains(hello, "cmd_1"), "hello.applied lists cmd_1 after a restart");
        proto_envelope_free(hello);
        send_discover("cmd_1", "dsc_1");
        r1 = recv_reply(PEER_WAIT_MS);
        cr_assert(r1);
        expect_discovery_reply(r1, "cmd_1", "dsc_1");
        proto_envelope_free(r1);
        kill(agent_pid, SIGTERM);
        cr_expect_neq(agent_wait(PEER_WAIT_MS), -1);
}

Test(run, killed_mid_discovery_the_agent_applies_it_again_after_a_restart)
{
        agent_spawn("GPUSLICE_TEST_DISCOVERY_DELAY_MS=60000");
        ProtoEnvelope *hello = handshake();
        proto_envelope_free(hello);
        send_discover("cmd_2", "dsc_2");
        cr_assert(WAIT_UNTIL(log_contains("Applying"), PEER_WAIT_MS), "discovery started");
        agent_kill9();

        agent_spawn(NULL);
        hello = handshake();
        cr_expect(!applied_contains(hello, "cmd_2"), "an interrupted command is not applied");
        proto_envelope_free(hello);
        send_discover("cmd_2", "dsc_2"); /* the controller resends what has no reply */
        ProtoEnvelope *r = recv_reply(PEER_WAIT_MS);
        cr_assert(r, "the resent command is answered");
        expect_discovery_reply(r, "cmd_2", "dsc_2");
        proto_envelope_free(r);
        cr_expect(log_contains("interrupted by a restart"));
}

Test(run, unknown_commands_and_bad_bodies_are_refused_with_a_reply)
{
        agent_spawn(NULL);
        ProtoEnvelope *hello = handshake();
        proto_envelope_free(hello);

        peer_send(&peer, "command.reboot_everything", "cmd_3", NULL);
        ProtoEnvelope *r = recv_reply(PEER_WAIT_MS);
        cr_assert(r);
        bool ok = true;
        ProtoValue err;
        char code[64];
        cr_assert_eq(proto_get_bool(&r->body, "ok", PROTO_REQUIRED, &ok, NULL), 1);
        cr_expect_not(ok);
        cr_assert_eq(proto_get_map(&r->body, "error", PROTO_REQUIRED, 0, &err, NULL), 1);
        cr_assert_eq(proto_get_str(&err, "code", PROTO_REQUIRED, code, sizeof(code), NULL), 1);
        cr_expect_str_eq(code, "unknown_command");
        proto_envelope_free(r);

        send_discover("cmd_4", NULL); /* no discovery_id */
        r = recv_reply(PEER_WAIT_MS);
        cr_assert(r);
        cr_assert_eq(proto_get_map(&r->body, "error", PROTO_REQUIRED, 0, &err, NULL), 1);
        cr_assert_eq(proto_get_str(&err, "code", PROTO_REQUIRED, code, sizeof(code), NULL), 1);
        cr_expect_str_eq(code, "invalid_request");
        proto_envelope_free(r);
}

Test(run, without_enrollment_the_agent_says_what_to_do)
{
        _cleanup_free_ char *bin = agent_bin();
        char *cmd;
        cr_assert(asprintf(&cmd, "'%s' run --simulate 2>'%s'", bin, log_path) >= 0);
        int st = system(cmd);
        free(cmd);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 2);
        cr_expect(log_contains("bootstrap.sh"));
}

Test(run, facts_describe_the_simulated_host)
{
        _cleanup_free_ char *bin = agent_bin();
        const char *src = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        char *cmd;
        cr_assert(asprintf(&cmd,
                           "'%s' facts --simulate --simulate-topology "
                           "'%s/tests/fixtures/topology/mpibind/eas-tioga.xml' >'%s'",
                           bin, src, log_path) >= 0);
        int st = system(cmd);
        free(cmd);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        cr_expect(log_contains("\"simulated\":true"));
        cr_expect(log_contains("\"fingerprint\":\"sha256:"));
        cr_expect(log_contains("\"gpus\":8"));
}
