/* SPDX-License-Identifier: MIT */
#pragma once

/* Stripe webhook signatures. Stripe signs each delivery with
 *   Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=<hex>...]
 * where the HMAC is keyed with the endpoint's whole signing secret
 * ("whsec_...", as bytes) over "<t>.<raw body>". Several v1 values appear
 * while a secret is being rolled; any match is enough. Other schemes (v0)
 * are ignored. */

#include <stddef.h>
#include <stdint.h>

#define STRIPE_SIGNATURE_HEADER_MAX 8192
#define STRIPE_SIGNATURE_HEX_LEN    64

/* Lowercase hex HMAC-SHA256(secret, "<t>.<payload>") into hex (65 bytes). */
int stripe_signature_compute(const char *secret, int64_t t, const void *payload, size_t len,
                             char hex[static STRIPE_SIGNATURE_HEX_LEN + 1]);

/* Checks a Stripe-Signature header against the raw payload:
 *   0             a v1 signature matches and t is within tolerance_s of now_s
 *                 (either side: a stale replay and a clock far ahead both fail)
 *   -EBADMSG      header missing, too long or malformed, no t, or no v1
 *   -EKEYREJECTED no v1 matches (wrong secret, altered or truncated body)
 *   -ETIMEDOUT    a signature matches but t is outside the tolerance
 * Signatures are compared in constant time (CRYPTO_memcmp). */
int stripe_signature_verify(const char *header, const void *payload, size_t len, const char *secret,
                            int64_t now_s, int64_t tolerance_s);
