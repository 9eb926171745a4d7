/* SPDX-License-Identifier: MIT */
/* allocations.c and tasks.c against a real database file: the launch
 * transaction writes everything or nothing, idempotency, prechecks, a stale
 * placement index never hands out a taken slot, replies and deadlines move
 * allocations and slots through their tables, force release and verify; the
 * VF MAC is a locally administered unicast address fixed by the ids, or, on a
 * "hardware" network, nil in the command and the one the agent reports. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "allocations.h"
#include "catalog.h"
#include "db.h"
#include "harness.h"
#include "ledger.h"
#include "nodes.h"
#include "placement.h"
#include "tasks.h"
#include "users.h"

TestSuite(allocations, .timeout = 60);

static struct {
        char *dir;
        Db *db;
        Placement *p;
        User user;
        Node node;
        LaunchRequest q;
} F;

static long long scalar(const char *fmt, ...) _printf_(1, 2);
static long long scalar(const char *fmt, ...)
{
        char sql[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(sql, sizeof(sql), fmt, ap);
        va_end(ap);
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(F.db), sql, -1, &s, NULL), SQLITE_OK, "%s", sql);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s", sql);
        long long v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
}

static void exec_sql(const char *sql)
{
        cr_assert_eq(db_exec(F.db, sql), 0, "%s", sql);
}

/* A user with credit, one active online node with two approved slots, a
 * SKU/image/network, and a launch request for one GPU. */
static void setup(void)
{
        F.dir = tmpdir_new("allocations");
        char path[512];
        snprintf(path, sizeof(path), "%s/db", F.dir);
        cr_assert_eq(db_open(path, &F.db), 0);
        cr_assert_eq(users_insert(F.db, "t@example.com", "T", NULL, ROLE_USER, &F.user), 0);
        LedgerPosting post = {.kind = LEDGER_KIND_GRANT, .user_id = F.user.id};
        cr_assert_eq(ledger_credit_user(F.db, &post, LEDGER_GRANTS, 10000000, NULL), 0);
        cr_assert_eq(nodes_insert(F.db, "n1", true, NULL, &F.node), 0);
        char sql[1024];
        snprintf(sql, sizeof(sql),
                 "UPDATE nodes SET state = 'active', online = 1 WHERE id = '%s';"
                 "INSERT INTO node_resource_slots (id, node_id, discovery_id, slot_key, gpus, nic, "
                 "vf_index, numa_node, state, approved_at, gpu_pci_ids, switch) VALUES "
                 "('slt_a', '%s', 'd', 'k1', '[\"0000:01:00.0\"]', '0000:a0:00.0', 0, 0, "
                 "'available', 1, '[\"10de:2330\"]', 'sw0'),"
                 "('slt_b', '%s', 'd', 'k2', '[\"0000:02:00.0\"]', '0000:a0:00.0', 1, 0, "
                 "'available', 1, '[\"10de:2330\"]', 'sw0')",
                 F.node.id, F.node.id, F.node.id);
        exec_sql(sql);
        CatalogFieldError err;
        json_t *sku =
            json_pack("{s:s, s:s, s:i, s:[s], s:[i,i], s:I, s:s}", "name", "h100", "gpu_model",
                      "H100", "gpu_memory_gb", 80, "pci_ids", "10de:2330", "gpu_counts", 1, 2,
                      "price_per_gpu_hour_micros", (json_int_t)2000000, "topology", "node");
        json_t *img = json_pack("{s:s}", "name", "ubuntu");
        json_t *net = json_pack("{s:s, s:i}", "name", "tenant", "vlan", 100);
        cr_assert_eq(catalog_sku_create(F.db, sku, &F.q.sku, &err), 0);
        cr_assert_eq(catalog_image_create(F.db, img, &F.q.image, &err), 0);
        cr_assert_eq(catalog_network_create(F.db, net, &F.q.network, &err), 0);
        json_decref(sku);
        json_decref(img);
        json_decref(net);
        snprintf(F.q.user_id, sizeof(F.q.user_id), "%s", F.user.id);
        snprintf(F.q.idempotency_key, sizeof(F.q.idempotency_key), "key-1");
        memset(F.q.request_hash, 7, sizeof(F.q.request_hash));
        F.q.gpu_count = 1;
        F.q.ssh_key_ids = json_array();
        F.q.ssh_keys = json_array();
        cr_assert_eq(placement_new(&F.p), 0);
        cr_assert_eq(placement_load(F.p, F.db), 0);
}

static void teardown(void)
{
        launch_request_done(&F.q);
        placement_free(F.p);
        user_done(&F.user);
        node_done(&F.node);
        db_close(F.db);
        tmpdir_remove(F.dir);
        free(F.dir);
        F = (typeof(F)){0};
}

TestSuite(launch, .init = setup, .fini = teardown, .timeout = 60);

static void launch_ok(LaunchResult *res)
{
        DbTxn txn = {0};
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_launch(F.db, F.p, &F.q, now_usec() + USEC_PER_SEC * 60, res), 0);
        cr_assert(res->ok, "%s", res->message);
        cr_assert_eq(db_commit(&txn), 0);
}

static const char *slot_state(const char *slot, char buf[static 32])
{
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(F.db),
                                        "SELECT state FROM node_resource_slots WHERE id = ?", -1,
                                        &s, NULL),
                     SQLITE_OK);
        sqlite3_bind_text(s, 1, slot, -1, SQLITE_STATIC);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        snprintf(buf, 32, "%s", sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
        return buf;
}

static AllocState alloc_state(const char *id)
{
        Allocation a = {0};
        cr_assert_eq(allocation_get(F.db, id, NULL, &a), 0);
        AllocState st = a.state;
        allocation_done(&a);
        return st;
}

Test(allocations, the_vf_mac_is_locally_administered_unicast_and_fixed_by_the_ids)
{
        char a[18], b[18], c[18], d[18];
        allocation_slot_mac("alc_one", "slt_one", a);
        allocation_slot_mac("alc_one", "slt_one", b);
        allocation_slot_mac("alc_one", "slt_two", c);
        allocation_slot_mac("alc_two", "slt_one", d);
        cr_assert_str_eq(a, b);
        cr_assert_str_neq(a, c);
        cr_assert_str_neq(a, d);
        unsigned first;
        cr_assert_eq(sscanf(a, "%2x:", &first), 1);
        cr_assert_eq(first & 0x01, 0, "unicast: %s", a);
        cr_assert_eq(first & 0x02, 0x02, "locally administered: %s", a);
        cr_assert_eq(strlen(a), 17);
}

Test(launch, one_transaction_writes_the_allocation_and_everything_it_needs)
{
        LaunchResult res;
        launch_ok(&res);
        char buf[32];
        cr_assert_eq(alloc_state(res.allocation_id), ALLOC_PROVISIONING);
        cr_assert_str_eq(res.node_id, F.node.id);
        cr_assert_eq(res.pick.n_slots, 1);
        cr_assert_str_eq(slot_state(res.pick.slot_ids[0], buf), "reserved");
        cr_assert_eq(scalar("SELECT count(*) FROM allocation_slots WHERE allocation_id = '%s' "
                            "AND state = 'held'",
                            res.allocation_id),
                     1);
        cr_assert_eq(scalar("SELECT amount_micros FROM ledger_holds WHERE allocation_id = '%s' "
                            "AND state = 'pending'",
                            res.allocation_id),
                     2000000, "one hour of the cost is held");
        cr_assert_eq(scalar("SELECT count(*) FROM node_commands WHERE type = "
                            "'command.allocation.assign' AND state = 'pending' AND instr(body, "
                            "'\"mac\":\"') > 0 AND instr(body, '%s') > 0",
                            res.allocation_id),
                     1);
        cr_assert_eq(scalar("SELECT count(*) FROM events WHERE type = 'allocation.state_changed' "
                            "AND subject_id = '%s'",
                            res.allocation_id),
                     1);
        Task t = {0};
        cr_assert_eq(task_get(F.db, res.task_id, &t), 0);
        cr_assert_str_eq(t.kind, "provision");
        cr_assert_str_eq(t.state, "running");
        cr_assert_str_eq(t.user_id, F.user.id);
        cr_assert_eq(json_array_size(t.steps), 3);
        json_t *out = task_to_json(&t);
        cr_assert_str_eq(json_string_value(json_object_get(
                             json_array_get(json_object_get(out, "steps"), 0), "state")),
                         "succeeded");
        json_decref(out);
        task_done(&t);
        cr_assert(res.allocation && json_is_object(res.allocation));
        cr_assert_eq(placement_n_free(F.p), 1, "the index took the slot");
        launch_result_done(&res);
}

Test(launch, the_same_key_replays_and_another_body_conflicts)
{
        LaunchResult a, b, c;
        launch_ok(&a);
        launch_ok(&b);
        cr_assert(b.replayed);
        cr_assert_str_eq(a.allocation_id, b.allocation_id);
        cr_assert_str_eq(a.task_id, b.task_id);
        cr_assert_eq(scalar("SELECT count(*) FROM allocations"), 1);
        F.q.request_hash[0] ^= 1;
        DbTxn txn = {0};
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_launch(F.db, F.p, &F.q, now_usec(), &c), 0);
        cr_assert_not(c.ok);
        cr_assert_eq(c.code, ERR_IDEMPOTENCY_CONFLICT);
        db_rollback(&txn);
        launch_result_done(&a);
        launch_result_done(&b);
        launch_result_done(&c);
}

Test(launch, prechecks_refuse_and_write_nothing)
{
        LaunchResult res;
        DbTxn txn = {0};
        F.q.gpu_count = 4; /* not one of the SKU's counts */
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_launch(F.db, F.p, &F.q, now_usec(), &res), 0);
        cr_assert_eq(res.code, ERR_INVALID_GPU_COUNT);
        launch_result_done(&res);
        F.q.gpu_count = 2;
        F.q.sku.price_per_gpu_hour_micros = 6000000; /* 12 USD an hour, 10 in the account */
        cr_assert_eq(allocations_launch(F.db, F.p, &F.q, now_usec(), &res), 0);
        cr_assert_eq(res.code, ERR_INSUFFICIENT_BALANCE);
        launch_result_done(&res);
        F.q.sku.price_per_gpu_hour_micros = 1;
        cr_assert_eq(placement_node_set(F.p, F.node.id, PLACEMENT_NODE_OFFLINE), 0);
        cr_assert_eq(allocations_launch(F.db, F.p, &F.q, now_usec(), &res), 0);
        cr_assert_eq(res.code, ERR_NODE_OFFLINE);
        launch_result_done(&res);
        cr_assert_eq(db_commit(&txn), 0);
        cr_assert_eq(scalar("SELECT count(*) FROM allocations"), 0);
        cr_assert_eq(scalar("SELECT count(*) FROM ledger_holds"), 0);
        cr_assert_eq(placement_n_free(F.p), 2);
}

Test(launch, a_stale_index_never_hands_out_a_taken_slot)
{
        /* Behind the index's back, both slots are taken. */
        exec_sql("UPDATE node_resource_slots SET state = 'assigned'");
        LaunchResult res;
        DbTxn txn = {0};
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_launch(F.db, F.p, &F.q, now_usec(), &res), -EAGAIN);
        cr_assert_not(res.ok);
        cr_assert_eq(res.pick.n_slots, 0);
        db_rollback(&txn);
        cr_assert_eq(placement_n_free(F.p), 2, "the pick was given back");
        cr_assert_eq(placement_node_reload(F.p, F.db, F.node.id), 0);
        cr_assert_eq(placement_n_free(F.p), 0);
        cr_assert_eq(scalar("SELECT count(*) FROM allocations"), 0);
}

static json_t *reply(bool ok, const char *code, const char *slot, bool slot_ok, bool conn)
{
        json_t *slots = json_array();
        if (slot)
                json_array_append_new(slots, json_pack("{s:s, s:b, s:s?}", "slot_id", slot, "ok",
                                                       slot_ok, "reason", slot_ok ? NULL : code));
        json_t *result = json_pack("{s:o}", "slots", slots);
        if (conn)
                json_object_set_new(result, "connection",
                                    json_pack("{s:s, s:i, s:s}", "host", "10.0.0.5", "port", 2201,
                                              "user", "ubuntu"));
        return json_pack("{s:b, s:o, s:o}", "ok", ok, "result", result, "error",
                         code ? json_pack("{s:s, s:s}", "code", code, "message", "m")
                              : json_null());
}

static void on_reply(const char *task_id, json_t *body)
{
        Task t = {0};
        DbTxn txn = {0};
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(task_get(F.db, task_id, &t), 0);
        cr_assert_eq(allocations_on_reply(F.db, &t, json_is_true(json_object_get(body, "ok")), body,
                                          now_usec() + 60 * USEC_PER_SEC),
                     0);
        cr_assert_eq(db_commit(&txn), 0);
        task_done(&t);
        json_decref(body);
}

Test(launch, replies_drive_the_allocation_and_each_slot_by_its_own_entry)
{
        LaunchResult res;
        F.q.gpu_count = 2;
        launch_ok(&res);
        const char *s0 = res.pick.slot_ids[0], *s1 = res.pick.slot_ids[1];
        char buf[32];
        on_reply(res.task_id, reply(true, NULL, NULL, true, true));
        cr_assert_eq(alloc_state(res.allocation_id), ALLOC_ACTIVE);
        cr_assert_str_eq(slot_state(s0, buf), "assigned");
        Allocation a = {0};
        cr_assert_eq(allocation_get(F.db, res.allocation_id, F.user.id, &a), 0);
        json_t *j = allocation_to_json(&a);
        cr_assert_str_eq(
            json_string_value(json_object_get(json_object_get(j, "connection"), "ssh_command")),
            "ssh -p 2201 ubuntu@10.0.0.5");
        json_decref(j);
        cr_assert(a.billing_started_at > 0);
        allocation_done(&a);
        cr_assert_eq(allocation_get(F.db, res.allocation_id, "usr_other", &a), -ENOENT,
                     "another tenant's allocation does not exist for them");

        /* release: one slot's wipe fails */
        char task_id[ID_MAX], node_id[ID_MAX];
        AllocState st;
        DbTxn txn = {0};
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_release(F.db, res.allocation_id, ALLOC_TRIGGER_RELEASE, NULL,
                                         now_usec() + 60 * USEC_PER_SEC, task_id, node_id, &st),
                     0);
        cr_assert_eq(db_commit(&txn), 0);
        cr_assert_str_eq(slot_state(s0, buf), "cleaning");
        json_t *body = reply(false, "nvme_wipe_failed", s0, true, false);
        json_array_append_new(
            json_object_get(json_object_get(body, "result"), "slots"),
            json_pack("{s:s, s:b, s:s}", "slot_id", s1, "ok", false, "reason", "nvme_wipe_failed"));
        on_reply(task_id, body);
        cr_assert_eq(alloc_state(res.allocation_id), ALLOC_RELEASE_FAILED);
        cr_assert_str_eq(slot_state(s0, buf), "available", "its own teardown was clean");
        cr_assert_str_eq(slot_state(s1, buf), "quarantined");
        cr_assert_eq(allocation_get(F.db, res.allocation_id, NULL, &a), 0);
        cr_assert_str_eq(a.release_failed_reason, "nvme_wipe_failed");
        cr_assert(a.billing_stopped);
        allocation_done(&a);

        /* the retry tears down only what is left */
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_release(F.db, res.allocation_id, ALLOC_TRIGGER_RELEASE, NULL,
                                         now_usec() + 60 * USEC_PER_SEC, task_id, node_id, &st),
                     0);
        cr_assert_eq(db_commit(&txn), 0);
        cr_assert_eq(st, ALLOC_RELEASE_FAILED);
        cr_assert_str_eq(slot_state(s1, buf), "cleaning");
        cr_assert_eq(scalar("SELECT count(*) FROM node_commands c JOIN tasks t ON t.command_id = "
                            "c.id WHERE t.id = '%s' AND instr(c.body, '%s') > 0 AND instr(c.body, "
                            "'%s') = 0",
                            task_id, s1, s0),
                     1);
        on_reply(task_id, reply(true, NULL, s1, true, false));
        cr_assert_eq(alloc_state(res.allocation_id), ALLOC_RELEASED);
        cr_assert_str_eq(slot_state(s1, buf), "available");
        cr_assert_eq(scalar("SELECT count(*) FROM ledger_holds WHERE state = 'pending'"), 0);
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_release(F.db, res.allocation_id, ALLOC_TRIGGER_RELEASE, NULL,
                                         now_usec(), task_id, node_id, &st),
                     -EPERM);
        db_rollback(&txn);
        cr_assert_eq(st, ALLOC_RELEASED);
        launch_result_done(&res);
}

/* The body of the allocation's newest command of that type. */
static json_t *command_body(const char *allocation_id, const char *type)
{
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(F.db),
                                        "SELECT body FROM node_commands WHERE type = ? AND "
                                        "instr(body, ?) > 0 ORDER BY rowid DESC LIMIT 1",
                                        -1, &s, NULL),
                     SQLITE_OK);
        sqlite3_bind_text(s, 1, type, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, allocation_id, -1, SQLITE_STATIC);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "a %s command", type);
        json_t *j = json_loads((const char *)sqlite3_column_text(s, 0), 0, NULL);
        sqlite3_finalize(s);
        cr_assert(j);
        return j;
}

static json_t *allocation_macs(const char *id)
{
        Allocation a = {0};
        cr_assert_eq(allocation_get(F.db, id, NULL, &a), 0);
        json_t *m = json_incref(a.macs);
        allocation_done(&a);
        cr_assert(json_is_array(m));
        return m;
}

Test(launch, a_hardware_mac_network_sends_nil_and_stores_the_mac_the_agent_reports)
{
        snprintf(F.q.network.mac_policy, sizeof(F.q.network.mac_policy), "hardware");
        F.q.gpu_count = 2;
        LaunchResult res;
        launch_ok(&res);
        const char *s0 = res.pick.slot_ids[0], *s1 = res.pick.slot_ids[1];
        json_t *cmd = command_body(res.allocation_id, "command.allocation.assign");
        json_t *slot;
        size_t i;
        json_array_foreach(json_object_get(cmd, "slots"), i, slot)
        {
                cr_assert(json_is_null(json_object_get(slot, "mac")), "slot %zu: mac nil", i);
        }
        json_decref(cmd);
        json_t *m = allocation_macs(res.allocation_id);
        cr_assert_eq(json_array_size(m), 2);
        cr_assert(json_is_null(json_array_get(m, 0)) && json_is_null(json_array_get(m, 1)),
                  "unknown until the agent reports it");
        json_decref(m);
        cr_assert(json_is_null(json_array_get(json_object_get(res.allocation, "macs"), 0)),
                  "the launch's answer says so too");

        json_t *body = reply(true, NULL, NULL, true, true);
        json_t *slots = json_object_get(json_object_get(body, "result"), "slots");
        json_array_append_new(slots, json_pack("{s:s, s:b, s:s}", "slot_id", s0, "ok", true, "mac",
                                               "00:5a:a0:00:00:00"));
        json_array_append_new(slots, json_pack("{s:s, s:b, s:s}", "slot_id", s1, "ok", true, "mac",
                                               "00:5a:a0:00:00:01"));
        on_reply(res.task_id, body);
        cr_assert_eq(alloc_state(res.allocation_id), ALLOC_ACTIVE);
        m = allocation_macs(res.allocation_id);
        cr_assert_str_eq(json_string_value(json_array_get(m, 0)), "00:5a:a0:00:00:00");
        cr_assert_str_eq(json_string_value(json_array_get(m, 1)), "00:5a:a0:00:00:01");
        json_decref(m);

        /* The release names the slots without a MAC: teardown needs none. */
        char task_id[ID_MAX], node_id[ID_MAX];
        AllocState st;
        DbTxn txn = {0};
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_release(F.db, res.allocation_id, ALLOC_TRIGGER_RELEASE, NULL,
                                         now_usec() + 60 * USEC_PER_SEC, task_id, node_id, &st),
                     0);
        cr_assert_eq(db_commit(&txn), 0);
        cmd = command_body(res.allocation_id, "command.allocation.release");
        cr_assert_eq(json_array_size(json_object_get(cmd, "slots")), 2);
        cr_assert_null(json_object_get(json_array_get(json_object_get(cmd, "slots"), 0), "mac"));
        json_decref(cmd);
        launch_result_done(&res);
}

Test(launch, a_generated_mac_network_sends_and_keeps_the_controllers_mac)
{
        LaunchResult res;
        launch_ok(&res);
        const char *s0 = res.pick.slot_ids[0];
        char want[18];
        allocation_slot_mac(res.allocation_id, s0, want);
        json_t *cmd = command_body(res.allocation_id, "command.allocation.assign");
        cr_assert_str_eq(json_string_value(json_object_get(
                             json_array_get(json_object_get(cmd, "slots"), 0), "mac")),
                         want);
        json_decref(cmd);
        json_t *body = reply(true, NULL, NULL, true, true);
        json_array_append_new(json_object_get(json_object_get(body, "result"), "slots"),
                              json_pack("{s:s, s:b, s:s}", "slot_id", s0, "ok", true, "mac", want));
        on_reply(res.task_id, body);
        json_t *m = allocation_macs(res.allocation_id);
        cr_assert_eq(json_array_size(m), 1);
        cr_assert_str_eq(json_string_value(json_array_get(m, 0)), want);
        json_decref(m);
        launch_result_done(&res);
}

Test(launch, a_failed_or_late_assignment_fails_and_cleans_its_slots)
{
        LaunchResult res, res2;
        launch_ok(&res);
        char buf[32];
        on_reply(res.task_id, reply(false, "vf_bind_failed", res.pick.slot_ids[0], false, false));
        Allocation a = {0};
        cr_assert_eq(allocation_get(F.db, res.allocation_id, NULL, &a), 0);
        cr_assert_eq(a.state, ALLOC_FAILED);
        cr_assert_str_eq(a.failure_reason, "vf_bind_failed");
        allocation_done(&a);
        cr_assert_str_eq(slot_state(res.pick.slot_ids[0], buf), "cleaning");
        cr_assert_eq(scalar("SELECT count(*) FROM ledger_holds WHERE state = 'voided'"), 1);
        cr_assert_eq(scalar("SELECT count(*) FROM tasks WHERE allocation_id = '%s' AND kind = "
                            "'release' AND state = 'running'",
                            res.allocation_id),
                     1, "a release cleans the slot");

        /* a second launch, past its deadline */
        snprintf(F.q.idempotency_key, sizeof(F.q.idempotency_key), "key-2");
        launch_ok(&res2);
        char ids[8][ID_MAX];
        size_t n;
        cr_assert_eq(tasks_overdue(F.db, now_usec() + 120 * USEC_PER_SEC, ids, 8, &n), 0);
        cr_assert_eq(n, 2, "the second provision and the first one's cleanup are running");
        Task t = {0};
        DbTxn txn = {0};
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(task_get(F.db, res2.task_id, &t), 0);
        cr_assert_eq(allocations_on_timeout(F.db, &t, now_usec() + 60 * USEC_PER_SEC), 0);
        cr_assert_eq(db_commit(&txn), 0);
        task_done(&t);
        cr_assert_eq(allocation_get(F.db, res2.allocation_id, NULL, &a), 0);
        cr_assert_eq(a.state, ALLOC_FAILED);
        cr_assert_str_eq(a.failure_reason, "agent_timeout");
        allocation_done(&a);
        cr_assert_eq(scalar("SELECT count(*) FROM node_commands c JOIN tasks t ON t.command_id = "
                            "c.id WHERE t.id = '%s' AND c.state = 'failed'",
                            res2.task_id),
                     1, "the late assign never runs");
        /* restart: deadlines move to at least the grace */
        cr_assert_eq(tasks_defer_deadlines(F.db, now_usec() + 3600 * USEC_PER_SEC), 2);
        cr_assert_eq(tasks_overdue(F.db, now_usec(), ids, 8, &n), 0);
        cr_assert_eq(n, 0);
        launch_result_done(&res);
        launch_result_done(&res2);
}

Test(launch, force_release_quarantines_until_a_clean_teardown_or_verify)
{
        LaunchResult res;
        F.q.gpu_count = 2;
        launch_ok(&res);
        on_reply(res.task_id, reply(true, NULL, NULL, true, true));
        char task_id[ID_MAX], node_id[ID_MAX], buf[32];
        AllocState from;
        DbTxn txn = {0};
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_force_release(F.db, res.allocation_id, "usr_admin", "abuse",
                                               now_usec() + 60 * USEC_PER_SEC, task_id, node_id,
                                               &from),
                     0);
        cr_assert_eq(db_commit(&txn), 0);
        cr_assert_eq(from, ALLOC_ACTIVE);
        cr_assert_eq(alloc_state(res.allocation_id), ALLOC_RELEASED);
        const char *s0 = res.pick.slot_ids[0], *s1 = res.pick.slot_ids[1];
        cr_assert_str_eq(slot_state(s0, buf), "quarantined");
        cr_assert_eq(scalar("SELECT count(*) FROM events WHERE type = "
                            "'provisioning.force_release_requested'"),
                     1);
        cr_assert_eq(scalar("SELECT count(*) FROM audit_logs WHERE action = "
                            "'allocation.force_release' AND reason = 'abuse'"),
                     1);
        cr_assert_eq(scalar("SELECT billing_stopped FROM allocations"), 1);
        /* the teardown: s0 clean, s1 not */
        json_t *body = reply(false, "reset_failed", s0, true, false);
        json_array_append_new(
            json_object_get(json_object_get(body, "result"), "slots"),
            json_pack("{s:s, s:b, s:s}", "slot_id", s1, "ok", false, "reason", "reset_failed"));
        on_reply(task_id, body);
        cr_assert_str_eq(slot_state(s0, buf), "available");
        cr_assert_str_eq(slot_state(s1, buf), "quarantined");
        cr_assert_eq(alloc_state(res.allocation_id), ALLOC_RELEASED);
        char state[16];
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_slot_verify(F.db, F.node.id, s0, "usr_admin", NULL, state),
                     -EPERM);
        cr_assert_str_eq(state, "available");
        cr_assert_eq(allocations_slot_verify(F.db, F.node.id, s1, "usr_admin", "by hand", state),
                     0);
        cr_assert_eq(allocations_slot_verify(F.db, "nod_other", s1, "usr_admin", NULL, state),
                     -ENOENT);
        cr_assert_eq(db_commit(&txn), 0);
        cr_assert_str_eq(slot_state(s1, buf), "available");
        cr_assert_eq(scalar("SELECT count(*) FROM allocation_slots WHERE state != 'returned'"), 0);
        cr_assert_eq(db_begin(F.db, &txn), 0);
        cr_assert_eq(allocations_force_release(F.db, res.allocation_id, "usr_admin", "again",
                                               now_usec(), task_id, node_id, &from),
                     -EPERM, "released is final");
        db_rollback(&txn);
        launch_result_done(&res);
}
