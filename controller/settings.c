/* SPDX-License-Identifier: MIT */
#include "settings.h"

#include "macro.h"

const ConfigKey controller_settings[] = {
    {"listen", CONFIG_STRING, "127.0.0.1:8080", 0, 0,
     "HOST:PORT the API listens on (port 0 picks a free one)"},
    {"state_dir", CONFIG_STRING, "/var/lib/gpuslice", 0, 0,
     "directory for the SQLite database and keys"},
    {"public_url", CONFIG_STRING, NULL, 0, 0,
     "base URL the controller advertises (default: http(s)://<listen>)"},
    {"log_level", CONFIG_STRING, "info", 0, 0, "error, warning, info or debug"},
    {"tls_cert", CONFIG_STRING, NULL, 0, 0, "PEM certificate chain; enables HTTPS"},
    {"tls_key", CONFIG_STRING, NULL, 0, 0, "PEM private key for tls_cert"},
    {"max_body_bytes", CONFIG_INT, "1048576", 1024, 64 * 1024 * 1024,
     "largest request body accepted (larger: 413 payload_too_large)"},
    {"http_request_timeout_s", CONFIG_INT, "10", 1, 3600,
     "HTTP/1 request timeout (a trickled request is closed after it)"},
    {"http_idle_timeout_s", CONFIG_INT, "60", 1, 3600, "HTTP/2 idle connection timeout"},
    {"shutdown_timeout_s", CONFIG_INT, "10", 1, 600,
     "how long SIGTERM waits for in-flight requests"},
    {"access_token_ttl_s", CONFIG_INT, "900", 10, 86400, "access token lifetime"},
    {"refresh_token_ttl_s", CONFIG_INT, "2592000", 60, 31536000,
     "refresh token (session) lifetime"},
    {"password_scrypt_log_n", CONFIG_INT, "15", 10, 20,
     "scrypt cost: log2(N) with r=8, p=1 (15 = 32 MiB per hash)"},
    {"login_failures_per_account", CONFIG_INT, "5", 1, 1000,
     "failed logins allowed per account before 429"},
    {"login_failures_per_address", CONFIG_INT, "20", 1, 100000,
     "failed logins allowed per client address before 429"},
    {"login_failure_window_s", CONFIG_INT, "300", 1, 86400,
     "time in which the failure allowance refills"},
    /* Request rate limits (server.c). An address is an IPv4 address or an IPv6
     * /64; behind a reverse proxy every client shares the proxy's address, so
     * raise the address limit there. docs/security.md explains the defaults. */
    {"rate_limit_address_rps", CONFIG_INT, "50", 0, 1000000,
     "requests per second one client address may sustain (0: no address limit)"},
    {"rate_limit_address_burst", CONFIG_INT, "100", 1, 1000000,
     "requests one client address may send at once before the sustained rate applies"},
    {"rate_limit_session_rps", CONFIG_INT, "20", 0, 1000000,
     "requests per second one signed-in session may sustain (0: no session limit)"},
    {"rate_limit_session_burst", CONFIG_INT, "40", 1, 1000000,
     "requests one session may send at once before the sustained rate applies"},
    {"rate_limit_max_keys", CONFIG_INT, "100000", 1000, 1000000,
     "addresses and sessions each limiter tracks (the stalest full buckets are forgotten)"},
    {"cors_allowed_origins", CONFIG_STRING, NULL, 0, 0,
     "comma-separated exact origins (https://app.example.com) browsers may call the API "
     "from; empty: no CORS headers"},
    {"oidc_issuer", CONFIG_STRING, NULL, 0, 0,
     "OpenID Connect issuer URL of the default sign-on provider (https; http only on loopback)"},
    {"oidc_client_id", CONFIG_STRING, NULL, 0, 0, "client id registered at the OIDC provider"},
    {"oidc_client_secret", CONFIG_STRING, NULL, 0, 0, "client secret for oidc_client_id"},
    {"oidc_redirect_uri", CONFIG_STRING, NULL, 0, 0,
     "the redirect URI registered at the provider (the only one authorize accepts)"},
    {"oidc_token_auth_method", CONFIG_STRING, "client_secret_basic", 0, 0,
     "client_secret_basic or client_secret_post at the token endpoint"},
    {"oidc_providers_file", CONFIG_STRING, NULL, 0, 0,
     "JSON file with more sign-on providers: {\"providers\":[{name, issuer, client_id, "
     "client_secret, redirect_uris, token_auth_method}]}"},
    {"oidc_connect_timeout_ms", CONFIG_INT, "3000", 100, 60000,
     "connect timeout for calls to an OIDC provider"},
    {"oidc_http_timeout_ms", CONFIG_INT, "10000", 100, 120000,
     "total timeout for one call to an OIDC provider"},
    {"oidc_clock_skew_s", CONFIG_INT, "60", 0, 600, "clock difference tolerated on ID tokens"},
    {"oidc_cache_ttl_s", CONFIG_INT, "3600", 1, 86400,
     "how long provider discovery and keys are cached"},
    {"oidc_jwks_refresh_min_interval_s", CONFIG_INT, "10", 0, 3600,
     "at most one key re-fetch per this many seconds when an ID token names an unknown key"},
    {"oidc_state_ttl_s", CONFIG_INT, "600", 30, 3600, "how long a started sign-in stays valid"},
    {"agent_listen", CONFIG_STRING, "127.0.0.1:7443", 0, 0,
     "HOST:PORT agents dial (nng over tls+tcp, mutual TLS; port 0 picks a free one)"},
    {"agent_endpoint", CONFIG_STRING, NULL, 0, 0,
     "tls+tcp://HOST:PORT handed to agents at enrollment (default: from agent_listen)"},
    {"heartbeat_interval_s", CONFIG_INT, "5", 1, 3600, "how often agents send a heartbeat"},
    {"heartbeat_timeout_s", CONFIG_INT, "15", 1, 86400,
     "a node with no message for this long is offline (its link is closed)"},
    {"bootstrap_token_ttl_s", CONFIG_INT, "3600", 10, 30 * 86400,
     "how long a node's one-time bootstrap token stays valid"},
    /* The console (console.c, docs/architecture.md "Console"). */
    {"console_token_ttl_s", CONFIG_INT, "60", 1, 60,
     "how long a terminal token stays valid (single use; at most 60 s)"},
    {"console_idle_timeout_s", CONFIG_INT, "1800", 1, 86400,
     "a console session with no byte either way for this long is closed"},
    {"console_max_sessions_per_allocation", CONFIG_INT, "4", 1, 1000,
     "open console sessions one allocation may have (more: 409 too_many_sessions)"},
    {"console_max_sessions_per_user", CONFIG_INT, "16", 1, 10000,
     "open console sessions one user may have (more: 409 too_many_sessions)"},
    {"console_window_bytes", CONFIG_INT, "65536", 4096, 4194304,
     "per console session and direction: bytes in flight or buffered in the controller "
     "(the agent stops reading the terminal when the browser falls this far behind)"},
    {"metrics_url_template", CONFIG_STRING, NULL, 0, 0,
     "URL of an allocation's metrics dashboard for clients (GET /api/v1/config), with "
     "{allocation_id} and {node_id} replaced by the client; unset: null"},
    /* Billing and payments (ledger.c, metering.c, payments.c, refunds.c;
     * docs/operations.md "Payments"). */
    {"stripe_api_base", CONFIG_STRING, "https://api.stripe.com", 0, 0,
     "base URL of Stripe's API (tests point it at a fake)"},
    {"stripe_secret_key", CONFIG_STRING, NULL, 0, 0,
     "Stripe secret key (sk_live_... or sk_test_...); unset: checkout answers 503 "
     "payments_not_configured"},
    {"stripe_webhook_secret", CONFIG_STRING, NULL, 0, 0,
     "signing secret (whsec_...) of the Stripe webhook endpoint "
     "/api/v1/billing/webhooks/stripe"},
    {"stripe_api_version", CONFIG_STRING, "2026-10-28.endive", 0, 0,
     "Stripe-Version sent with every Stripe call"},
    {"stripe_webhook_tolerance_s", CONFIG_INT, "300", 1, 3600,
     "a webhook signed more than this far from now (either way) is refused"},
    {"stripe_connect_timeout_ms", CONFIG_INT, "3000", 100, 60000,
     "connect timeout for calls to Stripe"},
    {"stripe_http_timeout_ms", CONFIG_INT, "20000", 100, 120000,
     "total timeout for one call to Stripe"},
    {"checkout_min_micros", CONFIG_INT, "5000000", 10000, 1000000000000LL,
     "smallest amount one checkout may add (micro-USD; default 5 USD)"},
    {"checkout_max_micros", CONFIG_INT, "10000000000", 10000, 1000000000000LL,
     "largest amount one checkout may add (micro-USD; default 10,000 USD)"},
    {"refund_window_days", CONFIG_INT, "30", 0, 3650,
     "a payment this young is refunded to the card through Stripe; an older one as "
     "account credit"},
    {"metering_interval_s", CONFIG_INT, "60", 1, 3600,
     "how often running allocations are charged (each is charged per second)"},
    {"billing_post_interval_s", CONFIG_INT, "3600", 0, 86400,
     "how often each owner's charged usage is posted to the ledger (staggered by owner; "
     "also when an allocation's billing ends and when the controller stops; balances "
     "count unposted usage exactly); 0: every metering tick"},
    {"billing_grace_period_s", CONFIG_INT, "900", 0, 7 * 86400,
     "how long allocations keep running once their owner's balance is used up, before "
     "they are released with reason insufficient_balance"},
    {"low_balance_runway_hours", CONFIG_STRING, "24,1", 0, 0,
     "comma-separated runway thresholds (hours, descending) at which billing.low_balance "
     "events are emitted"},
    /* Allocation tasks (provisioner.c): a task still running at its deadline
     * ends with agent_timeout (provisioning -> failed, releasing ->
     * release_failed). */
    {"provision_timeout_s", CONFIG_INT, "900", 1, 86400,
     "how long a launch may wait for the node to assign its slots"},
    {"release_timeout_s", CONFIG_INT, "900", 1, 86400,
     "how long a release may wait for the node to tear its slots down"},
    {"ready_file", CONFIG_STRING, NULL, 0, 0,
     "file to write the bound API address to once listening (for tests and scripts)"},
};

const size_t controller_n_settings = ELEMENTSOF(controller_settings);

int controller_config_new(Config **ret)
{
        return config_new(controller_settings, controller_n_settings, "GPUSLICE_",
                          "GPUSLICE_AGENT_", ret);
}
