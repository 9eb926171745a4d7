/* SPDX-License-Identifier: MIT */
#pragma once

/* The real `gpuslice-agent run --simulate` process for tests, dialing the
 * test controller end of link-peer.h: its config (a private state directory,
 * the Tioga topology of the fixtures), spawning, the link handshake, replies,
 * kill -9 and restart. Every wait has a deadline. */

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "link-peer.h"

typedef struct AgentProc {
        Certs certs;
        Peer peer;
        char *dir, *conf, *log_path, *state_dir;
        pid_t pid;
        int pipes_before_spawn; /* the connection the last spawned agent makes comes after these */
} AgentProc;

static inline char *agent_proc_bin(void)
{
        const char *b = getenv("GPUSLICE_TEST_BUILD_ROOT");
        cr_assert(b, "GPUSLICE_TEST_BUILD_ROOT is not set (run through meson test)");
        return pathf(b, "agent/gpuslice-agent");
}

/* Certificates, the listening peer and a config; extra_conf is appended to
 * the config file (more "key = value" lines), may be NULL. */
static inline void agent_proc_setup(AgentProc *a, const char *extra_conf)
{
        const char *src = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        cr_assert(src);
        certs_make(&a->certs);
        peer_start(&a->peer, &a->certs, a->certs.server_cert, a->certs.server_key, 0);
        char tmpl[] = "/tmp/gpuslice-agentproc-XXXXXX";
        cr_assert(mkdtemp(tmpl));
        a->dir = strdup(tmpl);
        a->conf = pathf(a->dir, "agent.conf");
        a->log_path = pathf(a->dir, "agent.log");
        a->state_dir = pathf(a->dir, "state");
        FILE *f = fopen(a->conf, "we");
        cr_assert(f);
        fprintf(f,
                "agent_endpoint = tls+tcp://127.0.0.1:%d\n"
                "node_id = %s\nkey_file = %s\ncert_file = %s\nca_file = %s\n"
                "state_dir = %s\nsimulate = true\n"
                "simulate_topology = %s/tests/fixtures/topology/mpibind/eas-tioga.xml\n"
                /* Heartbeats flow, but the timeout is long: the test thread
                 * answers the challenge and acks only when the (possibly
                 * loaded) machine lets it, and a redial would lose a reply. */
                "heartbeat_interval_s = 1\nheartbeat_timeout_s = 60\nlog_level = info\n%s",
                a->peer.port, PEER_NODE_ID, a->certs.node_key, a->certs.node_cert, a->certs.ca,
                a->state_dir, src, extra_conf ? extra_conf : "");
        fclose(f);
}

static inline void agent_proc_kill9(AgentProc *a)
{
        if (a->pid > 0) {
                kill(a->pid, SIGKILL);
                waitpid(a->pid, NULL, 0);
                a->pid = 0;
        }
}

static inline void agent_proc_teardown(AgentProc *a)
{
        agent_proc_kill9(a);
        peer_stop(&a->peer);
        certs_free(&a->certs);
        if (a->dir && startswith(a->dir, "/tmp/gpuslice-"))
                sh("rm -rf '%s'", a->dir);
        free(a->dir);
        free(a->conf);
        free(a->log_path);
        free(a->state_dir);
        memset(a, 0, sizeof(*a));
}

/* extra_env: one "NAME=value" for the agent, may be NULL. */
static inline void agent_proc_spawn(AgentProc *a, const char *extra_env)
{
        _cleanup_free_ char *bin = agent_proc_bin();
        /* Counted before the fork: the agent may connect before we look. */
        a->pipes_before_spawn = atomic_load(&a->peer.pipes_added);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                int fd = open(a->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                if (fd < 0)
                        _exit(127);
                dup2(fd, 2);
                if (extra_env)
                        putenv((char *)extra_env);
                execl(bin, bin, "run", "--config", a->conf, "--simulate", (char *)NULL);
                _exit(127);
        }
        a->pid = pid;
}

/* The exit status, or -1 at the deadline. */
static inline int agent_proc_wait(AgentProc *a, long long timeout_ms)
{
        long long dl = peer_now_ms() + timeout_ms;
        int st;
        while (peer_now_ms() < dl) {
                pid_t r = waitpid(a->pid, &st, WNOHANG);
                if (r == a->pid) {
                        a->pid = 0;
                        return st;
                }
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        return -1;
}

static inline bool agent_proc_log_contains(const AgentProc *a, const char *needle)
{
        FILE *f = fopen(a->log_path, "re");
        if (!f)
                return false;
        char *buf = NULL;
        size_t n = 0;
        bool found = getdelim(&buf, &n, '\0', f) >= 0 && strstr(buf, needle);
        free(buf);
        fclose(f);
        return found;
}

/* Waits for the spawned agent's connection, proves it, returns the hello. */
static inline ProtoEnvelope *agent_proc_handshake(AgentProc *a)
{
        cr_assert(
            WAIT_UNTIL(atomic_load(&a->peer.pipes_added) > a->pipes_before_spawn, PEER_WAIT_MS),
            "the agent connects");
        unsigned char nonce[32];
        peer_send_challenge(&a->peer, nonce);
        ProtoEnvelope *auth = peer_recv_type(&a->peer, "link.auth", PEER_WAIT_MS);
        cr_assert(auth, "the agent proves its identity");
        proto_envelope_free(auth);
        ProtoEnvelope *hello = peer_recv_type(&a->peer, "link.hello", PEER_WAIT_MS);
        cr_assert(hello);
        peer_send_welcome(&a->peer, 1, 60);
        return hello;
}

/* The next reply (heartbeats are acked while waiting); NULL at the deadline. */
static inline ProtoEnvelope *agent_proc_recv_reply(AgentProc *a, long long timeout_ms)
{
        long long dl = peer_now_ms() + timeout_ms;
        while (peer_now_ms() < dl) {
                ProtoEnvelope *e = peer_recv_type(&a->peer, NULL, 500);
                if (!e)
                        continue;
                if (streq(e->type, "link.heartbeat"))
                        peer_ack(&a->peer, e);
                else if (streq(e->type, "reply"))
                        return e;
                proto_envelope_free(e);
        }
        return NULL;
}

static inline bool hello_applied_contains(const ProtoEnvelope *hello, const char *id)
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
