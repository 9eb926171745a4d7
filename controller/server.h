/* SPDX-License-Identifier: MIT */
#pragma once

/* The controller process: one libuv loop running h2o (HTTP/1.1, HTTP/2, TLS
 * when configured), the SQLite store, and graceful shutdown on SIGTERM/SIGINT:
 * stop accepting, let in-flight requests and background jobs finish (bounded
 * by shutdown_timeout_s), close the database cleanly. */

#include <stdbool.h>
#include <uv.h>

#include "config.h"
#include "db.h"
#include "ratelimit.h"
#include "session-cache.h"
#include "sessions.h"

typedef struct Request Request;

typedef struct Server {
        uv_loop_t *loop;
        Config *config;
        Db *db;
        SessionPolicy session_policy;
        unsigned scrypt_log_n;
        RateLimiter *login_account_rl;
        RateLimiter *login_address_rl;
        SessionCache *session_cache;
        char *public_url;
        struct OidcProviders *oidc; /* single sign-on providers and their caches */
        struct Ca *ca;              /* the node CA (<state_dir>/ca) */
        struct AgentLink *link;     /* the agent link (nng, tls+tcp) */
        struct Console *console;    /* console sessions (WebSocket <-> agent) */
        struct Metering *metering;  /* usage charges on a timer (metering.h) */
        struct Placement *placement; /* free approved slots (placement.h), made at start */
        struct Provisioner *provisioner; /* drives allocation tasks (provisioner.h) */
        uint64_t epoch;             /* controller epoch, bumped at each start */
        usec_t started_at;
        bool shutting_down;
        size_t inflight_requests;
        size_t inflight_jobs;
        struct ServerInternal *internal;
} Server;

/* Runs the controller until SIGTERM/SIGINT. Returns 0 or -errno. */
int server_run(Config *config);

uv_loop_t *server_loop(Server *s);
void server_job_started(Server *s);
void server_job_finished(Server *s);
/* Headers every API response carries (security and caching). */
void server_add_common_headers(Request *r);
/* Records a 429 in the audit log (action http.rate_limited), at most once a
 * minute per scope and key, so a flood cannot fill the database. */
void server_audit_rate_limited(Request *r, const char *scope, const char *key,
                               unsigned retry_after_s);

/* Opens <state_dir>/gpuslice.db (creating state_dir 0700). */
int server_open_db(const char *state_dir, Db **ret);
