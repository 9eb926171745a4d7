/* SPDX-License-Identifier: MIT */
/* Inventory from an hwloc XML export (hwloc 1.x and 2.x files). An export
 * tells ids, classes, the bridge tree and NUMA locality; it does not tell
 * drivers, IOMMU groups or SR-IOV capacity, so those stay unknown. */

#include <hwloc.h>
#include <sys/stat.h>

#include "inventory.h"
#include "log.h"
#include "macro.h"

static void topology_destroyp(hwloc_topology_t *t)
{
        if (*t)
                hwloc_topology_destroy(*t);
}

static int obj_pci_address(hwloc_obj_t o, char out[static PCI_ADDRESS_MAX])
{
        const struct hwloc_pcidev_attr_s *p;

        if (o->type == HWLOC_OBJ_PCI_DEVICE)
                p = &o->attr->pcidev;
        else if (o->type == HWLOC_OBJ_BRIDGE &&
                 o->attr->bridge.upstream_type == HWLOC_OBJ_BRIDGE_PCI)
                p = &o->attr->bridge.upstream.pci;
        else
                return -ENOENT;
        snprintf(out, PCI_ADDRESS_MAX, "%04x:%02x:%02x.%x", p->domain, p->bus, p->dev, p->func);
        return 0;
}

/* The single CPU-bearing NUMA node local to an I/O object, or -1. A locality
 * that spans nodes (attached to the whole machine) is unknown, not guessed. */
static int obj_numa_node(hwloc_topology_t topo, hwloc_obj_t o)
{
        hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(topo, o);
        int found = -1;
        unsigned i;

        if (!anc || !anc->nodeset)
                return -1;
        hwloc_bitmap_foreach_begin(i, anc->nodeset)
        {
                hwloc_obj_t n = hwloc_get_numanode_obj_by_os_index(topo, i);
                if (!n || !n->cpuset || hwloc_bitmap_iszero(n->cpuset))
                        continue;
                if (found >= 0) {
                        found = -2;
                        break;
                }
                found = (int)i;
        }
        hwloc_bitmap_foreach_end();
        return found < 0 ? -1 : found;
}

static int add_pci_object(Inventory *inv, hwloc_topology_t topo, hwloc_obj_t o)
{
        char addr[PCI_ADDRESS_MAX];
        const struct hwloc_pcidev_attr_s *p;
        int r;

        if (obj_pci_address(o, addr) < 0)
                return 0;
        p = o->type == HWLOC_OBJ_PCI_DEVICE ? &o->attr->pcidev : &o->attr->bridge.upstream.pci;

        /* Hand-merged exports can carry a record whose bus lies outside its
         * parent bridge's bus range; when that clashes with another
         * function's address, the inconsistent record is dropped (noted). */
        bool outside = false;
        hwloc_obj_t up = o->parent;
        if (up && up->type == HWLOC_OBJ_BRIDGE &&
            up->attr->bridge.downstream_type == HWLOC_OBJ_BRIDGE_PCI) {
                unsigned sec = up->attr->bridge.downstream.pci.secondary_bus;
                unsigned sub = up->attr->bridge.downstream.pci.subordinate_bus;
                outside = p->bus < sec || p->bus > sub;
        }
        for (size_t i = 0; i < inv->n_devices; i++) {
                Device *e = &inv->devices[i];
                if (!streq(e->address, addr))
                        continue;
                if (!outside && !e->outside_bridge)
                        return log_error_errno(-EBADMSG, "PCI function %s is listed twice in %s",
                                               addr, inv->source_path);
                Device *bad = outside ? NULL : e;
                r = inventory_note(inv,
                                   "%s is listed twice in the export; the record %04x:%04x "
                                   "whose bus lies outside its parent bridge's bus range was "
                                   "ignored",
                                   addr, outside ? p->vendor_id : (unsigned)e->vendor,
                                   outside ? p->device_id : (unsigned)e->device);
                if (r < 0)
                        return log_oom();
                if (!bad)
                        return 0;
                /* The earlier record was the inconsistent one: replace it. */
                strv_free(bad->parents);
                free(bad->name);
                *bad = inv->devices[--inv->n_devices];
                break;
        }

        Device *d = inventory_add_device(inv, addr);
        if (!d)
                return log_oom();
        d->outside_bridge = outside;
        d->vendor = p->vendor_id;
        d->device = p->device_id;
        d->class_code = p->class_id;
        if (p->linkspeed > 0)
                d->link_gbytes = p->linkspeed;
        d->numa_node = obj_numa_node(topo, o);

        /* Bridge chain: PCI bridges between the host bridge and this function. */
        char *chain[64];
        size_t n = 0;
        for (hwloc_obj_t a = o->parent; a && a->type == HWLOC_OBJ_BRIDGE; a = a->parent) {
                char baddr[PCI_ADDRESS_MAX];
                if (obj_pci_address(a, baddr) < 0)
                        continue;
                if (n >= ELEMENTSOF(chain))
                        break;
                chain[n] = strdup(baddr);
                if (!chain[n])
                        return log_oom();
                n++;
        }
        d->parents = calloc(n + 1, sizeof(char *));
        if (!d->parents) {
                while (n > 0)
                        free(chain[--n]);
                return log_oom();
        }
        for (size_t i = 0; i < n; i++)
                d->parents[i] = chain[n - 1 - i];
        r = 0;
        return r;
}

/* hwloc's XML importer leaks when it gives up half-way, and its verdict
 * says little; so check the envelope first: an hwloc export has a
 * <topology> root element and ends with its closing tag (a truncated copy
 * does not). */
static int check_xml_envelope(const char *path)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char head[4096], tail[256];
        size_t n;
        long size;

        if (!f)
                return log_error_errno(negative_errno(), "Cannot read hwloc XML %s: %m", path);
        n = fread(head, 1, sizeof(head) - 1, f);
        head[n] = '\0';
        if (n == 0)
                return log_error_errno(-EBADMSG, "hwloc XML %s is empty", path);
        if (!strstr(head, "<topology"))
                return log_error_errno(
                    -EBADMSG, "%s is not an hwloc XML export (no <topology> root element)", path);
        if (fseek(f, 0, SEEK_END) < 0 || (size = ftell(f)) < 0)
                return log_error_errno(negative_errno(), "Cannot read hwloc XML %s: %m", path);
        long off = size > (long)sizeof(tail) - 1 ? size - (long)sizeof(tail) + 1 : 0;
        if (fseek(f, off, SEEK_SET) < 0)
                return log_error_errno(negative_errno(), "Cannot read hwloc XML %s: %m", path);
        n = fread(tail, 1, sizeof(tail) - 1, f);
        tail[n] = '\0';
        while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == ' ' || tail[n - 1] == '\r' ||
                         tail[n - 1] == '\t'))
                tail[--n] = '\0';
        if (n < STRLEN("</topology>") || !streq(tail + n - STRLEN("</topology>"), "</topology>"))
                return log_error_errno(-EBADMSG,
                                       "hwloc XML %s is truncated (it does not end with "
                                       "</topology>)",
                                       path);
        return 0;
}

int inventory_load_hwloc_xml(Inventory *inv, const char *path)
{
        _cleanup_(topology_destroyp) hwloc_topology_t topo = NULL;
        struct stat st;
        int r;

        if (stat(path, &st) < 0)
                return log_error_errno(negative_errno(), "Cannot read hwloc XML %s: %m", path);
        if (S_ISDIR(st.st_mode))
                return log_error_errno(-EISDIR, "hwloc XML %s is a directory", path);
        if (access(path, R_OK) < 0)
                return log_error_errno(negative_errno(), "Cannot read hwloc XML %s: %m", path);

        r = check_xml_envelope(path);
        if (r < 0)
                return r;

        if (hwloc_topology_init(&topo) < 0)
                return log_oom();
        if (hwloc_topology_set_xml(topo, path) < 0)
                return log_error_errno(-EBADMSG, "Cannot use %s as an hwloc XML export", path);
        hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_ALL);
        if (hwloc_topology_load(topo) < 0)
                return log_error_errno(
                    -EBADMSG, "%s is not an hwloc XML topology (or it is truncated)", path);

        int depth = hwloc_get_type_depth(topo, HWLOC_OBJ_NUMANODE);
        unsigned n_numa = depth == HWLOC_TYPE_DEPTH_UNKNOWN
                              ? 0
                              : (unsigned)hwloc_get_nbobjs_by_depth(topo, depth);
        for (unsigned i = 0; i < n_numa; i++) {
                hwloc_obj_t o = hwloc_get_obj_by_depth(topo, depth, i);
                NumaNode *node = inventory_add_numa_node(inv, (int)o->os_index);
                if (!node)
                        return log_oom();
                if (o->cpuset && !hwloc_bitmap_iszero(o->cpuset)) {
                        if (hwloc_bitmap_list_asprintf(&node->cpus, o->cpuset) < 0)
                                return log_oom();
                } else {
                        node->cpus = strdup("");
                        if (!node->cpus)
                                return log_oom();
                }
                if (o->attr->numanode.local_memory > 0)
                        node->memory_bytes = (int64_t)o->attr->numanode.local_memory;
        }

        for (hwloc_obj_t o = hwloc_get_next_pcidev(topo, NULL); o;
             o = hwloc_get_next_pcidev(topo, o)) {
                r = add_pci_object(inv, topo, o);
                if (r < 0)
                        return r;
        }
        for (hwloc_obj_t o = hwloc_get_next_bridge(topo, NULL); o;
             o = hwloc_get_next_bridge(topo, o)) {
                r = add_pci_object(inv, topo, o);
                if (r < 0)
                        return r;
        }
        return 0;
}
