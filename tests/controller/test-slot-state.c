/* SPDX-License-Identifier: MIT */
/* slot-state.c: the slot table, and the guarded UPDATE that keeps two
 * reservations from taking one slot. */
#include <criterion/criterion.h>

#include <stdio.h>

#include "db.h"
#include "harness.h"
#include "nodes.h"
#include "slot-state.h"

TestSuite(slot_state, .timeout = 60);

Test(slot_state, names_round_trip)
{
        for (int s = 0; s < _SLOT_STATE_MAX; s++)
                cr_assert_eq(slot_state_from_string(slot_state_to_string((SlotState)s)), s);
        cr_assert_eq(slot_state_from_string("free"), _SLOT_STATE_INVALID);
        for (int t = 0; t < _SLOT_TRIGGER_MAX; t++)
                cr_assert_str_neq(slot_trigger_to_string((SlotTrigger)t), "invalid");
}

Test(slot_state, the_lifecycle_is_allowed)
{
        cr_assert(slot_state_allowed(SLOT_AVAILABLE, SLOT_RESERVED, SLOT_TRIGGER_RESERVE));
        cr_assert(slot_state_allowed(SLOT_RESERVED, SLOT_ASSIGNED, SLOT_TRIGGER_ASSIGN_OK));
        cr_assert(slot_state_allowed(SLOT_ASSIGNED, SLOT_CLEANING, SLOT_TRIGGER_RELEASE));
        cr_assert(slot_state_allowed(SLOT_CLEANING, SLOT_AVAILABLE, SLOT_TRIGGER_TEARDOWN_OK));
        cr_assert(
            slot_state_allowed(SLOT_CLEANING, SLOT_QUARANTINED, SLOT_TRIGGER_TEARDOWN_FAILED));
        cr_assert(slot_state_allowed(SLOT_RESERVED, SLOT_CLEANING, SLOT_TRIGGER_PROVISION_FAILED));
        cr_assert(slot_state_allowed(SLOT_QUARANTINED, SLOT_AVAILABLE, SLOT_TRIGGER_VERIFY));
        cr_assert(slot_state_allowed(SLOT_QUARANTINED, SLOT_CLEANING, SLOT_TRIGGER_RELEASE),
                  "a release retry cleans a quarantined slot again");
}

Test(slot_state, a_slot_is_never_handed_out_uncleaned)
{
        /* Only a teardown, an admin's verify or approval, or an unused
         * reservation returns a slot to available. */
        for (int from = 0; from < _SLOT_STATE_MAX; from++)
                for (int t = 0; t < _SLOT_TRIGGER_MAX; t++) {
                        if (!slot_state_allowed((SlotState)from, SLOT_AVAILABLE, (SlotTrigger)t))
                                continue;
                        cr_assert(t == SLOT_TRIGGER_TEARDOWN_OK || t == SLOT_TRIGGER_VERIFY ||
                                      t == SLOT_TRIGGER_APPROVE || t == SLOT_TRIGGER_ENABLE ||
                                      t == SLOT_TRIGGER_UNRESERVE,
                                  "%s -> available by %s", slot_state_to_string(from),
                                  slot_trigger_to_string(t));
                }
        cr_assert_not(slot_state_allowed(SLOT_ASSIGNED, SLOT_AVAILABLE, SLOT_TRIGGER_RELEASE));
        cr_assert_not(slot_state_allowed(SLOT_RESERVED, SLOT_RESERVED, SLOT_TRIGGER_RESERVE));
        cr_assert_not(slot_state_allowed(SLOT_QUARANTINED, SLOT_RESERVED, SLOT_TRIGGER_RESERVE));
        cr_assert_not(slot_state_allowed(SLOT_ASSIGNED, SLOT_AVAILABLE, SLOT_TRIGGER_FORCE_RELEASE),
                      "force release quarantines, it does not free");
}

static Db *open_db_with_slot(char **dir)
{
        *dir = tmpdir_new("slotstate");
        char path[512];
        snprintf(path, sizeof(path), "%s/db", *dir);
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        Node n = {0};
        cr_assert_eq(nodes_insert(db, "h1", false, NULL, &n), 0);
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO node_resource_slots (id, node_id, discovery_id, slot_key, gpus, "
                 "state, approved_at) VALUES ('slt_1', '%s', 'dsc_1', 'k1', '[]', 'available', "
                 "1)",
                 n.id);
        cr_assert_eq(db_exec(db, sql), 0);
        node_done(&n);
        return db;
}

static const char *slot_column(Db *db, const char *col, char *buf, size_t size)
{
        char sql[128];
        snprintf(sql, sizeof(sql), "SELECT %s FROM node_resource_slots WHERE id = 'slt_1'", col);
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db), sql, -1, &s, NULL), SQLITE_OK);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        const char *v = (const char *)sqlite3_column_text(s, 0);
        snprintf(buf, size, "%s", v ? v : "(null)");
        sqlite3_finalize(s);
        return buf;
}

Test(slot_state, a_slot_is_reserved_once)
{
        _cleanup_free_ char *dir = NULL;
        Db *db = open_db_with_slot(&dir);
        char buf[64];
        SlotState from;
        cr_assert_eq(slot_state_transition(db, "slt_1", SLOT_RESERVED, SLOT_TRIGGER_RESERVE,
                                           "alc_a", NULL, &from),
                     0);
        cr_assert_eq(from, SLOT_AVAILABLE);
        cr_assert_str_eq(slot_column(db, "allocation_id", buf, sizeof(buf)), "alc_a");
        cr_assert_eq(slot_state_transition(db, "slt_1", SLOT_RESERVED, SLOT_TRIGGER_RESERVE,
                                           "alc_b", NULL, &from),
                     -EPERM, "the second reservation must lose");
        cr_assert_eq(from, SLOT_RESERVED);
        cr_assert_str_eq(slot_column(db, "allocation_id", buf, sizeof(buf)), "alc_a");
        cr_assert_eq(slot_state_transition(db, "slt_1", SLOT_RESERVED, SLOT_TRIGGER_RESERVE, NULL,
                                           NULL, NULL),
                     -EINVAL);
        cr_assert_eq(slot_state_transition(db, "slt_nope", SLOT_RESERVED, SLOT_TRIGGER_RESERVE,
                                           "alc_a", NULL, NULL),
                     -ENOENT);
        db_close(db);
        tmpdir_remove(dir);
}

Test(slot_state, teardown_results_decide_between_available_and_quarantined)
{
        _cleanup_free_ char *dir = NULL;
        Db *db = open_db_with_slot(&dir);
        char buf[64];
        cr_assert_eq(slot_state_transition(db, "slt_1", SLOT_RESERVED, SLOT_TRIGGER_RESERVE,
                                           "alc_a", NULL, NULL),
                     0);
        cr_assert_eq(slot_state_transition(db, "slt_1", SLOT_ASSIGNED, SLOT_TRIGGER_ASSIGN_OK, NULL,
                                           NULL, NULL),
                     0);
        cr_assert_eq(slot_state_transition(db, "slt_1", SLOT_CLEANING, SLOT_TRIGGER_RELEASE, NULL,
                                           NULL, NULL),
                     0);
        cr_assert_eq(slot_state_transition(db, "slt_1", SLOT_QUARANTINED,
                                           SLOT_TRIGGER_TEARDOWN_FAILED, NULL, "nvme_wipe_failed",
                                           NULL),
                     0);
        cr_assert_str_eq(slot_column(db, "state", buf, sizeof(buf)), "quarantined");
        cr_assert_str_eq(slot_column(db, "state_reason", buf, sizeof(buf)), "nvme_wipe_failed");
        cr_assert_str_eq(slot_column(db, "allocation_id", buf, sizeof(buf)), "alc_a",
                         "a quarantined slot remembers whose it was");
        SlotState from;
        cr_assert_eq(slot_state_transition(db, "slt_1", SLOT_CLEANING, SLOT_TRIGGER_RELEASE, NULL,
                                           NULL, &from),
                     0);
        cr_assert_eq(from, SLOT_QUARANTINED);
        cr_assert_eq(slot_state_transition(db, "slt_1", SLOT_AVAILABLE, SLOT_TRIGGER_TEARDOWN_OK,
                                           NULL, NULL, &from),
                     0);
        cr_assert_eq(from, SLOT_CLEANING);
        cr_assert_str_eq(slot_column(db, "state", buf, sizeof(buf)), "available");
        cr_assert_str_eq(slot_column(db, "allocation_id", buf, sizeof(buf)), "(null)");
        db_close(db);
        tmpdir_remove(dir);
}
