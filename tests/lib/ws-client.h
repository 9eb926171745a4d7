/* SPDX-License-Identifier: MIT */
#pragma once

/* The console tests' WebSocket client: tests/node/console-client.mjs (npm
 * `ws`, pinned in tests/node/package-lock.json) as a child process, driven one
 * JSON command per line, one JSON answer per line (the script lists the
 * commands). One client per test process; connections inside it have ids.
 * Every helper fails the test with what the client saw, after calling
 * ws_client_dump (when set) so the daemons' logs are printed too. */

#include <jansson.h>
#include <stdbool.h>

#include "macro.h"

/* Set by a test: prints its children's logs before a helper fails it. */
extern void (*ws_client_dump)(void);

/* Starts the client (fails the test when node or npm ws is missing). */
void ws_client_start(void);
/* Kills it and removes its temporary directory (safe when not started). */
void ws_client_stop(void);
/* Its stderr file, for a test's log dump (NULL when not started). */
const char *ws_client_log(void);

/* Sends cmd (stolen) and returns the answer (the caller decrefs); fails the
 * test when none comes within the command's timeout_ms + 30 s. */
json_t *ws_call(json_t *cmd);

/* Opens connection id on url; returns the X-Console-Session id (malloc'ed). */
char *ws_connect(const char *id, const char *url);
/* A connect that must be refused before the upgrade with this status and
 * error code (bearer: an Authorization header to send, or NULL); returns the
 * error's details (the caller decrefs). */
json_t *ws_refused(const char *url, const char *bearer, long status, const char *code);
/* A binary frame of the UTF-8 bytes of data. */
void ws_send(const char *id, const char *data);
/* A text frame, as is. */
void ws_send_text(const char *id, const char *text);
void ws_resize(const char *id, int cols, int rows);
/* pause, resume (reading the socket) and close (a normal close). */
void ws_simple(const char *cmd, const char *id);
/* Waits until the output contains needle. */
void ws_expect_output(const char *id, const char *needle, long long timeout_ms);
/* Waits for the close and checks its code and the last control message:
 * type "exit" with exit_code, or type "error" with code (and a message). */
void ws_expect_end(const char *id, long close_code, const char *type, const char *code,
                   long long exit_code);
/* Waits for the close; checks its code only. */
void ws_expect_closed(const char *id, long close_code);
/* The connection's output so far: {bytes, lines, tail, controls, closed}. */
json_t *ws_output(const char *id);
