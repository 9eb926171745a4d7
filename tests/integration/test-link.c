/* SPDX-License-Identifier: MIT */
/* The agent link against the real controller, with the test peer standing in
 * for an agent: the identity proof (a foreign CA, another node's id, a
 * revoked node), versions, heartbeats and the offline state, a controller
 * restart under connected agents, and discovery review and approval
 * (invariants, subsets, re-discovery with unchanged and changed hardware,
 * at-least-once delivery applied once). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca.h"
#include "harness.h"
#include "test-peer.h"

#define NODES "/api/v1/admin/nodes"

TestSuite(link, .timeout = 240);

typedef struct Setup {
        Controller *c;
        Tokens admin;
        EnrolledNode n;
} Setup;

static void setup(Setup *s, const char *timeout_s, unsigned port)
{
        s->c = ctl_new();
        char listen[64];
        snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
        ctl_args(s->c, "--heartbeat-timeout-s", timeout_s, "--heartbeat-interval-s", "1", NULL);
        if (port)
                ctl_args(s->c, "--agent-listen", listen, NULL);
        ctl_start_or_fail(s->c);
        admin_sign_in(s->c, "root@example.com", NULL, &s->admin);
        node_create_and_enroll(s->c, s->admin.access, "h1", &s->n);
}

static void teardown(Setup *s)
{
        enrolled_node_done(&s->n);
}

static PeerOptions peer_opts(const EnrolledNode *n)
{
        return (PeerOptions){.endpoint = n->endpoint,
                             .node_id = n->node_id,
                             .tls_cert = n->cert_pem,
                             .tls_key = n->key_pem,
                             .ca_pem = n->ca_pem,
                             .heartbeat_ms = 200};
}

static HttpResponse *get_node(Setup *s)
{
        char path[128];
        snprintf(path, sizeof(path), NODES "/%s", s->n.node_id);
        return api_get(s->c, path, s->admin.access);
}

/* Polls GET node until field equals want (string or "true"/"false"). */
/* Upper bounds only, generous for a loaded 2-core machine; polls are 10/s,
 * well inside the controller's per-address request limit. Lower bounds (a
 * node must not go offline before its timeout) are checked separately. */
#define WAIT_MS 30000

static bool wait_node(Setup *s, const char *field, const char *want, long long timeout_ms)
{
        long long deadline = mono_ms() + timeout_ms;
        for (;;) {
                _cleanup_resp_ HttpResponse *r = get_node(s);
                json_t *v = jget(r, field);
                const char *got = json_is_string(v)  ? json_string_value(v)
                                  : json_is_true(v)  ? "true"
                                  : json_is_false(v) ? "false"
                                                     : "";
                if (streq(got, want))
                        return true;
                if (mono_ms() > deadline)
                        return false;
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
        }
}

Test(link, an_enrolled_agent_proves_its_identity_and_comes_online)
{
        Setup s;
        setup(&s, "5", 0);
        PeerOptions o = peer_opts(&s.n);
        o.agent_version = "peer-9.9";
        TestPeer *p = peer_start(&o);
        cr_assert(peer_wait_welcomes(p, 1, WAIT_MS), "no welcome; controller log:\n%s",
                  ctl_stderr(s.c));
        cr_assert(wait_node(&s, "online", "true", WAIT_MS));
        _cleanup_resp_ HttpResponse *r = get_node(&s);
        cr_assert_str_eq(jstr(r, "agent_version"), "peer-9.9");
        cr_assert(jstr(r, "last_seen_at"), "%s", r->body);
        cr_assert_str_eq(jstr(r, "state"), "enrolled");
        /* heartbeats are acknowledged */
        long long deadline = mono_ms() + WAIT_MS;
        while (peer_stats(p).acks < 2 && mono_ms() < deadline) {
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
        }
        cr_assert_geq(peer_stats(p).acks, 2);
        cr_assert_gt(peer_stats(p).last_epoch, 0);
        peer_stop(p);
        /* a closed link: offline at once */
        cr_assert(wait_node(&s, "online", "false", WAIT_MS));
        cr_assert(wait_node(&s, "state", "offline", WAIT_MS));
        ctl_stop_clean(s.c);
        teardown(&s);
        ctl_free(s.c);
}

Test(link, a_certificate_from_another_ca_is_refused)
{
        Setup s;
        setup(&s, "5", 0);
        /* Another CA signs a certificate with the same node id in it. */
        _cleanup_free_ char *dir = tmpdir_new("otherca");
        Ca *other = NULL;
        cr_assert(ca_open(dir, &other) == 0);
        _cleanup_free_ char *key = NULL, *csr = NULL, *cert = NULL;
        char serial[CA_SERIAL_MAX];
        int64_t na;
        cr_assert(ca_new_key_pem(&key) == 0 && ca_make_csr(key, "x", &csr) == 0);
        cr_assert(ca_sign_csr(other, csr, s.n.node_id, 30, serial, &na, &cert) == 0);

        /* in the proof: refused by name */
        PeerOptions o = peer_opts(&s.n);
        o.proof_cert = cert;
        o.proof_key = key;
        TestPeer *p = peer_start(&o);
        cr_assert(peer_wait_error(p, "certificate_rejected", WAIT_MS), "last error: %s",
                  peer_stats(p).last_error);
        cr_assert_eq(peer_stats(p).welcomes, 0);
        peer_stop(p);

        /* in TLS: the handshake itself fails, no challenge ever comes */
        PeerOptions t = peer_opts(&s.n);
        t.tls_cert = cert;
        t.tls_key = key;
        p = peer_start(&t);
        /* Asserting that nothing happens needs a window: 1.5 s of redials. */
        long long until = mono_ms() + 1500;
        while (mono_ms() < until) {
                cr_assert_eq(peer_stats(p).challenges, 0);
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
        }
        peer_stop(p);
        cr_assert(wait_node(&s, "online", "false", WAIT_MS));
        ca_free(other);
        tmpdir_remove(dir);
        ctl_stop_clean(s.c);
        teardown(&s);
        ctl_free(s.c);
}

Test(link, a_certificate_never_speaks_for_another_node)
{
        Setup s;
        setup(&s, "5", 0);
        EnrolledNode b;
        node_create_and_enroll(s.c, s.admin.access, "h2", &b);
        PeerOptions o = peer_opts(&s.n);
        o.node_id = b.node_id; /* node A's certificate and key, claiming B */
        TestPeer *p = peer_start(&o);
        cr_assert(peer_wait_error(p, "node_mismatch", WAIT_MS), "last error: %s",
                  peer_stats(p).last_error);
        cr_assert_eq(peer_stats(p).welcomes, 0);
        peer_stop(p);
        char path[128];
        snprintf(path, sizeof(path), NODES "/%s", b.node_id);
        _cleanup_resp_ HttpResponse *r = api_get(s.c, path, s.admin.access);
        cr_assert(json_is_false(jget(r, "online")));
        enrolled_node_done(&b);
        ctl_stop_clean(s.c);
        teardown(&s);
        ctl_free(s.c);
}

Test(link, deleting_a_node_drops_its_link_and_refuses_it_after)
{
        Setup s;
        setup(&s, "5", 0);
        PeerOptions o = peer_opts(&s.n);
        TestPeer *p = peer_start(&o);
        cr_assert(peer_wait_welcomes(p, 1, WAIT_MS), "no welcome:\n%s", ctl_stderr(s.c));
        char path[128];
        snprintf(path, sizeof(path), NODES "/%s", s.n.node_id);
        HttpRequest rq = {.method = "DELETE", .path = path, .bearer = s.admin.access};
        _cleanup_resp_ HttpResponse *d = http_send(s.c, &rq);
        cr_assert_eq(d->status, 200, "%s", d->body);
        cr_assert(peer_wait_error(p, "certificate_revoked", WAIT_MS), "last error: %s",
                  peer_stats(p).last_error);
        /* it redials and is refused again, never welcomed */
        int challenges = peer_stats(p).challenges;
        long long deadline = mono_ms() + WAIT_MS;
        while (peer_stats(p).challenges == challenges && mono_ms() < deadline) {
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
        }
        cr_assert_gt(peer_stats(p).challenges, challenges, "the peer did not redial");
        cr_assert_eq(peer_stats(p).welcomes, 1);
        cr_assert(wait_node(&s, "online", "false", WAIT_MS));
        cr_assert(wait_node(&s, "state", "disabled", WAIT_MS));
        peer_stop(p);
        ctl_stop_clean(s.c);
        teardown(&s);
        ctl_free(s.c);
}

Test(link, another_protocol_version_is_refused_clearly)
{
        Setup s;
        setup(&s, "5", 0);
        PeerOptions o = peer_opts(&s.n);
        o.version = 2;
        TestPeer *p = peer_start(&o);
        cr_assert(peer_wait_error(p, "version_mismatch", WAIT_MS), "last error: %s",
                  peer_stats(p).last_error);
        peer_stop(p);
        _cleanup_free_ char *log = ctl_stderr(s.c);
        cr_assert(strstr(log, "peer speaks 2, we speak 1"), "%s", log);
        ctl_stop_clean(s.c);
        teardown(&s);
        ctl_free(s.c);
}

/* The silent peer is closed only at the end, after the controller: closing
 * an nng 1.5.2 socket whose pipe the other side had just dropped corrupted
 * the test process's nng (a later dial in this process never completed;
 * once a "panic: pthread_mutex_unlock" from nng; 2-4 failures in 30 runs
 * under load). The agent dials each connection on a socket of its own with
 * nng's redial off and closes it off the loop (agent/link.c). */
Test(link, a_silent_agent_goes_offline_and_comes_back_to_its_state)
{
        Setup s;
        setup(&s, "2", 0);
        PeerOptions o = peer_opts(&s.n);
        o.heartbeat_ms = 0; /* hung: the connection stays open, nothing is said */
        o.no_redial = true;
        TestPeer *silent = peer_start(&o);
        cr_assert(peer_wait_welcomes(silent, 1, WAIT_MS), "no welcome:\n%s", ctl_stderr(s.c));
        cr_assert(wait_node(&s, "online", "true", WAIT_MS));
        long long t0 = mono_ms();
        cr_assert(wait_node(&s, "state", "offline", WAIT_MS), "never went offline");
        cr_assert_geq(mono_ms() - t0, 1000, "offline before the timeout");
        cr_assert(wait_node(&s, "online", "false", WAIT_MS));
        /* a live agent again: back to where it was */
        o.heartbeat_ms = 200;
        o.no_redial = false;
        TestPeer *p = peer_start(&o);
        cr_assert(peer_wait_welcomes(p, 1, WAIT_MS), "no welcome (challenges %d)",
                  peer_stats(p).challenges);
        cr_assert(wait_node(&s, "state", "enrolled", WAIT_MS));
        cr_assert(wait_node(&s, "online", "true", WAIT_MS));
        ctl_stop_clean(s.c);
        peer_stop(p);
        peer_stop(silent);
        teardown(&s);
        ctl_free(s.c);
}

Test(link, agents_reconnect_when_the_controller_restarts)
{
        Setup s;
        setup(&s, "5", free_port());
        PeerOptions o = peer_opts(&s.n);
        TestPeer *p = peer_start(&o);
        cr_assert(peer_wait_welcomes(p, 1, WAIT_MS), "no welcome:\n%s", ctl_stderr(s.c));
        uint64_t epoch1 = peer_stats(p).last_epoch;
        ctl_stop_clean(s.c);
        ctl_start_or_fail(s.c);
        cr_assert(peer_wait_welcomes(p, 2, WAIT_MS), "no welcome after the restart:\n%s",
                  ctl_stderr(s.c));
        cr_assert_gt(peer_stats(p).last_epoch, epoch1, "the epoch did not move");
        cr_assert(wait_node(&s, "online", "true", WAIT_MS));
        cr_assert(wait_node(&s, "state", "enrolled", WAIT_MS));
        peer_stop(p);
        ctl_stop_clean(s.c);
        teardown(&s);
        ctl_free(s.c);
}

/* ---- discovery ---- */

/* Three slots on NUMA node 0: a and b are sound; c has no VF left. */
static json_t *discovery_doc(const char *b_nic)
{
        json_t *devices = json_pack(
            "[{s:s, s:s, s:i}, {s:s, s:s, s:i}, {s:s, s:s, s:i}, {s:s, s:s, s:i}, {s:s, s:s, s:i}, "
            "{s:s, s:s, s:i}]",
            "address", "0000:03:00.0", "kind", "gpu", "numa_node", 0, "address", "0000:04:00.0",
            "kind", "gpu", "numa_node", 0, "address", "0000:05:00.0", "kind", "gpu", "numa_node", 0,
            "address", "0000:06:00.0", "kind", "nic", "numa_node", 0, "address", "0000:06:00.1",
            "kind", "nic", "numa_node", 0, "address", "0000:07:00.0", "kind", "nvme", "numa_node",
            0);
        json_t *inv =
            json_pack("{s:b, s:b, s:b}", "per_slot_vf", 1, "nvme_ownership", 1, "numa_locality", 1);
        json_t *slots =
            json_pack("[{s:s, s:[s], s:s, s:i, s:s, s:i, s:b, s:[], s:O},"
                      " {s:s, s:[s], s:s, s:i, s:n, s:i, s:b, s:[], s:O},"
                      " {s:s, s:[s], s:s, s:i, s:n, s:i, s:b, s:[s], s:{s:b, s:b, s:b}}]",
                      "id", "slot-0000:03:00.0", "gpus", "0000:03:00.0", "nic", "0000:06:00.0",
                      "vf_index", 0, "nvme", "0000:07:00.0", "numa_node", 0, "ok", 1, "problems",
                      "invariants", inv, "id", "slot-0000:04:00.0", "gpus", "0000:04:00.0", "nic",
                      b_nic, "vf_index", 1, "nvme", "numa_node", 0, "ok", 1, "problems",
                      "invariants", inv, "id", "slot-0000:05:00.0", "gpus", "0000:05:00.0", "nic",
                      "0000:06:00.0", "vf_index", 2, "nvme", "numa_node", 0, "ok", 0, "problems",
                      "VF 2 needed on NIC 0000:06:00.0, which has only 2 VFs (total_vfs)",
                      "invariants", "per_slot_vf", 0, "nvme_ownership", 1, "numa_locality", 1);
        json_decref(inv);
        char fp[80];
        snprintf(fp, sizeof(fp), "sha256:test-%s", b_nic);
        return json_pack("{s:[{s:i, s:s, s:I}], s:o, s:o, s:[], s:s, s:b}", "numa_nodes", "id", 0,
                         "cpus", "0-7", "memory_bytes", (json_int_t)1 << 34, "devices", devices,
                         "slots", slots, "invariants", "fingerprint", fp, "simulated", 1);
}

static char *start_discovery(Setup *s)
{
        char path[200];
        snprintf(path, sizeof(path), NODES "/%s/slice-topology/discovery", s->n.node_id);
        _cleanup_resp_ HttpResponse *r = api_post(s->c, path, s->admin.access, "{}");
        cr_assert_eq(r->status, 202, "%s", r->body);
        cr_assert(startswith(strempty(jstr(r, "discovery_id")), "dsc_"));
        return strdup(jstr(r, "discovery_id"));
}

static HttpResponse *wait_candidate(Setup *s, const char *dsc)
{
        char path[256];
        snprintf(path, sizeof(path), NODES "/%s/slice-topology/candidates/%s", s->n.node_id, dsc);
        long long deadline = mono_ms() + 10000;
        for (;;) {
                HttpResponse *r = api_get(s->c, path, s->admin.access);
                cr_assert_eq(r->status, 200, "%s", r->body);
                if (!streq(jstr(r, "state"), "running") || mono_ms() > deadline)
                        return r;
                http_response_free(r);
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
        }
}

static HttpResponse *approve(Setup *s, const char *dsc, const char *body)
{
        char path[256];
        snprintf(path, sizeof(path), NODES "/%s/slice-topology/candidates/%s/approve", s->n.node_id,
                 dsc);
        return api_post(s->c, path, s->admin.access, body);
}

static const char *invariant_ok(HttpResponse *r, const char *list, const char *name)
{
        size_t i;
        json_t *v;
        json_array_foreach(jget(r, list), i,
                           v) if (streq_ptr(json_string_value(json_object_get(v, "name")),
                                            name)) return json_is_true(json_object_get(v, "ok"))
            ? "ok"
            : "failed";
        return "missing";
}

Test(link, discovery_review_and_approval)
{
        Setup s;
        setup(&s, "5", 0);
        _cleanup_(json_decrefp) json_t *doc = discovery_doc("0000:06:00.0");
        PeerOptions o = peer_opts(&s.n);
        o.discovery = doc;
        TestPeer *p = peer_start(&o);
        cr_assert(peer_wait_welcomes(p, 1, WAIT_MS), "no welcome:\n%s", ctl_stderr(s.c));
        cr_assert(wait_node(&s, "online", "true", WAIT_MS));

        _cleanup_free_ char *dsc = start_discovery(&s);
        _cleanup_resp_ HttpResponse *c = wait_candidate(&s, dsc);
        cr_assert_str_eq(jstr(c, "state"), "completed", "%s", c->body);
        cr_assert_eq(json_array_size(jget(c, "slots")), 3);
        cr_assert(json_is_false(jget(c, "ok")));
        cr_assert_str_eq(invariant_ok(c, "invariants", "per_slot_vf"), "failed");
        cr_assert_str_eq(invariant_ok(c, "invariants", "nvme_ownership"), "ok");
        cr_assert_str_eq(invariant_ok(c, "invariants", "numa_locality"), "ok");
        cr_assert(json_is_null(jget(c, "changes")), "a first discovery compares with nothing");
        cr_assert(wait_node(&s, "state", "pending_approval", WAIT_MS));

        /* all slots: refused, nothing written */
        long long audits = db_scalar(s.c, "SELECT COUNT(*) FROM audit_logs");
        _cleanup_resp_ HttpResponse *all = approve(&s, dsc, NULL);
        assert_error(all, 409, "invariants_failed");
        json_t *failing = jget(all, "error.details.failing");
        cr_assert(json_array_size(failing) >= 1, "%s", all->body);
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(failing, 0), "slot")),
                         "slot-0000:05:00.0");
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM node_resource_slots"), 0);
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM audit_logs"), audits);
        cr_assert(wait_node(&s, "state", "pending_approval", WAIT_MS));

        /* an unknown slot: 400 */
        _cleanup_resp_ HttpResponse *unk = approve(&s, dsc, "{\"slots\":[\"slot-nope\"]}");
        assert_invalid_field(unk, "slots");

        /* the sound subset: approved, the rest stays out */
        _cleanup_resp_ HttpResponse *ok =
            approve(&s, dsc, "{\"slots\":[\"slot-0000:03:00.0\",\"slot-0000:04:00.0\"]}");
        cr_assert_eq(ok->status, 200, "%s", ok->body);
        cr_assert_str_eq(jstr(ok, "node.state"), "active");
        cr_assert_eq(json_integer_value(jget(ok, "node.slots")), 2);
        cr_assert_str_eq(jstr(ok, "node.fingerprint"), "sha256:test-0000:06:00.0");
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM node_resource_slots WHERE state = "
                                    "'available' AND id LIKE 'slt_%'"),
                     2);
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM node_resource_slots WHERE slot_key = "
                                    "'slot-0000:05:00.0'"),
                     0);
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM audit_logs WHERE action = "
                                    "'node.approve' AND details LIKE '%slot-0000:04:00.0%'"),
                     1);
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM audit_logs WHERE action = "
                                    "'node.discovery_requested'"),
                     1);

        /* the same hardware again: unchanged */
        _cleanup_free_ char *dsc2 = start_discovery(&s);
        _cleanup_resp_ HttpResponse *c2 = wait_candidate(&s, dsc2);
        cr_assert_str_eq(jstr(c2, "state"), "completed", "%s", c2->body);
        cr_assert(json_is_true(jget(c2, "changes.unchanged")), "%s", c2->body);
        cr_assert(wait_node(&s, "state", "active", WAIT_MS));
        peer_stop(p);

        /* changed hardware: slot b's VF moved to another NIC */
        _cleanup_(json_decrefp) json_t *doc2 = discovery_doc("0000:06:00.1");
        o.discovery = doc2;
        p = peer_start(&o);
        cr_assert(peer_wait_welcomes(p, 1, WAIT_MS), "no welcome:\n%s", ctl_stderr(s.c));
        cr_assert(wait_node(&s, "state", "active", WAIT_MS));
        _cleanup_free_ char *dsc3 = start_discovery(&s);
        _cleanup_resp_ HttpResponse *c3 = wait_candidate(&s, dsc3);
        cr_assert(json_is_false(jget(c3, "changes.unchanged")), "%s", c3->body);
        json_t *changed = jget(c3, "changes.changed");
        cr_assert_eq(json_array_size(changed), 1, "%s", c3->body);
        cr_assert_str_eq(json_string_value(json_array_get(changed, 0)), "slot-0000:04:00.0");
        cr_assert_eq(json_array_size(jget(c3, "changes.quarantined")), 1);
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM node_resource_slots WHERE slot_key = "
                                    "'slot-0000:04:00.0' AND state = 'quarantined'"),
                     1);
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM node_resource_slots WHERE slot_key = "
                                    "'slot-0000:03:00.0' AND state = 'available'"),
                     1);
        /* a new approval releases it */
        _cleanup_resp_ HttpResponse *ok2 =
            approve(&s, dsc3, "{\"slots\":[\"slot-0000:03:00.0\",\"slot-0000:04:00.0\"]}");
        cr_assert_eq(ok2->status, 200, "%s", ok2->body);
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM node_resource_slots WHERE state = "
                                    "'available' AND nic = '0000:06:00.1'"),
                     1);
        peer_stop(p);

        /* no agent: discovery is refused */
        cr_assert(wait_node(&s, "online", "false", WAIT_MS));
        char path[200];
        snprintf(path, sizeof(path), NODES "/%s/slice-topology/discovery", s.n.node_id);
        _cleanup_resp_ HttpResponse *off = api_post(s.c, path, s.admin.access, "{}");
        assert_error(off, 409, "node_offline");
        ctl_stop_clean(s.c);
        teardown(&s);
        ctl_free(s.c);
}

static bool has_commands(const PeerStats *st, void *u)
{
        return st->commands >= *(int *)u;
}

Test(link, commands_are_delivered_at_least_once_and_applied_once)
{
        Setup s;
        setup(&s, "5", 0);
        _cleanup_(json_decrefp) json_t *doc = discovery_doc("0000:06:00.0");
        PeerOptions o = peer_opts(&s.n);
        o.discovery = doc;
        o.ignore_commands = true; /* takes the command, then the link drops */
        TestPeer *p = peer_start(&o);
        cr_assert(peer_wait_welcomes(p, 1, WAIT_MS), "no welcome:\n%s", ctl_stderr(s.c));
        cr_assert(wait_node(&s, "online", "true", WAIT_MS));
        _cleanup_free_ char *dsc = start_discovery(&s);
        int one = 1;
        cr_assert(peer_wait(p, has_commands, &one, WAIT_MS));
        peer_stop(p);
        cr_assert(wait_node(&s, "online", "false", WAIT_MS));

        /* the next connection gets it again, and answers twice */
        o.ignore_commands = false;
        o.reply_twice = true;
        p = peer_start(&o);
        cr_assert(peer_wait(p, has_commands, &one, WAIT_MS), "the command was not resent");
        _cleanup_resp_ HttpResponse *c = wait_candidate(&s, dsc);
        cr_assert_str_eq(jstr(c, "state"), "completed", "%s", c->body);
        /* both replies are in before we count */
        long long deadline = mono_ms() + 2000;
        while (peer_stats(p).replies < 2 && mono_ms() < deadline) {
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
        }
        /* an ack for a heartbeat sent after both replies: the controller took them in order */
        int acks = peer_stats(p).acks;
        deadline = mono_ms() + 3000;
        while (peer_stats(p).acks < acks + 1 && mono_ms() < deadline) {
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
        }
        cr_assert_gt(peer_stats(p).acks, acks);
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM audit_logs WHERE action = "
                                    "'node.discovery_completed'"),
                     1);
        cr_assert_eq(db_scalar(s.c, "SELECT COUNT(*) FROM node_commands WHERE state = 'done'"), 1);
        peer_stop(p);
        ctl_stop_clean(s.c);
        teardown(&s);
        ctl_free(s.c);
}
