/* SPDX-License-Identifier: MIT */
#pragma once

/* Payment sessions: one per "add funds" checkout. A session is recorded
 * (pending) before Stripe is called, so a webhook that arrives before the
 * checkout call returned finds it by our id (client_reference_id and
 * metadata.payment_session_id). States:
 *   pending -> completed (paid: the ledger credit, once)
 *   pending -> expired   (checkout.session.expired)
 *   pending -> failed    (Stripe refused the session, or the async payment failed)
 * A paid completion always wins: money Stripe took is credited even if the
 * session had been marked expired or failed before (events arrive out of
 * order). Amounts are micro-USD; Stripe's are cents (1 cent = 10,000). */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "id.h"
#include "timeutil.h"

typedef struct Db Db;

#define MICROS_PER_CENT 10000

typedef struct PaymentSession {
        long long seq;
        char id[ID_MAX];
        char user_id[ID_MAX];
        int64_t amount_micros;
        char currency[8];
        char state[16];
        char *provider_session_id; /* cs_... */
        char *payment_intent;      /* pi_... */
        char *checkout_url;
        char *failure_reason;
        int64_t refunded_micros;
        usec_t created_at, updated_at, completed_at;
} PaymentSession;

void payment_session_done(PaymentSession *p);
json_t *payment_session_to_json(const PaymentSession *p);

int payments_create(Db *db, const char *user_id, int64_t amount_micros, PaymentSession *ret);
/* -ENOENT when there is none. */
int payments_get(Db *db, const char *id, PaymentSession *ret);
int payments_get_by_provider_session(Db *db, const char *cs_id, PaymentSession *ret);
int payments_get_by_payment_intent(Db *db, const char *pi, PaymentSession *ret);

/* The checkout call returned: remember Stripe's session id and URL (the state
 * is left alone: a webhook may have completed it already). */
int payments_set_checkout(Db *db, const char *id, const char *cs_id, const char *url);
/* pending -> failed/expired; 0 and nothing changed from any other state. */
int payments_mark(Db *db, PaymentSession *p, const char *state, const char *reason);

/* Credits paid_micros to the owner (platform:stripe_clearing -> user) exactly
 * once per session and marks it completed, in the caller's transaction.
 * 1 when it credited, 0 when the session was already completed. */
int payments_complete(Db *db, PaymentSession *p, int64_t paid_micros, const char *cs_id,
                      const char *payment_intent, const char *event_id);

int payments_add_refunded(Db *db, const char *id, int64_t delta_micros);

/* List filters; NULL means any. */
typedef struct PaymentFilter {
        const char *user_id;
        const char *state;
        usec_t from, to; /* created_at range, 0: open */
} PaymentFilter;

/* items (payment_session_to_json) after seq, at most limit; *ret_last_seq is
 * the last row's seq. */
int payments_list(Db *db, const PaymentFilter *f, long long after_seq, int limit, json_t **ret,
                  long long *ret_last_seq);
