/* SPDX-License-Identifier: MIT */
#pragma once

/* Stripe webhook events, after their signature was verified. Stripe delivers
 * at least once, retries for days and does not keep order, so each event id
 * is stored (stripe_events, primary key) in the same transaction as its
 * effect: a duplicate finds its id and changes nothing. Events used:
 *   checkout.session.completed, checkout.session.async_payment_succeeded
 *       -> credit the payment session once (if paid)
 *   checkout.session.expired, checkout.session.async_payment_failed
 *       -> a pending session ends expired / failed
 *   charge.refunded -> record refunds made at Stripe (not through us)
 *   refund.created, refund.updated, refund.failed, charge.refund.updated
 *       -> the state of our provider refunds (a failure is reversed)
 * Everything else is acknowledged and recorded as ignored. */

#include <jansson.h>

typedef struct Db Db;

/* Applies the event in the caller's transaction; *ret_outcome is a static
 * word for the log and the reply ("credited", "duplicate", "ignored", ...).
 * -EBADMSG: not a Stripe event object. -EAGAIN: it refers to a payment that
 * is not completed here yet (a refund reported before the payment): nothing
 * is recorded and the caller answers non-2xx so that Stripe redelivers. */
int stripe_event_apply(Db *db, json_t *event, const char **ret_outcome);
