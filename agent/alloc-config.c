/* SPDX-License-Identifier: MIT */
/* The allocation commands' host from the agent's settings and the node's
 * slot map; kept apart from alloc-ops.c so that one links without the
 * discovery code. */
#include "alloc-ops.h"

#include "inventory.h"
#include "log.h"
#include "macro.h"
#include "simulated-ops.h"
#include "slotmap.h"

/* One entry per NIC PF: the highest VF index the slot map plans on it + 1. */
static int vf_plan_of(const HostSource *source, AllocVfPlan **ret, size_t *ret_n)
{
        _cleanup_(inventory_freep) Inventory *inv = NULL;
        _cleanup_(slot_map_freep) SlotMap *map = NULL;
        AllocVfPlan *plan = NULL;
        size_t n = 0;
        int r;

        *ret = NULL;
        *ret_n = 0;
        if ((r = host_load(source, &inv)) < 0 || (r = slot_map_plan(inv, &map)) < 0)
                return r;
        if (map->n_slots > 0 && !(plan = calloc(map->n_slots, sizeof(AllocVfPlan))))
                return -ENOMEM;
        for (size_t i = 0; i < map->n_slots; i++) {
                const Slot *s = &map->slots[i];
                size_t k = 0;
                if (!s->nic || s->vf_index < 0)
                        continue;
                while (k < n && !streq(plan[k].pf, s->nic))
                        k++;
                if (k == n) {
                        if (!(plan[n].pf = strdup(s->nic))) {
                                r = -ENOMEM;
                                break;
                        }
                        n++;
                }
                plan[k].num_vfs = MAX(plan[k].num_vfs, (unsigned)s->vf_index + 1);
        }
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        free((char *)plan[i].pf);
                free(plan);
                return r;
        }
        *ret = plan;
        *ret_n = n;
        return 0;
}

int alloc_host_from_config(const Config *c, const HostSource *source, AllocHost **ret)
{
        _cleanup_free_ char *shipped = NULL;
        _cleanup_free_ AllocVfPlan *plan = NULL;
        size_t n_plan = 0;
        bool simulated = source && source->simulate;
        const char *hook = config_get(c, "hook"), *hook_dir = config_get(c, "hook_dir");
        int r;

        if (simulated && !hook)
                hook = SIMULATED_DEFAULT_HOOK;
        if (!hook_dir && simulated) {
                if ((r = simulated_default_hook_dir(&shipped)) < 0)
                        return r;
                hook_dir = shipped;
        }
        if (!hook_dir)
                hook_dir = "/etc/gpuslice/hooks";
        if (source && (r = vf_plan_of(source, &plan, &n_plan)) < 0)
                log_warning_errno(r, "Cannot plan the VF count per NIC from the slot map; each "
                                     "slot's VF index decides: %m");
        const AllocHostOptions o = {
            .state_dir = config_get(c, "state_dir"),
            .simulated = simulated,
            .root = "/",
            .hook_dir = hook_dir,
            .hook = hook,
            .runtime_dir = config_get(c, "runtime_dir"),
            .public_address = config_get(c, "public_address"),
            .gpu_host_driver = config_get(c, "gpu_host_driver"),
            .step_timeout_ms = (unsigned)config_get_int(c, "step_timeout_s") * 1000,
            .hook_timeout_ms = (unsigned)config_get_int(c, "hook_timeout_s") * 1000,
            .wipe_timeout_ms = (unsigned)config_get_int(c, "wipe_timeout_s") * 1000,
            .vf_plan = plan,
            .n_vf_plan = n_plan,
        };
        r = alloc_host_new(&o, ret);
        for (size_t i = 0; i < n_plan; i++)
                free((char *)plan[i].pf);
        if (r < 0)
                return r;
        const char *runtime_dir = NULL;
        alloc_host_hook(*ret, &hook_dir, &hook, &runtime_dir);
        log_info("Allocations | simulated=%s hook=%s hook_dir=%s runtime_dir=%s nics_planned=%zu",
                 simulated ? "true" : "false", hook ? hook : "(none: no workload is started)",
                 hook_dir, runtime_dir, n_plan);
        if (!hook)
                log_warning("No runtime hook is configured (hook): allocations get their "
                            "devices but no workload");
        else {
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "%s/%s", hook_dir, hook) >= 0 && access(path, X_OK) < 0)
                        log_warning_errno(negative_errno(),
                                          "The runtime hook %s is not executable (yet): every "
                                          "assignment will fail with workload_start_failed: %m",
                                          path);
        }
        return 0;
}
