/* SPDX-License-Identifier: MIT */
#pragma once

/* gpuslice-agent run: one libuv loop that owns the agent link, the journal
 * and the command table. */

#include <stdbool.h>
#include <uv.h>

#include "alloc-ops.h"
#include "config.h"
#include "console.h"
#include "fingerprint.h"
#include "host.h"
#include "journal.h"
#include "link.h"

typedef struct Daemon {
        uv_loop_t *loop;
        const Config *config;
        HostSource host;
        AllocHost *alloc; /* the allocation commands' host (or simulated host) */
        Journal *journal;
        Link *link;
        Consoles *consoles; /* console sessions on PTYs (console.h) */
        char fingerprint[FINGERPRINT_MAX];
        char **in_flight; /* ids of commands being applied (NULL-terminated) */
        uv_signal_t sigterm, sigint;
        bool stopping;
} Daemon;

/* Runs until SIGTERM/SIGINT; returns the exit code (0, 2 bad config, 1 failure). */
int daemon_run(const Config *c);
