/* SPDX-License-Identifier: MIT */
/* stripe-events.c with payments.c and refunds.c underneath: verified Stripe
 * events applied to a real database, once per event id, in any order; the
 * refund rules (unspent credit, the reversal of a failed provider refund, the
 * internal credit). The ledger sums to zero after every test. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "harness.h"
#include "ledger.h"
#include "payments.h"
#include "refunds.h"
#include "stripe-events.h"
#include "users.h"

static char *dir;
static Db *db;
static char alice[ID_MAX];

static void setup(void)
{
        dir = tmpdir_new("stripe-events");
        char *path = xasprintf("%s/gpuslice.db", dir);
        cr_assert_eq(db_open(path, &db), 0);
        free(path);
        User u;
        cr_assert_eq(users_insert(db, "alice@example.com", "Alice", NULL, ROLE_USER, &u), 0);
        snprintf(alice, sizeof(alice), "%s", u.id);
        user_done(&u);
}

static void teardown(void)
{
        int64_t sum = -1, bad_accounts = -1, bad_txns = -1;
        cr_assert_eq(ledger_audit(db, &sum, &bad_accounts, &bad_txns), 0);
        cr_assert_eq(sum, 0);
        cr_assert_eq(bad_accounts, 0);
        cr_assert_eq(bad_txns, 0);
        db_close(db);
        tmpdir_remove(dir);
        free(dir);
}

TestSuite(stripe_events, .init = setup, .fini = teardown, .timeout = 30);

static int64_t balance(void)
{
        int64_t b;
        cr_assert_eq(ledger_balance_micros(db, alice, &b), 0);
        return b;
}

static long long scalar(const char *sql)
{
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db), sql, -1, &s, NULL), SQLITE_OK, "%s", sql);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s", sql);
        long long v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
}

/* Applies an event in its own transaction, as the webhook does. */
static int apply(const char *json, const char **outcome)
{
        json_error_t err;
        json_t *e = json_loads(json, 0, &err);
        cr_assert(e, "%s: %s", err.text, json);
        DbTxn t = {0};
        cr_assert_eq(db_begin(db, &t), 0);
        int r = stripe_event_apply(db, e, outcome);
        if (r >= 0)
                cr_assert_eq(db_commit(&t), 0);
        else
                db_rollback(&t);
        json_decref(e);
        return r;
}

static char *session_event(const char *evt, const char *type, const char *pay,
                           const char *payment_status, long long cents)
{
        return xasprintf("{\"id\":\"%s\",\"object\":\"event\",\"type\":\"%s\",\"created\":1,"
                         "\"data\":{\"object\":{\"id\":\"cs_test_%s\",\"object\":"
                         "\"checkout.session\",\"client_reference_id\":\"%s\",\"metadata\":{"
                         "\"payment_session_id\":\"%s\"},\"payment_status\":\"%s\","
                         "\"amount_total\":%lld,\"currency\":\"usd\",\"payment_intent\":"
                         "\"pi_%s\"}}}",
                         evt, type, pay + 4, pay, pay, payment_status, cents, pay + 4);
}

static void new_payment(long long micros, PaymentSession *p)
{
        cr_assert_eq(payments_create(db, alice, micros, p), 0);
}

static void pay(PaymentSession *p, const char *evt)
{
        _cleanup_free_ char *e = session_event(evt, "checkout.session.completed", p->id, "paid",
                                               p->amount_micros / MICROS_PER_CENT);
        const char *o;
        cr_assert_eq(apply(e, &o), 0);
        cr_assert_str_eq(o, "credited");
        payment_session_done(p);
}

Test(stripe_events, a_paid_session_is_credited_once_whatever_the_event_ids)
{
        PaymentSession p;
        new_payment(25000000, &p);
        char id[ID_MAX];
        snprintf(id, sizeof(id), "%s", p.id);
        pay(&p, "evt_1");
        cr_assert_eq(balance(), 25000000);
        const char *o;
        _cleanup_free_ char *again =
            session_event("evt_1", "checkout.session.completed", id, "paid", 2500);
        cr_assert_eq(apply(again, &o), 0);
        cr_assert_str_eq(o, "duplicate");
        _cleanup_free_ char *other =
            session_event("evt_2", "checkout.session.async_payment_succeeded", id, "paid", 2500);
        cr_assert_eq(apply(other, &o), 0);
        cr_assert_str_eq(o, "already_completed");
        cr_assert_eq(balance(), 25000000);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM stripe_events"), 2);
        cr_assert_eq(payments_get(db, id, &p), 0);
        cr_assert_str_eq(p.state, "completed");
        cr_assert(p.payment_intent && strncmp(p.payment_intent, "pi_", 3) == 0);
        payment_session_done(&p);
}

Test(stripe_events, an_unpaid_completion_waits_for_the_payment)
{
        PaymentSession p;
        new_payment(5000000, &p);
        const char *o;
        _cleanup_free_ char *e =
            session_event("evt_u", "checkout.session.completed", p.id, "unpaid", 500);
        cr_assert_eq(apply(e, &o), 0);
        cr_assert_str_eq(o, "awaiting_payment");
        cr_assert_eq(balance(), 0);
        _cleanup_free_ char *ok =
            session_event("evt_s", "checkout.session.async_payment_succeeded", p.id, "paid", 500);
        cr_assert_eq(apply(ok, &o), 0);
        cr_assert_str_eq(o, "credited");
        cr_assert_eq(balance(), 5000000);
        payment_session_done(&p);
}

Test(stripe_events, what_is_not_ours_or_not_usd_is_not_credited)
{
        const char *o;
        /* A session we never made (another integration on the account). */
        _cleanup_free_ char *e = session_event("evt_x", "checkout.session.completed",
                                               "pay_AAAAAAAAAAAAAAAAAAAAAA", "paid", 500);
        cr_assert_eq(apply(e, &o), 0);
        cr_assert_str_eq(o, "unknown_session");
        PaymentSession p;
        new_payment(5000000, &p);
        _cleanup_free_ char *eur = xasprintf(
            "{\"id\":\"evt_eur\",\"object\":\"event\",\"type\":\"checkout.session.completed\","
            "\"data\":{\"object\":{\"id\":\"cs_1\",\"object\":\"checkout.session\","
            "\"client_reference_id\":\"%s\",\"payment_status\":\"paid\",\"amount_total\":500,"
            "\"currency\":\"eur\"}}}",
            p.id);
        cr_assert_eq(apply(eur, &o), 0);
        cr_assert_str_eq(o, "currency_mismatch");
        cr_assert_eq(balance(), 0);
        payment_session_done(&p);
}

Test(stripe_events, malformed_events_are_refused_and_record_nothing)
{
        const char *o;
        const char *bad[] = {
            "{}",
            "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"x\"}",
            "{\"id\":\"evt_1\",\"object\":\"charge\",\"type\":\"x\",\"data\":{\"object\":{}}}",
            "{\"id\":\"\",\"object\":\"event\",\"type\":\"x\",\"data\":{\"object\":{}}}",
            "{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"checkout.session.completed\","
            "\"data\":{\"object\":{\"object\":\"charge\"}}}",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                cr_assert_eq(apply(bad[i], &o), -EBADMSG, "%s", bad[i]);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM stripe_events"), 0);
}

Test(stripe_events, expiry_and_failure_end_only_pending_sessions)
{
        PaymentSession p, q;
        new_payment(5000000, &p);
        new_payment(6000000, &q);
        const char *o;
        _cleanup_free_ char *ex =
            session_event("evt_e", "checkout.session.expired", p.id, "unpaid", 500);
        cr_assert_eq(apply(ex, &o), 0);
        cr_assert_str_eq(o, "expired");
        _cleanup_free_ char *fa =
            session_event("evt_f", "checkout.session.async_payment_failed", q.id, "unpaid", 600);
        cr_assert_eq(apply(fa, &o), 0);
        cr_assert_str_eq(o, "failed");
        char qid[ID_MAX];
        snprintf(qid, sizeof(qid), "%s", q.id);
        payment_session_done(&q);
        cr_assert_eq(payments_get(db, qid, &q), 0);
        cr_assert_str_eq(q.failure_reason, "async_payment_failed");
        /* A late paid completion of the expired one: the money was taken. */
        pay(&p, "evt_p");
        cr_assert_eq(balance(), 5000000);
        payment_session_done(&q);
}

Test(stripe_events, provider_refunds_are_bounded_by_unspent_credit_and_reversed_on_failure)
{
        PaymentSession p;
        new_payment(20000000, &p);
        char id[ID_MAX];
        snprintf(id, sizeof(id), "%s", p.id);
        pay(&p, "evt_1");
        cr_assert_eq(payments_get(db, id, &p), 0);
        /* 15 USD of it is held for a running allocation: 5 USD is unspent. */
        cr_assert_eq(ledger_hold_place(db, alice, "alc_x", 15000000), 0);
        int64_t refundable;
        cr_assert_eq(refunds_refundable_micros(db, &p, &refundable), 0);
        cr_assert_eq(refundable, 5000000);
        Refund rf;
        cr_assert_eq(
            refunds_create(db, alice, &p, 6000000, LEDGER_KIND_PROVIDER_REFUND, "too much", &rf),
            -ERANGE);
        cr_assert_eq(
            refunds_create(db, alice, &p, 5000000, LEDGER_KIND_PROVIDER_REFUND, "why", &rf), 0);
        cr_assert_str_eq(rf.state, "pending");
        cr_assert_eq(balance(), 15000000, "debited when requested");
        /* Stripe fails it: reversed once, however often it says so. */
        cr_assert_eq(refunds_provider_update(db, rf.id, "re_1", "failed", "lost_card"), 0);
        cr_assert_eq(refunds_provider_update(db, rf.id, "re_1", "failed", "lost_card"), 0);
        cr_assert_eq(refunds_provider_update(db, rf.id, "re_1", "succeeded", NULL), 0);
        cr_assert_eq(balance(), 20000000);
        char rid[ID_MAX];
        snprintf(rid, sizeof(rid), "%s", rf.id);
        refund_done(&rf);
        cr_assert_eq(refunds_get(db, rid, &rf), 0);
        cr_assert_str_eq(rf.state, "failed");
        refund_done(&rf);
        payment_session_done(&p);
        cr_assert_eq(payments_get(db, id, &p), 0);
        cr_assert_eq(p.refunded_micros, 0);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM audit_logs WHERE action = "
                            "'billing.refund_failed'"),
                     1);
        payment_session_done(&p);
        cr_assert_eq(ledger_hold_void(db, "alc_x"), 0);
}

Test(stripe_events, an_internal_credit_moves_no_money_but_uses_up_the_refundable_part)
{
        PaymentSession p;
        new_payment(20000000, &p);
        char id[ID_MAX];
        snprintf(id, sizeof(id), "%s", p.id);
        pay(&p, "evt_1");
        cr_assert_eq(payments_get(db, id, &p), 0);
        Refund rf;
        cr_assert_eq(
            refunds_create(db, alice, &p, 8000000, LEDGER_KIND_INTERNAL_CREDIT, "late", &rf), 0);
        cr_assert_str_eq(rf.state, "succeeded");
        refund_done(&rf);
        cr_assert_eq(balance(), 20000000);
        cr_assert_eq(scalar("SELECT balance_micros FROM ledger_accounts WHERE id = "
                            "'platform:refunds'"),
                     0);
        int64_t refundable;
        cr_assert_eq(refunds_refundable_micros(db, &p, &refundable), 0);
        cr_assert_eq(refundable, 12000000);
        payment_session_done(&p);
}

Test(stripe_events, a_refund_at_stripe_is_recorded_and_a_refund_before_its_payment_waits)
{
        PaymentSession p;
        new_payment(10000000, &p);
        char id[ID_MAX];
        snprintf(id, sizeof(id), "%s", p.id);
        _cleanup_free_ char *charge = xasprintf(
            "{\"id\":\"evt_ch\",\"object\":\"event\",\"type\":\"charge.refunded\",\"data\":{"
            "\"object\":{\"id\":\"ch_1\",\"object\":\"charge\",\"payment_intent\":\"pi_%s\","
            "\"amount_refunded\":300,\"metadata\":{\"payment_session_id\":\"%s\"},\"refunds\":{"
            "\"data\":[{\"id\":\"re_dash\",\"object\":\"refund\",\"amount\":300,\"status\":"
            "\"succeeded\",\"metadata\":{}}]}}}}",
            id + 4, id);
        const char *o;
        cr_assert_eq(apply(charge, &o), -EAGAIN, "not completed here yet");
        cr_assert_eq(scalar("SELECT COUNT(*) FROM stripe_events"), 0);
        pay(&p, "evt_pay");
        cr_assert_eq(apply(charge, &o), 0);
        cr_assert_str_eq(o, "external_refund_recorded");
        cr_assert_eq(balance(), 7000000);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM refunds WHERE provider_refund_id = 're_dash' "
                            "AND reason = 'refunded_at_stripe'"),
                     1);
        cr_assert_eq(apply(charge, &o), 0);
        cr_assert_str_eq(o, "duplicate");
        cr_assert_eq(balance(), 7000000);
}
