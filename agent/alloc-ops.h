/* SPDX-License-Identifier: MIT */
#pragma once

/* An allocation's host side: command.allocation.assign and
 * command.allocation.release of docs/agent-link.md ("Allocation commands").
 * One command carries every slot of the allocation on this node:
 *
 *   assign:  slot_assign() for each slot in order, with no hook (the first
 *            failure stops there: later slots are "not_attempted"), then the
 *            runtime hook's start once with every vfio device of the
 *            allocation, the tenant's keys in <runtime_dir>/authorized_keys;
 *            the connection comes from the hook's {"ssh":{...}} output, else
 *            the node's public address, port 22, the image's ssh_user.
 *   release: the hook's stop once (when it fails nothing is torn down: a
 *            workload may still hold the devices), then slot_teardown() for
 *            EVERY slot, a failing slot not stopping the others; the
 *            allocation's runtime directory is removed once stop succeeded.
 *
 * Every step is idempotent, so a command is applied again after an agent
 * restart. On a simulated host (simulated-ops.h) the slot steps act on the
 * simulated state and its fault rules also gate the hook's start and stop;
 * the hook itself runs for real. Commands are serialized: one allocation
 * command changes the host at a time. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "host.h"
#include "proto.h"
#include "slot-ops.h"

#define ALLOC_MAX_SLOTS    64
#define ALLOC_MAX_GPUS     16 /* per slot */
#define ALLOC_MAX_SSH_KEYS 64
#define ALLOC_SSH_KEY_MAX  16384
#define ALLOC_SSH_PORT     22

typedef enum {
        ALLOC_ASSIGN,
        ALLOC_RELEASE,
} AllocKind;

typedef struct AllocSlot {
        char *slot_id;  /* the controller's slt_... */
        char *slot_key; /* the discovery's slot id */
        char **gpus;    /* NULL-terminated PCI addresses */
        size_t n_gpus;
        char *nic; /* the NIC PF, or NULL */
        unsigned vf_index;
        char *nvme; /* or NULL */
        uint8_t mac[6];
        bool has_mac; /* assign: false for a nil MAC (the VF keeps its own) */
} AllocSlot;

typedef struct AllocRequest {
        AllocKind kind;
        char *allocation_id;
        /* assign only */
        char *image_id, *image_name, *image_source, *ssh_user;
        char *network_id;
        unsigned vlan; /* 0: untagged */
        bool spoofchk, trust;
        char **ssh_keys; /* NULL-terminated OpenSSH public key lines */
        AllocSlot *slots;
        size_t n_slots;
} AllocRequest;

/* Reads and checks a command body strictly (every field of the wire format,
 * its type and range; no unknown field; ids usable as file names; PCI
 * addresses canonical; MACs unicast; no device or VF in two slots). -EPROTO
 * with a sentence naming the field in *reason, -ENOMEM. */
int alloc_request_parse(AllocKind kind, const ProtoValue *body, AllocRequest **ret, char **reason);
AllocRequest *alloc_request_free(AllocRequest *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(AllocRequest *, alloc_request_free);

typedef struct AllocSlotResult {
        const char *slot_id; /* the request's */
        bool attempted;
        int error;               /* 0 or -errno */
        const char *reason;      /* the contract's reason, NULL when ok */
        const char *wipe_method; /* release: the method, "none" without a drive, "simulated" */
        SlotReport report;
} AllocSlotResult;

typedef struct AllocResult {
        AllocKind kind;
        const char *allocation_id;
        AllocSlotResult *slots;
        size_t n_slots;
        bool workload_ok;
        const char *workload_reason;
        unsigned long long workload_ms;
        bool has_connection;
        char *conn_host, *conn_user;
        unsigned conn_port;
        const char *error_code; /* the first failure's reason; NULL when ok */
        char *error_message;
} AllocResult;

void alloc_result_done(AllocResult *r);

typedef struct AllocHost AllocHost;

/* The node's planned VF count of a NIC PF: one per slot its slot map plans
 * on it (the highest VF index + 1). */
typedef struct AllocVfPlan {
        const char *pf;
        unsigned num_vfs;
} AllocVfPlan;

typedef struct AllocHostOptions {
        const char *state_dir;
        bool simulated;              /* the slot steps act on <state_dir>/simulated-host */
        const char *root;            /* host root of the slot steps ("/") */
        const char *hook_dir;        /* runtime hooks */
        const char *hook;            /* NULL: no workload is started */
        const char *runtime_dir;     /* per-allocation dirs; NULL: <state_dir>/runtime */
        const char *public_address;  /* NULL: the host name */
        const char *gpu_host_driver; /* NULL: GPUs stay on vfio-pci after a teardown */
        unsigned step_timeout_ms, hook_timeout_ms, wipe_timeout_ms;
        /* A PF without VFs gets its planned count; one not listed: the slot's
         * VF index + 1. */
        const AllocVfPlan *vf_plan;
        size_t n_vf_plan;
} AllocHostOptions;

int alloc_host_new(const AllocHostOptions *o, AllocHost **ret);
/* From the agent's settings (hook, hook_dir, runtime_dir, public_address,
 * gpu_host_driver, step/hook/wipe_timeout_s; with --simulate the shipped
 * simulated-shell hook by default) and the VF plan of the source's slot map
 * (agent/alloc-config.c). */
int alloc_host_from_config(const Config *c, const HostSource *source, AllocHost **ret);
AllocHost *alloc_host_free(AllocHost *h);
/* The runtime hook (NULL when none is configured), its directory, and the
 * directory holding each allocation's runtime directory (<runtime_dir>/<id>):
 * what the console (console.h) runs the hook's console verb with. */
void alloc_host_hook(const AllocHost *h, const char **ret_hook_dir, const char **ret_hook,
                     const char **ret_runtime_dir);
DEFINE_TRIVIAL_CLEANUP_FUNC(AllocHost *, alloc_host_free);

/* Apply the command; the result is always filled in (ret->error_code says
 * whether it succeeded). -ENOMEM or -EINVAL only when nothing was done. */
int alloc_assign(AllocHost *h, const AllocRequest *req, AllocResult *ret);
int alloc_release(AllocHost *h, const AllocRequest *req, AllocResult *ret);

/* The reply body {command_id, ok, result, error} (malloc'ed msgpack map). */
int alloc_reply_body(const char *command_id, const AllocResult *r, void **ret, size_t *ret_len);
