/* SPDX-License-Identifier: MIT */
#pragma once

/* The agent's end of the agent link (docs/agent-link.md): dials the
 * controller with nng pair1 over tls+tcp (mutual TLS), answers the challenge
 * with the node key's proof, says hello, keeps application heartbeats and
 * redials with jittered backoff whenever the pipe closes, the peer refuses
 * us, or no ack arrives within the heartbeat timeout (a hung connection).
 *
 * Threads: nng runs its own. Its callbacks only queue an event and wake the
 * libuv loop (uv_async_send); everything else, sends included, happens on
 * the loop thread. Each connection attempt gets a fresh socket, so nothing
 * queued for a dead connection is ever delivered on the next one. */

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "backoff.h"
#include "proto.h"

typedef enum {
        LINK_BACKOFF,         /* waiting to redial */
        LINK_DIALING,         /* TCP + TLS handshake */
        LINK_AWAIT_CHALLENGE, /* connected, the controller speaks first */
        LINK_AWAIT_WELCOME,   /* proof and hello sent */
        LINK_READY,           /* welcomed: heartbeats and commands */
        LINK_STOPPED,
} LinkState;

const char *link_state_to_string(LinkState s);

typedef struct Link Link;

typedef struct LinkOptions {
        const char *endpoint; /* tls+tcp://HOST:PORT */
        const char *node_id;
        const char *key_file, *cert_file, *ca_file;
        const char *server_name;                            /* NULL: the endpoint's host */
        unsigned heartbeat_interval_s, heartbeat_timeout_s; /* until a welcome says otherwise */
        BackoffRandom random;                               /* NULL: OpenSSL's */
        void *random_userdata;
} LinkOptions;

typedef struct LinkCallbacks {
        /* Writes the body map of link.hello. */
        int (*hello)(void *userdata, ProtoWriter *w);
        /* A command.* envelope, only while LINK_READY. */
        void (*command)(void *userdata, const ProtoEnvelope *env);
        /* Optional: a console.* envelope (not a command: no journal, no
         * reply), only while LINK_READY. */
        void (*console)(void *userdata, const ProtoEnvelope *env);
        /* Optional: every state change. */
        void (*state_changed)(void *userdata, LinkState state);
        void *userdata;
} LinkCallbacks;

typedef struct LinkStats {
        unsigned dials, connects, welcomes, hung, refused, version_mismatches;
        uint64_t heartbeats_sent, acks;
        uint64_t last_backoff_ms;
} LinkStats;

/* Reads the key and certificates (errors name the file) and prepares the
 * TLS configuration; does not dial yet. */
int link_new(uv_loop_t *loop, const LinkOptions *o, const LinkCallbacks *cb, Link **ret);
/* Starts dialing. */
void link_start(Link *l);
/* Stops (closing the connection) and frees the link once its libuv handles
 * are closed; done (may be NULL) runs then. */
void link_close(Link *l, void (*done)(void *userdata), void *userdata);

/* Sends one message on the current connection: -ENOTCONN unless LINK_READY
 * (-EAGAIN when nng's queue is full). The envelope gets a fresh id, the node
 * id and the controller's epoch. */
int link_send(Link *l, const char *type, const ProtoWriter *body);
/* Same with a finished body (bytes of one msgpack map). */
int link_send_body(Link *l, const char *type, const void *body, size_t len);

LinkState link_state(const Link *l);
uint64_t link_epoch(const Link *l);
const LinkStats *link_stats(const Link *l);
