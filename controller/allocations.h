/* SPDX-License-Identifier: MIT */
#pragma once

/* Allocations: the rows (allocations, allocation_slots), the launch
 * transaction, release and force release, and what the agent's replies and
 * the tasks' deadlines do to an allocation and its slots. Every function
 * here writes inside the caller's transaction; state changes go through
 * alloc-state.c and slot-state.c, so each is persisted together with its
 * side effects (slots, node command, task, ledger hold, event) or not at all.
 *
 * The provisioner (provisioner.c) owns the event loop side: it batches
 * launches into one transaction, tells the placement index and the agent
 * link after a commit, and runs the deadline timer. */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "alloc-state.h"
#include "catalog.h"
#include "errors.h"
#include "id.h"
#include "placement.h"
#include "timeutil.h"

typedef struct Db Db;
typedef struct Task Task;

#define IDEMPOTENCY_KEY_MAX          255
#define ALLOCATION_REQUEST_HASH_SIZE 32

typedef struct Allocation {
        char id[ID_MAX];
        char user_id[ID_MAX];
        AllocState state;
        char sku_id[ID_MAX];
        unsigned gpu_count;
        char node_id[ID_MAX];
        char image_id[ID_MAX];
        char network_id[ID_MAX];
        json_t *ssh_key_ids;
        json_t *storage;
        int64_t hourly_cost_micros;
        char currency[8];
        char *failure_reason;
        char *release_failed_reason;
        bool billing_stopped;
        usec_t billing_started_at, billing_ended_at, created_at, updated_at, released_at;
        json_t *connection;   /* {host, port, user} or NULL */
        json_t *macs;         /* ["02:..", ...] in slot order; null: the VF's own, unreported */
        json_t *slots;        /* [{id, slot_key, gpus, state}] */
        char task_id[ID_MAX]; /* the newest task */
        long long seq;
} Allocation;

void allocation_done(Allocation *a);
/* The API object (API-CONTRACT.md "Allocation object"). */
json_t *allocation_to_json(const Allocation *a);

/* -ENOENT when there is none (or, with user_id non-NULL, it is another's). */
int allocation_get(Db *db, const char *id, const char *user_id, Allocation *ret);

typedef struct AllocationFilter {
        const char *user_id;  /* NULL: everyone's (admin) */
        const char *state;    /* NULL: any */
        const char *q;        /* substring of id, sku id or name, node id or name */
        long long before_seq; /* 0: from the newest */
        int limit;
} AllocationFilter;

/* Newest first; fn gets each allocation (with slots). */
int allocations_list(Db *db, const AllocationFilter *f,
                     int (*fn)(const Allocation *a, void *userdata), void *userdata);

/* ---- quote and prechecks ---- */

typedef struct Precheck {
        ErrorCode code;
        char message[200];
        json_t *details; /* owned */
} Precheck;

#define PRECHECKS_MAX 4

typedef struct Prechecks {
        Precheck items[PRECHECKS_MAX];
        size_t n;
        int64_t hourly_cost_micros;
} Prechecks;

void prechecks_done(Prechecks *p);
/* The failing prechecks of a launch (sold_out, node_offline,
 * invalid_gpu_count, insufficient_balance), in the order a launch reports
 * them; no side effects. */
int allocation_prechecks(Db *db, Placement *p, const char *user_id, const Sku *sku,
                         unsigned gpu_count, Prechecks *ret);

/* ---- launch ---- */

typedef struct LaunchRequest {
        char user_id[ID_MAX];
        char idempotency_key[IDEMPOTENCY_KEY_MAX + 1];
        uint8_t request_hash[ALLOCATION_REQUEST_HASH_SIZE];
        Sku sku;
        Image image;
        Network network;
        unsigned gpu_count;
        json_t *ssh_key_ids; /* ["key_..."] */
        json_t *ssh_keys;    /* their public key lines */
        json_t *storage;     /* as asked, may be NULL */
} LaunchRequest;

void launch_request_done(LaunchRequest *q);

typedef struct LaunchResult {
        bool ok;
        bool replayed;  /* the same key and body came before: its answer again */
        ErrorCode code; /* when !ok */
        char message[200];
        json_t *details;    /* owned; when !ok */
        json_t *allocation; /* owned: the API object as written (new launches) */
        char allocation_id[ID_MAX];
        char task_id[ID_MAX];
        char node_id[ID_MAX];
        PlacementPick pick; /* the slots taken in the index (n_slots 0: none) */
} LaunchResult;

void launch_result_done(LaunchResult *r);

/* One launch inside the caller's transaction: idempotency, prechecks, then
 * the allocation (pending -> provisioning), the reserved slots, the ledger
 * hold (one hour), the assign command and the provision task. A refused
 * launch returns 0 with !res->ok and writes nothing. The picked slots are
 * marked taken in the index at once (later launches of the same batch must
 * not pick them); if the caller's transaction rolls back it gives them back
 * (launch_result_untake). -EAGAIN: the index was stale (a picked slot was
 * not available in the database); nothing taken, the node should be
 * reloaded and the launch retried. */
int allocations_launch(Db *db, Placement *p, const LaunchRequest *q, usec_t deadline_at,
                       LaunchResult *res);
void launch_result_untake(Placement *p, LaunchResult *res);

/* The VF MAC of a slot in an allocation: locally administered unicast,
 * derived from both ids ("02:..."); ret needs 18 bytes. */
void allocation_slot_mac(const char *allocation_id, const char *slot_id, char ret[static 18]);

/* ---- release ---- */

/* The tenant's release (ALLOC_TRIGGER_RELEASE; also the retry on
 * release_failed) or billing's (ALLOC_TRIGGER_BILLING, reason e.g.
 * insufficient_balance): -> releasing, billing ends now, slots -> cleaning,
 * a release command and task. -ENOENT, -EPERM (*ret_state says where it
 * stands). */
int allocations_release(Db *db, const char *id, AllocTrigger trigger, const char *reason,
                        usec_t deadline_at, char ret_task_id[static ID_MAX],
                        char ret_node_id[static ID_MAX], AllocState *ret_state);

/* An admin's force release: -> released from any state but released,
 * billing stops now, the hold is voided, open commands and tasks of the
 * allocation end, its slots become quarantined, an audit row and the event
 * provisioning.force_release_requested are written, and a release command
 * is sent so a clean teardown returns the slots. -ENOENT, -EPERM. */
int allocations_force_release(Db *db, const char *id, const char *actor_id, const char *reason,
                              usec_t deadline_at, char ret_task_id[static ID_MAX],
                              char ret_node_id[static ID_MAX], AllocState *ret_from);

/* An admin checked a quarantined slot by hand: -> available, audited.
 * -ENOENT (no such slot on the node), -EPERM (*ret_state: not quarantined). */
int allocations_slot_verify(Db *db, const char *node_id, const char *slot_id, const char *actor_id,
                            const char *reason, char ret_state[static 16]);

/* ---- replies and deadlines (the provisioner calls these) ---- */

/* The agent's reply to the task's command (body: the reply envelope's body,
 * {command_id, ok, result, error}). Returns 0, or the node whose commands
 * were added in *ret_node_id ("" when none). */
int allocations_on_reply(Db *db, Task *t, bool ok, json_t *body, usec_t release_deadline_at);
/* The task's deadline passed. */
int allocations_on_timeout(Db *db, Task *t, usec_t release_deadline_at);
/* Allocations still pending (never placed: cannot happen after a committed
 * launch, but a database from elsewhere might have them) fail. */
int allocations_fail_pending(Db *db);
