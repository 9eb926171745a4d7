/* SPDX-License-Identifier: MIT */
#pragma once

/* A small simulated cloud for end-to-end tests, all real processes on
 * loopback: the gpuslice-controller (harness.h) and one or more hosts, each
 * enrolled by scripts/bootstrap.sh --simulate and run by the real
 * `gpuslice-agent run --simulate`, discovered and approved through the admin
 * API; a catalog (a SKU selling the hosts' GPU model, an image, a network)
 * and users with ledger credit, also through the API. Helpers launch, follow
 * tasks and allocations, count slots, inject host faults (the simulated
 * host's faults file, docs/host-operations.md "Simulated host") and check
 * what must hold whatever happened (cloud_check_invariants).
 *
 * One cloud per test process (Criterion forks each test): the cloud made
 * last is the one whose logs a failed ensure() prints. The helpers fail the
 * test through Criterion, so they belong to the test's main thread. Every
 * wait polls a condition until a generous deadline (a loaded 2-core machine
 * runs these under sanitizers); nothing sleeps for a fixed time to wait. */

#include <criterion/criterion.h>
#include <stdbool.h>
#include <sys/types.h>

#include "harness.h"
#include "test-peer.h"

#define CLOUD_DEADLINE_MS 60000
#define CLOUD_MAX_HOSTS   8
#define CLOUD_MAX_SLOTS   16
#define CLOUD_PASSWORD    "correct horse battery"

typedef struct CloudHost {
        char *root, *prefix, *conf, *boot_out, *agent_log, *faults;
        char name[32];
        char node_id[64];
        pid_t agent;     /* 0 when not running */
        char pci_id[16]; /* vendor:device of its GPUs, from the discovery */
        size_t n_slots;  /* approved */
        char slot_ids[CLOUD_MAX_SLOTS][64];
        char slot_nvme[CLOUD_MAX_SLOTS][16]; /* the slot's NVMe drive, "" when none */
} CloudHost;

typedef enum CloudApprove {
        CLOUD_APPROVE_ALL,  /* every candidate slot */
        CLOUD_APPROVE_NVME, /* only the slots that have an NVMe drive */
} CloudApprove;

typedef struct CloudOptions {
        /* Controller arguments after the defaults (--heartbeat-interval-s 1,
         * no rate limits), NULL-terminated. */
        const char *const *controller_args;
        /* --listen and --agent-listen on fixed free ports, so HTTP clients and
         * agents find a restarted controller at the same addresses. */
        bool fixed_ports;
        size_t n_hosts;       /* 0: one */
        const char *topology; /* hwloc XML for the hosts; NULL: the agent's (LLNL Tioga) */
        CloudApprove approve;
        long long price_per_gpu_hour_micros; /* the SKU's; 0: 2,000,000 */
        bool no_catalog;                     /* no SKU, image or network */
} CloudOptions;

typedef struct Cloud {
        Controller *c;
        Tokens admin;
        CloudHost *hosts[CLOUD_MAX_HOSTS];
        size_t n_hosts;
        CloudHost *host; /* hosts[0] */
        char sku_id[64], image_id[64], network_id[64];
} Cloud;

/* Controller, hosts (each online, discovered, approved) and catalog as o
 * says (NULL: the defaults). */
Cloud *cloud_new(const CloudOptions *o);
/* Kills what still runs and removes the temp dirs; NULL is fine. */
void cloud_free(Cloud *cl);

/* The pieces cloud_new() is made of. */
Cloud *cloud_new_empty(void);
void cloud_controller_start(Cloud *cl, const CloudOptions *o);
CloudHost *cloud_host_add(Cloud *cl, const char *topology, CloudApprove approve);
void cloud_catalog_create(Cloud *cl, long long price_per_gpu_hour_micros);

/* Starts the controller again (after ctl_kill9 or ctl_stop) in its state
 * dir with its arguments, waiting for it up to twice CLOUD_DEADLINE_MS (a
 * loaded machine may take longer than the harness's ctl_start allows). */
void cloud_controller_restart(Cloud *cl);

/* The controller's stderr and every host's bootstrap and agent output, the
 * ends of them, on stderr. */
void cloud_dump_logs(void);

#define ensure(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        cloud_dump_logs();                                                         \
                        cr_assert_fail(__VA_ARGS__);                                               \
                }                                                                                  \
        } while (0)

void pause_ms(long ms);

/* ---- hosts ---- */

void cloud_agent_start(CloudHost *h);
void cloud_agent_kill9(CloudHost *h);
/* SIGSTOP/SIGCONT: a frozen agent keeps its connection, so its node stays
 * online for the controller (until the heartbeat timeout) while nothing is
 * answered. */
void cloud_agent_freeze(CloudHost *h, bool frozen);
/* Replaces the simulated host's fault rules ("" clears them). */
void cloud_set_faults(CloudHost *h, const char *rules);
/* Waits until the admin API says the node is (or is not) online. */
bool cloud_node_online(Cloud *cl, const CloudHost *h, bool want);

/* ---- users and the API ---- */

/* POST as the admin, 201 expected; the new object's id (malloc'ed). */
char *cloud_admin_create(Cloud *cl, const char *path, const char *body);
/* An admin credit to the user's ledger account. */
void cloud_credit(Cloud *cl, const Tokens *user, long long micros);
/* Signs a user up (CLOUD_PASSWORD) and credits them when credit_micros > 0. */
void cloud_user(Cloud *cl, const char *email, Tokens *t, long long credit_micros);
HttpResponse *cloud_get(Cloud *cl, const char *token, const char *fmt, ...) _printf_(3, 4);
/* A launch body for the catalog's SKU, image and network (malloc'ed). */
char *cloud_launch_body(Cloud *cl, unsigned gpus);
/* POST /api/v1/allocations with the key (NULL: no Idempotency-Key). */
HttpResponse *cloud_launch(Cloud *cl, const char *token, const char *key, const char *body);
/* Launches gpus, expects 202 and a provision task that succeeds; fills id. */
void cloud_launch_active(Cloud *cl, const Tokens *u, unsigned gpus, const char *key,
                         char id[static 64]);
/* Polls the task until it leaves running; returns it. */
HttpResponse *cloud_task_wait(Cloud *cl, const char *token, const char *task_id);
HttpResponse *cloud_alloc_get(Cloud *cl, const char *token, const char *id);
/* Polls until the allocation is in state; returns it. */
HttpResponse *cloud_alloc_wait(Cloud *cl, const char *token, const char *id, const char *state);

/* ---- the database ---- */

/* Slots of one host (NULL: of every host) in state. */
long long cloud_slots_in_state(Cloud *cl, const CloudHost *h, const char *state);
bool cloud_wait_slots(Cloud *cl, const CloudHost *h, const char *state, long long n);
bool cloud_wait_no_running_tasks(Cloud *cl, long long timeout_ms);
/* What must hold whatever happened, read from the SQLite file: no slot held
 * by two allocations, every allocation in a contract state with the columns
 * that state implies, each slot's allocation_id agreeing with
 * allocation_slots, reserved and assigned slots only under a live
 * allocation, active allocations with every slot assigned. */
void cloud_check_invariants(Cloud *cl);
/* The ledger: sums to zero, cached balances equal their entries, every
 * transaction balanced, no hold pending for a released or failed
 * allocation. */
void cloud_check_ledger(Cloud *cl);

/* ---- concurrency ---- */

/* POSTs n requests at once (curl multi, one connection each) and fills
 * statuses (0: no answer, the controller died). path_fmt gets i; body may be
 * NULL; key_prefix non-NULL adds "Idempotency-Key: <prefix>-<i>". */
void cloud_post_many(Cloud *cl, const char *token, int n, const char *path_fmt, const char *body,
                     const char *key_prefix, long *statuses);
