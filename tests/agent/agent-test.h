/* SPDX-License-Identifier: MIT */
#pragma once

/* Helpers shared by the agent tests: fixture paths (always the repo's
 * tests/fixtures, so the repo is self-contained), unpacking sysfs tarballs
 * into a temporary directory, loading an inventory from either source. */

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "inventory.h"
#include "macro.h"
#include "slotmap.h"

static inline char *fixture(const char *rel)
{
        const char *src = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        char *p;
        cr_assert(src, "GPUSLICE_TEST_SOURCE_ROOT is not set (run through meson test)");
        cr_assert(asprintf(&p, "%s/tests/fixtures/topology/%s", src, rel) >= 0);
        return p;
}

/* Unpacks tests/fixtures/topology/<tarball> into a fresh temporary directory;
 * returns that directory (to remove) and the snapshot root inside it. */
static inline char *unpack_fixture(const char *tarball, const char *subdir, char **ret_root)
{
        _cleanup_free_ char *tb = fixture(tarball);
        char tmpl[] = "/tmp/gpuslice-topo-XXXXXX";
        char *cmd;
        cr_assert(mkdtemp(tmpl), "mkdtemp: %m");
        cr_assert(asprintf(&cmd, "tar -xf '%s' -C '%s'", tb, tmpl) >= 0);
        int st = system(cmd);
        free(cmd);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "unpacking %s failed", tb);
        cr_assert(asprintf(ret_root, "%s%s%s", tmpl, subdir ? "/" : "", subdir ? subdir : "") >= 0);
        return strdup(tmpl);
}

static inline void rm_rf(const char *dir)
{
        char *cmd;
        if (!dir || !startswith(dir, "/tmp/gpuslice-"))
                return;
        if (asprintf(&cmd, "rm -rf '%s'", dir) >= 0) {
                (void)!system(cmd);
                free(cmd);
        }
}

static inline Inventory *load_xml(const char *rel)
{
        _cleanup_free_ char *p = fixture(rel);
        InventorySource src = {.kind = INVENTORY_SOURCE_HWLOC_XML, .path = p};
        Inventory *inv = NULL;
        int r = inventory_load(&src, &inv);
        cr_assert(r >= 0, "loading %s: %s", p, strerror(-r));
        return inv;
}

static inline Inventory *load_sysfs(const char *root)
{
        InventorySource src = {.kind = INVENTORY_SOURCE_SYSFS_ROOT, .path = root};
        Inventory *inv = NULL;
        int r = inventory_load(&src, &inv);
        cr_assert(r >= 0, "loading %s: %s", root, strerror(-r));
        return inv;
}

static inline SlotMap *plan(const Inventory *inv)
{
        SlotMap *m = NULL;
        cr_assert(slot_map_plan(inv, &m) >= 0);
        return m;
}

/* Number of PCI functions with this vendor:device (PFs only unless vfs). */
static inline size_t count_id(const Inventory *inv, int vendor, int device, bool vfs)
{
        size_t n = 0;
        for (size_t i = 0; i < inv->n_devices; i++)
                if (inv->devices[i].vendor == vendor && inv->devices[i].device == device &&
                    (vfs || !inv->devices[i].is_vf))
                        n++;
        return n;
}

static inline const Device *dev(const Inventory *inv, const char *addr)
{
        const Device *d = inventory_find_device(inv, addr);
        cr_assert(d, "no device %s", addr);
        return d;
}

static inline bool strv_contains(char *const *l, const char *s)
{
        for (; l && *l; l++)
                if (strstr(*l, s))
                        return true;
        return false;
}
