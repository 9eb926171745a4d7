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
 * slot: pid files, sockets), PATH; nothing else of the agent's environment.
 * Exit 0 means done (stop of a stopped workload is done too), anything else
 * failed. status prints one JSON object {"state":"running"|"stopped"|...};
 * console prints {"kind":"unix"|"pty","path":"..."}. stdin is /dev/null,
 * stdout is captured (64 KiB at most), stderr is passed to the agent's log.
 * Every run is bounded: on the deadline the hook's process group gets SIGTERM,
 * 2 s later SIGKILL, and the result is -ETIMEDOUT. */

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
