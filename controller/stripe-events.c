/* SPDX-License-Identifier: MIT */
#include "stripe-events.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "payments.h"
#include "refunds.h"
#include "timeutil.h"

static const char *str(json_t *o, const char *k)
{
        return json_string_value(json_object_get(o, k));
}

static int seen(Db *db, const char *event_id)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT 1 FROM stripe_events WHERE id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, event_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW)
                return 1;
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int record(Db *db, const char *event_id, const char *type, json_t *created,
                  const char *payment_session_id, const char *outcome)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO stripe_events (id, type, created, payment_session_id, "
                        "outcome, received_at) VALUES (?, ?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, event_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, type, -1, SQLITE_TRANSIENT);
        if (json_is_integer(created))
                sqlite3_bind_int64(s, 3, json_integer_value(created));
        else
                sqlite3_bind_null(s, 3);
        db_bind_text(s, 4, payment_session_id);
        sqlite3_bind_text(s, 5, outcome, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 6, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

/* Our session for a checkout.session object: by our id first (set before
 * Stripe was called, so it works when the webhook beats the checkout call's
 * answer), then by Stripe's. */
static int find_session(Db *db, json_t *cs, PaymentSession *ret)
{
        const char *ours = str(json_object_get(cs, "metadata"), "payment_session_id");
        if (!ours)
                ours = str(cs, "client_reference_id");
        if (ours && id_valid("pay", ours)) {
                int r = payments_get(db, ours, ret);
                if (r != -ENOENT)
                        return r;
        }
        return payments_get_by_provider_session(db, str(cs, "id"), ret);
}

static int on_checkout_paid(Db *db, const char *event_id, json_t *cs, PaymentSession *p,
                            const char **outcome)
{
        const char *ps = str(cs, "payment_status");
        if (!ps || !(streq(ps, "paid") || streq(ps, "no_payment_required"))) {
                /* Delayed payment methods: wait for async_payment_succeeded. */
                int r = payments_set_checkout(db, p->id, str(cs, "id"), p->checkout_url);
                *outcome = "awaiting_payment";
                return r;
        }
        const char *currency = str(cs, "currency");
        if (currency && strcasecmp(currency, "usd") != 0) {
                log_error("checkout paid in another currency, not credited | "
                          "payment_session=%s currency=%s",
                          p->id, currency);
                *outcome = "currency_mismatch";
                return 0;
        }
        json_t *total = json_object_get(cs, "amount_total");
        int64_t paid = p->amount_micros;
        if (json_is_integer(total)) {
                json_int_t cents = json_integer_value(total);
                if (cents <= 0 || cents > INT64_MAX / MICROS_PER_CENT) {
                        *outcome = "bad_amount";
                        return 0;
                }
                paid = (int64_t)cents * MICROS_PER_CENT;
        }
        int r = payments_complete(db, p, paid, str(cs, "id"), str(cs, "payment_intent"), event_id);
        if (r < 0)
                return r;
        *outcome = r > 0 ? "credited" : "already_completed";
        return 0;
}

static int on_checkout(Db *db, const char *event_id, const char *type, json_t *cs,
                       char *ret_payment_id, const char **outcome)
{
        if (!streq(strempty(str(cs, "object")), "checkout.session"))
                return -EBADMSG;
        _cleanup_(payment_session_done) PaymentSession p = {0};
        int r = find_session(db, cs, &p);
        if (r == -ENOENT) {
                *outcome = "unknown_session";
                return 0;
        }
        if (r < 0)
                return r;
        snprintf(ret_payment_id, ID_MAX, "%s", p.id);

        if (streq(type, "checkout.session.completed") ||
            streq(type, "checkout.session.async_payment_succeeded"))
                return on_checkout_paid(db, event_id, cs, &p, outcome);

        bool expired = streq(type, "checkout.session.expired");
        *outcome = !streq(p.state, "pending") ? "ignored_state" : expired ? "expired" : "failed";
        if (expired)
                return payments_mark(db, &p, "expired", "checkout_expired");
        return payments_mark(db, &p, "failed", "async_payment_failed");
}

static int on_refund_object(Db *db, json_t *re, const char **outcome)
{
        const char *ours = str(json_object_get(re, "metadata"), "refund_id");
        _cleanup_(refund_done) Refund rf = {0};
        int r = -ENOENT;
        if (ours && id_valid("ref", ours))
                r = refunds_get(db, ours, &rf);
        if (r == -ENOENT)
                r = refunds_get_by_provider_id(db, str(re, "id"), &rf);
        if (r == -ENOENT) {
                *outcome = "unknown_refund";
                return 0;
        }
        if (r < 0)
                return r;
        const char *status = str(re, "status");
        if (!status) {
                *outcome = "ignored";
                return 0;
        }
        *outcome = "refund_updated";
        return refunds_provider_update(db, rf.id, str(re, "id"), status, str(re, "failure_reason"));
}

static int on_charge_refunded(Db *db, json_t *ch, char *ret_payment_id, const char **outcome)
{
        if (!streq(strempty(str(ch, "object")), "charge"))
                return -EBADMSG;
        _cleanup_(payment_session_done) PaymentSession p = {0};
        int r = payments_get_by_payment_intent(db, str(ch, "payment_intent"), &p);
        if (r == -ENOENT) {
                const char *ours = str(json_object_get(ch, "metadata"), "payment_session_id");
                if (ours && id_valid("pay", ours) && payments_get(db, ours, &p) == 0)
                        return -EAGAIN; /* ours, but its completion has not arrived */
                *outcome = "unknown_payment";
                return 0;
        }
        if (r < 0)
                return r;
        snprintf(ret_payment_id, ID_MAX, "%s", p.id);
        if (!streq(p.state, "completed"))
                return -EAGAIN;

        /* Our own refunds in the list: their states. */
        json_t *list = json_object_get(json_object_get(ch, "refunds"), "data");
        size_t i;
        json_t *re;
        const char *latest_unknown = NULL;
        json_array_foreach(list, i, re)
        {
                const char *o = NULL;
                r = on_refund_object(db, re, &o);
                if (r < 0)
                        return r;
                if (streq(o, "unknown_refund") && !latest_unknown)
                        latest_unknown = str(re, "id");
        }

        /* Whatever Stripe refunded beyond what we know of was refunded there. */
        json_t *ar = json_object_get(ch, "amount_refunded");
        if (!json_is_integer(ar) || json_integer_value(ar) < 0 ||
            json_integer_value(ar) > INT64_MAX / MICROS_PER_CENT)
                return -EBADMSG;
        int64_t total = (int64_t)json_integer_value(ar) * MICROS_PER_CENT;
        _cleanup_(payment_session_done) PaymentSession now = {0};
        r = payments_get(db, p.id, &now);
        if (r < 0)
                return r;
        int64_t extra = total - now.refunded_micros;
        if (extra <= 0) {
                *outcome = "refunds_known";
                return 0;
        }
        r = refunds_record_external(db, &now, extra, latest_unknown);
        *outcome = "external_refund_recorded";
        return r;
}

int stripe_event_apply(Db *db, json_t *event, const char **ret_outcome)
{
        const char *id = str(event, "id"), *type = str(event, "type");
        json_t *object = json_object_get(json_object_get(event, "data"), "object");
        if (!json_is_object(event) || !id || !*id || strlen(id) > 255 || !type ||
            !streq(strempty(str(event, "object")), "event") || !json_is_object(object))
                return -EBADMSG;

        int r = seen(db, id);
        if (r < 0)
                return r;
        if (r > 0) {
                *ret_outcome = "duplicate";
                return 0;
        }

        const char *outcome = "ignored";
        char payment_id[ID_MAX] = "";
        if (strncmp(type, "checkout.session.", 17) == 0 &&
            (streq(type, "checkout.session.completed") ||
             streq(type, "checkout.session.async_payment_succeeded") ||
             streq(type, "checkout.session.expired") ||
             streq(type, "checkout.session.async_payment_failed")))
                r = on_checkout(db, id, type, object, payment_id, &outcome);
        else if (streq(type, "charge.refunded"))
                r = on_charge_refunded(db, object, payment_id, &outcome);
        else if (streq(type, "refund.created") || streq(type, "refund.updated") ||
                 streq(type, "refund.failed") || streq(type, "charge.refund.updated")) {
                if (!streq(strempty(str(object, "object")), "refund"))
                        return -EBADMSG;
                r = on_refund_object(db, object, &outcome);
        }
        if (r < 0)
                return r;
        r = record(db, id, type, json_object_get(event, "created"),
                   payment_id[0] ? payment_id : NULL, outcome);
        if (r < 0)
                return r;
        *ret_outcome = outcome;
        return 0;
}
