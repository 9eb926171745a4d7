/* SPDX-License-Identifier: MIT */
#pragma once

/* The node state machine: one table of allowed (from, to, trigger) moves.
 * Every transition goes through node_state_transition(), which refuses any
 * move not in the table and persists it; callers run it inside the
 * transaction that carries the move's side effects and audit row. */

#include <stdbool.h>

typedef struct Db Db;

typedef enum NodeState {
        NODE_PENDING_ENROLLMENT,
        NODE_ENROLLED,
        NODE_PENDING_APPROVAL,
        NODE_ACTIVE,
        NODE_OFFLINE,
        NODE_DRAINING,
        NODE_DISABLED,
        _NODE_STATE_MAX,
        _NODE_STATE_INVALID = -1,
} NodeState;

typedef enum NodeTrigger {
        NODE_TRIGGER_ENROLL,             /* the bootstrap token was redeemed */
        NODE_TRIGGER_DISCOVERY_COMPLETE, /* a candidate slot map arrived */
        NODE_TRIGGER_APPROVE,            /* an admin approved slots */
        NODE_TRIGGER_LINK_LOST,          /* link closed or heartbeat timeout */
        NODE_TRIGGER_LINK_RESTORED,      /* authenticated hello after offline */
        NODE_TRIGGER_DRAIN,
        NODE_TRIGGER_UNDRAIN,
        NODE_TRIGGER_DELETE, /* certificates revoked */
        _NODE_TRIGGER_MAX,
} NodeTrigger;

const char *node_state_to_string(NodeState s);
NodeState node_state_from_string(const char *s);
const char *node_trigger_to_string(NodeTrigger t);

/* Whether the table has the move. */
bool node_state_allowed(NodeState from, NodeState to, NodeTrigger trigger);

/* Moves node_id from its current state to `to`: -ENOENT (no node), -EPERM
 * (the table has no such move; *ret_from says where it stood). On
 * LINK_LOST the state left is remembered (offline_from) and LINK_RESTORED
 * returns to it, so `to` is ignored for LINK_RESTORED. */
int node_state_transition(Db *db, const char *node_id, NodeState to, NodeTrigger trigger,
                          NodeState *ret_from);
