/* SPDX-License-Identifier: MIT */
#include "nodes.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "db.h"
#include "json-util.h"
#include "macro.h"

void node_done(Node *n)
{
        free(n->fingerprint);
        free(n->agent_version);
        n->fingerprint = n->agent_version = NULL;
}

json_t *node_to_json(const Node *n)
{
        return json_pack("{s:s, s:s, s:s, s:b, s:o, s:b, s:o, s:I, s:o, s:o}", "id", n->id, "name",
                         n->name, "state", node_state_to_string(n->state), "online", n->online,
                         "last_seen_at", json_timestamp(n->last_seen_at), "simulated", n->simulated,
                         "fingerprint", n->fingerprint ? json_string(n->fingerprint) : json_null(),
                         "slots", (json_int_t)n->n_slots, "created_at",
                         json_timestamp(n->created_at), "agent_version",
                         n->agent_version ? json_string(n->agent_version) : json_null());
}

#define NODE_COLUMNS                                                                               \
        "n.seq, n.id, n.name, n.state, n.online, n.last_seen_at, n.simulated, n.fingerprint, "     \
        "n.agent_version, n.created_at, (SELECT COUNT(*) FROM node_resource_slots r WHERE "        \
        "r.node_id = n.id) "

static void node_from_row(sqlite3_stmt *s, Node *n)
{
        *n = (Node){0};
        n->seq = sqlite3_column_int64(s, 0);
        snprintf(n->id, sizeof(n->id), "%s", strempty(db_column_text(s, 1)));
        snprintf(n->name, sizeof(n->name), "%s", strempty(db_column_text(s, 2)));
        n->state = node_state_from_string(db_column_text(s, 3));
        n->online = sqlite3_column_int(s, 4) != 0;
        n->last_seen_at = (usec_t)sqlite3_column_int64(s, 5);
        n->simulated = sqlite3_column_int(s, 6) != 0;
        const char *fp = db_column_text(s, 7), *av = db_column_text(s, 8);
        n->fingerprint = fp ? strdup(fp) : NULL;
        n->agent_version = av ? strdup(av) : NULL;
        n->created_at = (usec_t)sqlite3_column_int64(s, 9);
        n->n_slots = sqlite3_column_int64(s, 10);
}

int nodes_insert(Db *db, const char *name, bool simulated, const char *created_by, Node *ret)
{
        char id[ID_MAX];
        int r = id_new("nod", id);
        if (r < 0)
                return r;
        usec_t now = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO nodes (id, name, state, simulated, created_by, created_at, "
                        "updated_at) VALUES (?, ?, 'pending_enrollment', ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(s, 3, simulated);
        db_bind_text(s, 4, created_by);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 6, (sqlite3_int64)now);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return ret ? nodes_get(db, id, ret) : 0;
}

int nodes_get(Db *db, const char *id, Node *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " NODE_COLUMNS "FROM nodes n WHERE n.id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        node_from_row(s, ret);
        return 0;
}

int nodes_list(Db *db, long long after_seq, int limit, const char *state,
               int (*fn)(const Node *n, void *userdata), void *userdata)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " NODE_COLUMNS "FROM nodes n WHERE n.seq > ? AND "
                        "(?2 IS NULL OR n.state = ?2) ORDER BY n.seq LIMIT ?");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, after_seq);
        db_bind_text(s, 2, state);
        sqlite3_bind_int(s, 3, limit);
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                _cleanup_(node_done) Node n;
                node_from_row(s, &n);
                int r = fn(&n, userdata);
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int exec_node_update(Db *db, const char *sql, const char *id, int n_ints,
                            const sqlite3_int64 *ints, const char *text)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(db, sql);
        if (!s)
                return -EIO;
        int idx = 1;
        for (int i = 0; i < n_ints; i++)
                sqlite3_bind_int64(s, idx++, ints[i]);
        if (text)
                sqlite3_bind_text(s, idx++, text, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, idx, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int nodes_set_online(Db *db, const char *id, bool online, usec_t last_seen_at)
{
        sqlite3_int64 v[] = {online, (sqlite3_int64)last_seen_at};
        return exec_node_update(db,
                                "UPDATE nodes SET online = ?, last_seen_at = "
                                "COALESCE(NULLIF(?, 0), last_seen_at) WHERE id = ?",
                                id, 2, v, NULL);
}

int nodes_set_hello(Db *db, const char *id, const char *agent_version, bool simulated)
{
        sqlite3_int64 v[] = {simulated};
        /* simulated only ever turns on: a node created as simulated stays so. */
        return exec_node_update(db,
                                "UPDATE nodes SET simulated = MAX(simulated, ?), agent_version = ? "
                                "WHERE id = ?",
                                id, 1, v, agent_version);
}

int nodes_set_last_seen(Db *db, const char *id, usec_t at)
{
        sqlite3_int64 v[] = {(sqlite3_int64)at};
        return exec_node_update(db, "UPDATE nodes SET last_seen_at = ? WHERE id = ?", id, 1, v,
                                NULL);
}

int nodes_all_offline_flag(Db *db)
{
        return db_exec(db, "UPDATE nodes SET online = 0 WHERE online != 0");
}

/* ---- bootstrap tokens ---- */

static void token_hash(const char *token, unsigned char out[static SHA256_DIGEST_LENGTH])
{
        SHA256((const unsigned char *)token, strlen(token), out);
}

int bootstrap_token_create(Db *db, const char *node_id, long long ttl_s, char ret[static 64])
{
        char rnd[48];
        int r = random_token(32, rnd, sizeof(rnd));
        if (r < 0)
                return r;
        snprintf(ret, 64, BOOTSTRAP_TOKEN_PREFIX "%s", rnd);
        unsigned char h[SHA256_DIGEST_LENGTH];
        token_hash(ret, h);
        usec_t now = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO bootstrap_tokens (token_hash, node_id, created_at, "
                        "expires_at) VALUES (?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_blob(s, 1, h, sizeof(h), SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, node_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)(now + (usec_t)ttl_s * USEC_PER_SEC));
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int bootstrap_token_redeem(Db *db, const char *token, char node_id[static ID_MAX])
{
        unsigned char h[SHA256_DIGEST_LENGTH];
        token_hash(token, h);
        usec_t now = now_usec();
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT node_id, expires_at, used_at FROM bootstrap_tokens WHERE "
                                "token_hash = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_blob(s, 1, h, sizeof(h), SQLITE_TRANSIENT);
                int rc = sqlite3_step(s);
                if (rc == SQLITE_DONE)
                        return -ENOENT;
                if (rc != SQLITE_ROW)
                        return db_errno(rc);
                snprintf(node_id, ID_MAX, "%s", strempty(db_column_text(s, 0)));
                if (sqlite3_column_type(s, 2) != SQLITE_NULL)
                        return -EALREADY;
                if ((usec_t)sqlite3_column_int64(s, 1) <= now)
                        return -EKEYEXPIRED;
        }
        _cleanup_(db_stmt_resetp) sqlite3_stmt *u =
            db_stmt(db, "UPDATE bootstrap_tokens SET used_at = ? WHERE token_hash = ?");
        if (!u)
                return -EIO;
        sqlite3_bind_int64(u, 1, (sqlite3_int64)now);
        sqlite3_bind_blob(u, 2, h, sizeof(h), SQLITE_TRANSIENT);
        int rc = sqlite3_step(u);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

/* ---- certificates ---- */

int node_cert_insert(Db *db, const char *serial, const char *node_id, int64_t not_after_usec)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO node_certificates (serial, node_id, issued_at, not_after) "
                        "VALUES (?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, serial, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, node_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)now_usec());
        sqlite3_bind_int64(s, 4, not_after_usec);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int node_cert_is_valid(Db *db, const char *serial, const char *node_id)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT revoked_at IS NULL FROM node_certificates WHERE serial = ? AND "
                        "node_id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, serial, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, node_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return 0;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        return sqlite3_column_int(s, 0) ? 1 : 0;
}

int node_certs_revoke(Db *db, const char *node_id)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE node_certificates SET revoked_at = ? WHERE node_id = ? AND "
                        "revoked_at IS NULL");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 2, node_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return sqlite3_changes(db_handle(db));
}

/* ---- epoch ---- */

int controller_epoch_bump(Db *db, uint64_t *ret)
{
        int r = db_exec(db, "UPDATE controller_epoch SET epoch = epoch + 1 WHERE id = 1");
        if (r < 0)
                return r;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT epoch FROM controller_epoch WHERE id = 1");
        if (!s)
                return -EIO;
        int rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        *ret = (uint64_t)sqlite3_column_int64(s, 0);
        return 0;
}
