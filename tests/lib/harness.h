/* SPDX-License-Identifier: MIT */
#pragma once

/* The integration test harness: runs the real gpuslice-controller binary as a
 * child on a free loopback port with a private state directory, talks real
 * HTTP to it through libcurl, and reads its SQLite file (read-only) so tests
 * can check that a refused request changed nothing.
 *
 * Nothing here sleeps for a fixed time to "wait for" the controller: every
 * wait polls a condition until a deadline. */

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "macro.h"

#define HARNESS_MAX_ARGS 64
#define HARNESS_MAX_ENV  16

/* ---- temporary directories ---- */

/* mkdtemp under $TMPDIR (or /tmp); the result is malloc'ed. Aborts the test on failure. */
char *tmpdir_new(const char *tag);
/* rm -rf; errors ignored. */
void tmpdir_remove(const char *path);
/* Writes a whole file (creating or truncating it). 0 or -errno. */
int write_file(const char *path, const char *content);
/* Reads a whole file into a malloc'ed NUL-terminated string (NULL on error). */
char *read_file(const char *path);

/* asprintf that fails the test instead of returning NULL. */
char *xasprintf(const char *fmt, ...) _printf_(1, 2);

/* A well-formed OpenSSH public key line, "ssh-ed25519 AAAA... comment", whose
 * 32 key bytes are derived from seed (distinct seeds: distinct keys and
 * fingerprints). Not a usable key (nobody has its private half): for tests
 * of the SSH key routes. malloc'ed. */
char *ssh_test_public_key(unsigned seed, const char *comment);

/* Monotonic milliseconds, for deadlines. */
long long mono_ms(void);

/* ---- the controller process ---- */

typedef struct Controller {
        pid_t pid;       /* 0 when not running */
        char *root;      /* temp dir owning everything below */
        char *state_dir; /* root/state */
        char *ready_file;
        char *stderr_path; /* the controller's stderr, appended over restarts */
        char url[256];     /* from the ready file: http://127.0.0.1:PORT */
        char *cainfo;      /* CA file for https (tests set it with TLS) */
        char *args[HARNESS_MAX_ARGS];
        size_t n_args;
        char *env[HARNESS_MAX_ENV];
        size_t n_env;
        int wait_status; /* raw status of the last exit, -1 when none yet */
} Controller;

/* A controller in a fresh temp dir, not started. The default arguments are
 * --listen 127.0.0.1:0 --state-dir --ready-file --password-scrypt-log-n 10
 * --agent-listen 127.0.0.1:0;
 * arguments added later come after them, so they override. */
Controller *ctl_new(void);
/* Adds arguments (NULL-terminated list), kept for restarts. */
void ctl_args(Controller *c, ...) __attribute__((sentinel));
/* Adds KEY=VALUE to the child's environment (the harness passes on the test's
 * environment without GPUSLICE_* variables, plus these). */
void ctl_env(Controller *c, const char *key_value);
/* Starts the binary and waits (bounded) for the ready file. 0 when ready;
 * -ECHILD when it exited first (wait_status set); -ETIMEDOUT. */
int ctl_start(Controller *c);
/* ctl_start that fails the test (with the controller's stderr) unless ready. */
void ctl_start_or_fail(Controller *c);
/* Sends sig and waits up to timeout_ms for the exit. Returns the raw wait
 * status, or -ETIMEDOUT (the process is then killed with SIGKILL). */
int ctl_stop(Controller *c, int sig, long long timeout_ms);
/* SIGTERM, and fails the test unless it exits 0 in time (an ASan report or
 * a leak at exit makes the exit code non-zero). */
void ctl_stop_clean(Controller *c);
/* kill -9 and reap. */
void ctl_kill9(Controller *c);
/* Waits for an exit without sending anything (a controller refusing to start). */
int ctl_wait_exit(Controller *c, long long timeout_ms);
/* The captured stderr so far (malloc'ed). */
char *ctl_stderr(Controller *c);
/* Kills a running child and removes the temp dir. */
void ctl_free(Controller *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Controller *, ctl_free);
#define _cleanup_ctl_ _cleanup_(ctl_freep)

/* A throwaway self-signed EC certificate for 127.0.0.1/localhost made with
 * openssl under dir; *cert and *key get malloc'ed paths. Fails the test on error. */
void tls_self_signed_cert(const char *dir, char **cert, char **key);

/* host and port of the running controller. */
void ctl_host_port(const Controller *c, char host[static 64], unsigned *port);

/* Runs the controller binary with exactly argv[1..] (argv[0] ignored, NULL
 * terminated) and the filtered environment plus extra_env (NULL-terminated,
 * may be NULL); captures stdout and stderr. Returns the raw wait status or
 * -ETIMEDOUT. */
typedef struct CliResult {
        int status; /* raw wait status */
        char *out;
        char *err;
} CliResult;
int cli_run(const char *const *argv, const char *const *extra_env, long long timeout_ms,
            CliResult *ret);
void cli_result_done(CliResult *r);
/* exit code, or -1 when killed by a signal */
int cli_exit_code(int wait_status);

/* ---- HTTP client ---- */

typedef struct HttpRequest {
        const char *method;
        const char *path;
        const char *body; /* NULL: none */
        size_t body_len;  /* 0: strlen(body) */
        const char *bearer;
        const char *content_type; /* default application/json when there is a body */
        const char *request_id;   /* X-Request-Id to send */
        const char *extra_header; /* one "Name: value" line */
        long http_version;        /* CURL_HTTP_VERSION_*; 0: 1.1 */
        const char *source_ip;    /* local address to connect from (127.0.0.2...) */
} HttpRequest;

typedef struct HttpResponse {
        CURLcode curl_code;
        long status;
        long http_version; /* CURL_HTTP_VERSION_1_1 / _2_0 */
        char *body;
        size_t body_len;
        json_t *json; /* the parsed body, NULL when it is not JSON */
        char *request_id, *retry_after, *allow, *content_type;
} HttpResponse;

HttpResponse *http_send(const Controller *c, const HttpRequest *rq);
void http_response_free(HttpResponse *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpResponse *, http_response_free);
#define _cleanup_resp_ _cleanup_(http_response_freep)

/* Shorthands over http_send; the transfer itself must succeed (else the test fails). */
HttpResponse *api_get(const Controller *c, const char *path, const char *bearer);
HttpResponse *api_post(const Controller *c, const char *path, const char *bearer, const char *body);

/* Dotted lookup into a JSON body: "error.details.field", "items.0.id" (array
 * indices). NULL when absent. */
json_t *jget(const HttpResponse *r, const char *dotted);
/* The string at a dotted path, or NULL. */
const char *jstr(const HttpResponse *r, const char *dotted);

/* Asserts the contract's error envelope: status, code, a message, details
 * object, request_id equal to the X-Request-Id header. */
void assert_error(const HttpResponse *r, long status, const char *code);
/* assert_error for 400 invalid_request plus details.field. */
void assert_invalid_field(const HttpResponse *r, const char *field);

/* ---- sign-in helpers ---- */

typedef struct Tokens {
        char access[128];
        char refresh[128];
        char user_id[64];
} Tokens;

/* JSON-escape-free helpers: the test strings are plain. Return the HTTP status;
 * tokens are filled on success (t may be NULL). */
long api_signup(const Controller *c, const char *email, const char *password, const char *name,
                Tokens *t);
long api_login(const Controller *c, const char *email, const char *password, Tokens *t);
long api_refresh(const Controller *c, const char *refresh_token, Tokens *t);

/* ---- the database, read from the outside ---- */

/* The row counts a refused request must leave alone. */
typedef struct DbCounts {
        long long users, sessions, live_sessions, access_tokens, refresh_tokens;
} DbCounts;

/* One integer from a scalar query on a read-only connection to the state
 * dir's database (fails the test on error). */
long long db_scalar(const Controller *c, const char *sql);
DbCounts db_counts(const Controller *c);
void assert_counts_equal(DbCounts a, DbCounts b);
/* Runs SQL on a read-write connection (fault injection: expire a token, bump
 * the schema). Fails the test on error. */
void db_exec_rw(const Controller *c, const char *sql);

/* ---- raw sockets (for what libcurl will not do: trickling) ---- */

/* Connected TCP socket to the controller, or -errno. */
int tcp_connect(const Controller *c);
/* Reads until EOF or until deadline; appends into buf (NUL-terminated).
 * Returns 1 on EOF (peer closed or reset), 0 on deadline. */
int tcp_read_until_closed(int fd, char *buf, size_t size, long long deadline_ms);
