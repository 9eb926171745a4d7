/* SPDX-License-Identifier: MIT */
/* ledger.c: balanced postings, immutable entries, cached balances, holds,
 * idempotency, and a zero global sum after every scenario. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "harness.h"
#include "ledger.h"
#include "users.h"

static char *dir;
static Db *db;
static char alice[ID_MAX], bob[ID_MAX];

static void make_user(const char *email, char *id)
{
        User u;
        cr_assert_eq(users_insert(db, email, "Someone", NULL, ROLE_USER, &u), 0);
        snprintf(id, ID_MAX, "%s", u.id);
        user_done(&u);
}

static void setup(void)
{
        dir = tmpdir_new("ledger");
        char *path = xasprintf("%s/gpuslice.db", dir);
        cr_assert_eq(db_open(path, &db), 0);
        free(path);
        make_user("alice@example.com", alice);
        make_user("bob@example.com", bob);
}

/* The invariants every scenario ends with: money neither created nor
 * destroyed, caches equal to the sums, each transaction balanced. */
static void assert_ledger_sound(void)
{
        int64_t sum = -1, bad_accounts = -1, bad_txns = -1;
        cr_assert_eq(ledger_audit(db, &sum, &bad_accounts, &bad_txns), 0);
        cr_assert_eq(sum, 0, "ledger sum is %lld", (long long)sum);
        cr_assert_eq(bad_accounts, 0);
        cr_assert_eq(bad_txns, 0);
}

static void teardown(void)
{
        assert_ledger_sound();
        db_close(db);
        tmpdir_remove(dir);
        free(dir);
}

TestSuite(ledger, .init = setup, .fini = teardown, .timeout = 30);

static int64_t balance(const char *user)
{
        int64_t b = 0;
        cr_assert_eq(ledger_balance_micros(db, user, &b), 0);
        return b;
}

static int64_t available(const char *user)
{
        int64_t b = 0;
        cr_assert_eq(ledger_available_micros(db, user, &b), 0);
        return b;
}

static void grant(const char *user, int64_t amount)
{
        LedgerPosting p = {.kind = LEDGER_KIND_GRANT, .user_id = user, .memo = "test"};
        cr_assert_eq(ledger_credit_user(db, &p, LEDGER_GRANTS, amount, NULL), 0);
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

Test(ledger, a_new_user_has_nothing)
{
        cr_assert_eq(balance(alice), 0);
        cr_assert_eq(available(alice), 0);
}

Test(ledger, a_credit_moves_money_from_a_platform_account)
{
        DbTxn t = {0};
        cr_assert_eq(db_begin(db, &t), 0);
        grant(alice, 25000000);
        cr_assert_eq(db_commit(&t), 0);
        cr_assert_eq(balance(alice), 25000000);
        cr_assert_eq(scalar("SELECT balance_micros FROM ledger_accounts WHERE id = "
                            "'platform:grants'"),
                     -25000000);
        cr_assert_eq(balance(bob), 0);
}

Test(ledger, unbalanced_or_degenerate_postings_are_refused)
{
        char a[LEDGER_ACCOUNT_ID_MAX];
        ledger_user_account(alice, a);
        LedgerPosting p = {.kind = LEDGER_KIND_GRANT, .user_id = alice};
        LedgerLeg unbalanced[] = {{a, 100}, {LEDGER_GRANTS, -99}};
        cr_assert_eq(ledger_post(db, &p, unbalanced, 2, NULL), -EINVAL);
        LedgerLeg zero[] = {{a, 0}, {LEDGER_GRANTS, 0}};
        cr_assert_eq(ledger_post(db, &p, zero, 2, NULL), -EINVAL);
        LedgerLeg one[] = {{a, 0}};
        cr_assert_eq(ledger_post(db, &p, one, 1, NULL), -EINVAL);
        LedgerLeg huge[] = {{a, INT64_MAX}, {LEDGER_GRANTS, -INT64_MAX}};
        cr_assert_eq(ledger_post(db, &p, huge, 2, NULL), -EINVAL);
        cr_assert_eq(ledger_credit_user(db, &p, LEDGER_GRANTS, -5, NULL), -EINVAL);
        cr_assert_eq(ledger_debit_user(db, &p, LEDGER_GRANTS, 0, NULL), -EINVAL);
        /* A "platform" that is really another user's account is refused. */
        char b[LEDGER_ACCOUNT_ID_MAX];
        ledger_user_account(bob, b);
        cr_assert_eq(ledger_credit_user(db, &p, b, 5, NULL), -EINVAL);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM ledger_entries"), 0);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM ledger_transactions"), 0);
}

Test(ledger, a_multi_leg_transaction_balances)
{
        char a[LEDGER_ACCOUNT_ID_MAX], b[LEDGER_ACCOUNT_ID_MAX];
        ledger_user_account(alice, a);
        ledger_user_account(bob, b);
        LedgerPosting p = {.kind = LEDGER_KIND_GRANT};
        LedgerLeg legs[] = {{a, 700}, {b, 300}, {LEDGER_GRANTS, -1000}};
        cr_assert_eq(ledger_post(db, &p, legs, 3, NULL), 0);
        cr_assert_eq(balance(alice), 700);
        cr_assert_eq(balance(bob), 300);
}

Test(ledger, entries_and_transactions_are_immutable)
{
        grant(alice, 1000);
        char *err = NULL;
        cr_assert_neq(sqlite3_exec(db_handle(db), "UPDATE ledger_entries SET amount_micros = 5",
                                   NULL, NULL, &err),
                      SQLITE_OK);
        sqlite3_free(err);
        cr_assert_neq(sqlite3_exec(db_handle(db), "DELETE FROM ledger_entries", NULL, NULL, &err),
                      SQLITE_OK);
        sqlite3_free(err);
        cr_assert_neq(
            sqlite3_exec(db_handle(db), "DELETE FROM ledger_transactions", NULL, NULL, &err),
            SQLITE_OK);
        sqlite3_free(err);
        cr_assert_eq(balance(alice), 1000);
}

Test(ledger, an_idempotency_key_posts_once)
{
        LedgerPosting p = {
            .kind = LEDGER_KIND_PAYMENT, .user_id = alice, .idempotency_key = "payment:cs_test_1"};
        cr_assert_eq(ledger_credit_user(db, &p, LEDGER_STRIPE_CLEARING, 5000, NULL), 0);
        cr_assert_eq(ledger_credit_user(db, &p, LEDGER_STRIPE_CLEARING, 5000, NULL), -EALREADY);
        cr_assert_eq(balance(alice), 5000);
}

Test(ledger, a_rolled_back_transaction_leaves_no_trace)
{
        {
                _cleanup_txn_ DbTxn t = {0};
                cr_assert_eq(db_begin(db, &t), 0);
                grant(alice, 1000);
                cr_assert_eq(balance(alice), 1000); /* visible inside */
        }
        cr_assert_eq(balance(alice), 0);
        cr_assert_eq(scalar("SELECT COUNT(*) FROM ledger_entries"), 0);
}

Test(ledger, a_hold_reserves_and_usage_captures_it)
{
        grant(alice, 10000);
        cr_assert_eq(ledger_hold_place(db, alice, "alc_1", 3000), 0);
        cr_assert_eq(balance(alice), 10000);
        cr_assert_eq(available(alice), 7000);

        /* Usage within the hold: the balance drops, available does not. */
        cr_assert_eq(ledger_charge_usage(db, alice, "alc_1", 1000, "usage:alc_1:1", NULL), 0);
        cr_assert_eq(balance(alice), 9000);
        cr_assert_eq(available(alice), 7000);
        /* Usage beyond the hold comes out of what is available. */
        cr_assert_eq(ledger_charge_usage(db, alice, "alc_1", 2500, "usage:alc_1:2", NULL), 0);
        cr_assert_eq(balance(alice), 6500);
        cr_assert_eq(available(alice), 6500);
        /* The same interval twice is charged once. */
        cr_assert_eq(ledger_charge_usage(db, alice, "alc_1", 2500, "usage:alc_1:2", NULL),
                     -EALREADY);
        cr_assert_eq(balance(alice), 6500);

        cr_assert_eq(ledger_hold_close(db, "alc_1"), 0);
        cr_assert_eq(scalar("SELECT state = 'posted' FROM ledger_holds WHERE allocation_id = "
                            "'alc_1'"),
                     1);
        cr_assert_eq(scalar("SELECT balance_micros FROM ledger_accounts WHERE id = "
                            "'platform:revenue'"),
                     3500);
}

Test(ledger, a_voided_hold_releases_the_reservation)
{
        grant(alice, 10000);
        cr_assert_eq(ledger_hold_place(db, alice, "alc_2", 4000), 0);
        /* Replacing a hold changes the amount, not the count. */
        cr_assert_eq(ledger_hold_place(db, alice, "alc_2", 5000), 0);
        cr_assert_eq(available(alice), 5000);
        cr_assert_eq(ledger_hold_void(db, "alc_2"), 0);
        cr_assert_eq(available(alice), 10000);
        cr_assert_eq(balance(alice), 10000);
        cr_assert_eq(scalar("SELECT state = 'voided' FROM ledger_holds"), 1);
        /* Voiding what is not there is fine. */
        cr_assert_eq(ledger_hold_void(db, "alc_none"), 0);
        cr_assert_eq(ledger_hold_void(db, "alc_2"), 0);
}

Test(ledger, a_hold_without_usage_closes_voided)
{
        grant(alice, 10000);
        cr_assert_eq(ledger_hold_place(db, alice, "alc_3", 4000), 0);
        cr_assert_eq(ledger_hold_close(db, "alc_3"), 0);
        cr_assert_eq(scalar("SELECT state = 'voided' FROM ledger_holds"), 1);
        cr_assert_eq(available(alice), 10000);
}

Test(ledger, holds_of_one_user_do_not_touch_another)
{
        grant(alice, 10000);
        grant(bob, 10000);
        cr_assert_eq(ledger_hold_place(db, alice, "alc_4", 4000), 0);
        cr_assert_eq(available(bob), 10000);
        cr_assert_eq(ledger_hold_place(db, alice, "alc_5", -1), -EINVAL);
}

Test(ledger, a_refund_round_trip_returns_to_zero)
{
        LedgerPosting pay = {.kind = LEDGER_KIND_PAYMENT, .user_id = alice};
        cr_assert_eq(ledger_credit_user(db, &pay, LEDGER_STRIPE_CLEARING, 20000000, NULL), 0);
        LedgerPosting refund = {.kind = LEDGER_KIND_PROVIDER_REFUND, .user_id = alice};
        cr_assert_eq(ledger_debit_user(db, &refund, LEDGER_STRIPE_CLEARING, 20000000, NULL), 0);
        cr_assert_eq(balance(alice), 0);
        cr_assert_eq(scalar("SELECT balance_micros FROM ledger_accounts WHERE id = "
                            "'platform:stripe_clearing'"),
                     0);
}

/* What the holds reserve is cached on the account, in the transaction that
 * changes a hold: a launch reads one row, not every hold. */
Test(ledger, the_account_caches_what_its_holds_reserve)
{
        grant(alice, 100000);
        const char *held = "SELECT held_micros FROM ledger_accounts WHERE id = 'user:' || "
                           "(SELECT user_id FROM ledger_holds LIMIT 1)";
        cr_assert_eq(ledger_hold_place(db, alice, "alc_1", 3000), 0);
        cr_assert_eq(ledger_hold_place(db, alice, "alc_2", 5000), 0);
        cr_assert_eq(scalar(held), 8000);
        cr_assert_eq(ledger_hold_place(db, alice, "alc_2", 4000), 0); /* replaced */
        cr_assert_eq(scalar(held), 7000);
        cr_assert_eq(ledger_charge_usage(db, alice, "alc_1", 1000, NULL, NULL), 0);
        cr_assert_eq(scalar(held), 6000, "captured usage reserves nothing more");
        cr_assert_eq(ledger_charge_usage(db, alice, "alc_1", 5000, NULL, NULL), 0);
        cr_assert_eq(scalar(held), 4000, "a hold never reserves less than nothing");
        cr_assert_eq(ledger_hold_void(db, "alc_2"), 0);
        cr_assert_eq(scalar(held), 0);
        cr_assert_eq(available(alice), balance(alice));
        /* A hold for a user who has no account yet makes one. */
        cr_assert_eq(ledger_hold_place(db, bob, "alc_3", 2500), 0);
        cr_assert_eq(available(bob), -2500);
        cr_assert_eq(balance(bob), 0);
        /* A hold stays its user's. */
        cr_assert_neq(sqlite3_exec(db_handle(db),
                                   "UPDATE ledger_holds SET user_id = 'usr_x' WHERE allocation_id "
                                   "= 'alc_3'",
                                   NULL, NULL, NULL),
                      SQLITE_OK);
}
