/* SPDX-License-Identifier: MIT */
#pragma once

/* The allocation state machine (API-CONTRACT.md "Allocation states"): one
 * table of allowed (from, to, trigger) moves. Every change of an
 * allocation's state goes through alloc_state_transition(), which refuses a
 * move the table does not have, persists it and emits the
 * "allocation.state_changed" event, inside the caller's transaction (the one
 * that carries the move's side effects). */

#include <stdbool.h>

typedef struct Db Db;

typedef enum AllocState {
        ALLOC_PENDING,
        ALLOC_PROVISIONING,
        ALLOC_ACTIVE,
        ALLOC_RELEASING,
        ALLOC_RELEASED,
        ALLOC_FAILED,
        ALLOC_RELEASE_FAILED,
        _ALLOC_STATE_MAX,
        _ALLOC_STATE_INVALID = -1,
} AllocState;

typedef enum AllocTrigger {
        ALLOC_TRIGGER_PLACE,           /* slots reserved, assign command stored */
        ALLOC_TRIGGER_ASSIGN_OK,       /* the agent's assign reply, ok */
        ALLOC_TRIGGER_ASSIGN_FAILED,   /* the agent's assign reply, failed */
        ALLOC_TRIGGER_TIMEOUT,         /* the task's deadline passed (agent_timeout) */
        ALLOC_TRIGGER_ABANDON,         /* a pending allocation that never got placed */
        ALLOC_TRIGGER_RELEASE,         /* the tenant asked (or retried) */
        ALLOC_TRIGGER_BILLING,         /* billing ended it (balance exhausted) */
        ALLOC_TRIGGER_TEARDOWN_OK,     /* the agent's release reply, every slot clean */
        ALLOC_TRIGGER_TEARDOWN_FAILED, /* the agent's release reply, a slot failed */
        ALLOC_TRIGGER_FORCE_RELEASE,   /* an admin, with a reason */
        _ALLOC_TRIGGER_MAX,
} AllocTrigger;

const char *alloc_state_to_string(AllocState s);
AllocState alloc_state_from_string(const char *s);
const char *alloc_trigger_to_string(AllocTrigger t);

/* Whether the table has the move. */
bool alloc_state_allowed(AllocState from, AllocState to, AllocTrigger trigger);
/* released and failed: nothing moves an allocation out of them but (for
 * failed) a force release. */
bool alloc_state_is_final(AllocState s);

/* Moves allocation_id from its current state to `to`, stamps updated_at and
 * emits "allocation.state_changed" {from, to, trigger, reason}. -ENOENT (no
 * such allocation), -EPERM (the table has no such move; *ret_from says where
 * it stood). reason may be NULL. */
int alloc_state_transition(Db *db, const char *allocation_id, AllocState to, AllocTrigger trigger,
                           const char *reason, AllocState *ret_from);
