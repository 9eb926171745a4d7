/* SPDX-License-Identifier: MIT */
/* alloc-state.c: the table allows the contract's allocation journey and
 * nothing else; a persisted move emits allocation.state_changed in the same
 * transaction. */
#include <criterion/criterion.h>

#include <stdio.h>

#include "alloc-state.h"
#include "db.h"
#include "harness.h"
#include "nodes.h"
#include "users.h"

TestSuite(alloc_state, .timeout = 60);

Test(alloc_state, names_round_trip)
{
        for (int s = 0; s < _ALLOC_STATE_MAX; s++)
                cr_assert_eq(alloc_state_from_string(alloc_state_to_string((AllocState)s)), s);
        cr_assert_eq(alloc_state_from_string("running"), _ALLOC_STATE_INVALID);
        cr_assert_eq(alloc_state_from_string(NULL), _ALLOC_STATE_INVALID);
        for (int t = 0; t < _ALLOC_TRIGGER_MAX; t++)
                cr_assert_str_neq(alloc_trigger_to_string((AllocTrigger)t), "invalid");
}

Test(alloc_state, the_contract_journey_is_allowed)
{
        cr_assert(alloc_state_allowed(ALLOC_PENDING, ALLOC_PROVISIONING, ALLOC_TRIGGER_PLACE));
        cr_assert(alloc_state_allowed(ALLOC_PROVISIONING, ALLOC_ACTIVE, ALLOC_TRIGGER_ASSIGN_OK));
        cr_assert(alloc_state_allowed(ALLOC_ACTIVE, ALLOC_RELEASING, ALLOC_TRIGGER_RELEASE));
        cr_assert(alloc_state_allowed(ALLOC_ACTIVE, ALLOC_RELEASING, ALLOC_TRIGGER_BILLING));
        cr_assert(alloc_state_allowed(ALLOC_RELEASING, ALLOC_RELEASED, ALLOC_TRIGGER_TEARDOWN_OK));
        cr_assert(
            alloc_state_allowed(ALLOC_PROVISIONING, ALLOC_FAILED, ALLOC_TRIGGER_ASSIGN_FAILED));
        cr_assert(alloc_state_allowed(ALLOC_PROVISIONING, ALLOC_FAILED, ALLOC_TRIGGER_TIMEOUT));
        cr_assert(alloc_state_allowed(ALLOC_PENDING, ALLOC_FAILED, ALLOC_TRIGGER_ABANDON));
        cr_assert(alloc_state_allowed(ALLOC_RELEASING, ALLOC_RELEASE_FAILED,
                                      ALLOC_TRIGGER_TEARDOWN_FAILED));
        cr_assert(alloc_state_allowed(ALLOC_RELEASE_FAILED, ALLOC_RELEASING, ALLOC_TRIGGER_RELEASE),
                  "release on release_failed retries");
}

Test(alloc_state, shortcuts_are_refused)
{
        cr_assert_not(alloc_state_allowed(ALLOC_PENDING, ALLOC_ACTIVE, ALLOC_TRIGGER_ASSIGN_OK));
        cr_assert_not(
            alloc_state_allowed(ALLOC_PROVISIONING, ALLOC_RELEASING, ALLOC_TRIGGER_RELEASE),
            "a tenant releases an active allocation, not one still provisioning");
        cr_assert_not(alloc_state_allowed(ALLOC_ACTIVE, ALLOC_RELEASED, ALLOC_TRIGGER_RELEASE),
                      "release goes through releasing (teardown)");
        cr_assert_not(alloc_state_allowed(ALLOC_RELEASED, ALLOC_RELEASING, ALLOC_TRIGGER_RELEASE));
        cr_assert_not(alloc_state_allowed(ALLOC_FAILED, ALLOC_PROVISIONING, ALLOC_TRIGGER_PLACE));
        cr_assert_not(alloc_state_allowed(ALLOC_ACTIVE, ALLOC_ACTIVE, ALLOC_TRIGGER_ASSIGN_OK),
                      "a duplicate assign reply changes nothing");
}

Test(alloc_state, force_release_ends_anything_but_released)
{
        for (int s = 0; s < _ALLOC_STATE_MAX; s++) {
                bool ok =
                    alloc_state_allowed((AllocState)s, ALLOC_RELEASED, ALLOC_TRIGGER_FORCE_RELEASE);
                cr_assert_eq(ok, s != ALLOC_RELEASED, "force release from %s",
                             alloc_state_to_string(s));
        }
        for (int to = 0; to < _ALLOC_STATE_MAX; to++)
                for (int t = 0; t < _ALLOC_TRIGGER_MAX; t++)
                        cr_assert_not(
                            alloc_state_allowed(ALLOC_RELEASED, (AllocState)to, (AllocTrigger)t),
                            "released is final");
        cr_assert(alloc_state_is_final(ALLOC_RELEASED));
        cr_assert(alloc_state_is_final(ALLOC_FAILED));
        cr_assert_not(alloc_state_is_final(ALLOC_RELEASE_FAILED));
}

Test(alloc_state, transitions_persist_with_their_event)
{
        _cleanup_free_ char *dir = tmpdir_new("allocstate");
        char path[512];
        snprintf(path, sizeof(path), "%s/db", dir);
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        User u = {0};
        cr_assert_eq(users_insert(db, "a@example.com", "A", NULL, ROLE_USER, &u), 0);
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, image_id, "
                 "network_id, hourly_cost_micros, created_at, updated_at) VALUES ('alc_1', '%s', "
                 "'pending', 'sku_1', 1, 'img_1', 'net_1', 100, 1, 1)",
                 u.id);
        cr_assert_eq(db_exec(db, sql), 0);

        AllocState from;
        cr_assert_eq(
            alloc_state_transition(db, "alc_1", ALLOC_ACTIVE, ALLOC_TRIGGER_ASSIGN_OK, NULL, &from),
            -EPERM);
        cr_assert_eq(from, ALLOC_PENDING);
        cr_assert_eq(alloc_state_transition(db, "alc_1", ALLOC_PROVISIONING, ALLOC_TRIGGER_PLACE,
                                            NULL, NULL),
                     0);
        cr_assert_eq(alloc_state_transition(db, "alc_1", ALLOC_FAILED, ALLOC_TRIGGER_TIMEOUT,
                                            "agent_timeout", &from),
                     0);
        cr_assert_eq(from, ALLOC_PROVISIONING);
        cr_assert_eq(
            alloc_state_transition(db, "alc_nope", ALLOC_FAILED, ALLOC_TRIGGER_TIMEOUT, NULL, NULL),
            -ENOENT);

        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db),
                                        "SELECT (SELECT state FROM allocations WHERE id = "
                                        "'alc_1'), count(*), max(data) FROM events WHERE type = "
                                        "'allocation.state_changed' AND subject_id = 'alc_1'",
                                        -1, &s, NULL),
                     SQLITE_OK);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        cr_assert_str_eq((const char *)sqlite3_column_text(s, 0), "failed");
        cr_assert_eq(sqlite3_column_int(s, 1), 2, "one event per move, none for a refused one");
        cr_assert(strstr((const char *)sqlite3_column_text(s, 2), "agent_timeout"));
        sqlite3_finalize(s);
        user_done(&u);
        db_close(db);
        tmpdir_remove(dir);
}
