/* SPDX-License-Identifier: MIT */
#include "inventory.h"

#include <pci/pci.h>
#include <stdarg.h>

#include "log.h"
#include "macro.h"

static const char *const source_kind_table[] = {
    [INVENTORY_SOURCE_LIVE] = "live",
    [INVENTORY_SOURCE_SYSFS_ROOT] = "sysfs-root",
    [INVENTORY_SOURCE_HWLOC_XML] = "hwloc-xml",
};

const char *inventory_source_kind_to_string(InventorySourceKind k)
{
        if (k < 0 || (size_t)k >= ELEMENTSOF(source_kind_table))
                return NULL;
        return source_kind_table[k];
}

char **strv_free(char **l)
{
        if (!l)
                return NULL;
        for (char **i = l; *i; i++)
                free(*i);
        free(l);
        return NULL;
}

size_t strv_length(char *const *l)
{
        size_t n = 0;
        if (l)
                while (l[n])
                        n++;
        return n;
}

int strv_push(char ***l, const char *s)
{
        size_t n = strv_length(*l);
        char **nl = realloc(*l, sizeof(char *) * (n + 2));
        if (!nl)
                return -ENOMEM;
        *l = nl;
        nl[n] = strdup(s);
        if (!nl[n])
                return -ENOMEM;
        nl[n + 1] = NULL;
        return 0;
}

int pci_address_normalize(const char *s, char out[static PCI_ADDRESS_MAX])
{
        unsigned domain = 0, bus, dev, func;
        int n = 0;

        if (!s)
                return -EINVAL;
        if (sscanf(s, "%4x:%2x:%2x.%1x%n", &domain, &bus, &dev, &func, &n) == 4 && s[n] == '\0' &&
            n == 12)
                goto ok;
        n = 0;
        domain = 0;
        if (sscanf(s, "%2x:%2x.%1x%n", &bus, &dev, &func, &n) == 3 && s[n] == '\0' && n == 7)
                goto ok;
        return -EINVAL;
ok:
        if (dev > 0x1f || func > 7)
                return -EINVAL;
        snprintf(out, PCI_ADDRESS_MAX, "%04x:%02x:%02x.%x", domain, bus, dev, func);
        return 0;
}

Device *inventory_add_device(Inventory *inv, const char *address)
{
        Device *n = realloc(inv->devices, sizeof(Device) * (inv->n_devices + 1));
        if (!n)
                return NULL;
        inv->devices = n;
        Device *d = &n[inv->n_devices++];
        *d = (Device){
            .vendor = PCI_ID_UNKNOWN,
            .device = PCI_ID_UNKNOWN,
            .class_code = PCI_ID_UNKNOWN,
            .kind = DEVICE_KIND_OTHER,
            .numa_node = -1,
            .iommu_group = -1,
            .sriov = SRIOV_UNKNOWN,
            .total_vfs = -1,
            .num_vfs = -1,
        };
        snprintf(d->address, sizeof(d->address), "%s", address);
        return d;
}

NumaNode *inventory_add_numa_node(Inventory *inv, int id)
{
        NumaNode *n = realloc(inv->numa_nodes, sizeof(NumaNode) * (inv->n_numa_nodes + 1));
        if (!n)
                return NULL;
        inv->numa_nodes = n;
        NumaNode *node = &n[inv->n_numa_nodes++];
        *node = (NumaNode){.id = id, .memory_bytes = -1};
        return node;
}

static void device_done(Device *d)
{
        free(d->driver);
        free(d->physfn);
        free(d->name);
        strv_free(d->virtfns);
        strv_free(d->parents);
}

int inventory_note(Inventory *inv, const char *fmt, ...)
{
        _cleanup_free_ char *s = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        return strv_push(&inv->notes, s);
}

Inventory *inventory_free(Inventory *inv)
{
        if (!inv)
                return NULL;
        for (size_t i = 0; i < inv->n_devices; i++)
                device_done(&inv->devices[i]);
        for (size_t i = 0; i < inv->n_numa_nodes; i++)
                free(inv->numa_nodes[i].cpus);
        free(inv->devices);
        free(inv->numa_nodes);
        free(inv->source_path);
        strv_free(inv->notes);
        free(inv);
        return NULL;
}

static int device_cmp(const void *a, const void *b)
{
        return strcmp(((const Device *)a)->address, ((const Device *)b)->address);
}

static int numa_cmp(const void *a, const void *b)
{
        int x = ((const NumaNode *)a)->id, y = ((const NumaNode *)b)->id;
        return (x > y) - (x < y);
}

const Device *inventory_find_device(const Inventory *inv, const char *address)
{
        Device key = {};
        if (!address)
                return NULL;
        snprintf(key.address, sizeof(key.address), "%s", address);
        return bsearch(&key, inv->devices, inv->n_devices, sizeof(Device), device_cmp);
}

const NumaNode *inventory_find_numa_node(const Inventory *inv, int id)
{
        for (size_t i = 0; i < inv->n_numa_nodes; i++)
                if (inv->numa_nodes[i].id == id)
                        return &inv->numa_nodes[i];
        return NULL;
}

bool numa_node_has_cpus(const NumaNode *n)
{
        return n && n->cpus && n->cpus[0] != '\0';
}

size_t inventory_count(const Inventory *inv, DeviceKind kind, bool include_vfs)
{
        size_t n = 0;
        for (size_t i = 0; i < inv->n_devices; i++)
                if (inv->devices[i].kind == kind && (include_vfs || !inv->devices[i].is_vf))
                        n++;
        return n;
}

size_t device_common_bridges(const Device *a, const Device *b)
{
        size_t n = 0;
        if (!a->parents || !b->parents)
                return 0;
        while (a->parents[n] && b->parents[n] && streq(a->parents[n], b->parents[n]))
                n++;
        return n;
}

const char *device_switch(const Device *d)
{
        if (strv_length(d->parents) < 2)
                return NULL;
        return d->parents[1];
}

/* libpci's default handlers exit the process; names are an extra, so a
 * missing or broken pci.ids only costs the names. */
static void pci_quiet(char *msg, ...)
{
}

static _noreturn_ void pci_fatal(char *msg, ...)
{
        va_list ap;
        va_start(ap, msg);
        vfprintf(stderr, msg, ap);
        va_end(ap);
        abort();
}

static void fill_names(Inventory *inv)
{
        struct pci_access *pacc = pci_alloc();
        if (!pacc)
                return;
        pacc->warning = pci_quiet;
        pacc->debug = pci_quiet;
        pacc->error = pci_fatal;
        const char *ids = getenv("GPUSLICE_PCI_IDS");
        if (ids)
                pci_set_name_list_path(pacc, (char *)ids, 0);

        for (size_t i = 0; i < inv->n_devices; i++) {
                Device *d = &inv->devices[i];
                char buf[256];
                if (d->vendor == PCI_ID_UNKNOWN || d->device == PCI_ID_UNKNOWN)
                        continue;
                const char *s = pci_lookup_name(pacc, buf, sizeof(buf),
                                                PCI_LOOKUP_VENDOR | PCI_LOOKUP_DEVICE |
                                                    PCI_LOOKUP_NO_NUMBERS | PCI_LOOKUP_NO_HWDB,
                                                d->vendor, d->device);
                if (s)
                        d->name = strdup(s);
        }
        pci_cleanup(pacc);
}

int inventory_finalize(Inventory *inv)
{
        qsort(inv->devices, inv->n_devices, sizeof(Device), device_cmp);
        qsort(inv->numa_nodes, inv->n_numa_nodes, sizeof(NumaNode), numa_cmp);

        for (size_t i = 1; i < inv->n_devices; i++)
                if (streq(inv->devices[i].address, inv->devices[i - 1].address))
                        return log_error_errno(-EBADMSG, "PCI function %s listed twice in %s",
                                               inv->devices[i].address, inv->source_path);

        fill_names(inv);

        for (size_t i = 0; i < inv->n_devices; i++) {
                Device *d = &inv->devices[i];
                if (d->physfn || pci_id_is_virtual_function(d->vendor, d->device))
                        d->is_vf = true;
                /* A VF inherits its PF's locality when the source only says it for the PF. */
                d->kind =
                    pci_classify(d->vendor, d->device, d->class_code, strv_length(d->parents) > 0);
        }

        /* With a single NUMA node there is nowhere else to be: the kernel's
         * -1 ("no affinity") on a one-node host (typical in VMs) means node 0. */
        if (inv->n_numa_nodes == 1 && numa_node_has_cpus(&inv->numa_nodes[0]))
                for (size_t i = 0; i < inv->n_devices; i++)
                        if (inv->devices[i].numa_node < 0)
                                inv->devices[i].numa_node = inv->numa_nodes[0].id;

        /* A PF learns its VFs from their physfn links when it has no virtfn list. */
        for (size_t i = 0; i < inv->n_devices; i++) {
                Device *vf = &inv->devices[i];
                if (!vf->physfn)
                        continue;
                Device *pf = (Device *)inventory_find_device(inv, vf->physfn);
                if (!pf)
                        continue;
                if (vf->numa_node < 0)
                        vf->numa_node = pf->numa_node;
                bool listed = false;
                for (char **v = pf->virtfns; v && *v; v++)
                        if (streq(*v, vf->address))
                                listed = true;
                if (!listed && strv_push(&pf->virtfns, vf->address) < 0)
                        return log_oom();
        }
        return 0;
}

int inventory_load(const InventorySource *src, Inventory **ret)
{
        _cleanup_(inventory_freep) Inventory *inv = NULL;
        int r;

        inv = calloc(1, sizeof(*inv));
        if (!inv)
                return log_oom();
        inv->source = src->kind;
        inv->source_path = strdup(src->path ? src->path : "/");
        if (!inv->source_path)
                return log_oom();

        switch (src->kind) {
        case INVENTORY_SOURCE_LIVE:
        case INVENTORY_SOURCE_SYSFS_ROOT:
                r = inventory_load_sysfs(inv, inv->source_path);
                break;
        case INVENTORY_SOURCE_HWLOC_XML:
                r = inventory_load_hwloc_xml(inv, inv->source_path);
                break;
        default:
                return -EINVAL;
        }
        if (r < 0)
                return r;

        r = inventory_finalize(inv);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(inv);
        return 0;
}
