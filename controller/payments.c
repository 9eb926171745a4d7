/* SPDX-License-Identifier: MIT */
#include "payments.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "events.h"
#include "json-util.h"
#include "ledger.h"
#include "log.h"

#define PAYMENT_COLUMNS                                                                            \
        "seq, id, user_id, amount_micros, currency, state, provider_session_id, payment_intent, "  \
        "checkout_url, failure_reason, refunded_micros, created_at, updated_at, completed_at"

void payment_session_done(PaymentSession *p)
{
        free(p->provider_session_id);
        free(p->payment_intent);
        free(p->checkout_url);
        free(p->failure_reason);
        *p = (PaymentSession){0};
}

static char *dup_col(sqlite3_stmt *s, int col)
{
        const char *t = db_column_text(s, col);
        return t ? strdup(t) : NULL;
}

static void read_row(sqlite3_stmt *s, PaymentSession *p)
{
        *p = (PaymentSession){0};
        p->seq = sqlite3_column_int64(s, 0);
        snprintf(p->id, sizeof(p->id), "%s", db_column_text(s, 1));
        snprintf(p->user_id, sizeof(p->user_id), "%s", db_column_text(s, 2));
        p->amount_micros = sqlite3_column_int64(s, 3);
        snprintf(p->currency, sizeof(p->currency), "%s", db_column_text(s, 4));
        snprintf(p->state, sizeof(p->state), "%s", db_column_text(s, 5));
        p->provider_session_id = dup_col(s, 6);
        p->payment_intent = dup_col(s, 7);
        p->checkout_url = dup_col(s, 8);
        p->failure_reason = dup_col(s, 9);
        p->refunded_micros = sqlite3_column_int64(s, 10);
        p->created_at = (usec_t)sqlite3_column_int64(s, 11);
        p->updated_at = (usec_t)sqlite3_column_int64(s, 12);
        p->completed_at = (usec_t)sqlite3_column_int64(s, 13);
}

json_t *payment_session_to_json(const PaymentSession *p)
{
        bool pending = streq(p->state, "pending");
        return json_pack(
            "{s:s, s:s, s:I, s:s, s:s, s:s, s:s?, s:s?, s:o, s:s?, s:I, s:I, s:o, "
            "s:o, s:o}",
            "id", p->id, "user_id", p->user_id, "amount_micros", (json_int_t)p->amount_micros,
            "currency", "USD", "state", p->state, "provider", "stripe", "provider_session_id",
            p->provider_session_id, "payment_intent", p->payment_intent, "checkout_url",
            pending && p->checkout_url ? json_string(p->checkout_url) : json_null(),
            "failure_reason", p->failure_reason, "refunded_micros", (json_int_t)p->refunded_micros,
            "refundable_micros",
            (json_int_t)(streq(p->state, "completed")
                             ? MAX(p->amount_micros - p->refunded_micros, 0)
                             : 0),
            "created_at", json_timestamp(p->created_at), "updated_at",
            json_timestamp(p->updated_at), "completed_at", json_timestamp(p->completed_at));
}

int payments_create(Db *db, const char *user_id, int64_t amount_micros, PaymentSession *ret)
{
        char id[ID_MAX];
        int r = id_new("pay", id);
        if (r < 0)
                return r;
        usec_t now = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO payment_sessions (id, user_id, amount_micros, state, "
                        "created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, amount_micros);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)now);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return payments_get(db, id, ret);
}

static int get_by(Db *db, const char *sql, const char *key, PaymentSession *ret)
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

int payments_get(Db *db, const char *id, PaymentSession *ret)
{
        return get_by(db, "SELECT " PAYMENT_COLUMNS " FROM payment_sessions WHERE id = ?", id, ret);
}

int payments_get_by_provider_session(Db *db, const char *cs_id, PaymentSession *ret)
{
        return get_by(
            db, "SELECT " PAYMENT_COLUMNS " FROM payment_sessions WHERE provider_session_id = ?",
            cs_id, ret);
}

int payments_get_by_payment_intent(Db *db, const char *pi, PaymentSession *ret)
{
        return get_by(db,
                      "SELECT " PAYMENT_COLUMNS " FROM payment_sessions WHERE payment_intent = ? "
                      "ORDER BY seq LIMIT 1",
                      pi, ret);
}

int payments_set_checkout(Db *db, const char *id, const char *cs_id, const char *url)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "UPDATE payment_sessions SET provider_session_id = COALESCE(provider_session_id, "
                "?2), checkout_url = ?3, updated_at = ?4 WHERE id = ?1");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 2, cs_id);
        db_bind_text(s, 3, url);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int payments_mark(Db *db, PaymentSession *p, const char *state, const char *reason)
{
        if (!streq(p->state, "pending"))
                return 0;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE payment_sessions SET state = ?2, failure_reason = ?3, "
                        "updated_at = ?4 WHERE id = ?1 AND state = 'pending'");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, p->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, state, -1, SQLITE_STATIC);
        db_bind_text(s, 3, reason);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        snprintf(p->state, sizeof(p->state), "%s", state);
        return event_emit(db, "billing.payment_session_changed", p->user_id,
                          json_pack("{s:s, s:s, s:s?}", "payment_session_id", p->id, "state", state,
                                    "reason", reason),
                          NULL);
}

int payments_complete(Db *db, PaymentSession *p, int64_t paid_micros, const char *cs_id,
                      const char *payment_intent, const char *event_id)
{
        if (streq(p->state, "completed"))
                return 0;
        if (paid_micros <= 0)
                return -EINVAL;
        if (paid_micros != p->amount_micros)
                /* Credit what Stripe says was paid: that is the money received. */
                log_warning("paid amount differs from the session's | payment_session=%s "
                            "amount_micros=%lld paid_micros=%lld",
                            p->id, (long long)p->amount_micros, (long long)paid_micros);

        char key[16 + ID_MAX];
        snprintf(key, sizeof(key), "payment:%s", p->id);
        LedgerPosting post = {
            .kind = LEDGER_KIND_PAYMENT,
            .idempotency_key = key,
            .user_id = p->user_id,
            .ref_type = "payment_session",
            .ref_id = p->id,
            .memo = event_id,
        };
        int r = ledger_credit_user(db, &post, LEDGER_STRIPE_CLEARING, paid_micros, NULL);
        if (r == -EALREADY)
                return 0;
        if (r < 0)
                return r;

        usec_t now = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE payment_sessions SET state = 'completed', amount_micros = ?2, "
                        "provider_session_id = COALESCE(provider_session_id, ?3), "
                        "payment_intent = COALESCE(?4, payment_intent), failure_reason = NULL, "
                        "completed_at = ?5, updated_at = ?5 WHERE id = ?1");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, p->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, paid_micros);
        db_bind_text(s, 3, cs_id);
        db_bind_text(s, 4, payment_intent);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)now);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        snprintf(p->state, sizeof(p->state), "completed");
        p->amount_micros = paid_micros;
        p->completed_at = now;
        r = event_emit(db, "billing.payment_completed", p->user_id,
                       json_pack("{s:s, s:I, s:s, s:s?}", "payment_session_id", p->id,
                                 "amount_micros", (json_int_t)paid_micros, "currency", "USD",
                                 "event_id", event_id),
                       NULL);
        if (r < 0)
                return r;
        log_info("payment credited | payment_session=%s user=%s amount_micros=%lld", p->id,
                 p->user_id, (long long)paid_micros);
        return 1;
}

int payments_add_refunded(Db *db, const char *id, int64_t delta_micros)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE payment_sessions SET refunded_micros = refunded_micros + ?2, "
                        "updated_at = ?3 WHERE id = ?1");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 2, delta_micros);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int payments_list(Db *db, const PaymentFilter *f, long long after_seq, int limit, json_t **ret,
                  long long *ret_last_seq)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " PAYMENT_COLUMNS " FROM payment_sessions WHERE seq > ?1 "
                        "AND (?2 IS NULL OR user_id = ?2) AND (?3 IS NULL OR state = ?3) "
                        "AND (?4 = 0 OR created_at >= ?4) AND (?5 = 0 OR created_at < ?5) "
                        "ORDER BY seq LIMIT ?6");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, after_seq);
        db_bind_text(s, 2, f->user_id);
        db_bind_text(s, 3, f->state);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)f->from);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)f->to);
        sqlite3_bind_int(s, 6, limit);
        json_t *items = json_array();
        if (!items)
                return -ENOMEM;
        long long last = 0;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                PaymentSession p;
                read_row(s, &p);
                last = p.seq;
                json_array_append_new(items, payment_session_to_json(&p));
                payment_session_done(&p);
        }
        if (rc != SQLITE_DONE) {
                json_decref(items);
                return db_errno(rc);
        }
        *ret = items;
        *ret_last_seq = last;
        return 0;
}
