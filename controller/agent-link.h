/* SPDX-License-Identifier: MIT */
#pragma once

/* The controller's end of the agent link (docs/agent-link.md): an nng pair1
 * polyamorous socket listening on tls+tcp:// with mutual TLS, the
 * challenge/proof that binds each pipe to one node, hello/welcome,
 * heartbeats, replies, and command delivery.
 *
 * nng runs its own threads; its callbacks only enqueue (received messages
 * and pipe events) and wake the libuv loop, so every database access and
 * all per-pipe state stay on the loop. */

#include <stdbool.h>
#include <stdint.h>

#include "proto.h"
#include "timeutil.h"

typedef struct Server Server;
typedef struct Ca Ca;
typedef struct AgentLink AgentLink;
typedef struct NodeCommand NodeCommand;

/* Listens on the agent_listen setting; the link belongs to s's loop. */
int agent_link_start(Server *s, Ca *ca, AgentLink **ret);
void agent_link_stop(AgentLink *l);

/* tls+tcp://HOST:PORT agents should dial (agent_endpoint, else the bound address). */
const char *agent_link_endpoint(const AgentLink *l);

/* Whether node_id has an authenticated link now, and when it last spoke
 * (wall clock; fresher than the database, which is written in batches). */
bool agent_link_node_online(const AgentLink *l, const char *node_id, usec_t *ret_last_seen);

/* Sends the node's open commands now if it is connected (after a new command
 * was stored). Not connected: they go out at its next hello. */
void agent_link_flush_commands(AgentLink *l, const char *node_id);
/* Sends the node's commands that were never sent (state pending), if it is
 * connected; the ones sent and not answered yet are left alone (they go
 * again at its next hello). Marking them sent writes the database: callers
 * sending for many nodes wrap the calls in one transaction. */
void agent_link_send_new_commands(AgentLink *l, const char *node_id);

/* Sends one message that is not a command (console.*) on the node's link:
 * 0, -ENOTCONN (no welcomed link) or -EAGAIN (nng's queue is full). nng may
 * still drop a sent message when the pipe's own queue is full (pair1
 * polyamorous mode), so callers resend until the agent acknowledges. */
int agent_link_send(AgentLink *l, const char *node_id, const char *type, ProtoWriter *body);

/* Closes the node's link (its certificates were revoked). */
void agent_link_drop_node(AgentLink *l, const char *node_id, const char *code, const char *message);
