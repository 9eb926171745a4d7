/* SPDX-License-Identifier: MIT */
#pragma once

/* The console relay (docs/architecture.md "Console"): one WebSocket from a
 * browser, one console session on the allocation's node agent over the agent
 * link (docs/agent-link.md "Console sessions"), bytes relayed both ways.
 *
 * Flow control is by credit in both directions, so neither a slow browser
 * nor a slow terminal makes anyone buffer without bound:
 *   - output: the agent may send terminal bytes up to a byte offset the
 *     controller grants (console.window); the controller grants more only as
 *     the browser's socket drains, so at most console_window_bytes of output
 *     sit in the controller per session and the agent stops reading the PTY;
 *   - input: the controller sends keystrokes up to the offset the agent
 *     grants (console.ack); beyond that it buffers up to console_window_bytes
 *     and then stops reading the browser's socket (TCP pushes back).
 * Link messages to an agent can be dropped by nng (pair1 polyamorous mode
 * drops when a pipe's small queue is full), so everything the controller
 * sends a console agent is idempotent or carries a byte offset and is sent
 * again until acknowledged. Console messages are not commands: nothing is
 * journaled; a lost link ends the session with an error frame.
 *
 * Everything runs on the controller's loop: h2o's HTTP/1 upgrade hands the
 * socket over, wslay frames it. */

#include <stddef.h>
#include <stdint.h>

#include "id.h"
#include "proto.h"

typedef struct Server Server;
typedef struct Request Request;
typedef struct Console Console;

typedef struct ConsoleTarget {
        const char *user_id;
        const char *allocation_id;
        const char *node_id;
        unsigned cols, rows; /* the terminal's first size */
} ConsoleTarget;

/* Counters for tests and operators (also logged when a session ends). */
typedef struct ConsoleStats {
        size_t sessions;          /* live now */
        uint64_t opened, ended;   /* since start */
        size_t peak_out_buffered; /* largest per-session output backlog seen, bytes */
        size_t peak_in_buffered;  /* largest per-session input backlog seen, bytes */
        uint64_t resent;          /* link messages sent again (loss or no ack in time) */
} ConsoleStats;

/* Reads the console_* settings and starts the session timer. */
int console_new(Server *s, Console **ret);
/* Ends every session ("shutting_down"): a SIGTERM'd controller waits for
 * them through server_job_finished(). */
void console_shutdown(Console *c);
void console_free(Console *c);

/* Live sessions (a browser attached) of an allocation, of a user. */
size_t console_count_allocation(const Console *c, const char *allocation_id);
size_t console_count_user(const Console *c, const char *user_id);
ConsoleStats console_stats(const Console *c);

/* Takes over a request that passed every check (token, state, limits): sends
 * 101 with the WebSocket accept key computed from client_key and asks the
 * node's agent to open session_id (cns_..., chosen by the caller so its audit
 * row can name it). Returns 0 (the request is answered) or -errno before
 * anything was sent. */
int console_attach(Console *c, Request *r, const char *client_key, const ConsoleTarget *t,
                   const char *session_id);

/* From the agent link: a console.* message of node_id's authenticated link,
 * and the loss of that link. */
void console_on_link_message(Console *c, const char *node_id, const ProtoEnvelope *env);
void console_on_node_lost(Console *c, const char *node_id);
