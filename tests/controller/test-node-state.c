/* SPDX-License-Identifier: MIT */
/* node-state.c: the transition table allows the node journey and nothing
 * else, and persisted transitions remember where an offline node returns. */
#include <criterion/criterion.h>

#include <stdio.h>

#include "db.h"
#include "harness.h"
#include "node-state.h"
#include "nodes.h"

TestSuite(node_state, .timeout = 60);

Test(node_state, names_round_trip)
{
        for (int s = 0; s < _NODE_STATE_MAX; s++)
                cr_assert_eq(node_state_from_string(node_state_to_string((NodeState)s)), s);
        cr_assert_eq(node_state_from_string("running"), _NODE_STATE_INVALID);
        cr_assert_eq(node_state_from_string(NULL), _NODE_STATE_INVALID);
}

Test(node_state, the_journey_is_allowed_and_shortcuts_are_not)
{
        cr_assert(node_state_allowed(NODE_PENDING_ENROLLMENT, NODE_ENROLLED, NODE_TRIGGER_ENROLL));
        cr_assert(node_state_allowed(NODE_ENROLLED, NODE_PENDING_APPROVAL,
                                     NODE_TRIGGER_DISCOVERY_COMPLETE));
        cr_assert(node_state_allowed(NODE_PENDING_APPROVAL, NODE_ACTIVE, NODE_TRIGGER_APPROVE));
        cr_assert(node_state_allowed(NODE_ACTIVE, NODE_OFFLINE, NODE_TRIGGER_LINK_LOST));
        cr_assert(node_state_allowed(NODE_OFFLINE, NODE_ACTIVE, NODE_TRIGGER_LINK_RESTORED));
        cr_assert(node_state_allowed(NODE_ACTIVE, NODE_DISABLED, NODE_TRIGGER_DELETE));

        cr_assert_not(
            node_state_allowed(NODE_PENDING_ENROLLMENT, NODE_ACTIVE, NODE_TRIGGER_APPROVE));
        cr_assert_not(node_state_allowed(NODE_ENROLLED, NODE_ACTIVE, NODE_TRIGGER_APPROVE),
                      "approval needs a candidate first");
        cr_assert_not(
            node_state_allowed(NODE_PENDING_ENROLLMENT, NODE_OFFLINE, NODE_TRIGGER_LINK_LOST),
            "a node that never enrolled has no link to lose");
        cr_assert_not(node_state_allowed(NODE_OFFLINE, NODE_PENDING_APPROVAL,
                                         NODE_TRIGGER_DISCOVERY_COMPLETE));
        for (int to = 0; to < _NODE_STATE_MAX; to++)
                for (int t = 0; t < _NODE_TRIGGER_MAX; t++)
                        cr_assert_not(
                            node_state_allowed(NODE_DISABLED, (NodeState)to, (NodeTrigger)t),
                            "disabled is final (%s)", node_state_to_string(to));
}

Test(node_state, transitions_persist_and_offline_returns_where_it_was)
{
        _cleanup_free_ char *dir = tmpdir_new("nodestate");
        char path[512];
        snprintf(path, sizeof(path), "%s/db", dir);
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        Node n = {0};
        cr_assert_eq(nodes_insert(db, "h1", false, NULL, &n), 0);
        NodeState from;
        cr_assert_eq(node_state_transition(db, n.id, NODE_ACTIVE, NODE_TRIGGER_APPROVE, &from),
                     -EPERM);
        cr_assert_eq(from, NODE_PENDING_ENROLLMENT);
        cr_assert_eq(node_state_transition(db, n.id, NODE_ENROLLED, NODE_TRIGGER_ENROLL, NULL), 0);
        cr_assert_eq(node_state_transition(db, n.id, NODE_PENDING_APPROVAL,
                                           NODE_TRIGGER_DISCOVERY_COMPLETE, NULL),
                     0);
        cr_assert_eq(node_state_transition(db, n.id, NODE_OFFLINE, NODE_TRIGGER_LINK_LOST, NULL),
                     0);
        cr_assert_eq(
            node_state_transition(db, n.id, NODE_OFFLINE, NODE_TRIGGER_LINK_RESTORED, &from), 0);
        cr_assert_eq(from, NODE_OFFLINE);
        node_done(&n);
        cr_assert_eq(nodes_get(db, n.id, &n), 0);
        cr_assert_eq(n.state, NODE_PENDING_APPROVAL);
        node_done(&n);
        cr_assert_eq(
            node_state_transition(db, "nod_nope", NODE_ENROLLED, NODE_TRIGGER_ENROLL, NULL),
            -ENOENT);
        db_close(db);
        tmpdir_remove(dir);
}
