/* SPDX-License-Identifier: MIT */
/* The allocation state machine, as one table. */
#include "alloc-state.h"

#include <errno.h>
#include <string.h>

#include <jansson.h>

#include "db.h"
#include "events.h"
#include "macro.h"
#include "timeutil.h"

static const char *const state_names[_ALLOC_STATE_MAX] = {
    [ALLOC_PENDING] = "pending",
    [ALLOC_PROVISIONING] = "provisioning",
    [ALLOC_ACTIVE] = "active",
    [ALLOC_RELEASING] = "releasing",
    [ALLOC_RELEASED] = "released",
    [ALLOC_FAILED] = "failed",
    [ALLOC_RELEASE_FAILED] = "release_failed",
};

static const char *const trigger_names[_ALLOC_TRIGGER_MAX] = {
    [ALLOC_TRIGGER_PLACE] = "place",
    [ALLOC_TRIGGER_ASSIGN_OK] = "assign_ok",
    [ALLOC_TRIGGER_ASSIGN_FAILED] = "assign_failed",
    [ALLOC_TRIGGER_TIMEOUT] = "timeout",
    [ALLOC_TRIGGER_ABANDON] = "abandon",
    [ALLOC_TRIGGER_RELEASE] = "release",
    [ALLOC_TRIGGER_BILLING] = "billing",
    [ALLOC_TRIGGER_TEARDOWN_OK] = "teardown_ok",
    [ALLOC_TRIGGER_TEARDOWN_FAILED] = "teardown_failed",
    [ALLOC_TRIGGER_FORCE_RELEASE] = "force_release",
};

typedef struct Transition {
        AllocState from, to;
        AllocTrigger trigger;
} Transition;

/* THE table. Anything not listed is refused. */
static const Transition transitions[] = {
    {ALLOC_PENDING, ALLOC_PROVISIONING, ALLOC_TRIGGER_PLACE},
    {ALLOC_PENDING, ALLOC_FAILED, ALLOC_TRIGGER_ABANDON},

    {ALLOC_PROVISIONING, ALLOC_ACTIVE, ALLOC_TRIGGER_ASSIGN_OK},
    {ALLOC_PROVISIONING, ALLOC_FAILED, ALLOC_TRIGGER_ASSIGN_FAILED},
    {ALLOC_PROVISIONING, ALLOC_FAILED, ALLOC_TRIGGER_TIMEOUT},

    {ALLOC_ACTIVE, ALLOC_RELEASING, ALLOC_TRIGGER_RELEASE},
    {ALLOC_ACTIVE, ALLOC_RELEASING, ALLOC_TRIGGER_BILLING},

    {ALLOC_RELEASING, ALLOC_RELEASED, ALLOC_TRIGGER_TEARDOWN_OK},
    {ALLOC_RELEASING, ALLOC_RELEASE_FAILED, ALLOC_TRIGGER_TEARDOWN_FAILED},
    {ALLOC_RELEASING, ALLOC_RELEASE_FAILED, ALLOC_TRIGGER_TIMEOUT},
    {ALLOC_RELEASE_FAILED, ALLOC_RELEASING, ALLOC_TRIGGER_RELEASE},

    /* An admin ends anything that is not over yet. */
    {ALLOC_PENDING, ALLOC_RELEASED, ALLOC_TRIGGER_FORCE_RELEASE},
    {ALLOC_PROVISIONING, ALLOC_RELEASED, ALLOC_TRIGGER_FORCE_RELEASE},
    {ALLOC_ACTIVE, ALLOC_RELEASED, ALLOC_TRIGGER_FORCE_RELEASE},
    {ALLOC_RELEASING, ALLOC_RELEASED, ALLOC_TRIGGER_FORCE_RELEASE},
    {ALLOC_RELEASE_FAILED, ALLOC_RELEASED, ALLOC_TRIGGER_FORCE_RELEASE},
    {ALLOC_FAILED, ALLOC_RELEASED, ALLOC_TRIGGER_FORCE_RELEASE},
};

const char *alloc_state_to_string(AllocState s)
{
        return (unsigned)s < _ALLOC_STATE_MAX ? state_names[s] : "invalid";
}

AllocState alloc_state_from_string(const char *s)
{
        for (unsigned i = 0; s && i < _ALLOC_STATE_MAX; i++)
                if (streq(s, state_names[i]))
                        return (AllocState)i;
        return _ALLOC_STATE_INVALID;
}

const char *alloc_trigger_to_string(AllocTrigger t)
{
        return (unsigned)t < _ALLOC_TRIGGER_MAX ? trigger_names[t] : "invalid";
}

bool alloc_state_allowed(AllocState from, AllocState to, AllocTrigger trigger)
{
        for (size_t i = 0; i < ELEMENTSOF(transitions); i++)
                if (transitions[i].from == from && transitions[i].to == to &&
                    transitions[i].trigger == trigger)
                        return true;
        return false;
}

bool alloc_state_is_final(AllocState s)
{
        return s == ALLOC_RELEASED || s == ALLOC_FAILED;
}

int alloc_state_transition(Db *db, const char *allocation_id, AllocState to, AllocTrigger trigger,
                           const char *reason, AllocState *ret_from)
{
        AllocState from;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT state FROM allocations WHERE id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, allocation_id, -1, SQLITE_TRANSIENT);
                int rc = sqlite3_step(s);
                if (rc == SQLITE_DONE)
                        return -ENOENT;
                if (rc != SQLITE_ROW)
                        return db_errno(rc);
                from = alloc_state_from_string(db_column_text(s, 0));
        }
        if (ret_from)
                *ret_from = from;
        if (!alloc_state_allowed(from, to, trigger))
                return -EPERM;

        _cleanup_(db_stmt_resetp) sqlite3_stmt *u = db_stmt(
            db, "UPDATE allocations SET state = ?, updated_at = ? WHERE id = ? AND state = ?");
        if (!u)
                return -EIO;
        sqlite3_bind_text(u, 1, alloc_state_to_string(to), -1, SQLITE_STATIC);
        sqlite3_bind_int64(u, 2, (sqlite3_int64)now_usec());
        sqlite3_bind_text(u, 3, allocation_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(u, 4, alloc_state_to_string(from), -1, SQLITE_STATIC);
        int rc = sqlite3_step(u);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        if (sqlite3_changes(db_handle(db)) != 1)
                return -EPERM; /* not reachable inside one transaction */
        return event_emit(db, "allocation.state_changed", allocation_id,
                          json_pack("{s:s, s:s, s:s, s:s?}", "from", alloc_state_to_string(from),
                                    "to", alloc_state_to_string(to), "trigger",
                                    alloc_trigger_to_string(trigger), "reason", reason),
                          NULL);
}
