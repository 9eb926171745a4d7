/* SPDX-License-Identifier: MIT */
/* Admin: nodes, their enrollment tokens, discovery review and approval.
 * Every change runs in one transaction with its audit row; a refused request
 * changes nothing. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-link.h"
#include "api.h"
#include "audit.h"
#include "db.h"
#include "discoveries.h"
#include "log.h"
#include "node-commands.h"
#include "node-state.h"
#include "nodes.h"
#include "provisioner.h"
#include "server.h"

#define LIST_DEFAULT_LIMIT 50
#define LIST_MAX_LIMIT     200

/* The node as the API shows it: online and last_seen_at from the live link
 * when it has fresher news than the database. */
static json_t *node_json(Server *s, Node *n)
{
        usec_t seen;
        if (agent_link_node_online(s->link, n->id, &seen)) {
                n->online = true;
                if (seen > n->last_seen_at)
                        n->last_seen_at = seen;
        } else
                n->online = false;
        return node_to_json(n);
}

/* Loads the node named by path parameter 0; answers 404 itself (returns -ENOENT). */
static int load_node(Request *r, Node *ret)
{
        const char *id = http_param(r, 0);
        int ret_code = id_valid("nod", id) ? nodes_get(r->server->db, id, ret) : -ENOENT;
        if (ret_code == -ENOENT) {
                http_reply_error(r, ERR_NOT_FOUND, NULL, "no such node");
                return -ENOENT;
        }
        if (ret_code < 0) {
                http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the node now");
                return ret_code;
        }
        return 0;
}

static int reply_invalid_state(Request *r, const char *state, const char *fmt, const char *what)
{
        return http_reply_error(r, ERR_INVALID_STATE, json_pack("{s:s}", "state", state), fmt,
                                what);
}

/* Parses ?limit= (1..LIST_MAX_LIMIT); answers 400 itself. */
static int read_limit(Request *r, int *ret)
{
        const char *v = http_query(r, "limit");
        *ret = LIST_DEFAULT_LIMIT;
        if (!v)
                return 0;
        char *end;
        long n = strtol(v, &end, 10);
        if (!*v || *end || n < 1 || n > LIST_MAX_LIMIT) {
                http_reply_invalid_field(r, "limit", "limit must be 1 to %d", LIST_MAX_LIMIT);
                return -EINVAL;
        }
        *ret = (int)n;
        return 0;
}

/* Cursors are "c" + the last row's sequence number: stable under inserts. */
static int read_cursor(Request *r, long long *ret)
{
        const char *v = http_query(r, "cursor");
        *ret = 0;
        if (!v || !*v)
                return 0;
        char *end;
        long long n = v[0] == 'c' ? strtoll(v + 1, &end, 10) : -1;
        if (n < 0 || v[1] == '\0' || *end) {
                http_reply_invalid_field(r, "cursor", "cursor is not one this API handed out");
                return -EINVAL;
        }
        *ret = n;
        return 0;
}

static json_t *cursor_json(long long seq, size_t got, int limit)
{
        if ((int)got < limit)
                return json_null();
        char buf[32];
        snprintf(buf, sizeof(buf), "c%lld", seq);
        return json_string(buf);
}

/* ---- create / list / get / delete ---- */

static const JsonField create_fields[] = {
    {"name", JSON_FIELD_STRING, true, 1, NODE_NAME_MAX},
    {"simulated", JSON_FIELD_BOOLEAN, false, 0, 0},
};

int api_nodes_create(Request *r)
{
        Server *s = r->server;
        json_t *body = NULL;
        if (http_read_json(r, create_fields, ELEMENTSOF(create_fields), &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        const char *name = json_field_string(b, "name");
        if (name_validate(name) < 0)
                return http_reply_invalid_field(r, "name",
                                                "name must be 1 to %d characters without control "
                                                "characters",
                                                NODE_NAME_MAX);
        bool simulated = json_is_true(json_object_get(b, "simulated"));
        long long ttl = config_get_int(s->config, "bootstrap_token_ttl_s");

        _cleanup_txn_ DbTxn txn = {0};
        _cleanup_(node_done) Node n = {0};
        char token[64];
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = nodes_insert(s->db, name, simulated, r->auth.user_id, &n);
        if (ret >= 0)
                ret = bootstrap_token_create(s->db, n.id, ttl, token);
        if (ret >= 0)
                ret = audit_log(s->db, r->auth.user_id, "node.create", "node", n.id, NULL,
                                json_pack("{s:s, s:b, s:I}", "name", name, "simulated", simulated,
                                          "bootstrap_token_ttl_s", (json_int_t)ttl));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot create the node now");

        _cleanup_free_ char *command = NULL;
        if (asprintf(&command, "scripts/bootstrap.sh --controller %s --token %s%s", s->public_url,
                     token, simulated ? " --simulate" : "") < 0)
                return -ENOMEM;
        char loc[128];
        snprintf(loc, sizeof(loc), "/api/v1/admin/nodes/%s", n.id);
        http_add_header(r, "location", loc);
        ret = http_reply_json(r, 201,
                              json_pack("{s:o, s:s, s:s, s:o}", "node", node_json(s, &n),
                                        "bootstrap_token", token, "bootstrap_command", command,
                                        "bootstrap_token_expires_at",
                                        json_timestamp(now_usec() + (usec_t)ttl * USEC_PER_SEC)));
        explicit_bzero(token, sizeof(token));
        return ret;
}

typedef struct ListCtx {
        Server *server;
        json_t *items;
        long long last_seq;
} ListCtx;

static int list_one(const Node *n, void *userdata)
{
        ListCtx *c = userdata;
        Node copy = *n; /* node_json may adjust online/last_seen */
        json_array_append_new(c->items, node_json(c->server, &copy));
        c->last_seq = n->seq;
        return 0;
}

int api_nodes_list(Request *r)
{
        int limit;
        long long after;
        if (read_limit(r, &limit) < 0 || read_cursor(r, &after) < 0)
                return 0;
        const char *state = http_query(r, "state");
        if (state && node_state_from_string(state) == _NODE_STATE_INVALID)
                return http_reply_invalid_field(r, "state", "state is not a node state");
        ListCtx c = {.server = r->server, .items = json_array()};
        int ret = nodes_list(r->server->db, after, limit, state, list_one, &c);
        if (ret < 0) {
                json_decref(c.items);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot list nodes now");
        }
        size_t got = json_array_size(c.items);
        return http_reply_json(r, 200,
                               json_pack("{s:o, s:o}", "items", c.items, "next_cursor",
                                         cursor_json(c.last_seq, got, limit)));
}

int api_nodes_get(Request *r)
{
        _cleanup_(node_done) Node n = {0};
        if (load_node(r, &n) < 0)
                return 0;
        return http_reply_json(r, 200, node_json(r->server, &n));
}

int api_nodes_delete(Request *r)
{
        Server *s = r->server;
        _cleanup_(node_done) Node n = {0};
        if (load_node(r, &n) < 0)
                return 0;
        if (n.state == NODE_DISABLED)
                return reply_invalid_state(r, "disabled", "the %s node is already deleted",
                                           "disabled");
        _cleanup_txn_ DbTxn txn = {0};
        int revoked = 0;
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = node_state_transition(s->db, n.id, NODE_DISABLED, NODE_TRIGGER_DELETE, NULL);
        if (ret >= 0)
                ret = revoked = node_certs_revoke(s->db, n.id);
        if (ret >= 0)
                ret = nodes_set_online(s->db, n.id, false, 0);
        if (ret >= 0)
                ret = audit_log(s->db, r->auth.user_id, "node.revoke", "node", n.id, NULL,
                                json_pack("{s:s, s:i, s:s}", "previous_state",
                                          node_state_to_string(n.state), "certificates_revoked",
                                          revoked, "name", n.name));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret == -EPERM)
                return reply_invalid_state(r, node_state_to_string(n.state),
                                           "a node in state %s cannot be deleted",
                                           node_state_to_string(n.state));
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot delete the node now");
        provisioner_node_changed(s, n.id);
        agent_link_drop_node(s->link, n.id, "certificate_revoked",
                             "this node was deleted and its certificate revoked");
        node_done(&n);
        if (nodes_get(s->db, http_param(r, 0), &n) < 0)
                return http_reply_empty(r, 204);
        return http_reply_json(r, 200, node_json(s, &n));
}

/* ---- discovery ---- */

int api_nodes_discovery(Request *r)
{
        Server *s = r->server;
        _cleanup_(node_done) Node n = {0};
        if (load_node(r, &n) < 0)
                return 0;
        /* An offline node is one whose agent is away: node_offline says so. */
        if (n.state == NODE_PENDING_ENROLLMENT || n.state == NODE_DISABLED)
                return reply_invalid_state(r, node_state_to_string(n.state),
                                           "discovery needs an enrolled, connected node; this "
                                           "one is %s",
                                           node_state_to_string(n.state));
        if (!agent_link_node_online(s->link, n.id, NULL))
                return http_reply_error(r, ERR_NODE_OFFLINE, json_pack("{s:s}", "node_id", n.id),
                                        "the node's agent is not connected");

        _cleanup_txn_ DbTxn txn = {0};
        char command_id[ID_MAX], discovery_id[ID_MAX];
        _cleanup_(json_decrefp) json_t *cmd_body = NULL;
        int ret = db_begin(s->db, &txn);
        /* The command carries the discovery id, so create the command with a
         * body naming it, then the discovery row naming the command. */
        if (ret >= 0) {
                cmd_body = json_pack("{s:s}", "discovery_id", "");
                ret = node_command_create(s->db, n.id, "command.discover", cmd_body, command_id);
        }
        if (ret >= 0)
                ret = discovery_create(s->db, n.id, command_id, r->auth.user_id, discovery_id);
        if (ret >= 0) {
                json_object_set_new(cmd_body, "discovery_id", json_string(discovery_id));
                _cleanup_free_ char *text = json_dumps(cmd_body, JSON_COMPACT);
                _cleanup_(db_stmt_resetp) sqlite3_stmt *u =
                    db_stmt(s->db, "UPDATE node_commands SET body = ? WHERE id = ?");
                if (!u || !text)
                        ret = -EIO;
                else {
                        sqlite3_bind_text(u, 1, text, -1, SQLITE_TRANSIENT);
                        sqlite3_bind_text(u, 2, command_id, -1, SQLITE_TRANSIENT);
                        ret = sqlite3_step(u) == SQLITE_DONE ? 0 : -EIO;
                }
        }
        if (ret >= 0)
                ret = audit_log(s->db, r->auth.user_id, "node.discovery_requested", "node", n.id,
                                NULL,
                                json_pack("{s:s, s:s}", "discovery_id", discovery_id, "command_id",
                                          command_id));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot start discovery now");
        agent_link_flush_commands(s->link, n.id);

        char loc[200];
        snprintf(loc, sizeof(loc), "/api/v1/admin/nodes/%s/slice-topology/candidates/%s", n.id,
                 discovery_id);
        http_add_header(r, "location", loc);
        return http_reply_json(r, 202,
                               json_pack("{s:s, s:s, s:s}", "discovery_id", discovery_id,
                                         "command_id", command_id, "state", "running"));
}

static int load_discovery(Request *r, const Node *n, Discovery *ret)
{
        const char *id = http_param(r, 1);
        int ret_code = id_valid("dsc", id) ? discovery_get(r->server->db, n->id, id, ret) : -ENOENT;
        if (ret_code == -ENOENT) {
                http_reply_error(r, ERR_NOT_FOUND, NULL, "no such discovery for this node");
                return -ENOENT;
        }
        if (ret_code < 0) {
                http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the discovery now");
                return ret_code;
        }
        return 0;
}

int api_nodes_candidate(Request *r)
{
        _cleanup_(node_done) Node n = {0};
        _cleanup_(discovery_done) Discovery d = {0};
        if (load_node(r, &n) < 0 || load_discovery(r, &n, &d) < 0)
                return 0;
        json_t *slots = json_object_get(d.document, "slots");
        json_t *inv = NULL, *failing = NULL;
        int ok = 0;
        if (d.document && json_is_array(slots))
                ok = discovery_evaluate(d.document, NULL, &inv, &failing, NULL);
        json_t *out = json_pack(
            "{s:s, s:s, s:s, s:o, s:o, s:o, s:b, s:O, s:s?, s:O?, s:s?, s:s?, s:o, s:o, s:O?}",
            "discovery_id", d.id, "node_id", d.node_id, "state", d.state, "slots",
            slots ? json_incref(slots) : json_array(), "invariants", inv ? inv : json_array(),
            "failing", failing ? failing : json_array(), "ok", ok == 1, "changes",
            d.changes ? d.changes : json_null(), "fingerprint", d.fingerprint, "agent_invariants",
            json_object_get(d.document, "invariants"), "error", d.error, "requested_by",
            d.requested_by, "created_at", json_timestamp(d.created_at), "finished_at",
            json_timestamp(d.finished_at), "document", d.document);
        return http_reply_json(r, 200, out);
}

static const JsonField approve_fields[] = {
    {"slots", JSON_FIELD_ARRAY, false, 0, 0},
    {"reason", JSON_FIELD_STRING, false, 0, 500},
};

int api_nodes_approve(Request *r)
{
        Server *s = r->server;
        _cleanup_(node_done) Node n = {0};
        _cleanup_(discovery_done) Discovery d = {0};
        if (load_node(r, &n) < 0 || load_discovery(r, &n, &d) < 0)
                return 0;
        json_t *body = NULL;
        if (r->req->entity.len > 0 &&
            http_read_json(r, approve_fields, ELEMENTSOF(approve_fields), &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        json_t *keys = json_object_get(b, "slots");
        if (json_is_null(keys))
                keys = NULL;
        if (keys) {
                size_t i;
                json_t *k;
                if (json_array_size(keys) == 0)
                        return http_reply_invalid_field(r, "slots",
                                                        "slots must name at least one slot "
                                                        "(leave it out to approve all)");
                json_array_foreach(
                    keys, i,
                    k) if (!json_is_string(k)) return http_reply_invalid_field(r, "slots",
                                                                               "slots must be an "
                                                                               "array of slot ids");
        }
        if (!streq(d.state, "completed"))
                return reply_invalid_state(r, d.state,
                                           "only a completed discovery can be "
                                           "approved; this one is %s",
                                           d.state);
        if (n.state != NODE_PENDING_APPROVAL && n.state != NODE_ACTIVE)
                return reply_invalid_state(r, node_state_to_string(n.state),
                                           "a node in state %s cannot be approved",
                                           node_state_to_string(n.state));

        _cleanup_(json_decrefp) json_t *inv = NULL, *failing = NULL;
        const char *unknown = NULL;
        int ok = discovery_evaluate(d.document, keys, &inv, &failing, &unknown);
        if (ok == -ENOENT)
                return http_reply_error(r, ERR_INVALID_REQUEST,
                                        json_pack("{s:s, s:s}", "field", "slots", "slot", unknown),
                                        "slot %s is not in this discovery", unknown);
        if (ok < 0)
                return http_reply_error(r, ERR_INTERNAL, NULL, "the stored discovery is malformed");
        if (ok == 0)
                return http_reply_error(
                    r, ERR_INVARIANTS_FAILED,
                    json_pack("{s:O, s:O}", "invariants", inv, "failing", failing),
                    "the slot invariants do not hold for the slots being "
                    "approved");

        _cleanup_txn_ DbTxn txn = {0};
        _cleanup_(json_decrefp) json_t *slots = NULL;
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = discovery_approve(s->db, &d, keys, r->auth.user_id, &slots);
        if (ret >= 0)
                ret = node_state_transition(s->db, n.id, NODE_ACTIVE, NODE_TRIGGER_APPROVE, NULL);
        if (ret >= 0) {
                json_t *keys_out = json_array();
                size_t i;
                json_t *sl;
                json_array_foreach(slots, i, sl)
                    json_array_append(keys_out, json_object_get(sl, "slot_key"));
                ret = audit_log(s->db, r->auth.user_id, "node.approve", "node", n.id,
                                json_field_string(b, "reason"),
                                json_pack("{s:s, s:s?, s:o, s:b}", "discovery_id", d.id,
                                          "fingerprint", d.fingerprint, "slots", keys_out, "subset",
                                          keys != NULL));
        }
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret == -EPERM)
                return reply_invalid_state(r, node_state_to_string(n.state),
                                           "a node in state %s cannot be approved",
                                           node_state_to_string(n.state));
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot approve now");
        provisioner_node_changed(s, n.id); /* the approved slots can be placed now */
        node_done(&n);
        if (nodes_get(s->db, d.node_id, &n) < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the node now");
        return http_reply_json(r, 200,
                               json_pack("{s:o, s:O, s:O}", "node", node_json(s, &n), "slots",
                                         slots, "invariants", inv));
}

int api_nodes_slots(Request *r)
{
        _cleanup_(node_done) Node n = {0};
        if (load_node(r, &n) < 0)
                return 0;
        json_t *items = NULL;
        if (node_slots_list(r->server->db, n.id, &items) < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the slots now");
        return http_reply_json(r, 200, json_pack("{s:o, s:n}", "items", items, "next_cursor"));
}
