/* SPDX-License-Identifier: MIT */
#pragma once

/* Runtime hooks: how a slot's workload (a VM, a container) is started and
 * stopped. The agent knows no hypervisor; it runs an executable from its hook
 * directory with a fixed contract (docs/host-operations.md, "Hook contract"):
 *
 *   <hook_dir>/<name> start|stop|status|console <slot_id> <allocation_id> [<pci addr>...]
 *
 * environment: GPUSLICE_SLOT_ID, GPUSLICE_ALLOCATION_ID, GPUSLICE_VFIO_DEVICES
 * (space-separated PCI addresses bound to vfio-pci), GPUSLICE_VFIO_GROUPS
 * (/dev/vfio/N paths), GPUSLICE_RUNTIME_DIR (a directory the hook owns for this
 * allocation: pid files, sockets, disks), PATH; nothing else of the agent's
 * environment. An allocation's commands (alloc-ops.h) run the hook once for
 * all its slots: the slot id is the first slot's, and they add
 * GPUSLICE_SLOT_IDS (every slot id, space-separated) and, for start,
 * GPUSLICE_SSH_AUTHORIZED_KEYS (a file in the runtime dir with the tenant's
 * OpenSSH public keys, one per line), GPUSLICE_SSH_USER, GPUSLICE_IMAGE_ID,
 * GPUSLICE_IMAGE_NAME and GPUSLICE_IMAGE_SOURCE (HookContext.env).
 * Exit 0 means done (stop of a stopped workload is done too), anything else
 * failed. start may print one JSON object {"ssh":{"host":..,"port":..,
 * "user":..}}: where the tenant connects. status prints one JSON object
 * {"state":"running"|"stopped"|...}. stdin is /dev/null, stdout is captured
 * (64 KiB at most), stderr is passed to the agent's log. Every run is
 * bounded: on the deadline the hook's process group gets SIGTERM, 2 s later
 * SIGKILL, and the result is -ETIMEDOUT.
 *
 * console is the exception: it is not run through hook_run() but by the
 * console session, attached to a PTY (stdin, stdout and stderr are the
 * terminal) with the same argv and environment; it runs the workload's
 * interactive terminal (a shell, a serial console client) and exits when that
 * ends. Its exit code ends the session. */

#include <stdbool.h>
#include <stddef.h>

typedef enum {
        HOOK_START,
        HOOK_STOP,
        HOOK_STATUS,
        HOOK_CONSOLE,
        _HOOK_VERB_MAX,
} HookVerb;

typedef struct {
        const char *slot_id;
        const char *allocation_id;
        const char *const *vfio_devices; /* PCI addresses */
        size_t n_vfio_devices;
        const char *const *vfio_groups; /* /dev/vfio/N, may be NULL */
        size_t n_vfio_groups;
        const char *runtime_dir;
        /* More "GPUSLICE_NAME=value" entries (the name [A-Z0-9_], the value one
         * line); may be NULL. */
        const char *const *env;
        size_t n_env;
} HookContext;

typedef struct {
        int exit_code; /* -1 when killed by a signal */
        char *out;     /* captured stdout, NUL-terminated; free() it */
} HookResult;

const char *hook_verb_name(HookVerb v);

/* Ids become argv entries and file names in hooks: [A-Za-z0-9_.-], 1-128 chars. */
bool hook_id_is_valid(const char *id);

/* Runs the hook. 0 with ret->exit_code 0 when it succeeded, -EPROTO when it
 * exited non-zero (ret->exit_code says how), -ETIMEDOUT, -ENOENT (no such
 * hook), -EACCES (not executable), -EINVAL (bad name or id). ret->out is set
 * whenever the hook ran. */
int hook_run(const char *hook_dir, const char *name, HookVerb verb, const HookContext *ctx,
             unsigned timeout_ms, HookResult *ret);

void hook_result_done(HookResult *r);

/* Replaces the calling process with the hook (same checks, argv and
 * environment as hook_run(); stdin, stdout and stderr are the caller's): for
 * the console verb, in the child the console session attached to a PTY.
 * Returns only on failure, -errno. */
int hook_exec(const char *hook_dir, const char *name, HookVerb verb, const HookContext *ctx);
