/* SPDX-License-Identifier: MIT */
#pragma once

/* Refunds of completed payments. A refund is at most the payment's unspent
 * credit: what is left of the payment after earlier refunds, and no more
 * than the owner's available balance (money already used for GPUs is not
 * refundable). Two kinds:
 *   provider_refund  inside refund_window_days: the money goes back to the
 *                    card through Stripe's Refunds API. The ledger debit
 *                    (user -> platform:stripe_clearing) is posted when the
 *                    refund is requested, so the money cannot be spent twice
 *                    while Stripe is asked; a refund Stripe refuses or fails
 *                    later is reversed by a compensating entry
 *                    (refund_reversal). States: pending -> succeeded | failed.
 *   internal_credit  outside the window the card cannot be refunded: the
 *                    amount is converted into account credit, which stays on
 *                    the balance (ledger: user -> platform:refunds ->
 *                    user, recorded, nothing created). State: succeeded.
 * Every refund has an audit row. Refunds made in Stripe's dashboard reach us
 * as charge.refunded and are recorded too (reason refunded_at_stripe). */

#include <jansson.h>
#include <stdint.h>

#include "id.h"
#include "timeutil.h"

typedef struct Db Db;
typedef struct PaymentSession PaymentSession;

#define REFUND_REASON_MAX 500

typedef struct Refund {
        long long seq;
        char id[ID_MAX];
        char user_id[ID_MAX];
        char payment_id[ID_MAX];
        int64_t amount_micros;
        char kind[24];
        char state[16];
        char *reason;
        char *provider_refund_id;
        char *failure_reason;
        usec_t created_at, updated_at;
} Refund;

void refund_done(Refund *r);
json_t *refund_to_json(const Refund *r);

/* How much of the payment can still be refunded to its owner now. */
int refunds_refundable_micros(Db *db, const PaymentSession *p, int64_t *ret);

/* Records a refund of amount_micros of p (kind "provider_refund" or
 * "internal_credit") with its ledger entries, the payment's refunded total
 * and the audit row, in the caller's transaction. -ERANGE when the amount is
 * more than refunds_refundable_micros(). */
int refunds_create(Db *db, const char *actor_id, PaymentSession *p, int64_t amount_micros,
                   const char *kind, const char *reason, Refund *ret);

/* Stripe's word on a provider refund (the Refunds API's answer or a
 * webhook): status "succeeded", "pending", "requires_action", "failed" or
 * "canceled". A failure reverses the debit once. */
int refunds_provider_update(Db *db, const char *refund_id, const char *provider_refund_id,
                            const char *status, const char *failure_reason);

int refunds_get(Db *db, const char *id, Refund *ret);
int refunds_get_by_provider_id(Db *db, const char *provider_refund_id, Refund *ret);

/* A refund made at Stripe, not through us (charge.refunded reports more
 * refunded than we know of): debit the difference, record it. */
int refunds_record_external(Db *db, PaymentSession *p, int64_t amount_micros,
                            const char *provider_refund_id);

int refunds_list(Db *db, const char *user_id, long long after_seq, int limit, json_t **ret,
                 long long *ret_last_seq);
