/* SPDX-License-Identifier: MIT */
/* The agent link, controller side. Per pipe we keep one small Peer (a nonce,
 * the bound node id, two timestamps, hash chain pointers): no thread and no
 * buffer of our own per pipe, so ten thousand agents cost a few MB here. */
#include "agent-link.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/transport/tls/tls.h>
#include <openssl/rand.h>
#include <uv.h>

#include "audit.h"
#include "ca.h"
#include "console.h"
#include "db.h"
#include "discoveries.h"
#include "log.h"
#include "node-commands.h"
#include "node-state.h"
#include "nodes.h"
#include "proto.h"
#include "provisioner.h"
#include "server.h"
#include "version.h"

#define NONCE_SIZE        32
#define LINK_DOMAIN       "gpuslice-link-v1"
#define PIPE_BUCKETS      (1u << 14)
#define SCAN_INTERVAL_MS  250
#define CLOSE_GRACE_USEC  (200 * USEC_PER_MSEC)
#define CERT_PEM_MAX      8192
#define SIGNATURE_MAX     160
#define APPLIED_MAX       256
#define AGENT_VERSION_MAX 64
#define FINGERPRINT_MAX   128

typedef struct Peer {
        nng_pipe pipe;
        uint32_t pipe_id;
        uint8_t nonce[NONCE_SIZE];
        bool authed, helloed;
        bool bound;   /* the node map points at this peer */
        bool closing; /* an error was sent; close at close_at */
        char node_id[ID_MAX];
        usec_t connected_mono, last_seen_mono, last_seen_wall, close_at;
        bool dirty; /* last_seen_wall not yet written */
        struct Peer *next_by_pipe, *next_by_node;
} Peer;

typedef enum {
        EV_PIPE_ADD,
        EV_PIPE_REM,
        EV_MSG,
} EventKind;

typedef struct LinkEvent {
        EventKind kind;
        nng_pipe pipe;
        nng_msg *msg;
        struct LinkEvent *next;
} LinkEvent;

struct AgentLink {
        Server *server;
        Ca *ca;
        nng_socket sock;
        nng_listener listener;
        nng_tls_config *tls;
        nng_aio *recv_aio;
        bool open;
        char endpoint[300];
        usec_t heartbeat_timeout, started_mono;
        unsigned heartbeat_interval_s, heartbeat_timeout_s;

        /* filled by nng threads, drained on the loop */
        pthread_mutex_t lock;
        bool detached; /* under lock: the loop is gone, callbacks drop what they get */
        LinkEvent *head, *tail;
        uv_async_t wake;
        uv_timer_t scan, flush, startup;
        usec_t last_flush;

        Peer *by_pipe[PIPE_BUCKETS];
        Peer *by_node[PIPE_BUCKETS];
        size_t n_peers;
};

/* ---- maps ---- */

static uint32_t hash_str(const char *s)
{
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 16777619u;
        return h;
}

static Peer **pipe_slot(AgentLink *l, uint32_t id)
{
        Peer **p = &l->by_pipe[(id * 2654435761u) & (PIPE_BUCKETS - 1)];
        while (*p && (*p)->pipe_id != id)
                p = &(*p)->next_by_pipe;
        return p;
}

static Peer *peer_by_pipe(AgentLink *l, uint32_t id)
{
        return *pipe_slot(l, id);
}

static Peer **node_slot(const AgentLink *l, const char *node_id)
{
        Peer **p = (Peer **)&l->by_node[hash_str(node_id) & (PIPE_BUCKETS - 1)];
        while (*p && !streq((*p)->node_id, node_id))
                p = &(*p)->next_by_node;
        return p;
}

static Peer *peer_by_node(const AgentLink *l, const char *node_id)
{
        return *node_slot(l, node_id);
}

static void unbind(AgentLink *l, Peer *p)
{
        if (!p->bound)
                return;
        Peer **slot = node_slot(l, p->node_id);
        if (*slot == p)
                *slot = p->next_by_node;
        p->bound = false;
        p->next_by_node = NULL;
        /* The node's link is gone: so are its console sessions. */
        console_on_node_lost(l->server->console, p->node_id);
}

static void bind_node(AgentLink *l, Peer *p)
{
        Peer **slot = node_slot(l, p->node_id);
        p->next_by_node = NULL;
        *slot = p; /* the caller unbound any previous peer first */
        p->bound = true;
}

/* ---- nng side: enqueue only ---- */

static void enqueue(AgentLink *l, EventKind kind, nng_pipe pipe, nng_msg *msg)
{
        LinkEvent *e = malloc(sizeof(*e));
        if (!e) {
                if (msg)
                        nng_msg_free(msg);
                return;
        }
        *e = (LinkEvent){.kind = kind, .pipe = pipe, .msg = msg};
        pthread_mutex_lock(&l->lock);
        if (l->detached) {
                pthread_mutex_unlock(&l->lock);
                if (msg)
                        nng_msg_free(msg);
                free(e);
                return;
        }
        if (l->tail)
                l->tail->next = e;
        else
                l->head = e;
        l->tail = e;
        uv_async_send(&l->wake); /* under the lock: stop cannot close it meanwhile */
        pthread_mutex_unlock(&l->lock);
}

static void on_pipe_event(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
        enqueue(arg, ev == NNG_PIPE_EV_ADD_POST ? EV_PIPE_ADD : EV_PIPE_REM, pipe, NULL);
}

static void on_recv(void *arg)
{
        AgentLink *l = arg;
        int rv = nng_aio_result(l->recv_aio);
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
                return;
        if (rv == 0) {
                nng_msg *m = nng_aio_get_msg(l->recv_aio);
                enqueue(l, EV_MSG, nng_msg_get_pipe(m), m);
        }
        nng_recv_aio(l->sock, l->recv_aio);
}

/* ---- sending ---- */

static int send_writer(AgentLink *l, Peer *p, const char *type, const char *id, ProtoWriter *w)
{
        _cleanup_free_ void *buf = NULL;
        size_t len;
        char msg_id[ID_MAX];
        if (!id) {
                if (id_new("msg", msg_id) < 0)
                        return -EIO;
                id = msg_id;
        }
        const ProtoHeader h = {
            .type = type, .id = id, .node = p->authed ? p->node_id : "", .epoch = l->server->epoch};
        int r = proto_encode_writer(&h, w, &buf, &len);
        if (r < 0)
                return log_warning_errno(r, "cannot encode a link message | type=%s", type);
        nng_msg *m;
        if (nng_msg_alloc(&m, 0) != 0)
                return -ENOMEM;
        if (nng_msg_append(m, buf, len) != 0) {
                nng_msg_free(m);
                return -ENOMEM;
        }
        nng_msg_set_pipe(m, p->pipe);
        int rv = nng_sendmsg(l->sock, m, NNG_FLAG_NONBLOCK);
        if (rv != 0) {
                nng_msg_free(m);
                log_debug("link send failed | type=%s node=%s error=\"%s\"", type, p->node_id,
                          nng_strerror(rv));
                return -EAGAIN;
        }
        return 0;
}

/* link.error, then the pipe closes a moment later (so the error can leave). */
static void send_error(AgentLink *l, Peer *p, const char *code, const char *message,
                       uint64_t theirs)
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
        (void)send_writer(l, p, "link.error", NULL, &w);
        p->closing = true;
        p->close_at = now_mono_usec() + CLOSE_GRACE_USEC;
}

static int send_command(AgentLink *l, Peer *p, const NodeCommand *c)
{
        _cleanup_(json_decrefp) json_t *body = json_loads(c->body, 0, NULL);
        if (!json_is_object(body))
                return log_warning_errno(-EINVAL, "stored command body is not an object | id=%s",
                                         c->id);
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_json(&w, body);
        int r = send_writer(l, p, c->type, c->id, &w);
        if (r < 0)
                return 0; /* stays open: resent at the next hello */
        r = node_command_mark_sent(l->server->db, c->id);
        log_info("command sent | node=%s id=%s type=%s", p->node_id, c->id, c->type);
        return r;
}

static int send_command_cb(const NodeCommand *c, void *userdata)
{
        void **ctx = userdata;
        return send_command(ctx[0], ctx[1], c);
}

static void send_open_commands(AgentLink *l, Peer *p)
{
        void *ctx[2] = {l, p};
        int r = node_commands_open(l->server->db, p->node_id, send_command_cb, ctx);
        if (r < 0)
                log_warning_errno(r, "cannot resend open commands | node=%s", p->node_id);
}

/* Only the commands never sent: a node's commands still waiting for their
 * reply are not sent again each time a new one is stored. */
static int send_unsent_cb(const NodeCommand *c, void *userdata)
{
        return streq(c->state, "pending") ? send_command_cb(c, userdata) : 0;
}

void agent_link_send_new_commands(AgentLink *l, const char *node_id)
{
        Peer *p = l ? peer_by_node(l, node_id) : NULL;
        if (!p || !p->helloed || p->closing)
                return;
        void *ctx[2] = {l, p};
        int r = node_commands_open(l->server->db, p->node_id, send_unsent_cb, ctx);
        if (r < 0)
                log_warning_errno(r, "cannot send new commands | node=%s", p->node_id);
}

void agent_link_flush_commands(AgentLink *l, const char *node_id)
{
        Peer *p = l ? peer_by_node(l, node_id) : NULL;
        if (p && p->helloed && !p->closing)
                send_open_commands(l, p);
}

/* ---- node online/offline ---- */

static void node_link_lost(AgentLink *l, Peer *p, const char *why)
{
        Db *db = l->server->db;
        _cleanup_txn_ DbTxn txn = {0};
        NodeState from;
        int r = db_begin(db, &txn);
        if (r >= 0)
                r = nodes_set_online(db, p->node_id, false, p->last_seen_wall);
        if (r >= 0) {
                int t = node_state_transition(db, p->node_id, NODE_OFFLINE, NODE_TRIGGER_LINK_LOST,
                                              &from);
                if (t < 0 && t != -EPERM)
                        r = t;
        }
        if (r >= 0)
                r = db_commit(&txn);
        if (r < 0)
                log_warning_errno(r, "cannot record a lost link | node=%s", p->node_id);
        else
                log_info("node offline | node=%s reason=%s", p->node_id, why);
        p->dirty = false;
        provisioner_node_changed(l->server, p->node_id); /* no new work for it */
}

/* ---- message handlers ---- */

static void handle_auth(AgentLink *l, Peer *p, ProtoEnvelope *env)
{
        static const ProtoField fields[] = {
            {"certificate_pem", PROTO_TYPE_STR, PROTO_REQUIRED, CERT_PEM_MAX, false},
            {"signature", PROTO_TYPE_BIN, PROTO_REQUIRED, SIGNATURE_MAX, false},
        };
        _cleanup_free_ char *reason = NULL;
        /* A fixed buffer, not proto_get_strdup(): that strndup()s the
         * unterminated msgpack bytes, which ASan's strict string checks flag. */
        static char pem[CERT_PEM_MAX + 1];
        const void *sig;
        size_t sig_len;
        if (!streq(env->type, "link.auth"))
                return send_error(l, p, "not_authenticated",
                                  "prove the node's identity (link.auth) first", 0);
        if (proto_check_fields(&env->body, fields, ELEMENTSOF(fields), &reason) < 0 ||
            proto_get_str(&env->body, "certificate_pem", PROTO_REQUIRED, pem, sizeof(pem),
                          &reason) < 0 ||
            proto_get_bin(&env->body, "signature", PROTO_REQUIRED, SIGNATURE_MAX, &sig, &sig_len,
                          &reason) < 0)
                return send_error(l, p, "bad_message", strempty(reason), 0);

        char node_id[64], serial[CA_SERIAL_MAX];
        int r = ca_verify_node_cert(l->ca, pem, node_id, serial);
        if (r < 0) {
                log_warning("link refused: certificate not from this CA | pipe=%" PRIu32,
                            p->pipe_id);
                return send_error(l, p, "certificate_rejected",
                                  "the certificate does not chain to this controller's CA", 0);
        }
        if (!streq(node_id, env->node)) {
                log_warning("link refused: certificate speaks for another node | cert=%s "
                            "claimed=%s",
                            node_id, env->node);
                return send_error(l, p, "node_mismatch", "the certificate belongs to another node",
                                  0);
        }
        r = node_cert_is_valid(l->server->db, serial, node_id);
        if (r <= 0) {
                log_warning("link refused: certificate revoked or unknown | node=%s serial=%s",
                            node_id, serial);
                return send_error(l, p, "certificate_revoked",
                                  "this node's certificate is revoked (the node was deleted)", 0);
        }
        uint8_t signed_bytes[sizeof(LINK_DOMAIN) + NONCE_SIZE + 64];
        size_t n = 0, idlen = strlen(node_id);
        memcpy(signed_bytes, LINK_DOMAIN, sizeof(LINK_DOMAIN)); /* with its NUL */
        n += sizeof(LINK_DOMAIN);
        memcpy(signed_bytes + n, p->nonce, NONCE_SIZE);
        n += NONCE_SIZE;
        memcpy(signed_bytes + n, node_id, idlen);
        n += idlen;
        if (ca_verify_signature(pem, signed_bytes, n, sig, sig_len) < 0) {
                log_warning("link refused: bad signature over the challenge | node=%s", node_id);
                return send_error(l, p, "bad_signature",
                                  "the signature over the challenge does not verify", 0);
        }

        Node node = {0};
        r = nodes_get(l->server->db, node_id, &node);
        bool disabled = r >= 0 && node.state == NODE_DISABLED;
        node_done(&node);
        if (r < 0 || disabled)
                return send_error(l, p, "certificate_revoked", "this node is not known or deleted",
                                  0);

        /* A second authenticated pipe for the node replaces the first. */
        Peer *old = peer_by_node(l, node_id);
        if (old && old != p) {
                unbind(l, old);
                log_info("link replaced by a newer connection | node=%s", node_id);
                send_error(l, old, "replaced", "a newer connection of this node took over", 0);
        }
        if (strlen(node_id) >= sizeof(p->node_id))
                return send_error(l, p, "certificate_rejected", "node id too long", 0);
        memcpy(p->node_id, node_id, strlen(node_id) + 1);
        p->authed = true;
        bind_node(l, p);
        log_debug("link authenticated | node=%s pipe=%" PRIu32, node_id, p->pipe_id);
}

static void handle_hello(AgentLink *l, Peer *p, ProtoEnvelope *env)
{
        static const ProtoField fields[] = {
            {"agent_version", PROTO_TYPE_STR, PROTO_REQUIRED, AGENT_VERSION_MAX, false},
            {"fingerprint", PROTO_TYPE_STR, PROTO_OPTIONAL, FINGERPRINT_MAX, false},
            {"simulated", PROTO_TYPE_BOOL, PROTO_OPTIONAL, 0, false},
            {"applied", PROTO_TYPE_ARRAY, PROTO_OPTIONAL, APPLIED_MAX, false},
            {"assignments", PROTO_TYPE_MAP, PROTO_OPTIONAL, 0, false},
        };
        _cleanup_free_ char *reason = NULL;
        char version[AGENT_VERSION_MAX + 1];
        bool simulated = false;
        if (!streq(env->type, "link.hello"))
                return send_error(l, p, "hello_expected", "send link.hello after the proof", 0);
        if (proto_check_fields(&env->body, fields, ELEMENTSOF(fields), &reason) < 0 ||
            proto_get_str(&env->body, "agent_version", PROTO_REQUIRED, version, sizeof(version),
                          &reason) < 0 ||
            proto_get_bool(&env->body, "simulated", PROTO_OPTIONAL, &simulated, &reason) < 0)
                return send_error(l, p, "bad_message", strempty(reason), 0);

        Db *db = l->server->db;
        _cleanup_txn_ DbTxn txn = {0};
        NodeState from;
        int r = db_begin(db, &txn);
        if (r >= 0)
                r = nodes_set_hello(db, p->node_id, version, simulated);
        if (r >= 0)
                r = nodes_set_online(db, p->node_id, true, p->last_seen_wall);
        if (r >= 0) {
                int t = node_state_transition(db, p->node_id, NODE_OFFLINE,
                                              NODE_TRIGGER_LINK_RESTORED, &from);
                if (t < 0 && t != -EPERM)
                        r = t;
        }
        if (r >= 0)
                r = db_commit(&txn);
        if (r < 0) {
                log_warning_errno(r, "cannot record a hello | node=%s", p->node_id);
                return send_error(l, p, "unavailable", "the controller cannot take it now", 0);
        }
        p->helloed = true;
        p->dirty = false;
        provisioner_node_changed(l->server, p->node_id); /* schedulable again */

        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_uint(&w, "epoch", l->server->epoch);
        proto_write_kv_uint(&w, "heartbeat_interval_s", l->heartbeat_interval_s);
        proto_write_kv_uint(&w, "heartbeat_timeout_s", l->heartbeat_timeout_s);
        proto_write_end(&w);
        (void)send_writer(l, p, "link.welcome", NULL, &w);
        log_info("node online | node=%s agent_version=%s simulated=%s", p->node_id, version,
                 simulated ? "yes" : "no");
        /* Open commands go again; the agent's journal answers the ones it
         * applied (listed in `applied`) with their stored reply. */
        send_open_commands(l, p);
}

static void handle_heartbeat(AgentLink *l, Peer *p, ProtoEnvelope *env)
{
        static const ProtoField fields[] = {
            {"seq", PROTO_TYPE_UINT, PROTO_REQUIRED, 0, false},
            {"sent_at_ms", PROTO_TYPE_UINT, PROTO_OPTIONAL, 0, false},
        };
        _cleanup_free_ char *reason = NULL;
        uint64_t seq;
        if (proto_check_fields(&env->body, fields, ELEMENTSOF(fields), &reason) < 0 ||
            proto_get_uint(&env->body, "seq", PROTO_REQUIRED, &seq, &reason) < 0)
                return send_error(l, p, "bad_message", strempty(reason), 0);
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_uint(&w, "seq", seq);
        proto_write_end(&w);
        (void)send_writer(l, p, "link.heartbeat_ack", NULL, &w);
}

static int finish_discovery(Db *db, const char *node_id, const char *command_id, bool ok,
                            json_t *result, const char *error)
{
        Discovery d = {0};
        int r = discovery_get_by_command(db, command_id, &d);
        if (r < 0)
                return r == -ENOENT ? 0 : r;
        json_t *doc = json_object_get(result, "discovery");
        if (ok && (!json_is_object(doc) || !json_is_array(json_object_get(doc, "slots")) ||
                   !json_is_string(json_object_get(doc, "fingerprint")))) {
                ok = false;
                error = "the agent's discovery document has no slots or fingerprint";
        }
        if (!ok) {
                r = discovery_fail(db, d.id, error ? error : "discovery failed on the agent");
                if (r >= 0)
                        r = audit_log(
                            db, node_id, "node.discovery_failed", "node", node_id, NULL,
                            json_pack("{s:s, s:s?}", "discovery_id", d.id, "error", error));
                discovery_done(&d);
                return r;
        }
        _cleanup_(json_decrefp) json_t *changes = NULL;
        NodeState from;
        r = discovery_complete(db, d.id, node_id, doc, &changes);
        if (r >= 0) {
                Node n = {0};
                r = nodes_get(db, node_id, &n);
                NodeState to = n.state == NODE_ENROLLED ? NODE_PENDING_APPROVAL : n.state;
                node_done(&n);
                if (r >= 0)
                        r = node_state_transition(db, node_id, to, NODE_TRIGGER_DISCOVERY_COMPLETE,
                                                  &from);
        }
        if (r >= 0)
                r = audit_log(db, node_id, "node.discovery_completed", "node", node_id, NULL,
                              json_pack("{s:s, s:O?, s:O?}", "discovery_id", d.id, "fingerprint",
                                        json_object_get(doc, "fingerprint"), "changes", changes));
        discovery_done(&d);
        return r;
}

static void handle_reply(AgentLink *l, Peer *p, ProtoEnvelope *env)
{
        static const ProtoField fields[] = {
            {"command_id", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_ID_MAX, false},
            {"ok", PROTO_TYPE_BOOL, PROTO_REQUIRED, 0, false},
            {"result", PROTO_TYPE_MAP, PROTO_OPTIONAL, 0, true},
            {"error", PROTO_TYPE_MAP, PROTO_OPTIONAL, 0, true},
        };
        _cleanup_free_ char *reason = NULL;
        char command_id[PROTO_ID_MAX + 1];
        bool ok;
        if (proto_check_fields(&env->body, fields, ELEMENTSOF(fields), &reason) < 0 ||
            proto_get_str(&env->body, "command_id", PROTO_REQUIRED, command_id, sizeof(command_id),
                          &reason) < 0 ||
            proto_get_bool(&env->body, "ok", PROTO_REQUIRED, &ok, &reason) < 0)
                return send_error(l, p, "bad_message", strempty(reason), 0);
        _cleanup_(json_decrefp) json_t *body = NULL;
        if (proto_value_to_json(&env->body, &body) < 0)
                return send_error(l, p, "bad_message", "reply body does not convert to JSON", 0);

        Db *db = l->server->db;
        NodeCommand c;
        int r = node_command_get(db, command_id, &c);
        if (r < 0) {
                log_warning("reply for an unknown command ignored | node=%s command=%s", p->node_id,
                            command_id);
                return;
        }
        bool mine = streq(c.node_id, p->node_id);
        char type[NODE_COMMAND_TYPE_MAX + 1];
        snprintf(type, sizeof(type), "%s", c.type);
        node_command_done(&c);
        if (!mine) {
                /* A node's certificate never speaks for another node. */
                log_warning("reply for another node's command ignored | node=%s command=%s",
                            p->node_id, command_id);
                return;
        }
        json_t *result = json_object_get(body, "result");
        const char *error =
            json_string_value(json_object_get(json_object_get(body, "error"), "message"));

        _cleanup_txn_ DbTxn txn = {0};
        r = db_begin(db, &txn);
        if (r >= 0)
                r = node_command_finish(db, command_id, ok, body);
        if (r == -EALREADY) {
                log_debug("duplicate reply ignored | node=%s command=%s", p->node_id, command_id);
                return; /* applied at most once: the first reply settled it */
        }
        if (r >= 0 && streq(type, "command.discover"))
                r = finish_discovery(db, p->node_id, command_id, ok, result, error);
        else if (r >= 0 && startswith(type, "command.allocation."))
                r = provisioner_on_reply(l->server, p->node_id, command_id, ok, body);
        if (r >= 0)
                r = db_commit(&txn);
        if (r < 0)
                log_warning_errno(r, "cannot record a reply | node=%s command=%s", p->node_id,
                                  command_id);
        else
                log_info("reply | node=%s command=%s type=%s ok=%s", p->node_id, command_id, type,
                         ok ? "yes" : "no");
        /* Slots may have changed state, and a reply may have queued a command
         * (the cleanup after a failed assignment). */
        if (r >= 0)
                provisioner_node_commands(l->server, p->node_id);
}

static void handle_message(AgentLink *l, Peer *p, nng_msg *m)
{
        const void *buf = nng_msg_body(m);
        size_t len = nng_msg_len(m);
        _cleanup_proto_envelope_ ProtoEnvelope *env = NULL;
        _cleanup_free_ char *reason = NULL;
        if (p->closing)
                return;
        int r = proto_decode(buf, len, &env, &reason);
        if (r == -EPROTONOSUPPORT) {
                uint64_t theirs = 0;
                (void)proto_peek_version(buf, len, &theirs, NULL);
                char msg[128];
                snprintf(msg, sizeof(msg), "peer speaks %" PRIu64 ", we speak %d", theirs,
                         PROTO_VERSION);
                log_warning("link refused: version mismatch: %s | pipe=%" PRIu32 " node=%s", msg,
                            p->pipe_id, p->node_id);
                return send_error(l, p, "version_mismatch", msg, theirs ? theirs : 1);
        }
        if (r < 0) {
                log_warning("link message refused | pipe=%" PRIu32 " reason=\"%s\"", p->pipe_id,
                            strempty(reason));
                return send_error(l, p, "bad_message", strempty(reason), 0);
        }
        p->last_seen_mono = now_mono_usec();
        p->last_seen_wall = now_usec();
        p->dirty = p->helloed;

        if (!p->authed)
                return handle_auth(l, p, env);
        if (!streq(env->node, p->node_id))
                return send_error(l, p, "node_mismatch", "this link speaks for another node", 0);
        if (!p->helloed)
                return handle_hello(l, p, env);
        if (streq(env->type, "link.heartbeat"))
                return handle_heartbeat(l, p, env);
        if (streq(env->type, "reply"))
                return handle_reply(l, p, env);
        if (startswith(env->type, "console."))
                return console_on_link_message(l->server->console, p->node_id, env);
        if (streq(env->type, "link.error")) {
                char code[64] = "", message[256] = "";
                (void)proto_get_str(&env->body, "code", PROTO_OPTIONAL, code, sizeof(code), NULL);
                (void)proto_get_str(&env->body, "message", PROTO_OPTIONAL, message, sizeof(message),
                                    NULL);
                log_warning("agent reported a link error | node=%s code=%s message=\"%s\"",
                            p->node_id, code, message);
                p->closing = true;
                p->close_at = now_mono_usec();
                return;
        }
        if (streq(env->type, "link.hello")) {
                p->helloed = false;
                return handle_hello(l, p, env);
        }
        log_warning("unknown link message | node=%s type=%s", p->node_id, env->type);
        send_error(l, p, "unknown_type", "this message type is not part of the link", 0);
}

/* ---- pipe lifecycle ---- */

static void pipe_added(AgentLink *l, nng_pipe pipe)
{
        uint32_t id = (uint32_t)nng_pipe_id(pipe);
        if (peer_by_pipe(l, id))
                return;
        Peer *p = calloc(1, sizeof(*p));
        if (!p) {
                nng_pipe_close(pipe);
                return;
        }
        p->pipe = pipe;
        p->pipe_id = id;
        p->connected_mono = p->last_seen_mono = now_mono_usec();
        if (RAND_bytes(p->nonce, NONCE_SIZE) != 1) {
                free(p);
                nng_pipe_close(pipe);
                return;
        }
        Peer **slot = pipe_slot(l, id);
        *slot = p;
        l->n_peers++;

        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_key(&w, "nonce");
        proto_write_bin(&w, p->nonce, NONCE_SIZE);
        proto_write_kv_uint(&w, "controller_epoch", l->server->epoch);
        proto_write_end(&w);
        (void)send_writer(l, p, "link.challenge", NULL, &w);
}

static void pipe_removed(AgentLink *l, nng_pipe pipe)
{
        uint32_t id = (uint32_t)nng_pipe_id(pipe);
        Peer **slot = pipe_slot(l, id);
        Peer *p = *slot;
        if (!p)
                return;
        *slot = p->next_by_pipe;
        l->n_peers--;
        if (p->bound) {
                unbind(l, p);
                if (p->helloed)
                        node_link_lost(l, p, "link closed");
        }
        free(p);
}

static void on_wake(uv_async_t *a)
{
        AgentLink *l = a->data;
        pthread_mutex_lock(&l->lock);
        LinkEvent *e = l->head;
        l->head = l->tail = NULL;
        pthread_mutex_unlock(&l->lock);
        while (e) {
                LinkEvent *next = e->next;
                if (e->kind == EV_PIPE_ADD)
                        pipe_added(l, e->pipe);
                else if (e->kind == EV_PIPE_REM)
                        pipe_removed(l, e->pipe);
                else {
                        Peer *p = peer_by_pipe(l, (uint32_t)nng_pipe_id(e->pipe));
                        if (!p) {
                                /* The message raced ahead of its pipe's ADD event. */
                                pipe_added(l, e->pipe);
                                p = peer_by_pipe(l, (uint32_t)nng_pipe_id(e->pipe));
                        }
                        if (p)
                                handle_message(l, p, e->msg);
                        nng_msg_free(e->msg);
                }
                free(e);
                e = next;
        }
}

/* ---- timers ---- */

static void on_scan(uv_timer_t *t)
{
        AgentLink *l = t->data;
        usec_t now = now_mono_usec();
        for (size_t b = 0; b < PIPE_BUCKETS; b++)
                for (Peer *p = l->by_pipe[b]; p; p = p->next_by_pipe) {
                        if (p->closing) {
                                if (now >= p->close_at)
                                        nng_pipe_close(p->pipe);
                                continue;
                        }
                        if (now - p->last_seen_mono <= l->heartbeat_timeout)
                                continue;
                        /* Silent for too long: a hung connection counts as lost. */
                        log_info("link timed out | node=%s pipe=%" PRIu32,
                                 p->authed ? p->node_id : "-", p->pipe_id);
                        if (p->bound && p->helloed) {
                                unbind(l, p);
                                node_link_lost(l, p, "heartbeat timeout");
                        }
                        p->closing = true;
                        p->close_at = now;
                        nng_pipe_close(p->pipe);
                }
}

/* last_seen_at is written in batches: one transaction for every node that
 * spoke since the last flush, instead of a synchronous write per heartbeat. */
static void on_flush(uv_timer_t *t)
{
        AgentLink *l = t->data;
        Db *db = l->server->db;
        _cleanup_txn_ DbTxn txn = {0};
        size_t n = 0;
        int r = 0;
        for (size_t b = 0; b < PIPE_BUCKETS && r >= 0; b++)
                for (Peer *p = l->by_pipe[b]; p && r >= 0; p = p->next_by_pipe) {
                        if (!p->dirty || !p->bound)
                                continue;
                        if (n == 0)
                                r = db_begin(db, &txn);
                        if (r >= 0)
                                r = nodes_set_last_seen(db, p->node_id, p->last_seen_wall);
                        p->dirty = false;
                        n++;
                }
        if (n > 0 && r >= 0)
                r = db_commit(&txn);
        if (r < 0)
                log_warning_errno(r, "cannot write last_seen_at | nodes=%zu", n);
}

/* Nodes that were up when the controller stopped and did not come back
 * within a heartbeat timeout of the start are offline. */
static void on_startup_grace(uv_timer_t *t)
{
        AgentLink *l = t->data;
        Db *db = l->server->db;
        char ids[256][ID_MAX];
        size_t n = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT id FROM nodes WHERE online = 0 AND state IN ('enrolled', "
                                "'pending_approval', 'active', 'draining') LIMIT 256");
                if (!s)
                        return;
                while (n < ELEMENTSOF(ids) && sqlite3_step(s) == SQLITE_ROW)
                        snprintf(ids[n++], ID_MAX, "%s", strempty(db_column_text(s, 0)));
        }
        size_t moved = 0;
        for (size_t i = 0; i < n; i++) {
                if (peer_by_node(l, ids[i]))
                        continue;
                _cleanup_txn_ DbTxn txn = {0};
                if (db_begin(db, &txn) < 0)
                        return;
                if (node_state_transition(db, ids[i], NODE_OFFLINE, NODE_TRIGGER_LINK_LOST, NULL) >=
                        0 &&
                    db_commit(&txn) >= 0)
                        moved++;
        }
        if (moved)
                log_info("nodes offline: no link since the controller started | count=%zu", moved);
        if (n == ELEMENTSOF(ids) && moved > 0)
                uv_timer_start(t, on_startup_grace, 10, 0); /* more to do */
}

/* ---- start / stop ---- */

static int split_host_port(const char *hp, char *host, size_t hsize, unsigned *port)
{
        const char *colon = strrchr(hp, ':');
        if (!colon || colon == hp || (size_t)(colon - hp) >= hsize ||
            sscanf(colon + 1, "%u", port) != 1 || *port > 65535)
                return -EINVAL;
        memcpy(host, hp, (size_t)(colon - hp));
        host[colon - hp] = '\0';
        return 0;
}

int agent_link_start(Server *s, Ca *ca, AgentLink **ret)
{
        const char *listen = config_get(s->config, "agent_listen");
        const char *advertised = config_get(s->config, "agent_endpoint");
        char host[256], url[320];
        unsigned port;
        int rv;
        if (split_host_port(listen, host, sizeof(host), &port) < 0)
                return log_error_errno(-EINVAL, "bad agent_listen, expected HOST:PORT | value=%s",
                                       listen);
        AgentLink *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->server = s;
        l->ca = ca;
        l->heartbeat_interval_s = (unsigned)config_get_int(s->config, "heartbeat_interval_s");
        l->heartbeat_timeout_s = (unsigned)config_get_int(s->config, "heartbeat_timeout_s");
        l->heartbeat_timeout = (usec_t)l->heartbeat_timeout_s * USEC_PER_SEC;
        l->started_mono = now_mono_usec();
        pthread_mutex_init(&l->lock, NULL);
        uv_async_init(s->loop, &l->wake, on_wake);
        l->wake.data = l;
        uv_timer_init(s->loop, &l->scan);
        uv_timer_init(s->loop, &l->flush);
        uv_timer_init(s->loop, &l->startup);
        l->scan.data = l->flush.data = l->startup.data = l;
        l->open = true;
        *ret = l; /* from here agent_link_stop() cleans up */

        /* The certificate names the host agents dial. */
        char cert_host[256];
        snprintf(cert_host, sizeof(cert_host), "%s", host);
        if (advertised) {
                const char *hp = strstr(advertised, "://");
                unsigned p2;
                if (!hp || split_host_port(hp + 3, cert_host, sizeof(cert_host), &p2) < 0)
                        return log_error_errno(-EINVAL,
                                               "bad agent_endpoint, expected tls+tcp://HOST:PORT "
                                               "| value=%s",
                                               advertised);
        }
        _cleanup_free_ char *cert = NULL, *key = NULL;
        int r = ca_issue_server_cert(ca, cert_host, &cert, &key);
        if (r < 0)
                return log_error_errno(r, "cannot issue the link's server certificate");

        if ((rv = nng_pair1_open_poly(&l->sock)) != 0 ||
            (rv = nng_tls_config_alloc(&l->tls, NNG_TLS_MODE_SERVER)) != 0 ||
            (rv = nng_tls_config_own_cert(l->tls, cert, key, NULL)) != 0 ||
            (rv = nng_tls_config_ca_chain(l->tls, ca_pem(ca), NULL)) != 0 ||
            (rv = nng_tls_config_auth_mode(l->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0)
                return log_error_errno(-EIO, "cannot set up the agent link: %s", nng_strerror(rv));
        explicit_bzero(key, strlen(key));
        /* Generous socket buffers: a burst of replies from many agents waits
         * in nng rather than being pushed back. */
        nng_socket_set_int(l->sock, NNG_OPT_RECVBUF, 1024);
        nng_socket_set_int(l->sock, NNG_OPT_SENDBUF, 1024);
        nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, PROTO_MAX_MESSAGE);
        nng_pipe_notify(l->sock, NNG_PIPE_EV_ADD_POST, on_pipe_event, l);
        nng_pipe_notify(l->sock, NNG_PIPE_EV_REM_POST, on_pipe_event, l);
        if ((rv = nng_aio_alloc(&l->recv_aio, on_recv, l)) != 0)
                return -ENOMEM;

        snprintf(url, sizeof(url), "tls+tcp://%s", listen);
        if ((rv = nng_listener_create(&l->listener, l->sock, url)) != 0 ||
            (rv = nng_listener_set_ptr(l->listener, NNG_OPT_TLS_CONFIG, l->tls)) != 0 ||
            (rv = nng_listener_start(l->listener, 0)) != 0)
                return log_error_errno(-EADDRINUSE, "cannot listen for agents | url=%s error=%s",
                                       url, nng_strerror(rv));
        int bound = (int)port;
        (void)nng_listener_get_int(l->listener, NNG_OPT_TCP_BOUND_PORT, &bound);
        if (advertised)
                snprintf(l->endpoint, sizeof(l->endpoint), "%s", advertised);
        else
                snprintf(l->endpoint, sizeof(l->endpoint), "tls+tcp://%s:%d", host, bound);

        nng_recv_aio(l->sock, l->recv_aio);
        uv_timer_start(&l->scan, on_scan, SCAN_INTERVAL_MS, SCAN_INTERVAL_MS);
        uint64_t flush_ms = MIN((uint64_t)l->heartbeat_interval_s * 1000, 5000);
        uv_timer_start(&l->flush, on_flush, flush_ms, flush_ms);
        uv_timer_start(&l->startup, on_startup_grace, (uint64_t)l->heartbeat_timeout_s * 1000, 0);
        log_info("agent link listening | endpoint=%s heartbeat_timeout_s=%u", l->endpoint,
                 l->heartbeat_timeout_s);
        return 0;
}

const char *agent_link_endpoint(const AgentLink *l)
{
        return l ? l->endpoint : NULL;
}

bool agent_link_node_online(const AgentLink *l, const char *node_id, usec_t *ret_last_seen)
{
        Peer *p = l ? peer_by_node(l, node_id) : NULL;
        if (!p || !p->helloed)
                return false;
        if (ret_last_seen)
                *ret_last_seen = p->last_seen_wall;
        return true;
}

int agent_link_send(AgentLink *l, const char *node_id, const char *type, ProtoWriter *body)
{
        Peer *p = l ? peer_by_node(l, node_id) : NULL;
        if (!p || !p->helloed || p->closing)
                return -ENOTCONN;
        return send_writer(l, p, type, NULL, body);
}

void agent_link_drop_node(AgentLink *l, const char *node_id, const char *code, const char *message)
{
        Peer *p = l ? peer_by_node(l, node_id) : NULL;
        if (!p)
                return;
        unbind(l, p); /* the caller already recorded the node's new state */
        send_error(l, p, code, message, 0);
}

static void close_handle(uv_handle_t *h)
{
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

/* nng 1.5.2's nng_close (and nng_aio_stop) can block for good when it races
 * a pipe's teardown (close races fixed in later nng releases); seen as a
 * controller that never exited on SIGTERM while an agent it had just refused
 * was redialing. The close runs on a thread of its own and is waited for a
 * bounded time; past that the link is detached (callbacks still running drop
 * what they get) and left to the exiting process. */
#define LINK_CLOSE_WAIT_S 5

static struct {
        pthread_mutex_t lock;
        pthread_cond_t cond;
} closing = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

typedef struct LinkClose {
        AgentLink *l;
        bool done;
} LinkClose;

static void *link_close_main(void *arg)
{
        LinkClose *c = arg;
        if (c->l->recv_aio)
                nng_aio_stop(c->l->recv_aio);
        nng_close(c->l->sock); /* joins nng's callbacks: none runs after this */
        pthread_mutex_lock(&closing.lock);
        c->done = true;
        pthread_cond_broadcast(&closing.cond);
        pthread_mutex_unlock(&closing.lock);
        return NULL;
}

/* Returns true when the socket is closed, false when the close is still
 * blocked (the LinkClose then belongs to its thread). */
static bool close_socket_bounded(AgentLink *l)
{
        LinkClose *c = calloc(1, sizeof(*c));
        pthread_t t;
        if (c)
                c->l = l;
        if (!c || pthread_create(&t, NULL, link_close_main, c) != 0) {
                free(c);
                if (l->recv_aio)
                        nng_aio_stop(l->recv_aio);
                nng_close(l->sock);
                return true;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += LINK_CLOSE_WAIT_S;
        pthread_mutex_lock(&closing.lock);
        while (!c->done)
                if (pthread_cond_timedwait(&closing.cond, &closing.lock, &until) != 0)
                        break;
        bool done = c->done;
        pthread_mutex_unlock(&closing.lock);
        if (!done) {
                (void)pthread_detach(t);
                return false;
        }
        pthread_join(t, NULL);
        free(c);
        return true;
}

void agent_link_stop(AgentLink *l)
{
        if (!l)
                return;
        if (l->open) {
                on_flush(&l->flush);
                if (!close_socket_bounded(l)) {
                        log_warning("The agent link's socket did not close in %d s (nng close "
                                    "race); leaving it to the exiting process",
                                    LINK_CLOSE_WAIT_S);
                        pthread_mutex_lock(&l->lock);
                        l->detached = true;
                        pthread_mutex_unlock(&l->lock);
                        close_handle((uv_handle_t *)&l->scan);
                        close_handle((uv_handle_t *)&l->flush);
                        close_handle((uv_handle_t *)&l->startup);
                        close_handle((uv_handle_t *)&l->wake);
                        uv_run(l->server->loop, UV_RUN_NOWAIT);
                        return; /* l stays: nng's threads may still hold it */
                }
                if (l->recv_aio)
                        nng_aio_free(l->recv_aio);
                if (l->tls)
                        nng_tls_config_free(l->tls);
                close_handle((uv_handle_t *)&l->scan);
                close_handle((uv_handle_t *)&l->flush);
                close_handle((uv_handle_t *)&l->startup);
                close_handle((uv_handle_t *)&l->wake);
                /* Let the loop finish the closes before the memory goes. */
                uv_run(l->server->loop, UV_RUN_NOWAIT);
        }
        for (LinkEvent *e = l->head; e;) {
                LinkEvent *next = e->next;
                if (e->msg)
                        nng_msg_free(e->msg);
                free(e);
                e = next;
        }
        for (size_t b = 0; b < PIPE_BUCKETS; b++)
                for (Peer *p = l->by_pipe[b]; p;) {
                        Peer *next = p->next_by_pipe;
                        free(p);
                        p = next;
                }
        pthread_mutex_destroy(&l->lock);
        free(l);
}
