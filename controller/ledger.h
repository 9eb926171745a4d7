/* SPDX-License-Identifier: MIT */
#pragma once

/* The prepaid ledger (billing): double-entry, immutable entries in integer
 * micro-dollars. Every function here writes inside the caller's transaction
 * (it never begins or commits one), so a ledger change commits or rolls back
 * together with the change that caused it.
 *
 * Implemented by ledger.c (the billing issue). The allocations code uses
 * exactly these calls:
 *   quote/launch precheck: ledger_available_micros() >= one hour of the cost
 *   launch (same txn as the allocation): ledger_hold_place()
 *   provision failed / released before active: ledger_hold_void()
 *   metering posts usage charges against the hold, then the account. */

#include <stdint.h>

typedef struct Db Db;

/* The user's balance: the sum of their account's entries minus the usage
 * metered but not yet posted to the ledger (metering_unposted), i.e. exact
 * as of the last metering tick. */
int ledger_balance_micros(Db *db, const char *user_id, int64_t *ret);

/* Balance minus open holds: what the user can still commit to. */
int ledger_available_micros(Db *db, const char *user_id, int64_t *ret);

/* Places (or replaces) the hold of allocation_id for amount_micros. */
int ledger_hold_place(Db *db, const char *user_id, const char *allocation_id,
                      int64_t amount_micros);

/* Voids the allocation's open hold, if any (0 also when there is none). */
int ledger_hold_void(Db *db, const char *allocation_id);

/* ---- Beyond the allocations interface: posting, accounts, holds, audit. ---- */

#include <stddef.h>

#include "id.h"
#include "macro.h"

/* Platform accounts. A user's account is "user:<user id>". */
#define LEDGER_STRIPE_CLEARING "platform:stripe_clearing" /* money held at Stripe */
#define LEDGER_REVENUE         "platform:revenue"         /* usage charges */
#define LEDGER_GRANTS          "platform:grants"          /* admin credit */
#define LEDGER_REFUNDS         "platform:refunds"         /* internal credit on refunds */

#define LEDGER_ACCOUNT_ID_MAX (STRLEN("user:") + ID_MAX)

/* Transaction kinds. */
#define LEDGER_KIND_PAYMENT         "payment"         /* Stripe checkout completed */
#define LEDGER_KIND_GRANT           "grant"           /* admin credit */
#define LEDGER_KIND_USAGE           "usage"           /* metering */
#define LEDGER_KIND_PROVIDER_REFUND "provider_refund" /* refunded through Stripe */
#define LEDGER_KIND_REFUND_REVERSAL "refund_reversal" /* a provider refund that failed */
#define LEDGER_KIND_INTERNAL_CREDIT "internal_credit" /* refund as account credit */
#define LEDGER_KIND_EXTERNAL_REFUND "external_refund" /* refunded at Stripe, not by us */

typedef struct LedgerLeg {
        const char *account_id;
        int64_t amount_micros; /* positive credits the account, negative debits it */
} LedgerLeg;

typedef struct LedgerPosting {
        const char *kind;
        const char *idempotency_key; /* optional; a second posting with it is -EALREADY */
        const char *user_id;         /* optional: the user the posting concerns */
        const char *ref_type;        /* optional: "payment_session", "allocation", ... */
        const char *ref_id;
        const char *actor_id; /* optional: who caused it (admin credit) */
        const char *memo;
} LedgerPosting;

void ledger_user_account(const char *user_id, char buf[static LEDGER_ACCOUNT_ID_MAX]);

/* Creates the user's account if missing (posting does this too). */
int ledger_account_ensure(Db *db, const char *account_id, const char *user_id);

/* Posts one balanced transaction: legs sum to exactly zero (-EINVAL
 * otherwise, also for a zero leg or fewer than two legs), entries are
 * immutable. -EALREADY when idempotency_key was posted before (nothing
 * written). The transaction's id ("ltx_...") goes into ret_txn_id if given. */
int ledger_post(Db *db, const LedgerPosting *p, const LedgerLeg *legs, size_t n_legs,
                char *ret_txn_id);

/* Moves amount_micros (> 0) from a platform account to the user (credit) or
 * from the user to a platform account (debit). */
int ledger_credit_user(Db *db, const LedgerPosting *p, const char *from_platform,
                       int64_t amount_micros, char *ret_txn_id);
int ledger_debit_user(Db *db, const LedgerPosting *p, const char *to_platform,
                      int64_t amount_micros, char *ret_txn_id);

/* A usage charge: user -> platform:revenue, captured against the
 * allocation's pending hold first (so the hold shrinks as usage posts). */
int ledger_charge_usage(Db *db, const char *user_id, const char *allocation_id,
                        int64_t amount_micros, const char *idempotency_key, char *ret_txn_id);

/* Records amount_micros of usage, already posted, against the allocation's
 * pending hold (the hold shrinks by it). 0 also when there is no open hold. */
int ledger_hold_capture(Db *db, const char *allocation_id, int64_t amount_micros);

/* Ends the allocation's pending hold: "posted" when usage was captured
 * against it, "voided" when none was. 0 also when there is no open hold. */
int ledger_hold_close(Db *db, const char *allocation_id);

/* What the user's pending holds still reserve: each hold's amount less the
 * usage already charged against it (metered, or captured). */
int ledger_open_holds_micros(Db *db, const char *user_id, int64_t *ret);

/* All three at once (balance - held = available), from one account row and
 * the owner's open meters; what GET /billing/balance shows. */
typedef struct LedgerFunds {
        int64_t posted;    /* the account's entries (ledger_accounts.balance_micros) */
        int64_t balance;   /* posted - usage metered, not yet posted */
        int64_t held;      /* open holds */
        int64_t available; /* balance - held */
} LedgerFunds;
int ledger_funds(Db *db, const char *user_id, LedgerFunds *ret);

/* Sum of every entry (0 in a sound ledger), and the number of accounts whose
 * cached balance differs from the sum of their entries or whose cached held
 * total differs from their pending holds (0 in a sound ledger), and the
 * number of transactions whose entries do not sum to zero. */
int ledger_audit(Db *db, int64_t *ret_sum, int64_t *ret_bad_accounts, int64_t *ret_bad_txns);
