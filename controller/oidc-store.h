/* SPDX-License-Identifier: MIT */
#pragma once

/* The SQL side of single sign-on. oidc_states holds one row per sign-in in
 * progress: the state, stored as its SHA-256 only, bound to the browser by
 * the hash of a random binder kept in an HttpOnly cookie, single use, and
 * expiring. user_identities links (issuer, subject) to a user. */

#include <stdint.h>

#include "id.h"
#include "timeutil.h"

typedef struct Db Db;

#define OIDC_HASH_LEN 32

typedef struct OidcState {
        char *provider;
        char *nonce;
        char *code_verifier;
        char *redirect_uri;
        unsigned char binder_hash[OIDC_HASH_LEN];
        usec_t expires_at;
        usec_t used_at; /* 0: not yet */
} OidcState;

void oidc_state_done(OidcState *s);
void oidc_hash(const char *s, unsigned char out[static OIDC_HASH_LEN]);

int oidc_state_insert(Db *db, const char *state, const char *binder, const char *provider,
                      const char *nonce, const char *code_verifier, const char *redirect_uri,
                      usec_t expires_at);
/* -ENOENT when no such state was issued. */
int oidc_state_get(Db *db, const char *state, OidcState *ret);
/* Marks the state used; -EALREADY when it already was. Call inside a transaction. */
int oidc_state_consume(Db *db, const char *state);
/* Deletes states that expired more than a day ago (kept a while for replay answers). */
int oidc_states_prune(Db *db, usec_t now);

/* -ENOENT when the identity is not linked. */
int user_identity_find(Db *db, const char *issuer, const char *subject,
                       char user_id[static ID_MAX]);
/* -EEXIST when (issuer, subject) is already linked. */
int user_identity_insert(Db *db, const char *issuer, const char *subject, const char *user_id,
                         const char *email);
int user_identity_touch(Db *db, const char *issuer, const char *subject);
