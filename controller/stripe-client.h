/* SPDX-License-Identifier: MIT */
#pragma once

/* A blocking client for Stripe's REST API, for the controller's thread pool
 * (async.h): never call it on the event loop. Requests are form-encoded
 * (Stripe's bracket notation, line_items[0][price_data][currency]=usd), carry
 * Authorization: Bearer <secret key>, Stripe-Version and an Idempotency-Key
 * (a retried call with the same key gets Stripe's first answer, never a
 * second object). Responses are Stripe JSON objects, or its error envelope
 * {"error":{"type","code","message",...}}. */

#include <jansson.h>
#include <stddef.h>

typedef struct Config Config;

typedef struct StripeClient {
        char *api_base;    /* https://api.stripe.com (tests: the fake's URL) */
        char *secret_key;  /* sk_live_... / sk_test_... */
        char *api_version; /* Stripe-Version */
        long connect_ms, total_ms;
} StripeClient;

/* Copies the settings (so a job owns them); -ENOKEY when no secret key is
 * configured: payments are not set up. */
int stripe_client_from_config(const Config *c, StripeClient *ret);
void stripe_client_done(StripeClient *c);

/* A form body under construction. Keys keep their brackets, values are
 * percent-encoded. */
typedef struct StripeForm {
        char *buf;
        size_t len, cap;
        int error;
} StripeForm;

void stripe_form_add(StripeForm *f, const char *key, const char *value);
void stripe_form_addf(StripeForm *f, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void stripe_form_done(StripeForm *f);

typedef struct StripeResult {
        long status;         /* HTTP status, 0 when Stripe was not reached */
        json_t *body;        /* the parsed object (any status), or NULL */
        char error_code[64]; /* from the error envelope ("amount_too_small"), or "" */
        char error_message[256];
} StripeResult;

void stripe_result_done(StripeResult *r);

/* POST <api_base><path> with the form. 0 when Stripe answered 2xx with a JSON
 * object; -EPROTO when it answered with an error (result filled from the
 * envelope); -EHOSTUNREACH when it could not be reached, timed out or
 * answered 5xx; -EBADMSG when the answer was not JSON. */
int stripe_post(const StripeClient *c, const char *path, const StripeForm *form,
                const char *idempotency_key, StripeResult *ret);
