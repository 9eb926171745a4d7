/* SPDX-License-Identifier: MIT */
#include "simulate.h"

#include <libgen.h>

#include "log.h"
#include "macro.h"

#ifndef GPUSLICE_DATADIR
#define GPUSLICE_DATADIR "/usr/share/gpuslice"
#endif

int simulate_default_topology(char **ret)
{
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        const char *rel[] = {"data/topology", "../share/gpuslice/topology"};
        if (n > 0) {
                exe[n] = 0;
                const char *dir = dirname(exe);
                for (size_t i = 0; i < ELEMENTSOF(rel); i++) {
                        char *p;
                        if (asprintf(&p, "%s/%s/%s", dir, rel[i], SIMULATE_TOPOLOGY_FILE) < 0)
                                return -ENOMEM;
                        if (access(p, R_OK) == 0) {
                                *ret = p;
                                return 0;
                        }
                        free(p);
                }
        }
        char *p;
        if (asprintf(&p, "%s/topology/%s", GPUSLICE_DATADIR, SIMULATE_TOPOLOGY_FILE) < 0)
                return -ENOMEM;
        if (access(p, R_OK) == 0) {
                *ret = p;
                return 0;
        }
        free(p);
        return log_error_errno(-ENOENT,
                               "Cannot find the simulated host's topology %s (set "
                               "simulate_topology to an hwloc XML file)",
                               SIMULATE_TOPOLOGY_FILE);
}

int simulate_load(const char *topology, Inventory **ret)
{
        InventorySource src = {.kind = INVENTORY_SOURCE_HWLOC_XML, .path = topology};
        _cleanup_(inventory_freep) Inventory *inv = NULL;
        int r = inventory_load(&src, &inv);
        if (r < 0)
                return r;

        r = inventory_note(inv,
                           "simulated host: topology of %s; SR-IOV capacity is simulated, nothing "
                           "on this machine is read or changed",
                           topology);
        if (r < 0)
                return r;
        for (size_t i = 0; i < inv->n_devices; i++) {
                Device *d = &inv->devices[i];
                if (d->kind != DEVICE_KIND_NIC || d->is_vf || d->sriov != SRIOV_UNKNOWN)
                        continue;
                d->sriov = SRIOV_CAPABLE;
                d->total_vfs = SIMULATE_NIC_TOTAL_VFS;
                d->num_vfs = 0;
                r = inventory_note(inv, "simulated: NIC %s has sriov total_vfs=%d, num_vfs=0",
                                   d->address, SIMULATE_NIC_TOTAL_VFS);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(inv);
        return 0;
}
