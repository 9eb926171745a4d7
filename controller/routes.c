/* SPDX-License-Identifier: MIT */
#include "routes.h"

#include <string.h>

#include "api.h"
#include "users.h"

#define PUBLIC    0u
#define SIGNED_IN ROLE_ANY

const Route routes[] = {
    /* health */
    {"GET", "/api/v1/health", api_health, PUBLIC, "Liveness: the process answers"},
    {"GET", "/api/v1/ready", api_ready, PUBLIC, "Readiness: the database answers"},
    /* auth */
    {"POST", "/api/v1/auth/personal/signup", api_auth_signup, PUBLIC,
     "Create a personal account and sign in"},
    {"POST", "/api/v1/auth/personal/login", api_auth_login, PUBLIC,
     "Sign in with email and password"},
    {"POST", "/api/v1/auth/token/refresh", api_auth_refresh, PUBLIC,
     "Rotate a refresh token for a new token pair"},
    {"GET", "/api/v1/auth/oidc/authorize", api_oidc_authorize, PUBLIC,
     "Start single sign-on: 302 to the OpenID Connect provider"},
    {"POST", "/api/v1/auth/oidc/exchange", api_oidc_exchange, PUBLIC,
     "Finish single sign-on: redeem the provider's code for a session"},
    {"POST", "/api/v1/auth/logout", api_auth_logout, SIGNED_IN, "Revoke the current session"},
    {"GET", "/api/v1/me", api_me, SIGNED_IN, "The signed-in user, roles and balance"},
    /* nodes (admin) */
    {"GET", "/api/v1/admin/nodes", api_nodes_list, ROLE_ADMIN, "List nodes"},
    {"POST", "/api/v1/admin/nodes", api_nodes_create, ROLE_ADMIN,
     "Add a node: returns a one-time bootstrap token and command"},
    {"GET", "/api/v1/admin/nodes/{id}", api_nodes_get, ROLE_ADMIN, "One node"},
    {"DELETE", "/api/v1/admin/nodes/{id}", api_nodes_delete, ROLE_ADMIN,
     "Delete a node: disable it and revoke its certificates"},
    {"GET", "/api/v1/admin/nodes/{id}/slots", api_nodes_slots, ROLE_ADMIN,
     "The node's approved resource slots"},
    {"POST", "/api/v1/admin/nodes/{id}/slice-topology/discovery", api_nodes_discovery, ROLE_ADMIN,
     "Run discovery on the node's agent"},
    {"GET", "/api/v1/admin/nodes/{id}/slice-topology/candidates/{discovery_id}",
     api_nodes_candidate, ROLE_ADMIN, "A discovery's candidate slot map and invariants"},
    {"POST", "/api/v1/admin/nodes/{id}/slice-topology/candidates/{discovery_id}/approve",
     api_nodes_approve, ROLE_ADMIN, "Approve candidate slots into node_resource_slots"},
    {"GET", "/api/v1/admin/audit-logs", api_audit_list, ROLE_ADMIN | ROLE_BILLING_OPERATOR,
     "The audit log"},
    /* catalog: everyone signed in lists it, admins manage it */
    {"GET", "/api/v1/catalog/skus", api_catalog_skus, SIGNED_IN,
     "SKUs with the GPU counts some online node can host now"},
    {"GET", "/api/v1/catalog/images", api_catalog_images, SIGNED_IN, "Images"},
    {"GET", "/api/v1/catalog/networks", api_catalog_networks, SIGNED_IN, "Networks"},
    {"GET", "/api/v1/admin/skus", api_admin_skus_list, ROLE_ADMIN, "List SKUs"},
    {"POST", "/api/v1/admin/skus", api_admin_skus_create, ROLE_ADMIN, "Create a SKU"},
    {"GET", "/api/v1/admin/skus/{id}", api_admin_skus_get, ROLE_ADMIN, "One SKU"},
    {"PATCH", "/api/v1/admin/skus/{id}", api_admin_skus_update, ROLE_ADMIN, "Change a SKU"},
    {"DELETE", "/api/v1/admin/skus/{id}", api_admin_skus_delete, ROLE_ADMIN, "Delete a SKU"},
    {"GET", "/api/v1/admin/images", api_admin_images_list, ROLE_ADMIN, "List images"},
    {"POST", "/api/v1/admin/images", api_admin_images_create, ROLE_ADMIN, "Create an image"},
    {"GET", "/api/v1/admin/images/{id}", api_admin_images_get, ROLE_ADMIN, "One image"},
    {"PATCH", "/api/v1/admin/images/{id}", api_admin_images_update, ROLE_ADMIN, "Change an image"},
    {"DELETE", "/api/v1/admin/images/{id}", api_admin_images_delete, ROLE_ADMIN, "Delete an image"},
    {"GET", "/api/v1/admin/networks", api_admin_networks_list, ROLE_ADMIN, "List networks"},
    {"POST", "/api/v1/admin/networks", api_admin_networks_create, ROLE_ADMIN, "Create a network"},
    {"GET", "/api/v1/admin/networks/{id}", api_admin_networks_get, ROLE_ADMIN, "One network"},
    {"PATCH", "/api/v1/admin/networks/{id}", api_admin_networks_update, ROLE_ADMIN,
     "Change a network"},
    {"DELETE", "/api/v1/admin/networks/{id}", api_admin_networks_delete, ROLE_ADMIN,
     "Delete a network"},
    /* the signed-in user's SSH keys */
    {"GET", "/api/v1/access/ssh-keys", api_ssh_keys_list, SIGNED_IN, "Your SSH public keys"},
    {"POST", "/api/v1/access/ssh-keys", api_ssh_keys_add, SIGNED_IN, "Add an SSH public key"},
    {"DELETE", "/api/v1/access/ssh-keys/{id}", api_ssh_keys_delete, SIGNED_IN,
     "Delete one of your SSH keys"},
    /* deployment facts for clients */
    {"GET", "/api/v1/config", api_config, SIGNED_IN, "Client configuration and features"},
    {"GET", "/api/v1/admin/events", api_events_list, ROLE_ADMIN, "The events outbox"},
    /* the console: a token for the owner of an active allocation, then the
     * WebSocket (the single-use token is the credential) */
    {"POST", "/api/v1/allocations/{id}/terminal-token", api_terminal_token, SIGNED_IN,
     "A single-use token (<= 60 s) for the allocation's console"},
    {"GET", "/api/v1/terminal", api_terminal, PUBLIC,
     "The console: spends ?token= and upgrades to a WebSocket"},
    /* billing (the webhook's credential is Stripe's signature) */
    {"GET", "/api/v1/billing/balance", api_billing_balance, SIGNED_IN,
     "Balance, burn rate and runway"},
    {"POST", "/api/v1/billing/checkout", api_billing_checkout, SIGNED_IN,
     "Add funds: start a Stripe Checkout Session"},
    {"POST", "/api/v1/billing/webhooks/stripe", api_billing_webhook_stripe, PUBLIC,
     "Stripe's webhook (Stripe-Signature verified, idempotent by event id)"},
    {"GET", "/api/v1/billing/usage", api_billing_usage, SIGNED_IN,
     "Usage charges per allocation, by hour or day"},
    {"GET", "/api/v1/billing/payments", api_billing_payments, SIGNED_IN, "Your payments"},
    {"GET", "/api/v1/billing/refunds", api_billing_refunds_list, SIGNED_IN, "Your refunds"},
    {"POST", "/api/v1/billing/refunds", api_billing_refunds_create, SIGNED_IN,
     "Request a refund of a payment"},
    {"POST", "/api/v1/admin/users/{id}/credits", api_admin_user_credits, ROLE_ADMIN,
     "Grant credit to a user (ledger entry and audit row)"},
    {"GET", "/api/v1/admin/users", api_admin_users, ROLE_ADMIN | ROLE_BILLING_OPERATOR,
     "Users with their balances"},
    {"GET", "/api/v1/admin/payment-sessions", api_admin_payment_sessions,
     ROLE_ADMIN | ROLE_BILLING_OPERATOR, "Payment sessions of every user"},
    /* allocations: tenants see only their own (another's is 404) */
    {"POST", "/api/v1/allocations/quote", api_allocations_quote, SIGNED_IN,
     "Hourly cost and prechecks of a launch (no side effects)"},
    {"POST", "/api/v1/allocations", api_allocations_create, SIGNED_IN,
     "Launch (Idempotency-Key required): 202 with the provision task"},
    {"GET", "/api/v1/allocations", api_allocations_list, SIGNED_IN,
     "Your allocations, newest first (state, q, cursor)"},
    {"GET", "/api/v1/allocations/{id}", api_allocations_get, SIGNED_IN,
     "One of your allocations, with its SSH command"},
    {"POST", "/api/v1/allocations/{id}/release", api_allocations_release, SIGNED_IN,
     "Release (also retries a release_failed one): 202 with the release task"},
    {"GET", "/api/v1/tasks/{id}", api_tasks_get, SIGNED_IN,
     "A provision or release task with its steps (owner or admin)"},
    {"GET", "/api/v1/admin/allocations", api_admin_allocations_list, ROLE_ADMIN,
     "Every allocation (state, q, cursor)"},
    {"POST", "/api/v1/admin/allocations/{id}/force-release", api_admin_allocations_force_release,
     ROLE_ADMIN, "End an allocation now (reason required); its slots stay quarantined"},
    {"POST", "/api/v1/admin/nodes/{id}/slots/{slot_id}/verify", api_admin_slots_verify, ROLE_ADMIN,
     "Return a quarantined slot to service after checking it by hand"},
    /* agent enrollment (the bootstrap token is the credential) */
    {"POST", "/api/v1/agent/enroll", api_agent_enroll, PUBLIC,
     "Enroll a node's agent: bootstrap token + CSR for a certificate"},
};

const size_t n_routes = sizeof(routes) / sizeof(routes[0]);

/* Matches one pattern against a path, capturing {param} segments. */
static bool pattern_match(const char *pattern, const char *path, size_t path_len,
                          h2o_iovec_t *params, size_t *n_params)
{
        const char *p = pattern, *s = path, *end = path + path_len;
        size_t n = 0;

        while (*p && s < end) {
                if (*p == '{') {
                        const char *close = strchr(p, '}');
                        const char *seg_end = memchr(s, '/', (size_t)(end - s));
                        if (!seg_end)
                                seg_end = end;
                        if (seg_end == s || n >= REQUEST_MAX_PARAMS)
                                return false;
                        params[n++] = h2o_iovec_init(s, (size_t)(seg_end - s));
                        s = seg_end;
                        p = close + 1;
                        continue;
                }
                if (*p != *s)
                        return false;
                p++;
                s++;
        }
        /* A trailing slash on the request is tolerated. */
        if (*p == '\0' && s == end - 1 && *s == '/')
                s++;
        if (*p != '\0' || s != end)
                return false;
        *n_params = n;
        return true;
}

RouteMatchResult routes_match(const char *method, size_t method_len, const char *path,
                              size_t path_len, RouteMatch *ret)
{
        bool path_found = false;
        size_t allow_len = 0;

        *ret = (RouteMatch){0};
        for (size_t i = 0; i < n_routes; i++) {
                const Route *rt = &routes[i];
                h2o_iovec_t params[REQUEST_MAX_PARAMS];
                size_t np = 0;
                if (!pattern_match(rt->pattern, path, path_len, params, &np))
                        continue;
                if (strlen(rt->method) == method_len &&
                    memcmp(rt->method, method, method_len) == 0) {
                        ret->route = rt;
                        memcpy(ret->params, params, sizeof(params));
                        ret->n_params = np;
                        return ROUTE_FOUND;
                }
                path_found = true;
                size_t ml = strlen(rt->method);
                if (allow_len + ml + 2 < sizeof(ret->allow)) {
                        if (allow_len > 0) {
                                memcpy(ret->allow + allow_len, ", ", 2);
                                allow_len += 2;
                        }
                        memcpy(ret->allow + allow_len, rt->method, ml);
                        allow_len += ml;
                        ret->allow[allow_len] = '\0';
                }
        }
        return path_found ? ROUTE_NO_METHOD : ROUTE_NO_PATH;
}
