/* SPDX-License-Identifier: MIT */
#pragma once

/* ID token validation (OpenID Connect Core 3.1.3.7): the signature against
 * the provider's JWKS (RS256 or ES256 only; "none", HMAC and every other
 * algorithm are refused), then iss, aud, azp, exp and iat (with a small clock
 * skew), nbf when present, the nonce of this login, and a subject. Pure: no
 * I/O, safe on any thread. */

#include <jansson.h>
#include <stdint.h>

typedef struct OidcTokenExpect {
        const char *issuer;
        const char *client_id;
        const char *nonce;
        int64_t now_s;  /* seconds since the epoch */
        int64_t skew_s; /* tolerated clock difference */
} OidcTokenExpect;

/* 0 and *ret_claims (a new reference) when the token is valid. Otherwise
 * *ret_reason names why, as a snake_case code:
 *   -ENOKEY      no key in jwks matches the token's kid/alg ("unknown_key")
 *   -EPERM       the signature does not verify ("bad_signature")
 *   -EKEYEXPIRED exp passed ("id_token_expired")
 *   -EBADMSG     malformed token or refused algorithm
 *   -EACCES      a claim does not match (issuer_mismatch, audience_mismatch,
 *                azp_mismatch, nonce_mismatch, iat_in_future, not_yet_valid,
 *                subject_missing) */
int oidc_id_token_validate(const char *jwt, json_t *jwks, const OidcTokenExpect *e,
                           json_t **ret_claims, const char **ret_reason);
