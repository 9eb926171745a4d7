/* SPDX-License-Identifier: MIT */
#pragma once

/* OpenID Connect providers: their configuration (the contract's oidc_* keys
 * are the provider named "default"; oidc_providers_file adds more), an
 * in-memory cache of each provider's discovery document and JWKS (touched on
 * the event loop only), and the blocking HTTP client for discovery, JWKS and
 * the token endpoint. The client functions run on the thread pool: they take
 * copies, touch no shared state, and every call is bounded by a connect and a
 * total timeout. */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "timeutil.h"

typedef struct OidcProvider {
        char *name;
        char *issuer;
        char *client_id;
        char *client_secret;
        char **redirect_uris;
        size_t n_redirect_uris;
        bool auth_post; /* client_secret_post instead of client_secret_basic */

        /* Cache; loop thread only. */
        json_t *discovery;
        usec_t discovery_at; /* monotonic */
        json_t *jwks;
        usec_t jwks_at;
        usec_t jwks_kid_refresh_at; /* last re-fetch caused by an unknown kid */
} OidcProvider;

typedef struct OidcHttpLimits {
        long connect_ms;
        long total_ms;
} OidcHttpLimits;

typedef struct OidcProviders {
        OidcProvider *items;
        size_t n;
        OidcHttpLimits limits;
        int64_t clock_skew_s;
        usec_t cache_ttl;            /* discovery and JWKS are re-fetched after it */
        usec_t jwks_kid_refresh_min; /* at most one unknown-kid re-fetch per this */
        usec_t state_ttl;
} OidcProviders;

/* Reads the oidc_* keys. With none set, *ret has no providers (SSO off).
 * -EINVAL (logged, naming the key) for a half or badly configured provider. */
int oidc_providers_new(const Config *c, OidcProviders **ret);
void oidc_providers_free(OidcProviders *p);
/* name NULL: the first (default) provider. */
OidcProvider *oidc_providers_find(OidcProviders *p, const char *name);
bool oidc_provider_redirect_allowed(const OidcProvider *p, const char *uri);
/* The cached discovery document while it is fresh, else NULL. */
json_t *oidc_provider_fresh_discovery(const OidcProviders *ps, const OidcProvider *p);
json_t *oidc_provider_fresh_jwks(const OidcProviders *ps, const OidcProvider *p);

/* ---- blocking client (thread pool) ----
 * Errors: -EHOSTUNREACH the provider cannot be reached or answered 5xx or
 * timed out; -EBADMSG an answer that is not what the spec says; -EACCES the
 * token endpoint refused the code (error in *ret_error). */

/* GETs <issuer>/.well-known/openid-configuration and checks that it names
 * this issuer byte for byte and the endpoints a code flow needs. */
int oidc_fetch_discovery(const char *issuer, const OidcHttpLimits *l, json_t **ret);
int oidc_fetch_jwks(const char *jwks_uri, const OidcHttpLimits *l, json_t **ret);
/* Redeems an authorization code (PKCE) at the token endpoint; returns the
 * ID token (malloc'ed). */
int oidc_redeem_code(const char *token_endpoint, const char *client_id, const char *client_secret,
                     bool auth_post, const char *code, const char *redirect_uri,
                     const char *code_verifier, const OidcHttpLimits *l, char **ret_id_token,
                     char **ret_error);
