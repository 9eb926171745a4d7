/* SPDX-License-Identifier: MIT */
#pragma once

/* The slot state machine: one table of allowed (from, to, trigger) moves for
 * node_resource_slots.state. Every place that changes a slot's state calls
 * slot_state_transition() inside the transaction carrying the change; the
 * placement index is told after that transaction committed.
 *
 *   available  --reserve-->  reserved  --assign_ok-->  assigned
 *   reserved   --provision_failed-->  cleaning   (a release cleans the slot)
 *   assigned   --release-->  cleaning  --teardown_ok-->  available
 *   cleaning   --teardown_failed|timeout-->  quarantined
 *   quarantined --release (retry)-->  cleaning
 *   quarantined --teardown_ok|verify|approve-->  available
 *   reserved|assigned|cleaning --force_release-->  quarantined
 *   available  --hardware_changed-->  quarantined   (re-discovery)
 *   available|quarantined --disable-->  disabled --enable-->  available */

#include <stdbool.h>

typedef struct Db Db;

typedef enum SlotState {
        SLOT_AVAILABLE,
        SLOT_RESERVED,
        SLOT_ASSIGNED,
        SLOT_CLEANING,
        SLOT_QUARANTINED,
        SLOT_DISABLED,
        _SLOT_STATE_MAX,
        _SLOT_STATE_INVALID = -1,
} SlotState;

typedef enum SlotTrigger {
        SLOT_TRIGGER_RESERVE,
        SLOT_TRIGGER_UNRESERVE, /* the allocation ended before any command was stored */
        SLOT_TRIGGER_ASSIGN_OK,
        SLOT_TRIGGER_PROVISION_FAILED,
        SLOT_TRIGGER_RELEASE,
        SLOT_TRIGGER_TEARDOWN_OK,
        SLOT_TRIGGER_TEARDOWN_FAILED,
        SLOT_TRIGGER_TIMEOUT,
        SLOT_TRIGGER_FORCE_RELEASE,
        SLOT_TRIGGER_HARDWARE_CHANGED,
        SLOT_TRIGGER_VERIFY,
        SLOT_TRIGGER_APPROVE,
        SLOT_TRIGGER_DISABLE,
        SLOT_TRIGGER_ENABLE,
        _SLOT_TRIGGER_MAX,
} SlotTrigger;

const char *slot_state_to_string(SlotState s);
SlotState slot_state_from_string(const char *s);
const char *slot_trigger_to_string(SlotTrigger t);

bool slot_state_allowed(SlotState from, SlotState to, SlotTrigger trigger);

/* Moves slot_id to `to` when the table allows it from the state it is in,
 * in one guarded UPDATE (WHERE state = <an allowed from>), so two
 * transactions can never both take an available slot. Stamps updated_at and
 * state_reason (reason, may be NULL). allocation_id: set on reserve (must be
 * given then); cleared when the slot becomes available or disabled; kept
 * otherwise. -ENOENT (no such slot), -EPERM (not allowed from where it
 * stands; *ret_from says where). */
int slot_state_transition(Db *db, const char *slot_id, SlotState to, SlotTrigger trigger,
                          const char *allocation_id, const char *reason, SlotState *ret_from);
