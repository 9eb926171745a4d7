/* SPDX-License-Identifier: MIT */
/* The prepaid ledger. Money only moves between accounts: every transaction is
 * a set of immutable entries that sum to zero (checked here before anything is
 * written; triggers refuse UPDATE and DELETE), so the sum over all entries is
 * zero forever and no path creates or destroys money. An account's posted
 * balance is the sum of its entries; ledger_accounts.balance_micros caches it
 * and is kept by an AFTER INSERT trigger, i.e. in the same transaction as the
 * entry. Metering posts usage per owner now and then, not every tick, so the
 * balance a user has is the posted one minus the usage metered since
 * (metering_unposted, exact as of the last tick).
 *
 * Holds reserve part of a user's balance for a launched allocation. Usage
 * counts against its allocation's hold as it is metered (or as it is
 * captured, captured_micros, for usage posted through ledger_charge_usage),
 * so the hold shrinks as the usage it stood for becomes charges and is not
 * reserved twice. ledger_accounts.held_micros caches the uncaptured part of
 * the account's pending holds (kept by triggers on ledger_holds); the metered
 * part is subtracted at read time from the owner's open meters, so
 * available = balance - held needs one account row and the owner's open
 * meters, never a sum over the holds. */
#include "ledger.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "metering.h"
#include "timeutil.h"

void ledger_user_account(const char *user_id, char buf[static LEDGER_ACCOUNT_ID_MAX])
{
        snprintf(buf, LEDGER_ACCOUNT_ID_MAX, "user:%s", user_id);
}

int ledger_account_ensure(Db *db, const char *account_id, const char *user_id)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO ledger_accounts (id, user_id, created_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (id) DO NOTHING");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, account_id, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 2, user_id);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

/* The account row's caches: posted balance and held total (0 without one:
 * nothing was ever posted or held). */
static int account_read(Db *db, const char *account_id, int64_t *ret_posted, int64_t *ret_held)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT balance_micros, held_micros FROM ledger_accounts WHERE id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, account_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        *ret_posted = *ret_held = 0;
        if (rc == SQLITE_ROW) {
                *ret_posted = sqlite3_column_int64(s, 0);
                *ret_held = sqlite3_column_int64(s, 1);
        } else if (rc != SQLITE_DONE)
                return db_errno(rc);
        return 0;
}

int ledger_funds(Db *db, const char *user_id, LedgerFunds *ret)
{
        char acct[LEDGER_ACCOUNT_ID_MAX];
        ledger_user_account(user_id, acct);
        int64_t posted, held, unposted, on_holds;
        int r = account_read(db, acct, &posted, &held);
        if (r < 0)
                return r;
        /* Usage metered since the owner's last posting lowers the balance;
         * usage metered within a pending hold's uncaptured part is no longer
         * reserved by that hold (it is usage now). */
        r = metering_unposted(db, user_id, &unposted, &on_holds);
        if (r < 0)
                return r;
        ret->posted = posted;
        ret->balance = posted - unposted;
        ret->held = held - on_holds;
        ret->available = ret->balance - ret->held;
        return 0;
}

int ledger_balance_micros(Db *db, const char *user_id, int64_t *ret)
{
        LedgerFunds f;
        int r = ledger_funds(db, user_id, &f);
        if (r < 0)
                return r;
        *ret = f.balance;
        return 0;
}

int ledger_open_holds_micros(Db *db, const char *user_id, int64_t *ret)
{
        LedgerFunds f;
        int r = ledger_funds(db, user_id, &f);
        if (r < 0)
                return r;
        *ret = f.held;
        return 0;
}

int ledger_available_micros(Db *db, const char *user_id, int64_t *ret)
{
        LedgerFunds f;
        int r = ledger_funds(db, user_id, &f);
        if (r < 0)
                return r;
        *ret = f.available;
        return 0;
}

int ledger_hold_place(Db *db, const char *user_id, const char *allocation_id, int64_t amount_micros)
{
        if (!user_id || !allocation_id || amount_micros < 0)
                return -EINVAL;
        usec_t now = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "INSERT INTO ledger_holds (allocation_id, user_id, amount_micros, state, "
                "created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?) "
                "ON CONFLICT (allocation_id) DO UPDATE SET amount_micros = excluded.amount_micros, "
                "state = 'pending', updated_at = excluded.updated_at");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, allocation_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, amount_micros);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)now);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int hold_finish(Db *db, const char *allocation_id, bool void_always)
{
        /* The usage metering charged becomes what the hold captured (posted
         * or not: the meter's rest is posted when it closes). The held total
         * follows by trigger. */
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE ledger_holds SET captured_micros = MAX(captured_micros, u), "
                        "state = CASE WHEN ?1 = 0 AND MAX(captured_micros, u) > 0 THEN 'posted' "
                        "ELSE 'voided' END, updated_at = ?2 FROM (SELECT COALESCE((SELECT "
                        "charged_micros FROM allocation_usage WHERE allocation_id = ?3), 0) AS u) "
                        "WHERE allocation_id = ?3 AND state = 'pending'");
        if (!s)
                return -EIO;
        sqlite3_bind_int(s, 1, void_always ? 1 : 0);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 3, allocation_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int ledger_hold_void(Db *db, const char *allocation_id)
{
        if (!allocation_id)
                return -EINVAL;
        return hold_finish(db, allocation_id, true);
}

int ledger_hold_close(Db *db, const char *allocation_id)
{
        if (!allocation_id)
                return -EINVAL;
        return hold_finish(db, allocation_id, false);
}

static int idempotency_key_used(Db *db, const char *key)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT 1 FROM ledger_transactions WHERE idempotency_key = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW)
                return 1;
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int ledger_post(Db *db, const LedgerPosting *p, const LedgerLeg *legs, size_t n_legs,
                char *ret_txn_id)
{
        if (!p || !p->kind || !legs || n_legs < 2)
                return -EINVAL;

        /* Balanced, and no overflow on the way: |amount| is bounded so that
         * the sum of a handful of legs cannot wrap. */
        int64_t sum = 0;
        for (size_t i = 0; i < n_legs; i++) {
                int64_t a = legs[i].amount_micros;
                if (!legs[i].account_id || a == 0 || a > INT64_MAX / 64 || a < -(INT64_MAX / 64))
                        return -EINVAL;
                sum += a;
        }
        if (sum != 0)
                return -EINVAL;

        int r;
        if (p->idempotency_key) {
                r = idempotency_key_used(db, p->idempotency_key);
                if (r < 0)
                        return r;
                if (r > 0)
                        return -EALREADY;
        }

        char txn_id[ID_MAX];
        r = id_new("ltx", txn_id);
        if (r < 0)
                return r;
        usec_t now = now_usec();

        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db, "INSERT INTO ledger_transactions (id, at, kind, idempotency_key, user_id, "
                        "ref_type, ref_id, actor_id, memo) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, txn_id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(s, 2, (sqlite3_int64)now);
                sqlite3_bind_text(s, 3, p->kind, -1, SQLITE_TRANSIENT);
                db_bind_text(s, 4, p->idempotency_key);
                db_bind_text(s, 5, p->user_id);
                db_bind_text(s, 6, p->ref_type);
                db_bind_text(s, 7, p->ref_id);
                db_bind_text(s, 8, p->actor_id);
                db_bind_text(s, 9, p->memo);
                int rc = sqlite3_step(s);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }

        for (size_t i = 0; i < n_legs; i++) {
                /* The trigger makes the account on its first entry and keeps
                 * its cached balance. */
                const char *acct = legs[i].account_id;
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "INSERT INTO ledger_entries (txn_id, account_id, amount_micros, "
                                "at) VALUES (?, ?, ?, ?)");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, txn_id, -1, SQLITE_STATIC);
                sqlite3_bind_text(s, 2, acct, -1, SQLITE_STATIC);
                sqlite3_bind_int64(s, 3, legs[i].amount_micros);
                sqlite3_bind_int64(s, 4, (sqlite3_int64)now);
                int rc = sqlite3_step(s);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }

        if (ret_txn_id)
                memcpy(ret_txn_id, txn_id, strlen(txn_id) + 1);
        return 0;
}

static int move_user(Db *db, const LedgerPosting *p, const char *platform, int64_t user_delta,
                     char *ret_txn_id)
{
        if (!p || !p->user_id || !platform || strncmp(platform, "platform:", 9) != 0)
                return -EINVAL;
        char acct[LEDGER_ACCOUNT_ID_MAX];
        ledger_user_account(p->user_id, acct);
        LedgerLeg legs[] = {
            {acct, user_delta},
            {platform, -user_delta},
        };
        return ledger_post(db, p, legs, ELEMENTSOF(legs), ret_txn_id);
}

int ledger_credit_user(Db *db, const LedgerPosting *p, const char *from_platform,
                       int64_t amount_micros, char *ret_txn_id)
{
        if (amount_micros <= 0)
                return -EINVAL;
        return move_user(db, p, from_platform, amount_micros, ret_txn_id);
}

int ledger_debit_user(Db *db, const LedgerPosting *p, const char *to_platform,
                      int64_t amount_micros, char *ret_txn_id)
{
        if (amount_micros <= 0)
                return -EINVAL;
        return move_user(db, p, to_platform, -amount_micros, ret_txn_id);
}

int ledger_charge_usage(Db *db, const char *user_id, const char *allocation_id,
                        int64_t amount_micros, const char *idempotency_key, char *ret_txn_id)
{
        if (!user_id || !allocation_id || amount_micros <= 0)
                return -EINVAL;
        LedgerPosting p = {
            .kind = LEDGER_KIND_USAGE,
            .idempotency_key = idempotency_key,
            .user_id = user_id,
            .ref_type = "allocation",
            .ref_id = allocation_id,
        };
        int r = ledger_debit_user(db, &p, LEDGER_REVENUE, amount_micros, ret_txn_id);
        if (r < 0)
                return r;
        return ledger_hold_capture(db, allocation_id, amount_micros);
}

int ledger_hold_capture(Db *db, const char *allocation_id, int64_t amount_micros)
{
        if (!allocation_id || amount_micros < 0)
                return -EINVAL;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE ledger_holds SET captured_micros = captured_micros + ?, "
                        "updated_at = ? WHERE allocation_id = ? AND state = 'pending'");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, amount_micros);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 3, allocation_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int query_int64(Db *db, const char *sql, int64_t *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(db, sql);
        if (!s)
                return -EIO;
        int rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        *ret = sqlite3_column_int64(s, 0);
        return 0;
}

int ledger_audit(Db *db, int64_t *ret_sum, int64_t *ret_bad_accounts, int64_t *ret_bad_txns)
{
        int r;
        if (ret_sum) {
                r = query_int64(db, "SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_entries",
                                ret_sum);
                if (r < 0)
                        return r;
        }
        if (ret_bad_accounts) {
                r = query_int64(
                    db,
                    "SELECT (SELECT COUNT(*) FROM ledger_accounts a WHERE a.balance_micros != "
                    "(SELECT COALESCE(SUM(e.amount_micros), 0) FROM ledger_entries e "
                    "WHERE e.account_id = a.id) OR a.held_micros != (SELECT "
                    "COALESCE(SUM(MAX(h.amount_micros - h.captured_micros, 0)), 0) FROM "
                    "ledger_holds h WHERE h.user_id = a.user_id AND h.state = 'pending')) "
                    "+ (SELECT COUNT(*) FROM (SELECT DISTINCT user_id FROM ledger_holds h WHERE "
                    "h.state = 'pending' AND h.amount_micros > h.captured_micros AND NOT EXISTS "
                    "(SELECT 1 FROM ledger_accounts a WHERE a.id = 'user:' || h.user_id)))",
                    ret_bad_accounts);
                if (r < 0)
                        return r;
        }
        if (ret_bad_txns) {
                r = query_int64(db,
                                "SELECT COUNT(*) FROM (SELECT txn_id FROM ledger_entries "
                                "GROUP BY txn_id HAVING SUM(amount_micros) != 0 OR COUNT(*) < 2)",
                                ret_bad_txns);
                if (r < 0)
                        return r;
        }
        return 0;
}
