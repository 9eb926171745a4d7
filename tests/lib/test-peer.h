/* SPDX-License-Identifier: MIT */
#pragma once

/* A test-only agent-link peer (docs/agent-link.md) and the enrollment and
 * admin helpers the node tests share. The peer dials the controller's
 * tls+tcp:// endpoint with nng, answers link.challenge with link.auth, sends
 * link.hello and heartbeats, and answers command.discover with a given
 * document. Options let a test make it misbehave the ways the link must
 * refuse: a foreign certificate, another node's id, another protocol
 * version, silence. It is no agent: the real one lives in agent/. */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "harness.h"
#include "proto.h"

/* ---- admin and enrollment over the API ---- */

/* Creates (create-admin) and signs in an admin, or with role
 * "billing_operator" such an operator; fills t. */
void admin_sign_in(Controller *c, const char *email, const char *role, Tokens *t);

typedef struct EnrolledNode {
        char node_id[64];
        char *token;    /* the bootstrap token (spent) */
        char *key_pem;  /* the node's private key */
        char *cert_pem; /* signed by the controller's CA */
        char *ca_pem;
        char *endpoint; /* agent_endpoint */
} EnrolledNode;

/* POST /admin/nodes {name}, then enroll with a fresh P-256 key. */
void node_create_and_enroll(Controller *c, const char *admin, const char *name, EnrolledNode *ret);
void enrolled_node_done(EnrolledNode *n);

/* ---- the peer ---- */

typedef struct TestPeer TestPeer;

typedef struct PeerOptions {
        const char *endpoint;
        const char *node_id;  /* in every envelope */
        const char *tls_cert; /* client certificate for TLS */
        const char *tls_key;
        const char *ca_pem;     /* to verify the controller */
        const char *proof_cert; /* link.auth certificate (default tls_cert) */
        const char *proof_key;  /* signs the challenge (default tls_key) */
        uint64_t version;       /* envelope v to send (0: PROTO_VERSION) */
        unsigned heartbeat_ms;  /* 0: never (a hung agent) */
        json_t *discovery;      /* the document command.discover answers with (borrowed) */
        bool ignore_commands;   /* receive commands but never reply */
        bool reply_twice;       /* send every reply two times */
        bool no_redial;         /* never redial once a connection is gone (as the agent) */
        const char *agent_version;
        /* Called on the peer's thread for every message that is neither
         * link.* nor command.* (the console's); may call peer_send_message(). */
        void (*on_message)(TestPeer *p, const ProtoEnvelope *env, void *userdata);
        void *userdata;
} PeerOptions;

TestPeer *peer_start(const PeerOptions *o);
/* Sends one message of any type with a fresh id (thread-safe). */
void peer_send_message(TestPeer *p, const char *type, ProtoWriter *body);
void peer_stop(TestPeer *p);

/* Counters and last values, read under the peer's lock. */
typedef struct PeerStats {
        int challenges, welcomes, acks, commands, replies;
        uint64_t last_epoch; /* from the last challenge */
        char last_error[64]; /* code of the last link.error received */
        char last_command_id[80];
} PeerStats;
PeerStats peer_stats(TestPeer *p);

/* Polls until pred(stats) holds or timeout_ms passes; returns whether it held. */
bool peer_wait(TestPeer *p, bool (*pred)(const PeerStats *s, void *u), void *u,
               long long timeout_ms);
bool peer_wait_welcomes(TestPeer *p, int n, long long timeout_ms);
bool peer_wait_error(TestPeer *p, const char *code, long long timeout_ms);

/* A free TCP port on 127.0.0.1 (bound and released). */
unsigned free_port(void);
