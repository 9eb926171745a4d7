/* SPDX-License-Identifier: MIT */
#pragma once

/* The commands the controller sends (command.<name>, docs/agent-link.md):
 * one table wires each type to its handler. Dispatch makes delivery "at
 * least once" into "applied at most once" with the journal: a command id
 * already done is answered with its stored reply, one being applied is
 * ignored (its reply follows), a new one is journaled as started, applied
 * off the loop thread, journaled done with its reply, then answered. */

#include "daemon.h"
#include "proto.h"

void command_dispatch(Daemon *d, const ProtoEnvelope *env);

/* A reply body {command_id, ok, result: nil, error: {code, message} | nil}
 * (malloc'ed msgpack map), for replies without a result. */
int command_reply_body(const char *command_id, bool ok, const char *error_code,
                       const char *error_message, void **ret, size_t *ret_len);
