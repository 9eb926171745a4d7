/* SPDX-License-Identifier: MIT */
/* Billing for the signed-in user: balance and runway, adding funds through a
 * Stripe Checkout Session, Stripe's webhook, the usage timeline, payments and
 * refunds. Stripe is called on the thread pool (async.h), never on the loop;
 * what the call changes is written back on the loop, each change in one
 * transaction with its ledger entries and audit row. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api-list.h"
#include "api.h"
#include "async.h"
#include "db.h"
#include "ledger.h"
#include "log.h"
#include "metering.h"
#include "payments.h"
#include "refunds.h"
#include "server.h"
#include "stripe-client.h"
#include "stripe-events.h"
#include "stripe-signature.h"

#define USEC_PER_HOUR (3600 * USEC_PER_SEC)
#define USEC_PER_DAY  (24 * USEC_PER_HOUR)

/* ---- balance ---- */

int api_billing_balance(Request *r)
{
        Db *db = r->server->db;
        const char *uid = r->auth.user_id;
        LedgerFunds f;
        int64_t burn;
        int ret = ledger_funds(db, uid, &f);
        if (ret >= 0)
                ret = metering_burn_rate(db, uid, &burn);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the balance now");
        json_t *runway = json_null();
        if (burn > 0) {
                /* Hours, two decimals; a used-up balance has no runway left. */
                double h = (double)MAX(f.balance, 0) / (double)burn;
                runway = json_real(floor(h * 100.0) / 100.0);
        }
        return http_reply_json(r, 200,
                               json_pack("{s:I, s:I, s:I, s:s, s:I, s:o}", "balance_micros",
                                         (json_int_t)f.balance, "available_micros",
                                         (json_int_t)f.available, "held_micros", (json_int_t)f.held,
                                         "currency", "USD", "burn_rate_micros_per_hour",
                                         (json_int_t)burn, "runway_hours", runway));
}

/* ---- checkout ---- */

typedef struct StripeJob {
        StripeClient client;
        StripeForm form;
        char path[64];
        char object_id[ID_MAX]; /* ours: pay_... or ref_..., also the Idempotency-Key */
        char key[ID_MAX + 16];
        StripeResult res;
        int result;
} StripeJob;

static void stripe_job_free(void *p)
{
        StripeJob *j = p;
        if (!j)
                return;
        stripe_client_done(&j->client);
        stripe_form_done(&j->form);
        stripe_result_done(&j->res);
        free(j);
}

static void stripe_job_work(void *p)
{
        StripeJob *j = p;
        j->result = stripe_post(&j->client, j->path, &j->form, j->key, &j->res);
}

static const char *body_str(const StripeResult *res, const char *k)
{
        return json_string_value(json_object_get(res->body, k));
}

static void checkout_done(Server *s, Request *r, void *p)
{
        StripeJob *j = p;
        const char *cs_id = body_str(&j->res, "id"), *url = body_str(&j->res, "url");
        int result = j->result;
        if (result == 0 &&
            (!streq(strempty(body_str(&j->res, "object")), "checkout.session") || !cs_id || !url))
                result = -EBADMSG;

        _cleanup_(payment_session_done) PaymentSession pay = {0};
        int ret = payments_get(s->db, j->object_id, &pay);
        if (ret >= 0 && result == 0)
                ret = payments_set_checkout(s->db, pay.id, cs_id, url);
        else if (ret >= 0) {
                /* Refused: the session failed. Unreachable or garbled: Stripe may
                 * still have made it, so it stays pending (a webhook settles it). */
                if (result == -EPROTO) {
                        char reason[96];
                        snprintf(reason, sizeof(reason), "provider_error:%s", j->res.error_code);
                        _cleanup_txn_ DbTxn txn = {0};
                        ret = db_begin(s->db, &txn);
                        if (ret >= 0)
                                ret = payments_mark(s->db, &pay, "failed", reason);
                        if (ret >= 0)
                                ret = db_commit(&txn);
                }
        }
        if (ret < 0)
                log_error_errno(ret, "cannot record the checkout session | payment_session=%s",
                                j->object_id);
        if (!r)
                return;
        if (result < 0 || ret < 0)
                http_reply_error(r, ERR_UNAVAILABLE,
                                 json_pack("{s:s, s:s?}", "payment_session_id", j->object_id,
                                           "provider_error",
                                           result == -EPROTO ? j->res.error_code : NULL),
                                 "the payment provider cannot start a checkout now");
        else
                http_reply_json(r, 200,
                                json_pack("{s:s, s:s, s:I, s:s}", "checkout_url", url,
                                          "payment_session_id", j->object_id, "amount_micros",
                                          (json_int_t)pay.amount_micros, "currency", "USD"));
}

static const JsonField checkout_fields[] = {
    {"amount_micros", JSON_FIELD_INTEGER, true, 0, 0},
};

int api_billing_checkout(Request *r)
{
        Server *s = r->server;
        _cleanup_(json_decrefp) json_t *body = NULL;
        if (http_read_json(r, checkout_fields, ELEMENTSOF(checkout_fields), &body) < 0)
                return 0;
        json_int_t amount = json_integer_value(json_object_get(body, "amount_micros"));
        long long lo = config_get_int(s->config, "checkout_min_micros");
        long long hi = config_get_int(s->config, "checkout_max_micros");
        if (amount < lo || amount > hi)
                return http_reply_error(r, ERR_INVALID_REQUEST,
                                        json_pack("{s:s, s:I, s:I}", "field", "amount_micros",
                                                  "min_micros", (json_int_t)lo, "max_micros",
                                                  (json_int_t)hi),
                                        "amount_micros must be between %lld and %lld", lo, hi);
        if (amount % MICROS_PER_CENT != 0)
                return http_reply_invalid_field(r, "amount_micros",
                                                "amount_micros must be whole cents (a multiple "
                                                "of %d)",
                                                MICROS_PER_CENT);

        StripeJob *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        int ret = stripe_client_from_config(s->config, &j->client);
        if (ret == -ENOKEY) {
                stripe_job_free(j);
                return http_reply_error(r, ERR_PAYMENTS_NOT_CONFIGURED, NULL,
                                        "payments are not configured on this installation; ask "
                                        "an administrator for credit");
        }
        if (ret < 0) {
                stripe_job_free(j);
                return ret;
        }

        _cleanup_(user_done) User u = {0};
        _cleanup_(payment_session_done) PaymentSession pay = {0};
        ret = users_get(s->db, r->auth.user_id, &u);
        if (ret >= 0)
                ret = payments_create(s->db, r->auth.user_id, amount, &pay);
        if (ret < 0) {
                stripe_job_free(j);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot start a checkout now");
        }

        StripeForm *f = &j->form;
        stripe_form_add(f, "mode", "payment");
        stripe_form_add(f, "client_reference_id", pay.id);
        stripe_form_add(f, "customer_email", u.email);
        stripe_form_add(f, "line_items[0][quantity]", "1");
        stripe_form_add(f, "line_items[0][price_data][currency]", "usd");
        stripe_form_addf(f, "line_items[0][price_data][unit_amount]", "%lld",
                         (long long)(amount / MICROS_PER_CENT));
        stripe_form_add(f, "line_items[0][price_data][product_data][name]", "gpuslice credit");
        stripe_form_add(f, "metadata[payment_session_id]", pay.id);
        stripe_form_add(f, "metadata[user_id]", u.id);
        stripe_form_add(f, "payment_intent_data[metadata][payment_session_id]", pay.id);
        stripe_form_addf(f, "success_url",
                         "%s/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}",
                         s->public_url);
        stripe_form_addf(f, "cancel_url", "%s/billing?checkout=cancelled", s->public_url);
        snprintf(j->path, sizeof(j->path), "/v1/checkout/sessions");
        snprintf(j->object_id, sizeof(j->object_id), "%s", pay.id);
        snprintf(j->key, sizeof(j->key), "%s", pay.id);
        log_info("checkout started | payment_session=%s user=%s amount_micros=%lld", pay.id, u.id,
                 (long long)amount);
        ret = async_run(r, stripe_job_work, checkout_done, j, stripe_job_free);
        if (ret < 0)
                stripe_job_free(j);
        return ret;
}

/* ---- the webhook ---- */

int api_billing_webhook_stripe(Request *r)
{
        Server *s = r->server;
        const char *secret = config_get(s->config, "stripe_webhook_secret");
        if (!secret || !*secret)
                return http_reply_error(r, ERR_PAYMENTS_NOT_CONFIGURED, NULL,
                                        "payments are not configured on this installation");
        const char *body = r->req->entity.base;
        size_t len = body ? r->req->entity.len : 0;
        int ret = stripe_signature_verify(http_header(r, "stripe-signature"), body ? body : "", len,
                                          secret, (int64_t)(now_usec() / USEC_PER_SEC),
                                          config_get_int(s->config, "stripe_webhook_tolerance_s"));
        if (ret < 0) {
                const char *why = ret == -ETIMEDOUT      ? "timestamp_outside_tolerance"
                                  : ret == -EKEYREJECTED ? "no_matching_signature"
                                                         : "malformed_header";
                log_warning("webhook refused | reason=%s client=%s", why, r->client_addr);
                return http_reply_error(
                    r, ERR_INVALID_REQUEST,
                    json_pack("{s:s, s:s}", "field", "Stripe-Signature", "reason", why),
                    "the Stripe-Signature header does not verify");
        }

        _cleanup_(json_decrefp) json_t *event = json_loadb(body, len, 0, NULL);
        if (!json_is_object(event))
                return http_reply_invalid_field(r, "body", "the body is not a JSON event");

        const char *outcome = NULL;
        _cleanup_txn_ DbTxn txn = {0};
        ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = stripe_event_apply(s->db, event, &outcome);
        if (ret >= 0)
                ret = db_commit(&txn);
        const char *id = json_string_value(json_object_get(event, "id"));
        const char *type = json_string_value(json_object_get(event, "type"));
        if (ret == -EBADMSG)
                return http_reply_invalid_field(r, "body", "the body is not a Stripe event");
        if (ret == -EAGAIN) {
                log_info("webhook deferred: its payment is not completed here yet | event=%s "
                         "type=%s",
                         strempty(id), strempty(type));
                http_add_header(r, "retry-after", "60");
                return http_reply_error(r, ERR_UNAVAILABLE, NULL,
                                        "the event refers to a payment not completed yet; "
                                        "deliver it again later");
        }
        if (ret < 0) {
                log_error_errno(ret, "webhook not applied | event=%s type=%s", strempty(id),
                                strempty(type));
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot apply the event now");
        }
        log_info("webhook | event=%s type=%s outcome=%s", id, type, outcome);
        return http_reply_json(r, 200, json_pack("{s:b, s:s}", "received", 1, "outcome", outcome));
}

/* ---- usage ---- */

static int parse_time_param(Request *r, const char *name, usec_t *ret)
{
        const char *v = http_query(r, name);
        if (!v)
                return 0;
        if (parse_rfc3339(v, ret) < 0) {
                http_reply_invalid_field(r, name, "%s must be an RFC 3339 timestamp", name);
                return -EINVAL;
        }
        return 1;
}

typedef struct UsageReply {
        Db *db;
        usec_t bucket;
        json_t *items;
        json_t *cur; /* the allocation being filled (borrowed from items) */
        int64_t cur_total, total;
} UsageReply;

static int usage_close_item(UsageReply *u)
{
        if (u->cur)
                json_object_set_new(u->cur, "total_micros", json_integer(u->cur_total));
        u->cur = NULL;
        u->cur_total = 0;
        return 0;
}

static int usage_add(const char *allocation_id, usec_t start, int64_t amount, int64_t seconds,
                     void *userdata)
{
        UsageReply *u = userdata;
        if (!u->cur ||
            !streq(json_string_value(json_object_get(u->cur, "allocation_id")), allocation_id)) {
                usage_close_item(u);
                /* What the allocation was (read only; allocations.c owns it). */
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(u->db, "SELECT sku_id, gpu_count, hourly_cost_micros FROM allocations "
                                   "WHERE id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, allocation_id, -1, SQLITE_TRANSIENT);
                bool found = sqlite3_step(s) == SQLITE_ROW;
                u->cur = json_pack("{s:s, s:s?, s:o, s:o, s:[]}", "allocation_id", allocation_id,
                                   "sku_id", found ? db_column_text(s, 0) : NULL, "gpu_count",
                                   found ? json_integer(sqlite3_column_int64(s, 1)) : json_null(),
                                   "hourly_cost_micros",
                                   found ? json_integer(sqlite3_column_int64(s, 2)) : json_null(),
                                   "buckets");
                if (!u->cur || json_array_append_new(u->items, u->cur) < 0)
                        return -ENOMEM;
        }
        json_array_append_new(json_object_get(u->cur, "buckets"),
                              json_pack("{s:o, s:o, s:I, s:I}", "start", json_timestamp(start),
                                        "end", json_timestamp(start + u->bucket), "amount_micros",
                                        (json_int_t)amount, "seconds", (json_int_t)seconds));
        u->cur_total += amount;
        u->total += amount;
        return 0;
}

int api_billing_usage(Request *r)
{
        Db *db = r->server->db;
        const char *b = http_query(r, "bucket");
        usec_t bucket = USEC_PER_HOUR;
        if (b && streq(b, "day"))
                bucket = USEC_PER_DAY;
        else if (b && !streq(b, "hour"))
                return http_reply_invalid_field(r, "bucket", "bucket is hour or day");
        usec_t to = now_usec(), from = 0;
        int has_from, has_to;
        if ((has_from = parse_time_param(r, "from", &from)) < 0 ||
            (has_to = parse_time_param(r, "to", &to)) < 0)
                return 0;
        usec_t max_span = bucket == USEC_PER_HOUR ? 31 * USEC_PER_DAY : 366 * USEC_PER_DAY;
        if (!has_from)
                from = to > (bucket == USEC_PER_HOUR ? USEC_PER_DAY : 30 * USEC_PER_DAY)
                           ? to - (bucket == USEC_PER_HOUR ? USEC_PER_DAY : 30 * USEC_PER_DAY)
                           : 0;
        if (from >= to)
                return http_reply_invalid_field(r, "from", "from must be before to");
        if (to - from > max_span)
                return http_reply_invalid_field(
                    r, "from", "at most %d days per request with bucket=%s",
                    (int)(max_span / USEC_PER_DAY), bucket == USEC_PER_HOUR ? "hour" : "day");

        /* Buckets are UTC hours or days; the range widens to whole buckets. */
        from = from / bucket * bucket;
        to = (to + bucket - 1) / bucket * bucket;
        UsageReply u = {.db = db, .bucket = bucket, .items = json_array()};
        if (!u.items)
                return -ENOMEM;
        int ret = metering_usage(db, r->auth.user_id, from, to, bucket, usage_add, &u);
        if (ret >= 0)
                ret = usage_close_item(&u);
        if (ret < 0) {
                json_decref(u.items);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read usage now");
        }
        return http_reply_json(
            r, 200,
            json_pack("{s:o, s:o, s:s, s:s, s:I, s:o}", "from", json_timestamp(from), "to",
                      json_timestamp(to), "bucket", bucket == USEC_PER_HOUR ? "hour" : "day",
                      "currency", "USD", "total_micros", (json_int_t)u.total, "items", u.items));
}

/* ---- payments ---- */

int api_billing_payments(Request *r)
{
        int limit;
        long long after;
        if (api_list_params(r, API_LIST_MAX_LIMIT, &limit, &after) < 0)
                return 0;
        PaymentFilter f = {.user_id = r->auth.user_id, .state = http_query(r, "state")};
        json_t *items;
        long long last;
        if (payments_list(r->server->db, &f, after, limit, &items, &last) < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read payments now");
        return api_list_reply(r, items, last, limit);
}

/* ---- refunds ---- */

int api_billing_refunds_list(Request *r)
{
        int limit;
        long long after;
        if (api_list_params(r, API_LIST_MAX_LIMIT, &limit, &after) < 0)
                return 0;
        json_t *items;
        long long last;
        if (refunds_list(r->server->db, r->auth.user_id, after, limit, &items, &last) < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read refunds now");
        return api_list_reply(r, items, last, limit);
}

static int reply_refund(Request *r, int status, const char *refund_id)
{
        _cleanup_(refund_done) Refund rf = {0};
        if (refunds_get(r->server->db, refund_id, &rf) < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the refund now");
        return http_reply_json(r, status, refund_to_json(&rf));
}

static void refund_done_cb(Server *s, Request *r, void *p)
{
        StripeJob *j = p;
        const char *re_id = body_str(&j->res, "id"), *status = body_str(&j->res, "status");
        int result = j->result;
        if (result == 0 && (!streq(strempty(body_str(&j->res, "object")), "refund") || !status))
                result = -EBADMSG;
        int ret = 0;
        if (result == 0 || result == -EPROTO) {
                char reason[96];
                snprintf(reason, sizeof(reason), "provider_error:%s", j->res.error_code);
                _cleanup_txn_ DbTxn txn = {0};
                ret = db_begin(s->db, &txn);
                if (ret >= 0)
                        ret = result == 0
                                  ? refunds_provider_update(s->db, j->object_id, re_id, status,
                                                            body_str(&j->res, "failure_reason"))
                                  : refunds_provider_update(s->db, j->object_id, NULL, "failed",
                                                            reason);
                if (ret >= 0)
                        ret = db_commit(&txn);
        } else
                /* Not reached, or no answer we understand: Stripe may have made
                 * the refund. It stays pending, debited; Stripe's refund webhook
                 * (metadata.refund_id) settles it. */
                log_warning("refund outcome unknown, left pending | refund=%s", j->object_id);
        if (ret < 0)
                log_error_errno(ret, "cannot record the refund's outcome | refund=%s",
                                j->object_id);
        if (r)
                reply_refund(r, 201, j->object_id);
}

static const JsonField refund_fields[] = {
    {"payment_id", JSON_FIELD_STRING, true, 1, ID_MAX},
    {"amount_micros", JSON_FIELD_INTEGER, true, 0, 0},
    {"reason", JSON_FIELD_STRING, true, 1, REFUND_REASON_MAX},
};

int api_billing_refunds_create(Request *r)
{
        Server *s = r->server;
        _cleanup_(json_decrefp) json_t *body = NULL;
        if (http_read_json(r, refund_fields, ELEMENTSOF(refund_fields), &body) < 0)
                return 0;
        const char *payment_id = json_field_string(body, "payment_id");
        const char *reason = json_field_string(body, "reason");
        json_int_t amount = json_integer_value(json_object_get(body, "amount_micros"));
        if (amount <= 0 || amount % MICROS_PER_CENT != 0)
                return http_reply_invalid_field(r, "amount_micros",
                                                "amount_micros must be positive whole cents (a "
                                                "multiple of %d)",
                                                MICROS_PER_CENT);

        _cleanup_(payment_session_done) PaymentSession pay = {0};
        int ret = id_valid("pay", payment_id) ? payments_get(s->db, payment_id, &pay) : -ENOENT;
        if (ret == -ENOENT || (ret >= 0 && !streq(pay.user_id, r->auth.user_id)))
                return http_reply_error(r, ERR_NOT_FOUND, NULL, "no such payment");
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the payment now");
        if (!streq(pay.state, "completed"))
                return http_reply_error(r, ERR_INVALID_STATE,
                                        json_pack("{s:s}", "state", pay.state),
                                        "only a completed payment can be refunded");

        usec_t window = (usec_t)config_get_int(s->config, "refund_window_days") * USEC_PER_DAY;
        bool provider = now_usec() < pay.completed_at + window;
        const char *kind = provider ? LEDGER_KIND_PROVIDER_REFUND : LEDGER_KIND_INTERNAL_CREDIT;

        StripeJob *j = NULL;
        if (provider) {
                if (!pay.payment_intent)
                        return http_reply_error(r, ERR_INVALID_STATE,
                                                json_pack("{s:s}", "state", pay.state),
                                                "the payment has no Stripe payment to refund");
                j = calloc(1, sizeof(*j));
                if (!j)
                        return -ENOMEM;
                ret = stripe_client_from_config(s->config, &j->client);
                if (ret < 0) {
                        stripe_job_free(j);
                        if (ret == -ENOKEY)
                                return http_reply_error(r, ERR_PAYMENTS_NOT_CONFIGURED, NULL,
                                                        "payments are not configured on this "
                                                        "installation");
                        return ret;
                }
        }

        _cleanup_(refund_done) Refund rf = {0};
        {
                _cleanup_txn_ DbTxn txn = {0};
                ret = db_begin(s->db, &txn);
                if (ret >= 0)
                        ret =
                            refunds_create(s->db, r->auth.user_id, &pay, amount, kind, reason, &rf);
                if (ret >= 0)
                        ret = db_commit(&txn);
        }
        if (ret == -ERANGE) {
                stripe_job_free(j);
                int64_t refundable = 0;
                (void)refunds_refundable_micros(s->db, &pay, &refundable);
                return http_reply_error(
                    r, ERR_INSUFFICIENT_BALANCE,
                    json_pack("{s:I}", "refundable_micros", (json_int_t)refundable),
                    "at most %lld micro-USD of this payment is unspent and refundable",
                    (long long)refundable);
        }
        if (ret < 0) {
                stripe_job_free(j);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot record the refund now");
        }
        if (!provider)
                return reply_refund(r, 201, rf.id);

        StripeForm *f = &j->form;
        stripe_form_add(f, "payment_intent", pay.payment_intent);
        stripe_form_addf(f, "amount", "%lld", (long long)(amount / MICROS_PER_CENT));
        stripe_form_add(f, "reason", "requested_by_customer");
        stripe_form_add(f, "metadata[refund_id]", rf.id);
        stripe_form_add(f, "metadata[payment_session_id]", pay.id);
        snprintf(j->path, sizeof(j->path), "/v1/refunds");
        snprintf(j->object_id, sizeof(j->object_id), "%s", rf.id);
        snprintf(j->key, sizeof(j->key), "%s", rf.id);
        ret = async_run(r, stripe_job_work, refund_done_cb, j, stripe_job_free);
        if (ret < 0) {
                stripe_job_free(j);
                log_warning("refund left pending: cannot queue the Stripe call | refund=%s", rf.id);
                return reply_refund(r, 201, rf.id);
        }
        return 0;
}
