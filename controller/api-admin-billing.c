/* SPDX-License-Identifier: MIT */
/* Admin and billing operator surfaces: credit grants (admin), payment
 * sessions and users with their balances (admin, billing_operator). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api-list.h"
#include "api.h"
#include "audit.h"
#include "db.h"
#include "events.h"
#include "ledger.h"
#include "log.h"
#include "payments.h"
#include "server.h"

/* A grant larger than this is almost certainly a typo (micro-USD: 1e6 = 1 USD). */
#define CREDIT_MAX_MICROS (1000000LL * 1000000LL) /* one million USD */

static const JsonField credit_fields[] = {
    {"amount_micros", JSON_FIELD_INTEGER, true, 0, 0},
    {"reason", JSON_FIELD_STRING, true, 1, 500},
};

int api_admin_user_credits(Request *r)
{
        Server *s = r->server;
        _cleanup_(json_decrefp) json_t *body = NULL;
        if (http_read_json(r, credit_fields, ELEMENTSOF(credit_fields), &body) < 0)
                return 0;
        json_int_t amount = json_integer_value(json_object_get(body, "amount_micros"));
        const char *reason = json_field_string(body, "reason");
        if (amount <= 0 || amount > CREDIT_MAX_MICROS)
                return http_reply_invalid_field(r, "amount_micros",
                                                "amount_micros must be 1 to %lld",
                                                (long long)CREDIT_MAX_MICROS);
        const char *user_id = http_param(r, 0);
        _cleanup_(user_done) User u = {0};
        int ret = id_valid("usr", user_id) ? users_get(s->db, user_id, &u) : -ENOENT;
        if (ret == -ENOENT)
                return http_reply_error(r, ERR_NOT_FOUND, NULL, "no such user");
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the user now");

        char txn_id[ID_MAX];
        int64_t balance = 0;
        _cleanup_txn_ DbTxn txn = {0};
        LedgerPosting post = {
            .kind = LEDGER_KIND_GRANT,
            .user_id = u.id,
            .ref_type = "user",
            .ref_id = u.id,
            .actor_id = r->auth.user_id,
            .memo = reason,
        };
        ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = ledger_credit_user(s->db, &post, LEDGER_GRANTS, amount, txn_id);
        if (ret >= 0)
                ret = audit_log(s->db, r->auth.user_id, "billing.credit_granted", "user", u.id,
                                reason,
                                json_pack("{s:I, s:s, s:s}", "amount_micros", (json_int_t)amount,
                                          "currency", "USD", "ledger_transaction_id", txn_id));
        if (ret >= 0)
                ret = event_emit(
                    s->db, "billing.credit_granted", u.id,
                    json_pack("{s:I, s:s}", "amount_micros", (json_int_t)amount, "currency", "USD"),
                    NULL);
        if (ret >= 0)
                ret = ledger_balance_micros(s->db, u.id, &balance);
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot grant credit now");
        log_info("credit granted | user=%s amount_micros=%lld by=%s", u.id, (long long)amount,
                 r->auth.user_id);
        return http_reply_json(r, 201,
                               json_pack("{s:s, s:s, s:I, s:s, s:I, s:s}", "ledger_transaction_id",
                                         txn_id, "user_id", u.id, "amount_micros",
                                         (json_int_t)amount, "currency", "USD", "balance_micros",
                                         (json_int_t)balance, "reason", reason));
}

/* ?from=&to= as RFC 3339; answers 400 itself. */
static int time_filter(Request *r, const char *name, usec_t *ret)
{
        const char *v = http_query(r, name);
        *ret = 0;
        if (v && parse_rfc3339(v, ret) < 0) {
                http_reply_invalid_field(r, name, "%s must be an RFC 3339 timestamp", name);
                return -EINVAL;
        }
        return 0;
}

int api_admin_payment_sessions(Request *r)
{
        int limit;
        long long after;
        if (api_list_params(r, API_LIST_MAX_LIMIT, &limit, &after) < 0)
                return 0;
        PaymentFilter f = {.user_id = http_query(r, "user_id"), .state = http_query(r, "state")};
        if (time_filter(r, "from", &f.from) < 0 || time_filter(r, "to", &f.to) < 0)
                return 0;
        if (f.state && !streq(f.state, "pending") && !streq(f.state, "completed") &&
            !streq(f.state, "expired") && !streq(f.state, "failed"))
                return http_reply_invalid_field(r, "state",
                                                "state is pending, completed, expired or failed");
        json_t *items;
        long long last;
        if (payments_list(r->server->db, &f, after, limit, &items, &last) < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL,
                                        "cannot read payment sessions now");
        return api_list_reply(r, items, last, limit);
}

int api_admin_users(Request *r)
{
        int limit;
        long long after;
        if (api_list_params(r, API_LIST_MAX_LIMIT, &limit, &after) < 0)
                return 0;
        const char *q = http_query(r, "q"), *role = http_query(r, "role");
        unsigned role_bit = 0;
        if (role && role_from_string(role, &role_bit) < 0)
                return http_reply_invalid_field(r, "role",
                                                "role is user, admin or billing_operator");
        if (q && strlen(q) > 254)
                return http_reply_invalid_field(r, "q", "q is at most 254 characters");
        _cleanup_free_ char *like = NULL;
        if (q && *q) {
                /* Substring of the email or the name; LIKE's wildcards escaped. */
                size_t n = strlen(q);
                like = malloc(2 * n + 3);
                if (!like)
                        return -ENOMEM;
                char *w = like;
                *w++ = '%';
                for (const char *p = q; *p; p++) {
                        if (*p == '%' || *p == '_' || *p == '\\')
                                *w++ = '\\';
                        *w++ = *p;
                }
                *w++ = '%';
                *w = '\0';
        }
        Db *db = r->server->db;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "SELECT u.rowid, u.id, u.email, u.name, u.roles, u.created_at, "
                "(SELECT COUNT(*) FROM allocations x WHERE x.user_id = u.id AND "
                "x.state IN ('pending', 'provisioning', 'active', 'releasing', 'release_failed')) "
                "FROM users u WHERE u.rowid > ?1 AND (?2 IS NULL OR u.email LIKE ?2 ESCAPE "
                "'\\' OR u.name LIKE ?2 ESCAPE '\\') AND (?3 = 0 OR (u.roles & ?3) != 0) "
                "AND (?4 IS NULL OR u.id = ?4) ORDER BY u.rowid LIMIT ?5");
        if (!s)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read users now");
        sqlite3_bind_int64(s, 1, after);
        db_bind_text(s, 2, like);
        sqlite3_bind_int(s, 3, (int)role_bit);
        db_bind_text(s, 4, http_query(r, "id"));
        sqlite3_bind_int(s, 5, limit);
        json_t *items = json_array();
        long long last = 0;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                last = sqlite3_column_int64(s, 0);
                const char *id = db_column_text(s, 1);
                /* What the user sees: usage not yet posted counted. */
                LedgerFunds f = {0};
                (void)ledger_funds(db, id, &f);
                json_array_append_new(
                    items,
                    json_pack("{s:s, s:s, s:s, s:o, s:o, s:I, s:I, s:s, s:I}", "id", id, "email",
                              db_column_text(s, 2), "name", db_column_text(s, 3), "roles",
                              roles_to_json((unsigned)sqlite3_column_int(s, 4)), "created_at",
                              json_timestamp((usec_t)sqlite3_column_int64(s, 5)), "balance_micros",
                              (json_int_t)f.balance, "available_micros", (json_int_t)f.available,
                              "currency", "USD", "open_allocations",
                              (json_int_t)sqlite3_column_int64(s, 6)));
        }
        if (rc != SQLITE_DONE) {
                json_decref(items);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read users now");
        }
        return api_list_reply(r, items, last, limit);
}
