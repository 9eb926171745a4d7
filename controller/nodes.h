/* SPDX-License-Identifier: MIT */
#pragma once

/* The nodes table and what belongs to a node's identity: its one-time
 * bootstrap tokens (stored as SHA-256 hashes), the certificates the CA
 * issued it (revoked when the node is deleted), and the controller epoch. */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "id.h"
#include "node-state.h"
#include "timeutil.h"

typedef struct Db Db;

#define NODE_NAME_MAX          100
#define BOOTSTRAP_TOKEN_PREFIX "gsb_"

typedef struct Node {
        char id[ID_MAX];
        char name[NODE_NAME_MAX + 1];
        NodeState state;
        bool online;
        usec_t last_seen_at; /* 0: never */
        bool simulated;
        char *fingerprint;   /* of the approved slot map, NULL before approval */
        char *agent_version; /* from the last hello */
        usec_t created_at;
        long long n_slots; /* approved node_resource_slots */
        long long seq;     /* list order */
} Node;

void node_done(Node *n);
json_t *node_to_json(const Node *n);

int nodes_insert(Db *db, const char *name, bool simulated, const char *created_by, Node *ret);
/* -ENOENT when there is none. */
int nodes_get(Db *db, const char *id, Node *ret);
/* Up to limit nodes with seq > after_seq, in seq order; calls fn for each. */
int nodes_list(Db *db, long long after_seq, int limit, const char *state,
               int (*fn)(const Node *n, void *userdata), void *userdata);
int nodes_set_online(Db *db, const char *id, bool online, usec_t last_seen_at);
int nodes_set_hello(Db *db, const char *id, const char *agent_version, bool simulated);
int nodes_set_last_seen(Db *db, const char *id, usec_t at);
/* Every node's online flag to 0 (at start: no link is up yet). */
int nodes_all_offline_flag(Db *db);

/* ---- bootstrap tokens ---- */

/* A new token for node_id valid for ttl_s; *ret is "gsb_..." (the only copy). */
int bootstrap_token_create(Db *db, const char *node_id, long long ttl_s, char ret[static 64]);
/* Spends a token: 0 and node_id, or -ENOENT (unknown), -EKEYEXPIRED,
 * -EALREADY (spent before). Marks it used; the caller commits. */
int bootstrap_token_redeem(Db *db, const char *token, char node_id[static ID_MAX]);

/* ---- certificates ---- */

int node_cert_insert(Db *db, const char *serial, const char *node_id, int64_t not_after_usec);
/* 1 when the serial is known for node_id and not revoked, 0 when revoked or
 * unknown (a certificate the database does not know is not trusted). */
int node_cert_is_valid(Db *db, const char *serial, const char *node_id);
/* Revokes every certificate of the node; returns how many. */
int node_certs_revoke(Db *db, const char *node_id);

/* ---- the controller epoch ---- */

/* Adds one to the stored epoch and returns the new value (> 0) in *ret. */
int controller_epoch_bump(Db *db, uint64_t *ret);
