/* SPDX-License-Identifier: MIT */
#pragma once

/* Console sessions, agent side (docs/agent-link.md "Console sessions"): on
 * console.open the runtime hook's console verb runs attached to a new PTY
 * (forkpty: its own session and process group, the PTY its controlling
 * terminal) with the same argv and environment as the other verbs
 * (hook_exec()), plus GPUSLICE_TERM. Terminal bytes go both ways in bounded
 * chunks:
 *   - output: the PTY is read only while the controller's credit
 *     (console.open's window, console.window's limit) allows, so a slow
 *     browser stops the reading and the kernel's PTY buffer pushes back on
 *     the program;
 *   - input: at most `input_window` bytes wait for the PTY; console.ack tells
 *     the controller how far it may send.
 * console.resize sets the window size (TIOCSWINSZ; the kernel signals
 * SIGWINCH). console.close sends SIGHUP and SIGTERM to the process group,
 * SIGKILL after a grace period. Every child is reaped; its exit status goes
 * back in console.closed. A lost link ends every session the same way, with
 * nothing sent (the controller has forgotten them).
 *
 * Everything runs on the daemon's loop; nothing here blocks. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "proto.h"

/* What runs for an allocation's console: the hook and its context. Every
 * field is malloc'ed and freed by console_hook_done(). */
typedef struct ConsoleHook {
        char *hook_dir;
        char *hook;
        char *slot_id;
        char *runtime_dir;
        char **vfio_devices; /* NULL-terminated, may be NULL */
        char **env;          /* extra "GPUSLICE_NAME=value", NULL-terminated, may be NULL */
} ConsoleHook;

void console_hook_done(ConsoleHook *h);

/* Fills the hook for allocation_id: 0; -ENOENT when the allocation is not
 * on this node; -ENOTSUP when this node has no runtime hook. */
typedef int (*ConsoleResolveFn)(void *userdata, const char *allocation_id, ConsoleHook *ret);

/* Sends one message on the link: 0, -EAGAIN (try again soon) or another
 * -errno (the link is down: the message is gone). */
typedef int (*ConsoleSendFn)(void *userdata, const char *type, const ProtoWriter *body);

typedef struct ConsolesOptions {
        uv_loop_t *loop;
        ConsoleResolveFn resolve;
        ConsoleSendFn send;
        void *userdata;         /* of both */
        unsigned max_sessions;  /* 0: 32 */
        size_t input_window;    /* 0: 64 KiB */
        unsigned kill_grace_ms; /* SIGHUP/SIGTERM to SIGKILL; 0: 2000 */
} ConsolesOptions;

typedef struct Consoles Consoles;

typedef struct ConsolesStats {
        size_t sessions;
        uint64_t opened, closed, refused;
        uint64_t bytes_out, bytes_in;
        size_t peak_input_buffered; /* bytes waiting for the PTY, largest seen */
} ConsolesStats;

int consoles_new(const ConsolesOptions *o, Consoles **ret);
/* A console.* message from the controller. */
void consoles_message(Consoles *c, const ProtoEnvelope *env);
/* The link is gone: every session ends (process group killed), silently. */
void consoles_link_lost(Consoles *c);
/* Ends every session like consoles_link_lost() and frees everything once the
 * children are reaped and the handles closed; done (may be NULL) runs then. */
void consoles_close(Consoles *c, void (*done)(void *userdata), void *userdata);
ConsolesStats consoles_stats(const Consoles *c);
