/* SPDX-License-Identifier: MIT */
/* Agent enrollment (public: the bootstrap token is the credential). The
 * token is spent, the CSR signed with the node id as its CN, and the node
 * moves to `enrolled`, all in one transaction with the audit row: a refused
 * enrollment spends nothing. */
#include <errno.h>
#include <string.h>

#include "agent-link.h"
#include "api.h"
#include "audit.h"
#include "ca.h"
#include "db.h"
#include "log.h"
#include "node-state.h"
#include "nodes.h"
#include "server.h"

static const JsonField enroll_fields[] = {
    {"bootstrap_token", JSON_FIELD_STRING, true, 1, 128},
    {"csr_pem", JSON_FIELD_STRING, true, 1, 16384},
    {"facts", JSON_FIELD_OBJECT, false, 0, 0},
};

static int reply_token_error(Request *r, int err)
{
        switch (err) {
        case -EKEYEXPIRED:
                return http_reply_error(r, ERR_BOOTSTRAP_TOKEN_EXPIRED, NULL,
                                        "the bootstrap token has expired; create a new one");
        case -EALREADY:
                return http_reply_error(r, ERR_BOOTSTRAP_TOKEN_USED, NULL,
                                        "the bootstrap token was used already; it works once");
        default:
                return http_reply_error(r, ERR_BOOTSTRAP_TOKEN_INVALID, NULL,
                                        "the bootstrap token is not valid");
        }
}

int api_agent_enroll(Request *r)
{
        Server *s = r->server;
        json_t *body = NULL;
        if (http_read_json(r, enroll_fields, ELEMENTSOF(enroll_fields), &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        json_t *facts = json_object_get(b, "facts");
        const char *claimed = json_string_value(json_object_get(facts, "node_id"));
        bool simulated = json_is_true(json_object_get(facts, "simulated"));
        const char *agent_version = json_string_value(json_object_get(facts, "agent_version"));

        _cleanup_txn_ DbTxn txn = {0};
        char node_id[ID_MAX];
        int ret = db_begin(s->db, &txn);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot enroll now");
        ret = bootstrap_token_redeem(s->db, json_field_string(b, "bootstrap_token"), node_id);
        if (ret == -ENOENT || ret == -EKEYEXPIRED || ret == -EALREADY) {
                log_info("enrollment refused | reason=%s client=%s",
                         ret == -ENOENT        ? "unknown token"
                         : ret == -EKEYEXPIRED ? "expired"
                                               : "used",
                         r->client_addr);
                return reply_token_error(r, ret);
        }
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot enroll now");
        /* A host that already belongs to another node must not take this one's token. */
        if (claimed && !streq(claimed, node_id))
                return http_reply_error(r, ERR_BOOTSTRAP_TOKEN_WRONG_NODE,
                                        json_pack("{s:s}", "node_id", claimed),
                                        "the bootstrap token belongs to another node");
        _cleanup_(node_done) Node n = {0};
        ret = nodes_get(s->db, node_id, &n);
        if (ret < 0)
                return reply_token_error(r, -ENOENT);
        if (n.state != NODE_PENDING_ENROLLMENT)
                /* deleted before it enrolled, or enrolled by other means */
                return http_reply_error(r, ERR_BOOTSTRAP_TOKEN_INVALID,
                                        json_pack("{s:s}", "state", node_state_to_string(n.state)),
                                        "the node of this token can no longer enroll");

        char serial[CA_SERIAL_MAX];
        int64_t not_after;
        _cleanup_free_ char *cert = NULL;
        ret = ca_sign_csr(s->ca, json_field_string(b, "csr_pem"), n.id, CA_NODE_CERT_DAYS, serial,
                          &not_after, &cert);
        if (ret == -EBADMSG)
                return http_reply_invalid_field(r, "csr_pem",
                                                "csr_pem is not a PEM certificate request with a "
                                                "valid self-signature");
        if (ret == -EKEYREJECTED)
                return http_reply_invalid_field(r, "csr_pem",
                                                "csr_pem must be for an EC P-256 key");
        if (ret < 0)
                return http_reply_error(r, ERR_INTERNAL, NULL, "cannot sign the certificate");

        ret = node_cert_insert(s->db, serial, n.id, not_after);
        if (ret >= 0)
                ret = node_state_transition(s->db, n.id, NODE_ENROLLED, NODE_TRIGGER_ENROLL, NULL);
        if (ret >= 0 && (simulated || agent_version))
                ret = nodes_set_hello(s->db, n.id, agent_version, simulated);
        if (ret >= 0)
                ret = audit_log(s->db, n.id, "node.enroll", "node", n.id, NULL,
                                json_pack("{s:s, s:s, s:O?}", "certificate_serial", serial,
                                          "client_addr", r->client_addr, "facts", facts));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot enroll now");
        log_info("node enrolled | node=%s serial=%s", n.id, serial);
        return http_reply_json(r, 200,
                               json_pack("{s:s, s:s, s:s, s:s}", "node_id", n.id, "certificate_pem",
                                         cert, "ca_pem", ca_pem(s->ca), "agent_endpoint",
                                         agent_link_endpoint(s->link)));
}
