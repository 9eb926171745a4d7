/* SPDX-License-Identifier: MIT */
/* Allocations end to end with the real processes on loopback: the controller
 * (harness), scripts/bootstrap.sh enrolling a simulated host and the real
 * `gpuslice-agent run --simulate` carrying out command.allocation.assign and
 * .release. Catalog rows and credit go through the admin API. The journeys:
 * quote, launch, watch the task, read the SSH command, release; idempotent
 * launches; another tenant sees nothing; concurrent launches never share a
 * slot; a controller restart mid-provision resumes; a provision past its
 * deadline fails with agent_timeout and its slots are cleaned; a failed wipe
 * ends release_failed with the slot quarantined and billing stopped, and the
 * retry succeeds; force release and slot verification by an admin; a
 * network's MAC policy ("hardware": the VF's own MAC, "generated": the
 * controller's) as the allocation shows it, and the VF's own MAC back after
 * every release.
 *
 * Every wait polls a condition until a generous deadline (a loaded 2-core
 * machine runs these with sanitizers). */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "allocations.h"
#include "cloud.h"

/* The test's cloud: a failed assertion longjmps past the body, so teardown
 * finds the children and temp dirs here. */
static Cloud *T;

static void setup(void)
{
        T = NULL;
}

static void teardown(void)
{
        cloud_free(T);
        T = NULL;
}

TestSuite(allocations, .init = setup, .fini = teardown, .timeout = 240);

/* The controller (with extra arguments, NULL-terminated), one simulated host
 * with its eight slots approved, the catalog. */
static void start(const char *const *controller_args)
{
        CloudOptions o = {.controller_args = controller_args};
        T = cloud_new(&o);
}

/* ---- the journey ---- */

Test(allocations, quote_launch_watch_ssh_and_release_on_a_simulated_host)
{
        start(NULL);
        Tokens u;
        cloud_user(T, "tenant@example.com", &u, 0);

        /* the catalog shows what the host can take */
        {
                _cleanup_resp_ HttpResponse *s = api_get(T->c, "/api/v1/catalog/skus", u.access);
                ensure(s->status == 200, "%s", s->body);
                json_t *sku = json_array_get(jget(s, "items"), 0);
                ensure(json_array_size(json_object_get(sku, "available_gpu_counts")) == 4, "%s",
                       s->body);
        }

        /* no balance: the quote says so, the launch is refused, nothing written */
        _cleanup_free_ char *body = cloud_launch_body(T, 2);
        {
                _cleanup_resp_ HttpResponse *q =
                    api_post(T->c, "/api/v1/allocations/quote", u.access, body);
                ensure(q->status == 200, "%s", q->body);
                ensure(json_integer_value(jget(q, "hourly_cost_micros")) == 4000000, "%s", q->body);
                ensure(json_is_false(jget(q, "ok")), "%s", q->body);
                json_t *pc = json_array_get(jget(q, "prechecks"), 0);
                ensure(streq_ptr(json_string_value(json_object_get(pc, "code")),
                                 "insufficient_balance"),
                       "%s", q->body);
                _cleanup_resp_ HttpResponse *l = cloud_launch(T, u.access, "k-poor", body);
                assert_error(l, 409, "insufficient_balance");
                ensure(db_scalar(T->c, "SELECT count(*) FROM allocations") == 0, "written");
                ensure(cloud_slots_in_state(T, T->host, "available") == 8, "a slot moved");
        }
        cloud_credit(T, &u, 100000000);
        {
                _cleanup_resp_ HttpResponse *q =
                    api_post(T->c, "/api/v1/allocations/quote", u.access, body);
                ensure(json_is_true(jget(q, "ok")) && json_array_size(jget(q, "prechecks")) == 0,
                       "%s", q->body);
                ensure(db_scalar(T->c, "SELECT count(*) FROM allocations") == 0,
                       "a quote has no side effects");
                _cleanup_free_ char *bad = cloud_launch_body(T, 3);
                _cleanup_resp_ HttpResponse *q3 =
                    api_post(T->c, "/api/v1/allocations/quote", u.access, bad);
                json_t *pc = json_array_get(jget(q3, "prechecks"), 0);
                ensure(
                    streq_ptr(json_string_value(json_object_get(pc, "code")), "invalid_gpu_count"),
                    "%s", q3->body);
        }

        /* launch without a key: 400; with one: 202, Location, the task */
        {
                _cleanup_resp_ HttpResponse *nokey = cloud_launch(T, u.access, NULL, body);
                assert_invalid_field(nokey, "Idempotency-Key");
        }
        _cleanup_resp_ HttpResponse *l = cloud_launch(T, u.access, "journey-1", body);
        ensure(l->status == 202, "%ld %s", l->status, l->body);
        const char *alloc_id = jstr(l, "allocation.id");
        const char *task_id = jstr(l, "task_id");
        ensure(alloc_id && task_id, "%s", l->body);
        ensure(streq(jstr(l, "allocation.state"), "provisioning"), "%s", l->body);
        ensure(json_array_size(jget(l, "allocation.slots")) == 2, "%s", l->body);
        ensure(db_scalar(T->c, "SELECT count(*) FROM ledger_holds WHERE state = 'pending'") == 1,
               "one hour is held");

        _cleanup_resp_ HttpResponse *t = cloud_task_wait(T, u.access, task_id);
        ensure(streq(jstr(t, "state"), "succeeded"), "%s", t->body);
        ensure(streq(jstr(t, "kind"), "provision"), "%s", t->body);
        json_t *steps = jget(t, "steps");
        ensure(json_array_size(steps) >= 3, "%s", t->body);
        json_t *first = json_array_get(steps, 0);
        ensure(streq_ptr(json_string_value(json_object_get(first, "name")), "reserve_slots") &&
                   json_is_string(json_object_get(first, "started_at")) &&
                   json_is_string(json_object_get(first, "finished_at")),
               "%s", t->body);

        _cleanup_resp_ HttpResponse *a = cloud_alloc_get(T, u.access, alloc_id);
        ensure(streq(jstr(a, "state"), "active"), "%s", a->body);
        const char *ssh = jstr(a, "connection.ssh_command");
        ensure(ssh && strncmp(ssh, "ssh -p ", 7) == 0 && strstr(ssh, "ubuntu@"), "%s", a->body);
        ensure(jstr(a, "billing_started_at"), "billing started: %s", a->body);
        ensure(cloud_slots_in_state(T, T->host, "assigned") == 2 &&
                   cloud_slots_in_state(T, T->host, "available") == 6,
               "2 assigned, 6 available");
        {
                _cleanup_resp_ HttpResponse *ls =
                    cloud_get(T, u.access, "/api/v1/allocations?state=active&q=%s", alloc_id);
                ensure(json_array_size(jget(ls, "items")) == 1, "%s", ls->body);
                _cleanup_resp_ HttpResponse *none =
                    cloud_get(T, u.access, "/api/v1/allocations?state=released");
                ensure(json_array_size(jget(none, "items")) == 0, "%s", none->body);
                _cleanup_resp_ HttpResponse *sku =
                    cloud_get(T, u.access, "/api/v1/allocations?q=sim-gpu");
                ensure(json_array_size(jget(sku, "items")) == 1, "q by SKU name: %s", sku->body);
        }

        /* release: 202 and a task; the slots come back after a clean teardown */
        _cleanup_free_ char *rpath = xasprintf("/api/v1/allocations/%s/release", alloc_id);
        _cleanup_resp_ HttpResponse *rel = api_post(T->c, rpath, u.access, NULL);
        ensure(rel->status == 202, "%ld %s", rel->status, rel->body);
        ensure(streq(jstr(rel, "allocation.state"), "releasing"), "%s", rel->body);
        ensure(jstr(rel, "allocation.billing_ended_at"), "billing ended: %s", rel->body);
        _cleanup_resp_ HttpResponse *rt = cloud_task_wait(T, u.access, jstr(rel, "task_id"));
        ensure(streq(jstr(rt, "state"), "succeeded") && streq(jstr(rt, "kind"), "release"), "%s",
               rt->body);
        _cleanup_resp_ HttpResponse *done = cloud_alloc_get(T, u.access, alloc_id);
        ensure(streq(jstr(done, "state"), "released"), "%s", done->body);
        ensure(json_is_null(jget(done, "connection")), "%s", done->body);
        ensure(cloud_wait_slots(T, T->host, "available", 8), "the slots are not available again");
        {
                _cleanup_resp_ HttpResponse *again = api_post(T->c, rpath, u.access, NULL);
                assert_error(again, 409, "invalid_state");
                ensure(streq_ptr(jstr(again, "error.details.state"), "released"), "%s",
                       again->body);
        }
        _cleanup_free_ char *ev = xasprintf("SELECT count(*) FROM events WHERE type = "
                                            "'allocation.state_changed' AND subject_id = '%s'",
                                            alloc_id);
        ensure(db_scalar(T->c, ev) == 4, "pending>provisioning>active>releasing>released");
        ensure(db_scalar(T->c, "SELECT count(*) FROM ledger_holds WHERE state = 'pending'") == 0,
               "the hold is closed");
        ctl_stop_clean(T->c);
}

Test(allocations, the_same_key_and_body_answer_the_same_allocation)
{
        start(NULL);
        Tokens u;
        cloud_user(T, "idem@example.com", &u, 100000000);
        _cleanup_free_ char *one = cloud_launch_body(T, 1), *two = cloud_launch_body(T, 2);
        _cleanup_resp_ HttpResponse *a = cloud_launch(T, u.access, "same-key", one);
        ensure(a->status == 202, "%s", a->body);
        /* the same body with its keys in another order is the same body */
        _cleanup_free_ char *reordered = xasprintf(
            "{\"gpu_count\":1,\"ssh_key_ids\":[],\"network_id\":\"%s\",\"image_id\":\"%s\","
            "\"sku_id\":\"%s\"}",
            T->network_id, T->image_id, T->sku_id);
        _cleanup_resp_ HttpResponse *b = cloud_launch(T, u.access, "same-key", reordered);
        ensure(b->status == 202, "%s", b->body);
        ensure(streq(jstr(a, "allocation.id"), jstr(b, "allocation.id")) &&
                   streq(jstr(a, "task_id"), jstr(b, "task_id")) &&
                   json_is_true(jget(b, "replayed")),
               "%s vs %s", a->body, b->body);
        _cleanup_resp_ HttpResponse *c = cloud_launch(T, u.access, "same-key", two);
        assert_error(c, 409, "idempotency_conflict");
        ensure(db_scalar(T->c, "SELECT count(*) FROM allocations") == 1, "one allocation");
        ensure(db_scalar(T->c, "SELECT count(*) FROM allocation_slots") == 1, "one slot");
        /* another user may use the same key */
        Tokens v;
        cloud_user(T, "idem2@example.com", &v, 100000000);
        _cleanup_resp_ HttpResponse *d = cloud_launch(T, v.access, "same-key", one);
        ensure(d->status == 202 && !streq(jstr(d, "allocation.id"), jstr(a, "allocation.id")), "%s",
               d->body);
        ctl_stop_clean(T->c);
}

Test(allocations, another_tenant_sees_nothing_of_it)
{
        start(NULL);
        Tokens u, other;
        cloud_user(T, "owner@example.com", &u, 100000000);
        cloud_user(T, "other@example.com", &other, 100000000);
        char id[64];
        cloud_launch_active(T, &u, 1, "mine", id);
        _cleanup_resp_ HttpResponse *g = cloud_get(T, other.access, "/api/v1/allocations/%s", id);
        assert_error(g, 404, "not_found");
        _cleanup_free_ char *rpath = xasprintf("/api/v1/allocations/%s/release", id);
        _cleanup_resp_ HttpResponse *rel = api_post(T->c, rpath, other.access, NULL);
        assert_error(rel, 404, "not_found");
        _cleanup_resp_ HttpResponse *mine = cloud_alloc_get(T, u.access, id);
        _cleanup_resp_ HttpResponse *task =
            cloud_get(T, other.access, "/api/v1/tasks/%s", jstr(mine, "task_id"));
        assert_error(task, 404, "not_found");
        _cleanup_resp_ HttpResponse *list = cloud_get(T, other.access, "/api/v1/allocations");
        ensure(json_array_size(jget(list, "items")) == 0, "%s", list->body);
        _cleanup_resp_ HttpResponse *admin_task =
            cloud_get(T, T->admin.access, "/api/v1/tasks/%s", jstr(mine, "task_id"));
        ensure(admin_task->status == 200, "an admin reads any task: %s", admin_task->body);
        _cleanup_resp_ HttpResponse *admin_list =
            cloud_get(T, T->admin.access, "/api/v1/admin/allocations?state=active");
        ensure(json_array_size(jget(admin_list, "items")) == 1, "%s", admin_list->body);
        _cleanup_resp_ HttpResponse *still = cloud_alloc_wait(T, u.access, id, "active");
        ensure(streq(jstr(still, "state"), "active"), "%s", still->body);
        ctl_stop_clean(T->c);
}

/* ---- concurrency ---- */

#define CONCURRENT 14

Test(allocations, concurrent_launches_never_share_a_slot)
{
        start(NULL);
        Tokens u;
        cloud_user(T, "many@example.com", &u, 1000000000);
        _cleanup_free_ char *body = cloud_launch_body(T, 1);
        long st[CONCURRENT];
        cloud_post_many(T, u.access, CONCURRENT, "/api/v1/allocations", body, "race", st);
        int accepted = 0, sold_out = 0;
        for (int i = 0; i < CONCURRENT; i++) {
                accepted += st[i] == 202;
                sold_out += st[i] == 409;
        }
        ensure(accepted == 8 && sold_out == CONCURRENT - 8, "accepted %d, refused %d", accepted,
               sold_out);
        ensure(db_scalar(T->c, "SELECT count(*) FROM (SELECT slot_id FROM allocation_slots GROUP "
                               "BY slot_id HAVING count(*) > 1)") == 0,
               "a slot is in two allocations");
        ensure(db_scalar(T->c, "SELECT count(DISTINCT slot_id) FROM allocation_slots") == 8,
               "eight slots taken");
        ensure(cloud_wait_slots(T, T->host, "assigned", 8), "every launch got its slot assigned");
        ctl_stop_clean(T->c);
}

/* What must hold whatever happened: no slot held twice, every allocation in
 * a contract state, slot and allocation states that agree. */
#define CHAOS 40

Test(allocations, kill_9_during_concurrent_launches_and_releases_leaves_nothing_half_done)
{
        char listen[64];
        snprintf(listen, sizeof(listen), "127.0.0.1:%u", free_port());
        const char *args[] = {"--agent-listen", listen, NULL};
        start(args);
        Tokens u;
        cloud_user(T, "chaos@example.com", &u, 1000000000);
        _cleanup_free_ char *body = cloud_launch_body(T, 1);
        srand((unsigned)getpid());
        for (int round = 0; round < 3; round++) {
                /* launches race a kill -9 at a random moment */
                long st[CHAOS];
                char prefix[32];
                snprintf(prefix, sizeof(prefix), "chaos-%d", round);
                pid_t killer = fork();
                cr_assert(killer >= 0);
                if (killer == 0) {
                        pause_ms(20 + rand() % 400);
                        kill(T->c->pid, SIGKILL);
                        _exit(0);
                }
                cloud_post_many(T, u.access, CHAOS, "/api/v1/allocations", body, prefix, st);
                waitpid(killer, NULL, 0);
                ctl_kill9(T->c); /* reaps it (already dead, or killed now) */
                ctl_start_or_fail(T->c);
                ensure(cloud_node_online(T, T->host, true), "the agent came back (round %d)",
                       round);
                cloud_check_invariants(T);
                ensure(cloud_wait_no_running_tasks(T, 2 * CLOUD_DEADLINE_MS),
                       "tasks still running after restart (round %d)", round);
                cloud_check_invariants(T);

                /* releases of every active allocation race another kill -9 */
                long long active =
                    db_scalar(T->c, "SELECT count(*) FROM allocations WHERE state = 'active'");
                if (active > 0) {
                        /* The ids through the API (the tenant's own list). */
                        _cleanup_resp_ HttpResponse *ls =
                            cloud_get(T, u.access, "/api/v1/allocations?state=active&limit=200");
                        size_t n = json_array_size(jget(ls, "items"));
                        ensure((long long)n == active, "%zu listed, %lld active", n, active);
                        pid_t k2 = fork();
                        cr_assert(k2 >= 0);
                        if (k2 == 0) {
                                pause_ms(rand() % 300);
                                kill(T->c->pid, SIGKILL);
                                _exit(0);
                        }
                        for (size_t i = 0; i < n; i++) {
                                const char *id = json_string_value(
                                    json_object_get(json_array_get(jget(ls, "items"), i), "id"));
                                _cleanup_free_ char *path =
                                    xasprintf("/api/v1/allocations/%s/release", id);
                                long rs[1];
                                cloud_post_many(T, u.access, 1, path, NULL, NULL, rs);
                        }
                        waitpid(k2, NULL, 0);
                        ctl_kill9(T->c);
                        ctl_start_or_fail(T->c);
                        ensure(cloud_node_online(T, T->host, true),
                               "the agent came back after releases");
                        cloud_check_invariants(T);
                        /* releases the kill cut short are asked again */
                        _cleanup_resp_ HttpResponse *left =
                            cloud_get(T, u.access, "/api/v1/allocations?state=active&limit=200");
                        size_t i;
                        json_t *it;
                        json_array_foreach(jget(left, "items"), i, it)
                        {
                                _cleanup_free_ char *path =
                                    xasprintf("/api/v1/allocations/%s/release",
                                              json_string_value(json_object_get(it, "id")));
                                _cleanup_resp_ HttpResponse *r =
                                    api_post(T->c, path, u.access, NULL);
                                ensure(r->status == 202, "%s", r->body);
                        }
                        ensure(cloud_wait_no_running_tasks(T, 2 * CLOUD_DEADLINE_MS),
                               "release tasks still running");
                        cloud_check_invariants(T);
                }
                ensure(db_scalar(T->c, "SELECT count(*) FROM allocations WHERE state IN "
                                       "('pending', 'provisioning', 'releasing', 'active')") == 0,
                       "every allocation settled (round %d)", round);
                ensure(cloud_wait_slots(T, T->host, "available", 8),
                       "every slot available again (round %d)", round);
        }
        ctl_stop_clean(T->c);
}

/* ---- restart and deadlines ---- */

Test(allocations, a_controller_restart_mid_provision_resumes_it)
{
        /* The node still counts as online for a heartbeat timeout while its
         * agent is frozen, so the launch is placed and its command waits; the
         * agent, thawed, finds the link dead within that timeout and redials
         * the restarted controller on the same port. */
        char listen[64];
        snprintf(listen, sizeof(listen), "127.0.0.1:%u", free_port());
        const char *args[] = {"--heartbeat-timeout-s", "8", "--agent-listen", listen, NULL};
        start(args);
        Tokens u;
        cloud_user(T, "restart@example.com", &u, 100000000);
        cloud_agent_freeze(T->host, true);
        _cleanup_free_ char *body = cloud_launch_body(T, 4);
        _cleanup_resp_ HttpResponse *l = cloud_launch(T, u.access, "restart-1", body);
        ensure(l->status == 202, "%ld %s", l->status, l->body);
        char id[64];
        snprintf(id, sizeof(id), "%s", jstr(l, "allocation.id"));
        ensure(streq(jstr(l, "allocation.state"), "provisioning"), "%s", l->body);

        ctl_kill9(T->c);
        ctl_start_or_fail(T->c);
        cloud_agent_freeze(T->host, false);
        ensure(cloud_node_online(T, T->host, true), "the agent came back");
        _cleanup_resp_ HttpResponse *a = cloud_alloc_wait(T, u.access, id, "active");
        ensure(jstr(a, "connection.ssh_command"), "%s", a->body);
        _cleanup_resp_ HttpResponse *t = cloud_task_wait(T, u.access, jstr(l, "task_id"));
        ensure(streq(jstr(t, "state"), "succeeded"), "%s", t->body);
        ensure(cloud_slots_in_state(T, T->host, "assigned") == 4, "four slots assigned");
        ctl_stop_clean(T->c);
}

Test(allocations, a_provision_past_its_deadline_fails_and_its_slots_are_cleaned)
{
        const char *args[] = {"--heartbeat-timeout-s", "60", "--provision-timeout-s", "2", NULL};
        start(args);
        Tokens u;
        cloud_user(T, "late@example.com", &u, 100000000);
        cloud_agent_freeze(T->host, true);
        _cleanup_free_ char *body = cloud_launch_body(T, 2);
        _cleanup_resp_ HttpResponse *l = cloud_launch(T, u.access, "late-1", body);
        ensure(l->status == 202, "%ld %s", l->status, l->body);
        const char *id = jstr(l, "allocation.id");
        _cleanup_resp_ HttpResponse *a = cloud_alloc_wait(T, u.access, id, "failed");
        ensure(streq_ptr(jstr(a, "failure_reason"), "agent_timeout"), "%s", a->body);
        _cleanup_resp_ HttpResponse *t = cloud_task_wait(T, u.access, jstr(l, "task_id"));
        ensure(streq(jstr(t, "state"), "failed") && streq_ptr(jstr(t, "error"), "agent_timeout"),
               "%s", t->body);
        ensure(cloud_slots_in_state(T, T->host, "cleaning") == 2,
               "the slots wait for a cleaning release");
        ensure(db_scalar(T->c, "SELECT count(*) FROM ledger_holds WHERE state = 'pending'") == 0,
               "the hold is voided");
        cloud_agent_freeze(T->host, false);
        ensure(cloud_wait_slots(T, T->host, "available", 8),
               "the cleanup release returned the slots");
        ctl_stop_clean(T->c);
}

/* ---- failures on the host ---- */

/* A teardown failing at the reset (reset_failed), on slots with and without
 * an NVMe drive; the wipe's own failure follows. */
Test(allocations, a_failed_teardown_ends_release_failed_and_the_retry_succeeds)
{
        start(NULL);
        Tokens u;
        cloud_user(T, "wipe@example.com", &u, 100000000);
        char id[64];
        cloud_launch_active(T, &u, 2, "wipe-1", id);
        cloud_set_faults(T->host, "reset\n");
        _cleanup_free_ char *rpath = xasprintf("/api/v1/allocations/%s/release", id);
        _cleanup_resp_ HttpResponse *rel = api_post(T->c, rpath, u.access, NULL);
        ensure(rel->status == 202, "%s", rel->body);
        _cleanup_resp_ HttpResponse *a = cloud_alloc_wait(T, u.access, id, "release_failed");
        ensure(streq_ptr(jstr(a, "release_failed_reason"), "reset_failed"), "%s", a->body);
        ensure(json_is_true(jget(a, "billing_stopped")), "%s", a->body);
        ensure(cloud_slots_in_state(T, T->host, "quarantined") == 2, "the slots are quarantined");
        _cleanup_resp_ HttpResponse *t = cloud_task_wait(T, u.access, jstr(rel, "task_id"));
        ensure(streq(jstr(t, "state"), "failed"), "%s", t->body);

        cloud_set_faults(T->host, "");
        _cleanup_resp_ HttpResponse *retry = api_post(T->c, rpath, u.access, NULL);
        ensure(retry->status == 202, "the same call retries: %s", retry->body);
        _cleanup_resp_ HttpResponse *b = cloud_alloc_wait(T, u.access, id, "released");
        ensure(json_is_null(jget(b, "release_failed_reason")), "%s", b->body);
        ensure(cloud_wait_slots(T, T->host, "available", 8), "the slots are back");
        ctl_stop_clean(T->c);
}

static long long realtime_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static long long alloc_sql(const char *fmt, const char *id)
{
        _cleanup_free_ char *sql = xasprintf(fmt, id);
        return db_scalar(T->c, sql);
}

/* Polls until the metering tick has charged every open meter past usec. */
static void wait_watermark_past(long long usec)
{
        long long deadline = mono_ms() + CLOUD_DEADLINE_MS;
        while (db_scalar(T->c, "SELECT watermark FROM metering_state") <= usec) {
                ensure(mono_ms() < deadline, "the metering tick never passed %lld", usec);
                pause_ms(100);
        }
}

/* The simulated host's record of one of its slots (agent/simulated-ops.c). */
static json_t *sim_slot(size_t i)
{
        _cleanup_free_ char *path =
            xasprintf("%s/var/lib/gpuslice-agent/simulated-host/slots/%s.json", T->host->prefix,
                      T->host->slot_ids[i]);
        json_error_t err;
        json_t *o = json_load_file(path, 0, &err);
        ensure(o, "%s: %s", path, err.text);
        char *text = json_dumps(o, JSON_COMPACT);
        cr_log_info("%s: %s", path, text);
        free(text);
        return o;
}

/* The simulated Tioga host gives an NVMe drive to its two NUMA-node-0 slots
 * (gpuslice-agent discover shows the map); only those two are approved, so
 * a two-GPU allocation has a drive in each slot to wipe at its release. */
Test(allocations, a_failed_wipe_quarantines_the_slots_stops_billing_and_the_retry_succeeds)
{
        const char *args[] = {"--metering-interval-s", "1", NULL};
        CloudOptions o = {.controller_args = args, .approve = CLOUD_APPROVE_NVME};
        T = cloud_new(&o);
        ensure(T->host->n_slots == 2 && T->host->slot_nvme[0][0] && T->host->slot_nvme[1][0],
               "two approved slots, each with an NVMe drive (%zu)", T->host->n_slots);
        Tokens u;
        const long long credit = 100000000;
        cloud_user(T, "nvme@example.com", &u, credit);
        char id[64];
        cloud_launch_active(T, &u, 2, "nvme-1", id);
        ensure(cloud_slots_in_state(T, T->host, "assigned") == 2, "both slots assigned");
        /* a second of usage is charged while it runs */
        wait_watermark_past(
            alloc_sql("SELECT billing_started_at FROM allocations WHERE id = '%s'", id) + 1000000);

        cloud_set_faults(T->host, "wipe_nvme\n");
        _cleanup_free_ char *rpath = xasprintf("/api/v1/allocations/%s/release", id);
        long long asked = realtime_usec();
        _cleanup_resp_ HttpResponse *rel = api_post(T->c, rpath, u.access, NULL);
        long long answered = realtime_usec();
        ensure(rel->status == 202, "%s", rel->body);
        _cleanup_resp_ HttpResponse *a = cloud_alloc_wait(T, u.access, id, "release_failed");
        ensure(streq_ptr(jstr(a, "release_failed_reason"), "nvme_wipe_failed"), "%s", a->body);
        ensure(json_is_true(jget(a, "billing_stopped")), "%s", a->body);
        _cleanup_resp_ HttpResponse *t = cloud_task_wait(T, u.access, jstr(rel, "task_id"));
        ensure(streq(jstr(t, "state"), "failed"), "%s", t->body);
        ensure(strstr(t->body, "nvme_wipe_failed"), "the task says why: %s", t->body);
        /* both slots quarantined, with the reason */
        ensure(cloud_slots_in_state(T, T->host, "quarantined") == 2, "the slots are quarantined");
        _cleanup_free_ char *why = xasprintf("SELECT count(*) FROM node_resource_slots WHERE "
                                             "node_id = '%s' AND state_reason = "
                                             "'nvme_wipe_failed' AND allocation_id = '%s'",
                                             T->host->node_id, id);
        ensure(db_scalar(T->c, why) == 2, "quarantined for the wipe, still naming the allocation");
        /* the simulated host ran the wipe and recorded its failure */
        for (size_t i = 0; i < 2; i++) {
                _cleanup_(json_decrefp) json_t *st = sim_slot(i);
                ensure(
                    streq_ptr(json_string_value(json_object_get(st, "state")), "teardown_failed") &&
                        streq_ptr(json_string_value(json_object_get(st, "failed_step")),
                                  "wipe_nvme") &&
                        json_is_false(json_object_get(json_object_get(st, "nvme"), "wiped")),
                    "slot %zu on the simulated host", i);
        }

        /* billing: ended at the release request, charged exactly to there,
         * nothing later */
        long long ended = alloc_sql("SELECT billing_ended_at FROM allocations WHERE id = '%s'", id);
        ensure(ended >= asked && ended <= answered,
               "billing ended at the request: %lld in [%lld, %lld]", ended, asked, answered);
        long long started =
            alloc_sql("SELECT billing_started_at FROM allocations WHERE id = '%s'", id);
        long long secs = (ended - started) / 1000000;
        long long due = 4000000 / 3600 * secs + 4000000 % 3600 * secs / 3600;
        const char *charged_sql = "SELECT COALESCE(SUM(charged_micros), 0) FROM allocation_usage "
                                  "WHERE allocation_id = '%s'";
        long long deadline = mono_ms() + CLOUD_DEADLINE_MS;
        while (alloc_sql("SELECT closed FROM allocation_meters WHERE allocation_id = '%s'", id) !=
               1) {
                ensure(mono_ms() < deadline, "the meter never closed");
                pause_ms(100);
        }
        ensure(due > 0 && alloc_sql(charged_sql, id) == due, "charged %lld, due %lld",
               alloc_sql(charged_sql, id), due);
        _cleanup_free_ char *bal =
            xasprintf("SELECT balance_micros FROM ledger_accounts WHERE id = 'user:%s'", u.user_id);
        ensure(db_scalar(T->c, bal) == credit - due, "the balance: %lld, want %lld",
               db_scalar(T->c, bal), credit - due);
        ensure(alloc_sql("SELECT count(*) FROM ledger_holds WHERE allocation_id = '%s' AND state "
                         "= 'pending'",
                         id) == 0,
               "the hold is closed");
        wait_watermark_past(realtime_usec() + 2000000);
        ensure(alloc_sql(charged_sql, id) == due && db_scalar(T->c, bal) == credit - due,
               "nothing charged while release_failed");
        {
                _cleanup_resp_ HttpResponse *b = api_get(T->c, "/api/v1/billing/balance", u.access);
                ensure(json_integer_value(jget(b, "balance_micros")) == credit - due &&
                           json_integer_value(jget(b, "burn_rate_micros_per_hour")) == 0,
                       "%s", b->body);
                _cleanup_resp_ HttpResponse *us =
                    api_get(T->c, "/api/v1/billing/usage?bucket=day", u.access);
                ensure(json_integer_value(jget(us, "total_micros")) == due, "%s", us->body);
        }
        cloud_check_ledger(T);
        cloud_check_invariants(T);

        /* the fault is gone: the same call retries and returns the slots */
        cloud_set_faults(T->host, "");
        _cleanup_resp_ HttpResponse *retry = api_post(T->c, rpath, u.access, NULL);
        ensure(retry->status == 202, "the same call retries: %s", retry->body);
        _cleanup_resp_ HttpResponse *b = cloud_alloc_wait(T, u.access, id, "released");
        ensure(json_is_null(jget(b, "release_failed_reason")), "%s", b->body);
        _cleanup_resp_ HttpResponse *rt = cloud_task_wait(T, u.access, jstr(retry, "task_id"));
        ensure(streq(jstr(rt, "state"), "succeeded"), "%s", rt->body);
        ensure(cloud_wait_slots(T, T->host, "available", 2), "the slots are back");
        for (size_t i = 0; i < 2; i++) {
                _cleanup_(json_decrefp) json_t *st = sim_slot(i);
                ensure(streq_ptr(json_string_value(json_object_get(st, "state")), "available") &&
                           json_is_true(json_object_get(json_object_get(st, "nvme"), "wiped")),
                       "slot %zu wiped on the simulated host", i);
        }
        ensure(db_scalar(T->c, bal) == credit - due, "the retry charges nothing");
        cloud_check_ledger(T);
        cloud_check_invariants(T);
        ctl_stop_clean(T->c);
}

Test(allocations, a_failed_bind_fails_the_launch_and_cleans_the_slot)
{
        start(NULL);
        Tokens u;
        cloud_user(T, "bind@example.com", &u, 100000000);
        cloud_set_faults(T->host, "bind_vf\n");
        _cleanup_free_ char *body = cloud_launch_body(T, 1);
        _cleanup_resp_ HttpResponse *l = cloud_launch(T, u.access, "bind-1", body);
        ensure(l->status == 202, "%s", l->body);
        _cleanup_resp_ HttpResponse *a =
            cloud_alloc_wait(T, u.access, jstr(l, "allocation.id"), "failed");
        ensure(streq_ptr(jstr(a, "failure_reason"), "vf_bind_failed"), "%s", a->body);
        cloud_set_faults(T->host, "");
        ensure(cloud_wait_slots(T, T->host, "available", 8),
               "the cleanup release returned the slot");
        ctl_stop_clean(T->c);
}

Test(allocations, force_release_needs_a_reason_and_quarantines_until_verified)
{
        start(NULL);
        Tokens u;
        cloud_user(T, "force@example.com", &u, 100000000);
        char id[64];
        cloud_launch_active(T, &u, 1, "force-1", id);
        _cleanup_free_ char *path = xasprintf("/api/v1/admin/allocations/%s/force-release", id);
        {
                _cleanup_resp_ HttpResponse *r = api_post(T->c, path, T->admin.access, "{}");
                assert_invalid_field(r, "reason");
                _cleanup_resp_ HttpResponse *blank =
                    api_post(T->c, path, T->admin.access, "{\"reason\":\"  \"}");
                assert_invalid_field(blank, "reason");
                _cleanup_resp_ HttpResponse *user =
                    api_post(T->c, path, u.access, "{\"reason\":\"mine\"}");
                assert_error(user, 403, "forbidden");
        }
        /* the teardown fails on the host: the slot stays quarantined */
        cloud_set_faults(T->host, "reset\n");
        _cleanup_resp_ HttpResponse *f =
            api_post(T->c, path, T->admin.access, "{\"reason\":\"tenant abuse report\"}");
        ensure(f->status == 200, "%ld %s", f->status, f->body);
        ensure(streq(jstr(f, "allocation.state"), "released"), "%s", f->body);
        ensure(json_is_true(jget(f, "allocation.billing_stopped")), "%s", f->body);
        _cleanup_free_ char *ev = xasprintf(
            "SELECT count(*) FROM events WHERE type = 'provisioning.force_release_requested' AND "
            "subject_id = '%s'",
            id);
        ensure(db_scalar(T->c, ev) == 1, "the event is in the outbox");
        _cleanup_free_ char *au = xasprintf("SELECT count(*) FROM audit_logs WHERE action = "
                                            "'allocation.force_release' AND target_id = '%s' AND "
                                            "reason = 'tenant abuse report'",
                                            id);
        ensure(db_scalar(T->c, au) == 1, "the audit row");
        ensure(cloud_slots_in_state(T, T->host, "quarantined") == 1, "quarantined");
        _cleanup_resp_ HttpResponse *t = cloud_task_wait(T, T->admin.access, jstr(f, "task_id"));
        ensure(cloud_slots_in_state(T, T->host, "quarantined") == 1,
               "a failed teardown keeps it quarantined");
        _cleanup_resp_ HttpResponse *again =
            api_post(T->c, path, T->admin.access, "{\"reason\":\"twice\"}");
        assert_error(again, 409, "invalid_state");

        /* an admin checks the slot and returns it */
        _cleanup_free_ char *q = xasprintf("SELECT count(*) FROM node_resource_slots WHERE state "
                                           "= 'quarantined' AND id = '%s'",
                                           T->host->slot_ids[0]);
        const char *slot = db_scalar(T->c, q) == 1 ? T->host->slot_ids[0] : NULL;
        for (size_t i = 0; !slot && i < T->host->n_slots; i++) {
                _cleanup_free_ char *qi = xasprintf("SELECT count(*) FROM node_resource_slots "
                                                    "WHERE state = 'quarantined' AND id = '%s'",
                                                    T->host->slot_ids[i]);
                if (db_scalar(T->c, qi) == 1)
                        slot = T->host->slot_ids[i];
        }
        ensure(slot, "which slot is quarantined?");
        _cleanup_free_ char *vpath =
            xasprintf("/api/v1/admin/nodes/%s/slots/%s/verify", T->host->node_id, slot);
        _cleanup_resp_ HttpResponse *v =
            api_post(T->c, vpath, T->admin.access, "{\"reason\":\"wiped by hand\"}");
        ensure(v->status == 200, "%ld %s", v->status, v->body);
        ensure(cloud_slots_in_state(T, T->host, "available") == 8, "verified back to available");
        _cleanup_resp_ HttpResponse *v2 = api_post(T->c, vpath, T->admin.access, NULL);
        assert_error(v2, 409, "invalid_state");
        ctl_stop_clean(T->c);
}

/* ---- the network's MAC policy ---- */

/* The MAC the simulated host's VF of the slot has. */
static char *sim_vf_mac(const char *slot_id)
{
        _cleanup_free_ char *path = xasprintf(
            "%s/var/lib/gpuslice-agent/simulated-host/slots/%s.json", T->host->prefix, slot_id);
        json_error_t err;
        json_t *o = json_load_file(path, 0, &err);
        ensure(o, "%s: %s", path, err.text);
        const char *mac = json_string_value(json_object_get(json_object_get(o, "vf"), "mac"));
        char *ret = mac ? strdup(mac) : NULL;
        json_decref(o);
        ensure(ret, "%s has a VF MAC", path);
        return ret;
}

/* Releases id and waits for the task to succeed. */
static void release_wait(const Tokens *u, const char *id)
{
        _cleanup_free_ char *rpath = xasprintf("/api/v1/allocations/%s/release", id);
        _cleanup_resp_ HttpResponse *rel = api_post(T->c, rpath, u->access, NULL);
        ensure(rel->status == 202, "%ld %s", rel->status, rel->body);
        _cleanup_resp_ HttpResponse *t = cloud_task_wait(T, u->access, jstr(rel, "task_id"));
        ensure(streq(jstr(t, "state"), "succeeded"), "release task: %s", t->body);
}

/* "hardware": the command carries no MAC, the VF keeps its own (the
 * simulated host's 00:5a:...), and the allocation shows that one once the
 * agent reported it. The policy is the launch's: a network edited while the
 * assign waits, then a controller restart that resends the stored command,
 * change nothing. A "generated" network still gets allocation_slot_mac().
 * After both are released, a "hardware" launch on every slot finds each VF
 * with its own MAC again (the teardown restores it, not the zero MAC). */
Test(allocations, a_hardware_mac_network_shows_the_vfs_own_mac_and_generated_the_controllers)
{
        char listen[64];
        snprintf(listen, sizeof(listen), "127.0.0.1:%u", free_port());
        const char *args[] = {"--heartbeat-timeout-s", "8", "--agent-listen", listen, NULL};
        start(args);
        Tokens u;
        cloud_user(T, "macs@example.com", &u, 100000000);
        _cleanup_free_ char *net_id =
            cloud_admin_create(T, "/api/v1/admin/networks",
                               "{\"name\":\"flat-hw\",\"vlan\":0,\"mac_policy\":\"hardware\"}");

        cloud_agent_freeze(T->host, true);
        _cleanup_free_ char *body = xasprintf("{\"sku_id\":\"%s\",\"gpu_count\":1,\"image_id\":"
                                              "\"%s\",\"network_id\":\"%s\",\"ssh_key_ids\":[]}",
                                              T->sku_id, T->image_id, net_id);
        _cleanup_resp_ HttpResponse *l = cloud_launch(T, u.access, "hw-1", body);
        ensure(l->status == 202, "%ld %s", l->status, l->body);
        char id[64];
        snprintf(id, sizeof(id), "%s", jstr(l, "allocation.id"));
        ensure(json_is_null(jget(l, "allocation.macs.0")), "unknown until reported: %s", l->body);

        _cleanup_free_ char *path = xasprintf("/api/v1/admin/networks/%s", net_id);
        HttpRequest rq = {.method = "PATCH",
                          .path = path,
                          .bearer = T->admin.access,
                          .body = "{\"mac_policy\":\"generated\"}"};
        _cleanup_resp_ HttpResponse *p = http_send(T->c, &rq);
        ensure(p->status == 200, "%ld %s", p->status, p->body);
        ctl_kill9(T->c);
        ctl_start_or_fail(T->c);
        cloud_agent_freeze(T->host, false);
        ensure(cloud_node_online(T, T->host, true), "the agent came back");

        _cleanup_resp_ HttpResponse *a = cloud_alloc_wait(T, u.access, id, "active");
        const char *slot_id = jstr(a, "slots.0.id");
        ensure(slot_id, "%s", a->body);
        _cleanup_free_ char *vf_mac = sim_vf_mac(slot_id);
        const char *mac = jstr(a, "macs.0");
        ensure(mac && streq(mac, vf_mac), "the VF's own MAC %s: %s", vf_mac, a->body);
        ensure(startswith(mac, "00:5a:"), "the simulated hardware MAC: %s", mac);
        char generated[18];
        allocation_slot_mac(id, slot_id, generated);
        ensure(!streq(mac, generated), "not the generated %s", generated);

        /* The default network generates. */
        char id2[64];
        cloud_launch_active(T, &u, 1, "gen-1", id2);
        _cleanup_resp_ HttpResponse *g = cloud_alloc_get(T, u.access, id2);
        const char *slot2 = jstr(g, "slots.0.id");
        ensure(slot2, "%s", g->body);
        allocation_slot_mac(id2, slot2, generated);
        ensure(streq_ptr(jstr(g, "macs.0"), generated), "%s: %s", generated, g->body);
        _cleanup_free_ char *vf2 = sim_vf_mac(slot2);
        ensure(streq(vf2, generated), "the VF has it: %s", vf2);

        /* Released, each VF has its own MAC back (not the zero MAC), so a
         * "hardware" launch on every slot shows the same hardware MAC on the
         * first slot and the VF's own, not the generated one, on the second. */
        release_wait(&u, id);
        release_wait(&u, id2);
        _cleanup_free_ char *back1 = sim_vf_mac(slot_id), *back2 = sim_vf_mac(slot2);
        ensure(streq(back1, mac), "the hardware MAC back after the release: %s", back1);
        ensure(startswith(back2, "00:5a:") && !streq(back2, generated),
               "the VF's own MAC back after a generated one: %s", back2);
        ensure(cloud_wait_slots(T, T->host, "available", 8), "the slots are available again");
        _cleanup_free_ char *net2 =
            cloud_admin_create(T, "/api/v1/admin/networks",
                               "{\"name\":\"flat-hw-2\",\"vlan\":0,\"mac_policy\":\"hardware\"}");
        _cleanup_free_ char *all = xasprintf("{\"sku_id\":\"%s\",\"gpu_count\":8,\"image_id\":"
                                             "\"%s\",\"network_id\":\"%s\",\"ssh_key_ids\":[]}",
                                             T->sku_id, T->image_id, net2);
        _cleanup_resp_ HttpResponse *l8 = cloud_launch(T, u.access, "hw-8", all);
        ensure(l8->status == 202, "%ld %s", l8->status, l8->body);
        _cleanup_resp_ HttpResponse *a8 =
            cloud_alloc_wait(T, u.access, jstr(l8, "allocation.id"), "active");
        bool saw1 = false, saw2 = false;
        for (size_t i = 0; i < json_array_size(jget(a8, "slots")); i++) {
                const char *sid =
                    json_string_value(json_object_get(json_array_get(jget(a8, "slots"), i), "id"));
                const char *m = json_string_value(json_array_get(jget(a8, "macs"), i));
                ensure(sid && m && startswith(m, "00:5a:"), "slot %zu: %s", i, a8->body);
                if (streq(sid, slot_id)) {
                        saw1 = true;
                        ensure(streq(m, mac), "the same hardware MAC again %s: %s", mac, m);
                } else if (streq(sid, slot2)) {
                        saw2 = true;
                        ensure(streq(m, back2), "the VF's own after a generated one: %s", m);
                }
        }
        ensure(saw1 && saw2, "every slot: %s", a8->body);
        ctl_stop_clean(T->c);
}
