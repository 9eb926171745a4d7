/* SPDX-License-Identifier: MIT */
#pragma once

/* Commands to nodes (docs/agent-link.md, "Delivery"): every command is stored
 * before it is sent (id, node, type, JSON body, state pending|sent|done|failed)
 * and resent while it is open, so delivery is at least once; a reply for a
 * command already finished is ignored, so its effect happens at most once. */

#include <jansson.h>
#include <stdbool.h>

#include "id.h"
#include "proto.h"

typedef struct Db Db;

#define NODE_COMMAND_TYPE_MAX 48

typedef struct NodeCommand {
        char id[ID_MAX];
        char node_id[ID_MAX];
        char type[NODE_COMMAND_TYPE_MAX + 1];
        char *body; /* JSON object text */
        char state[16];
} NodeCommand;

void node_command_done(NodeCommand *c);

/* Stores a pending command; its id ("cmd_...") goes into ret_id. body is borrowed. */
int node_command_create(Db *db, const char *node_id, const char *type, json_t *body,
                        char ret_id[static ID_MAX]);
int node_command_get(Db *db, const char *id, NodeCommand *ret);
/* The node's open (pending or sent) commands, oldest first. */
int node_commands_open(Db *db, const char *node_id, int (*fn)(const NodeCommand *c, void *userdata),
                       void *userdata);
int node_command_mark_sent(Db *db, const char *id);
/* Closes an open command with its reply (JSON, borrowed). 0 when this call
 * closed it, -EALREADY when it was closed before, -ENOENT when unknown. */
int node_command_finish(Db *db, const char *id, bool ok, json_t *reply);

/* msgpack <-> JSON for bodies: the link carries msgpack, the store JSON.
 * Binary values become base64url strings; map keys are strings already. */
int proto_value_to_json(const ProtoValue *v, json_t **ret);
int proto_write_json(ProtoWriter *w, json_t *v);
