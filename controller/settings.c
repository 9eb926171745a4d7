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
    {"ready_file", CONFIG_STRING, NULL, 0, 0,
     "file to write the bound API address to once listening (for tests and scripts)"},
};

const size_t controller_n_settings = ELEMENTSOF(controller_settings);

int controller_config_new(Config **ret)
{
        return config_new(controller_settings, controller_n_settings, "GPUSLICE_",
                          "GPUSLICE_AGENT_", ret);
}
