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

/* Balance of the user's account (sum of its posted entries). */
int ledger_balance_micros(Db *db, const char *user_id, int64_t *ret);

/* Balance minus open holds: what the user can still commit to. */
int ledger_available_micros(Db *db, const char *user_id, int64_t *ret);

/* Places (or replaces) the hold of allocation_id for amount_micros. */
int ledger_hold_place(Db *db, const char *user_id, const char *allocation_id,
                      int64_t amount_micros);

/* Voids the allocation's open hold, if any (0 also when there is none). */
int ledger_hold_void(Db *db, const char *allocation_id);
