/* SPDX-License-Identifier: MIT */
/* Billing with real launches: the controller, scripts/bootstrap.sh enrolling
 * a simulated host and the real `gpuslice-agent run --simulate`, credit from
 * an admin. A launch holds an hour of its price; usage is charged per second
 * from the moment the allocation is active until its release is asked for,
 * never for provisioning, never for a failed launch, never after a teardown
 * failed (billing_stopped). The ledger sums to zero after each.
 *
 * (The simulated cloud is tests/lib/cloud.c's.) */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloud.h"

/* 36 USD per GPU hour: 10,000 micro-USD a second, visible within a tick. */
#define PRICE  36000000LL
#define CREDIT 100000000LL

static Cloud *T;
static Tokens U; /* the tenant */

/* Controller (metering every second), a simulated host enrolled and
 * approved, a SKU at PRICE, a user with CREDIT. */
static void world_start(void)
{
        const char *args[] = {"--metering-interval-s", "1", NULL};
        CloudOptions o = {.controller_args = args, .price_per_gpu_hour_micros = PRICE};
        T = cloud_new(&o);
        cloud_user(T, "tenant@example.com", &U, CREDIT);
}

static void setup(void)
{
        T = NULL;
        U = (Tokens){0};
}

static void teardown(void)
{
        cloud_free(T);
        T = NULL;
}

TestSuite(billing_e2e, .init = setup, .fini = teardown, .timeout = 240);

/* ---- helpers ---- */

static json_t *balance(void)
{
        _cleanup_resp_ HttpResponse *r = api_get(T->c, "/api/v1/billing/balance", U.access);
        ensure(r->status == 200, "%s", r->body);
        return json_incref(r->json);
}

static long long balance_field(const char *field)
{
        json_t *b = balance();
        long long v = json_integer_value(json_object_get(b, field));
        json_decref(b);
        return v;
}

static void launch(const char *key, char id[static 64])
{
        _cleanup_free_ char *body = cloud_launch_body(T, 1);
        _cleanup_resp_ HttpResponse *r = cloud_launch(T, U.access, key, body);
        ensure(r->status == 202, "launch: %ld %s", r->status, r->body);
        snprintf(id, 64, "%s", jstr(r, "allocation.id"));
}

static HttpResponse *alloc_wait(const char *id, const char *state)
{
        return cloud_alloc_wait(T, U.access, id, state);
}

static long long sql_for(const char *fmt, const char *id)
{
        _cleanup_free_ char *sql = xasprintf(fmt, id);
        return db_scalar(T->c, sql);
}

static void wait_sql(const char *fmt, const char *id, long long want, const char *what)
{
        long long deadline = mono_ms() + CLOUD_DEADLINE_MS;
        while (sql_for(fmt, id) < want) {
                ensure(mono_ms() < deadline, "%s", what);
                pause_ms(100);
        }
}

static void assert_ledger_sound(void)
{
        cloud_check_ledger(T);
}

/* What billing_started_at .. billing_ended_at costs: whole seconds. */
static long long due_between(const char *id)
{
        long long secs = sql_for("SELECT (billing_ended_at - billing_started_at) / 1000000 FROM "
                                 "allocations WHERE id = '%s'",
                                 id);
        return PRICE / 3600 * secs + PRICE % 3600 * secs / 3600;
}

/* ---- the journeys ---- */

Test(billing_e2e, a_launch_is_held_then_charged_from_active_until_its_release)
{
        world_start();
        char id[64];
        launch("e2e-1", id);
        /* The hold: an hour of the price reserved at once, nothing spent. */
        ensure(balance_field("balance_micros") == CREDIT, "nothing charged at launch");
        ensure(balance_field("held_micros") > 0, "the launch holds");
        _cleanup_resp_ HttpResponse *a = alloc_wait(id, "active");
        long long started =
            sql_for("SELECT billing_started_at FROM allocations WHERE id = '%s'", id);
        long long created = sql_for("SELECT created_at FROM allocations WHERE id = '%s'", id);
        ensure(started > created, "billing starts when active, not at launch");

        /* Charged while it runs; the burn rate and runway say so. */
        wait_sql("SELECT COALESCE(SUM(charged_micros), 0) FROM allocation_usage WHERE "
                 "allocation_id = '%s'",
                 id, 20000, "no usage charged while active");
        json_t *b = balance();
        ensure(json_integer_value(json_object_get(b, "burn_rate_micros_per_hour")) == PRICE,
               "burn rate");
        double runway = json_number_value(json_object_get(b, "runway_hours"));
        ensure(runway > 2.0 && runway < 2.8, "runway %f", runway);
        /* The hold shrinks as usage accrues: available + held = balance. */
        ensure(json_integer_value(json_object_get(b, "available_micros")) +
                       json_integer_value(json_object_get(b, "held_micros")) ==
                   json_integer_value(json_object_get(b, "balance_micros")),
               "available + held = balance");
        ensure(json_integer_value(json_object_get(b, "held_micros")) <
                   PRICE - (CREDIT - json_integer_value(json_object_get(b, "balance_micros"))) + 1,
               "usage counts against the hold");
        json_decref(b);

        /* Release: billing ends when it is asked for. */
        _cleanup_free_ char *rp = xasprintf("/api/v1/allocations/%s/release", id);
        _cleanup_resp_ HttpResponse *rel = api_post(T->c, rp, U.access, NULL);
        ensure(rel->status == 202, "release: %s", rel->body);
        _cleanup_resp_ HttpResponse *done = alloc_wait(id, "released");
        wait_sql("SELECT closed FROM allocation_meters WHERE allocation_id = '%s'", id, 1,
                 "the meter never closed");
        long long due = due_between(id);
        ensure(balance_field("balance_micros") == CREDIT - due,
               "charged exactly the active seconds: %lld, want %lld",
               CREDIT - balance_field("balance_micros"), due);
        ensure(balance_field("held_micros") == 0, "the hold is closed");
        ensure(sql_for("SELECT state = 'posted' FROM ledger_holds WHERE allocation_id = '%s'",
                       id) == 1,
               "the hold was posted into usage");
        pause_ms(2500);
        ensure(balance_field("balance_micros") == CREDIT - due, "nothing after the release");
        json_t *bb = balance();
        ensure(json_is_null(json_object_get(bb, "runway_hours")), "nothing runs: no runway");
        json_decref(bb);

        _cleanup_resp_ HttpResponse *u =
            api_get(T->c, "/api/v1/billing/usage?bucket=day", U.access);
        ensure(u->status == 200 && json_integer_value(jget(u, "total_micros")) == due,
               "the usage timeline adds up to the charge: %s", u->body);
        ensure(streq_ptr(jstr(u, "items.0.allocation_id"), id), "%s", u->body);
        _cleanup_resp_ HttpResponse *me = api_get(T->c, "/api/v1/me", U.access);
        ensure(json_is_false(jget(me, "first_run")), "%s", me->body);
        assert_ledger_sound();
        ctl_stop_clean(T->c);
}

Test(billing_e2e, a_failed_launch_is_never_charged_and_its_hold_is_voided)
{
        world_start();
        cloud_set_faults(T->host, "bind_vf\n");
        char id[64];
        launch("e2e-fail", id);
        _cleanup_resp_ HttpResponse *a = alloc_wait(id, "failed");
        ensure(streq_ptr(jstr(a, "failure_reason"), "vf_bind_failed"), "%s", a->body);
        pause_ms(2500);
        ensure(balance_field("balance_micros") == CREDIT, "a failed launch costs nothing");
        ensure(balance_field("available_micros") == CREDIT, "its hold is voided");
        ensure(sql_for("SELECT COUNT(*) FROM allocation_meters WHERE allocation_id = '%s'", id) ==
                   0,
               "no meter for a launch that never ran");
        ensure(sql_for("SELECT state = 'voided' FROM ledger_holds WHERE allocation_id = '%s'",
                       id) == 1,
               "voided");
        assert_ledger_sound();
        ctl_stop_clean(T->c);
}

Test(billing_e2e, a_failed_teardown_stops_billing)
{
        world_start();
        char id[64];
        launch("e2e-teardown", id);
        _cleanup_resp_ HttpResponse *a = alloc_wait(id, "active");
        cloud_set_faults(T->host, "reset\n");
        _cleanup_free_ char *rp = xasprintf("/api/v1/allocations/%s/release", id);
        _cleanup_resp_ HttpResponse *rel = api_post(T->c, rp, U.access, NULL);
        ensure(rel->status == 202, "release: %s", rel->body);
        _cleanup_resp_ HttpResponse *f = alloc_wait(id, "release_failed");
        ensure(json_is_true(jget(f, "billing_stopped")), "%s", f->body);
        wait_sql("SELECT closed FROM allocation_meters WHERE allocation_id = '%s'", id, 1,
                 "the meter never closed");
        long long due = due_between(id);
        ensure(balance_field("balance_micros") == CREDIT - due,
               "charged up to the release request: %lld, want %lld",
               CREDIT - balance_field("balance_micros"), due);
        pause_ms(2500);
        ensure(balance_field("balance_micros") == CREDIT - due,
               "nothing while release_failed (billing stopped)");
        ensure(balance_field("burn_rate_micros_per_hour") == 0, "it burns nothing");
        assert_ledger_sound();
        ctl_stop_clean(T->c);
}
