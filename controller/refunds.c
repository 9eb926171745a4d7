/* SPDX-License-Identifier: MIT */
#include "refunds.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "db.h"
#include "events.h"
#include "json-util.h"
#include "ledger.h"
#include "log.h"
#include "payments.h"

#define REFUND_COLUMNS                                                                             \
        "seq, id, user_id, payment_id, amount_micros, kind, state, reason, provider_refund_id, "   \
        "failure_reason, created_at, updated_at"

void refund_done(Refund *r)
{
        free(r->reason);
        free(r->provider_refund_id);
        free(r->failure_reason);
        *r = (Refund){0};
}

static char *dup_col(sqlite3_stmt *s, int col)
{
        const char *t = db_column_text(s, col);
        return t ? strdup(t) : NULL;
}

static void read_row(sqlite3_stmt *s, Refund *r)
{
        *r = (Refund){0};
        r->seq = sqlite3_column_int64(s, 0);
        snprintf(r->id, sizeof(r->id), "%s", db_column_text(s, 1));
        snprintf(r->user_id, sizeof(r->user_id), "%s", db_column_text(s, 2));
        snprintf(r->payment_id, sizeof(r->payment_id), "%s", db_column_text(s, 3));
        r->amount_micros = sqlite3_column_int64(s, 4);
        snprintf(r->kind, sizeof(r->kind), "%s", db_column_text(s, 5));
        snprintf(r->state, sizeof(r->state), "%s", db_column_text(s, 6));
        r->reason = dup_col(s, 7);
        r->provider_refund_id = dup_col(s, 8);
        r->failure_reason = dup_col(s, 9);
        r->created_at = (usec_t)sqlite3_column_int64(s, 10);
        r->updated_at = (usec_t)sqlite3_column_int64(s, 11);
}

json_t *refund_to_json(const Refund *r)
{
        return json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s?, s:s?, s:s?, s:o, s:o}", "id",
                         r->id, "refund_id", r->id, "payment_id", r->payment_id, "amount_micros",
                         (json_int_t)r->amount_micros, "currency", "USD", "kind", r->kind, "state",
                         r->state, "reason", r->reason, "provider_refund_id", r->provider_refund_id,
                         "failure_reason", r->failure_reason, "created_at",
                         json_timestamp(r->created_at), "updated_at",
                         json_timestamp(r->updated_at));
}

static int get_by(Db *db, const char *sql, const char *key, Refund *ret)
{
        if (!key)
                return -ENOENT;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(db, sql);
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        read_row(s, ret);
        return 0;
}

int refunds_get(Db *db, const char *id, Refund *ret)
{
        return get_by(db, "SELECT " REFUND_COLUMNS " FROM refunds WHERE id = ?", id, ret);
}

int refunds_get_by_provider_id(Db *db, const char *provider_refund_id, Refund *ret)
{
        return get_by(db, "SELECT " REFUND_COLUMNS " FROM refunds WHERE provider_refund_id = ?",
                      provider_refund_id, ret);
}

int refunds_refundable_micros(Db *db, const PaymentSession *p, int64_t *ret)
{
        *ret = 0;
        if (!streq(p->state, "completed"))
                return 0;
        int64_t available;
        int r = ledger_available_micros(db, p->user_id, &available);
        if (r < 0)
                return r;
        *ret = MAX(MIN(p->amount_micros - p->refunded_micros, available), 0);
        return 0;
}

static int insert_refund(Db *db, const char *id, const PaymentSession *p, int64_t amount,
                         const char *kind, const char *state, const char *reason,
                         const char *provider_refund_id)
{
        usec_t now = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db,
            "INSERT INTO refunds (id, user_id, payment_id, amount_micros, kind, state, reason, "
            "provider_refund_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, p->user_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, p->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, amount);
        sqlite3_bind_text(s, 5, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 6, state, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 7, reason, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 8, provider_refund_id);
        sqlite3_bind_int64(s, 9, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 10, (sqlite3_int64)now);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int refunds_create(Db *db, const char *actor_id, PaymentSession *p, int64_t amount_micros,
                   const char *kind, const char *reason, Refund *ret)
{
        bool provider = streq(kind, LEDGER_KIND_PROVIDER_REFUND);
        if (!provider && !streq(kind, LEDGER_KIND_INTERNAL_CREDIT))
                return -EINVAL;
        if (amount_micros <= 0)
                return -EINVAL;
        int64_t refundable;
        int r = refunds_refundable_micros(db, p, &refundable);
        if (r < 0)
                return r;
        if (amount_micros > refundable)
                return -ERANGE;

        char id[ID_MAX];
        r = id_new("ref", id);
        if (r < 0)
                return r;
        r = insert_refund(db, id, p, amount_micros, kind, provider ? "pending" : "succeeded",
                          reason, NULL);
        if (r < 0)
                return r;

        char key[16 + ID_MAX], acct[LEDGER_ACCOUNT_ID_MAX];
        snprintf(key, sizeof(key), "refund:%s", id);
        ledger_user_account(p->user_id, acct);
        LedgerPosting post = {
            .kind = kind,
            .idempotency_key = key,
            .user_id = p->user_id,
            .ref_type = "refund",
            .ref_id = id,
            .actor_id = actor_id,
            .memo = p->id,
        };
        if (provider)
                r = ledger_debit_user(db, &post, LEDGER_STRIPE_CLEARING, amount_micros, NULL);
        else {
                /* Refundable card money becomes account credit: out of the
                 * user's account and back in through platform:refunds, so the
                 * statement shows both and no money is made. */
                LedgerLeg legs[] = {
                    {acct, -amount_micros},
                    {LEDGER_REFUNDS, amount_micros},
                    {LEDGER_REFUNDS, -amount_micros},
                    {acct, amount_micros},
                };
                r = ledger_post(db, &post, legs, ELEMENTSOF(legs), NULL);
        }
        if (r < 0)
                return r;
        r = payments_add_refunded(db, p->id, amount_micros);
        if (r < 0)
                return r;
        p->refunded_micros += amount_micros;
        r = audit_log(db, actor_id,
                      provider ? "billing.refund_requested" : "billing.refund_credited", "refund",
                      id, reason,
                      json_pack("{s:s, s:s, s:I, s:s}", "payment_id", p->id, "user_id", p->user_id,
                                "amount_micros", (json_int_t)amount_micros, "kind", kind));
        if (r < 0)
                return r;
        r = event_emit(db, "billing.refund_created", p->user_id,
                       json_pack("{s:s, s:s, s:I, s:s}", "refund_id", id, "payment_id", p->id,
                                 "amount_micros", (json_int_t)amount_micros, "kind", kind),
                       NULL);
        if (r < 0)
                return r;
        return refunds_get(db, id, ret);
}

static int set_state(Db *db, const char *id, const char *state, const char *provider_refund_id,
                     const char *failure_reason)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db,
            "UPDATE refunds SET state = ?2, provider_refund_id = COALESCE(provider_refund_id, "
            "?3), failure_reason = COALESCE(?4, failure_reason), updated_at = ?5 WHERE id = ?1");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, state, -1, SQLITE_STATIC);
        db_bind_text(s, 3, provider_refund_id);
        db_bind_text(s, 4, failure_reason);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int refunds_provider_update(Db *db, const char *refund_id, const char *provider_refund_id,
                            const char *status, const char *failure_reason)
{
        _cleanup_(refund_done) Refund rf = {0};
        int r = refunds_get(db, refund_id, &rf);
        if (r < 0)
                return r;
        if (!streq(rf.kind, LEDGER_KIND_PROVIDER_REFUND) || streq(rf.state, "failed"))
                return 0; /* a failed refund stays failed: its reversal is posted */

        bool failed = streq(status, "failed") || streq(status, "canceled");
        const char *state = failed                       ? "failed"
                            : streq(status, "succeeded") ? "succeeded"
                                                         : "pending";
        if (streq(rf.state, "succeeded") && !failed)
                return 0; /* never back to pending */
        if (streq(rf.state, state) && (!provider_refund_id || rf.provider_refund_id))
                return 0;

        r = set_state(db, rf.id, state, provider_refund_id, failed ? failure_reason : NULL);
        if (r < 0)
                return r;
        if (!failed) {
                if (streq(state, "succeeded"))
                        return audit_log(db, NULL, "billing.refund_succeeded", "refund", rf.id,
                                         NULL,
                                         json_pack("{s:s, s:s?}", "payment_id", rf.payment_id,
                                                   "provider_refund_id", provider_refund_id));
                return 0;
        }

        /* Give the money back to the account, once. */
        char key[32 + ID_MAX];
        snprintf(key, sizeof(key), "refund_reversal:%s", rf.id);
        LedgerPosting post = {
            .kind = LEDGER_KIND_REFUND_REVERSAL,
            .idempotency_key = key,
            .user_id = rf.user_id,
            .ref_type = "refund",
            .ref_id = rf.id,
            .memo = failure_reason,
        };
        r = ledger_credit_user(db, &post, LEDGER_STRIPE_CLEARING, rf.amount_micros, NULL);
        if (r == -EALREADY)
                return 0;
        if (r < 0)
                return r;
        r = payments_add_refunded(db, rf.payment_id, -rf.amount_micros);
        if (r < 0)
                return r;
        log_warning("provider refund failed, reversed | refund=%s reason=%s", rf.id,
                    strempty(failure_reason));
        return audit_log(db, NULL, "billing.refund_failed", "refund", rf.id, failure_reason,
                         json_pack("{s:s, s:I, s:s?}", "payment_id", rf.payment_id, "amount_micros",
                                   (json_int_t)rf.amount_micros, "provider_refund_id",
                                   provider_refund_id));
}

int refunds_record_external(Db *db, PaymentSession *p, int64_t amount_micros,
                            const char *provider_refund_id)
{
        if (amount_micros <= 0)
                return -EINVAL;
        char id[ID_MAX];
        int r = id_new("ref", id);
        if (r < 0)
                return r;
        /* Stripe's refund id is unique here; a second report of the same one
         * (another charge.refunded) adds nothing. */
        _cleanup_(refund_done) Refund known = {0};
        if (provider_refund_id && refunds_get_by_provider_id(db, provider_refund_id, &known) == 0)
                provider_refund_id = NULL;
        r = insert_refund(db, id, p, amount_micros, LEDGER_KIND_PROVIDER_REFUND, "succeeded",
                          "refunded_at_stripe", provider_refund_id);
        if (r < 0)
                return r;
        char key[16 + ID_MAX];
        snprintf(key, sizeof(key), "refund:%s", id);
        LedgerPosting post = {
            .kind = LEDGER_KIND_EXTERNAL_REFUND,
            .idempotency_key = key,
            .user_id = p->user_id,
            .ref_type = "refund",
            .ref_id = id,
            .memo = p->id,
        };
        r = ledger_debit_user(db, &post, LEDGER_STRIPE_CLEARING, amount_micros, NULL);
        if (r < 0)
                return r;
        r = payments_add_refunded(db, p->id, amount_micros);
        if (r < 0)
                return r;
        p->refunded_micros += amount_micros;
        log_warning("refund made at Stripe recorded | payment_session=%s amount_micros=%lld", p->id,
                    (long long)amount_micros);
        return audit_log(db, NULL, "billing.refund_external", "refund", id, "refunded_at_stripe",
                         json_pack("{s:s, s:s, s:I}", "payment_id", p->id, "user_id", p->user_id,
                                   "amount_micros", (json_int_t)amount_micros));
}

int refunds_list(Db *db, const char *user_id, long long after_seq, int limit, json_t **ret,
                 long long *ret_last_seq)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " REFUND_COLUMNS " FROM refunds WHERE seq > ?1 AND "
                        "(?2 IS NULL OR user_id = ?2) ORDER BY seq LIMIT ?3");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, after_seq);
        db_bind_text(s, 2, user_id);
        sqlite3_bind_int(s, 3, limit);
        json_t *items = json_array();
        if (!items)
                return -ENOMEM;
        long long last = 0;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                Refund rf;
                read_row(s, &rf);
                last = rf.seq;
                json_array_append_new(items, refund_to_json(&rf));
                refund_done(&rf);
        }
        if (rc != SQLITE_DONE) {
                json_decref(items);
                return db_errno(rc);
        }
        *ret = items;
        *ret_last_seq = last;
        return 0;
}
