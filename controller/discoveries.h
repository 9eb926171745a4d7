/* SPDX-License-Identifier: MIT */
#pragma once

/* Discovery runs and approved slots. A discovery is requested by an admin,
 * runs on the agent as command.discover, and stores the agent's full
 * discovery document (API-CONTRACT.md "Discovery JSON"). The controller does
 * not trust the document's own verdict alone: discovery_evaluate() re-checks
 * the slot invariants for exactly the slots being approved, and approval
 * writes node_resource_slots. Re-discovery compares against the approved
 * map and quarantines free slots whose hardware changed. */

#include <jansson.h>
#include <stdbool.h>

#include "id.h"
#include "timeutil.h"

typedef struct Db Db;

typedef struct Discovery {
        char id[ID_MAX];
        char node_id[ID_MAX];
        char command_id[ID_MAX];
        char state[16];   /* running, completed, failed */
        json_t *document; /* NULL until completed */
        char *fingerprint;
        json_t *changes; /* vs the approved map; NULL when there was none */
        char *error;
        char *requested_by;
        usec_t created_at, finished_at;
} Discovery;

void discovery_done(Discovery *d);

int discovery_create(Db *db, const char *node_id, const char *command_id, const char *requested_by,
                     char ret_id[static ID_MAX]);
/* -ENOENT when there is none for this node. */
int discovery_get(Db *db, const char *node_id, const char *id, Discovery *ret);
int discovery_get_by_command(Db *db, const char *command_id, Discovery *ret);
int discovery_fail(Db *db, const char *id, const char *error);

/* Stores a completed document and compares it with the node's approved
 * slots: *ret_changes (new reference) is {unchanged, added, removed, changed,
 * quarantined}; changed or removed slots that were `available` become
 * `quarantined`. Runs inside the caller's transaction. */
int discovery_complete(Db *db, const char *id, const char *node_id, json_t *document,
                       json_t **ret_changes);

/* Re-checks the invariants for the slots named in keys (NULL: every slot of
 * the document). *ret_invariants: [{name, ok, detail}]; *ret_failing:
 * [{invariant, slot, detail}]. Returns 1 when all hold, 0 when not,
 * -ENOENT with *ret_unknown (borrowed from keys) for a key the document does
 * not have, -EINVAL for a malformed document. */
int discovery_evaluate(json_t *document, json_t *keys, json_t **ret_invariants,
                       json_t **ret_failing, const char **ret_unknown);

/* Writes the approved slots (keys: NULL for all) as node_resource_slots in
 * state available, removing the node's free slots not approved, and records
 * the fingerprint on the node. *ret_slot_ids: array of {id, slot_key}. */
int discovery_approve(Db *db, const Discovery *d, json_t *keys, const char *actor_id,
                      json_t **ret_slots);

/* The node's approved slots as API objects. */
int node_slots_list(Db *db, const char *node_id, json_t **ret);
