/* SPDX-License-Identifier: MIT */
/* The node state machine, as one table.
 *
 * The link and the state are kept apart on purpose: `online` (a boolean on
 * the node) says whether an authenticated link is up right now; the state
 * `offline` says the node was lost while it was part of the fleet (enrolled
 * or later), and remembers where it stood (offline_from) so that a reconnect
 * returns it there. A node that never enrolled has no link to lose. */
#include "node-state.h"

#include <errno.h>
#include <string.h>

#include "db.h"
#include "macro.h"
#include "timeutil.h"

static const char *const state_names[_NODE_STATE_MAX] = {
    [NODE_PENDING_ENROLLMENT] = "pending_enrollment",
    [NODE_ENROLLED] = "enrolled",
    [NODE_PENDING_APPROVAL] = "pending_approval",
    [NODE_ACTIVE] = "active",
    [NODE_OFFLINE] = "offline",
    [NODE_DRAINING] = "draining",
    [NODE_DISABLED] = "disabled",
};

static const char *const trigger_names[_NODE_TRIGGER_MAX] = {
    [NODE_TRIGGER_ENROLL] = "enroll",
    [NODE_TRIGGER_DISCOVERY_COMPLETE] = "discovery_complete",
    [NODE_TRIGGER_APPROVE] = "approve",
    [NODE_TRIGGER_LINK_LOST] = "link_lost",
    [NODE_TRIGGER_LINK_RESTORED] = "link_restored",
    [NODE_TRIGGER_DRAIN] = "drain",
    [NODE_TRIGGER_UNDRAIN] = "undrain",
    [NODE_TRIGGER_DELETE] = "delete",
};

typedef struct Transition {
        NodeState from, to;
        NodeTrigger trigger;
} Transition;

/* THE table. Anything not listed is refused. */
static const Transition transitions[] = {
    {NODE_PENDING_ENROLLMENT, NODE_ENROLLED, NODE_TRIGGER_ENROLL},

    {NODE_ENROLLED, NODE_PENDING_APPROVAL, NODE_TRIGGER_DISCOVERY_COMPLETE},
    {NODE_PENDING_APPROVAL, NODE_PENDING_APPROVAL, NODE_TRIGGER_DISCOVERY_COMPLETE},
    /* Re-discovery of an active node keeps it active; changed hardware only
     * quarantines the affected slots until a new approval. */
    {NODE_ACTIVE, NODE_ACTIVE, NODE_TRIGGER_DISCOVERY_COMPLETE},
    {NODE_DRAINING, NODE_DRAINING, NODE_TRIGGER_DISCOVERY_COMPLETE},

    {NODE_PENDING_APPROVAL, NODE_ACTIVE, NODE_TRIGGER_APPROVE},
    {NODE_ACTIVE, NODE_ACTIVE, NODE_TRIGGER_APPROVE},

    {NODE_ENROLLED, NODE_OFFLINE, NODE_TRIGGER_LINK_LOST},
    {NODE_PENDING_APPROVAL, NODE_OFFLINE, NODE_TRIGGER_LINK_LOST},
    {NODE_ACTIVE, NODE_OFFLINE, NODE_TRIGGER_LINK_LOST},
    {NODE_DRAINING, NODE_OFFLINE, NODE_TRIGGER_LINK_LOST},
    {NODE_OFFLINE, NODE_ENROLLED, NODE_TRIGGER_LINK_RESTORED},
    {NODE_OFFLINE, NODE_PENDING_APPROVAL, NODE_TRIGGER_LINK_RESTORED},
    {NODE_OFFLINE, NODE_ACTIVE, NODE_TRIGGER_LINK_RESTORED},
    {NODE_OFFLINE, NODE_DRAINING, NODE_TRIGGER_LINK_RESTORED},

    {NODE_ACTIVE, NODE_DRAINING, NODE_TRIGGER_DRAIN},
    {NODE_DRAINING, NODE_ACTIVE, NODE_TRIGGER_UNDRAIN},

    {NODE_PENDING_ENROLLMENT, NODE_DISABLED, NODE_TRIGGER_DELETE},
    {NODE_ENROLLED, NODE_DISABLED, NODE_TRIGGER_DELETE},
    {NODE_PENDING_APPROVAL, NODE_DISABLED, NODE_TRIGGER_DELETE},
    {NODE_ACTIVE, NODE_DISABLED, NODE_TRIGGER_DELETE},
    {NODE_OFFLINE, NODE_DISABLED, NODE_TRIGGER_DELETE},
    {NODE_DRAINING, NODE_DISABLED, NODE_TRIGGER_DELETE},
};

const char *node_state_to_string(NodeState s)
{
        return (unsigned)s < _NODE_STATE_MAX ? state_names[s] : "invalid";
}

NodeState node_state_from_string(const char *s)
{
        for (unsigned i = 0; s && i < _NODE_STATE_MAX; i++)
                if (streq(s, state_names[i]))
                        return (NodeState)i;
        return _NODE_STATE_INVALID;
}

const char *node_trigger_to_string(NodeTrigger t)
{
        return (unsigned)t < _NODE_TRIGGER_MAX ? trigger_names[t] : "invalid";
}

bool node_state_allowed(NodeState from, NodeState to, NodeTrigger trigger)
{
        for (size_t i = 0; i < ELEMENTSOF(transitions); i++)
                if (transitions[i].from == from && transitions[i].to == to &&
                    transitions[i].trigger == trigger)
                        return true;
        return false;
}

int node_state_transition(Db *db, const char *node_id, NodeState to, NodeTrigger trigger,
                          NodeState *ret_from)
{
        NodeState from, back = _NODE_STATE_INVALID;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT state, offline_from FROM nodes WHERE id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, node_id, -1, SQLITE_TRANSIENT);
                int rc = sqlite3_step(s);
                if (rc == SQLITE_DONE)
                        return -ENOENT;
                if (rc != SQLITE_ROW)
                        return db_errno(rc);
                from = node_state_from_string(db_column_text(s, 0));
                back = node_state_from_string(db_column_text(s, 1));
        }
        if (ret_from)
                *ret_from = from;
        if (trigger == NODE_TRIGGER_LINK_RESTORED)
                to = back;
        if (!node_state_allowed(from, to, trigger))
                return -EPERM;

        _cleanup_(db_stmt_resetp) sqlite3_stmt *u = db_stmt(
            db, "UPDATE nodes SET state = ?, offline_from = ?, updated_at = ? WHERE id = ?");
        if (!u)
                return -EIO;
        sqlite3_bind_text(u, 1, node_state_to_string(to), -1, SQLITE_STATIC);
        if (trigger == NODE_TRIGGER_LINK_LOST)
                sqlite3_bind_text(u, 2, node_state_to_string(from), -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(u, 2);
        sqlite3_bind_int64(u, 3, (sqlite3_int64)now_usec());
        sqlite3_bind_text(u, 4, node_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(u);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}
