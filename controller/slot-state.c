/* SPDX-License-Identifier: MIT */
/* The slot state machine, as one table. */
#include "slot-state.h"

#include <errno.h>
#include <string.h>

#include "db.h"
#include "macro.h"
#include "timeutil.h"

static const char *const state_names[_SLOT_STATE_MAX] = {
    [SLOT_AVAILABLE] = "available",     [SLOT_RESERVED] = "reserved",
    [SLOT_ASSIGNED] = "assigned",       [SLOT_CLEANING] = "cleaning",
    [SLOT_QUARANTINED] = "quarantined", [SLOT_DISABLED] = "disabled",
};

static const char *const trigger_names[_SLOT_TRIGGER_MAX] = {
    [SLOT_TRIGGER_RESERVE] = "reserve",
    [SLOT_TRIGGER_UNRESERVE] = "unreserve",
    [SLOT_TRIGGER_ASSIGN_OK] = "assign_ok",
    [SLOT_TRIGGER_PROVISION_FAILED] = "provision_failed",
    [SLOT_TRIGGER_RELEASE] = "release",
    [SLOT_TRIGGER_TEARDOWN_OK] = "teardown_ok",
    [SLOT_TRIGGER_TEARDOWN_FAILED] = "teardown_failed",
    [SLOT_TRIGGER_TIMEOUT] = "timeout",
    [SLOT_TRIGGER_FORCE_RELEASE] = "force_release",
    [SLOT_TRIGGER_HARDWARE_CHANGED] = "hardware_changed",
    [SLOT_TRIGGER_VERIFY] = "verify",
    [SLOT_TRIGGER_APPROVE] = "approve",
    [SLOT_TRIGGER_DISABLE] = "disable",
    [SLOT_TRIGGER_ENABLE] = "enable",
};

typedef struct Transition {
        SlotState from, to;
        SlotTrigger trigger;
} Transition;

/* THE table. Anything not listed is refused. */
static const Transition transitions[] = {
    {SLOT_AVAILABLE, SLOT_RESERVED, SLOT_TRIGGER_RESERVE},
    {SLOT_RESERVED, SLOT_AVAILABLE, SLOT_TRIGGER_UNRESERVE},
    {SLOT_RESERVED, SLOT_ASSIGNED, SLOT_TRIGGER_ASSIGN_OK},
    /* A failed or timed-out assignment may have half-configured the slot:
     * it is cleaned by a release before anyone else gets it. */
    {SLOT_RESERVED, SLOT_CLEANING, SLOT_TRIGGER_PROVISION_FAILED},
    {SLOT_ASSIGNED, SLOT_CLEANING, SLOT_TRIGGER_RELEASE},
    {SLOT_QUARANTINED, SLOT_CLEANING, SLOT_TRIGGER_RELEASE},

    {SLOT_CLEANING, SLOT_AVAILABLE, SLOT_TRIGGER_TEARDOWN_OK},
    {SLOT_CLEANING, SLOT_QUARANTINED, SLOT_TRIGGER_TEARDOWN_FAILED},
    {SLOT_CLEANING, SLOT_QUARANTINED, SLOT_TRIGGER_TIMEOUT},
    /* A clean teardown that arrives after a force release or a timeout. */
    {SLOT_QUARANTINED, SLOT_AVAILABLE, SLOT_TRIGGER_TEARDOWN_OK},

    {SLOT_RESERVED, SLOT_QUARANTINED, SLOT_TRIGGER_FORCE_RELEASE},
    {SLOT_ASSIGNED, SLOT_QUARANTINED, SLOT_TRIGGER_FORCE_RELEASE},
    {SLOT_CLEANING, SLOT_QUARANTINED, SLOT_TRIGGER_FORCE_RELEASE},

    {SLOT_AVAILABLE, SLOT_QUARANTINED, SLOT_TRIGGER_HARDWARE_CHANGED},
    {SLOT_QUARANTINED, SLOT_AVAILABLE, SLOT_TRIGGER_VERIFY},
    {SLOT_QUARANTINED, SLOT_AVAILABLE, SLOT_TRIGGER_APPROVE},
    {SLOT_AVAILABLE, SLOT_AVAILABLE, SLOT_TRIGGER_APPROVE},

    {SLOT_AVAILABLE, SLOT_DISABLED, SLOT_TRIGGER_DISABLE},
    {SLOT_QUARANTINED, SLOT_DISABLED, SLOT_TRIGGER_DISABLE},
    {SLOT_DISABLED, SLOT_AVAILABLE, SLOT_TRIGGER_ENABLE},
};

const char *slot_state_to_string(SlotState s)
{
        return (unsigned)s < _SLOT_STATE_MAX ? state_names[s] : "invalid";
}

SlotState slot_state_from_string(const char *s)
{
        for (unsigned i = 0; s && i < _SLOT_STATE_MAX; i++)
                if (streq(s, state_names[i]))
                        return (SlotState)i;
        return _SLOT_STATE_INVALID;
}

const char *slot_trigger_to_string(SlotTrigger t)
{
        return (unsigned)t < _SLOT_TRIGGER_MAX ? trigger_names[t] : "invalid";
}

bool slot_state_allowed(SlotState from, SlotState to, SlotTrigger trigger)
{
        for (size_t i = 0; i < ELEMENTSOF(transitions); i++)
                if (transitions[i].from == from && transitions[i].to == to &&
                    transitions[i].trigger == trigger)
                        return true;
        return false;
}

static int update_from(Db *db, const char *slot_id, SlotState from, SlotState to,
                       SlotTrigger trigger, const char *allocation_id, const char *reason)
{
        /* ?4: 0 keep allocation_id, 1 set it, 2 clear it */
        _cleanup_(db_stmt_resetp) sqlite3_stmt *u =
            db_stmt(db, "UPDATE node_resource_slots SET state = ?1, state_reason = ?2, "
                        "updated_at = ?3, allocation_id = CASE ?4 WHEN 1 THEN ?5 WHEN 2 THEN "
                        "NULL ELSE allocation_id END WHERE id = ?6 AND state = ?7");
        if (!u)
                return -EIO;
        int mode = trigger == SLOT_TRIGGER_RESERVE                 ? 1
                   : (to == SLOT_AVAILABLE || to == SLOT_DISABLED) ? 2
                                                                   : 0;
        sqlite3_bind_text(u, 1, slot_state_to_string(to), -1, SQLITE_STATIC);
        db_bind_text(u, 2, reason);
        sqlite3_bind_int64(u, 3, (sqlite3_int64)now_usec());
        sqlite3_bind_int(u, 4, mode);
        db_bind_text(u, 5, allocation_id);
        sqlite3_bind_text(u, 6, slot_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(u, 7, slot_state_to_string(from), -1, SQLITE_STATIC);
        int rc = sqlite3_step(u);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return sqlite3_changes(db_handle(db)) == 1;
}

int slot_state_transition(Db *db, const char *slot_id, SlotState to, SlotTrigger trigger,
                          const char *allocation_id, const char *reason, SlotState *ret_from)
{
        if (trigger == SLOT_TRIGGER_RESERVE && !allocation_id)
                return -EINVAL;
        /* Try each state the table allows the move from: one guarded UPDATE,
         * no read first (the launch path reserves many slots per second). */
        for (size_t i = 0; i < ELEMENTSOF(transitions); i++) {
                if (transitions[i].to != to || transitions[i].trigger != trigger)
                        continue;
                int r = update_from(db, slot_id, transitions[i].from, to, trigger, allocation_id,
                                    reason);
                if (r < 0)
                        return r;
                if (r == 1) {
                        if (ret_from)
                                *ret_from = transitions[i].from;
                        return 0;
                }
        }
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT state FROM node_resource_slots WHERE id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, slot_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        if (ret_from)
                *ret_from = slot_state_from_string(db_column_text(s, 0));
        return -EPERM;
}
