/* SPDX-License-Identifier: MIT */
#pragma once

/* The host as discovery sees it: NUMA nodes and PCI functions, from one of
 * three sources behind one API (the live host, a sysfs snapshot root, an
 * hwloc XML export). A fact a source cannot tell stays unknown (-1, NULL,
 * SRIOV_UNKNOWN) and is printed as null; nothing is guessed. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pci-class.h"

#define PCI_ADDRESS_MAX 16 /* "dddd:bb:dd.f" + NUL, with room */

typedef enum {
        INVENTORY_SOURCE_LIVE,
        INVENTORY_SOURCE_SYSFS_ROOT,
        INVENTORY_SOURCE_HWLOC_XML,
} InventorySourceKind;

typedef enum {
        SRIOV_UNKNOWN, /* the source cannot tell (hwloc XML, snapshot without sriov_* files) */
        SRIOV_NONE,    /* known not SR-IOV capable */
        SRIOV_CAPABLE, /* total_vfs (and maybe num_vfs) known */
} SriovState;

typedef struct NumaNode {
        int id;
        char *cpus;           /* cpulist "0-15,32-47"; "" for a memory-only node */
        int64_t memory_bytes; /* -1: unknown */
} NumaNode;

typedef struct Device {
        char address[PCI_ADDRESS_MAX];
        int vendor, device; /* PCI_ID_UNKNOWN when the source lacks them */
        int class_code;     /* base class + subclass, 0x0302; PCI_ID_UNKNOWN */
        DeviceKind kind;
        int numa_node;     /* -1: unknown */
        int iommu_group;   /* -1: unknown */
        char *driver;      /* NULL: unknown or unbound */
        bool driver_known; /* the source can tell bound from unbound */
        SriovState sriov;
        int total_vfs, num_vfs; /* -1: unknown */
        bool is_vf;             /* an SR-IOV virtual function */
        char *physfn;           /* PF address of a VF, NULL when unknown */
        char **virtfns;         /* VF addresses of a PF (NULL-terminated), NULL when unknown */
        char **parents;         /* bridge chain, root port first (NULL-terminated); NULL: unknown */
        char *name;             /* vendor/device name from pci.ids, NULL when not found */
        double link_gbytes;     /* PCIe link bandwidth in GB/s; 0: unknown */
        bool outside_bridge;    /* XML record whose bus is outside its parent bridge's range */
} Device;

typedef struct Inventory {
        InventorySourceKind source;
        char *source_path;
        NumaNode *numa_nodes;
        size_t n_numa_nodes;
        Device *devices; /* sorted by address */
        size_t n_devices;
        char **notes; /* what the source got wrong or could not tell, for the admin */
} Inventory;

typedef struct InventorySource {
        InventorySourceKind kind;
        const char *path; /* root directory ("/" for the live host) or XML file */
} InventorySource;

const char *inventory_source_kind_to_string(InventorySourceKind k);

/* Loads the inventory. Returns 0, or -errno after logging one sentence naming
 * the path: -ENOENT/-EACCES/-ENOTDIR for a missing or unreadable root,
 * -EBADMSG for malformed content (truncated files, not an hwloc XML), -ELOOP
 * for symlink loops. Those are the caller's bad input; others are failures. */
int inventory_load(const InventorySource *src, Inventory **ret);
Inventory *inventory_free(Inventory *inv);
static inline void inventory_freep(Inventory **p)
{
        if (*p)
                inventory_free(*p);
}

/* Source back ends; each fills an empty inventory. */
int inventory_load_sysfs(Inventory *inv, const char *root);
int inventory_load_hwloc_xml(Inventory *inv, const char *path);

/* Building blocks shared by the back ends. */
int inventory_note(Inventory *inv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
Device *inventory_add_device(Inventory *inv, const char *address);
NumaNode *inventory_add_numa_node(Inventory *inv, int id);
/* Sorts, classifies, fills names and cross-links VFs; called once per load. */
int inventory_finalize(Inventory *inv);

const Device *inventory_find_device(const Inventory *inv, const char *address);
const NumaNode *inventory_find_numa_node(const Inventory *inv, int id);
bool numa_node_has_cpus(const NumaNode *n);

/* Counting helpers, used by the tests and the table output. A NIC counts
 * once per physical function; VFs are not extra NICs. */
size_t inventory_count(const Inventory *inv, DeviceKind kind, bool include_vfs);

/* "dddd:bb:dd.f" from a string that may lack the domain; 0 or -EINVAL. */
int pci_address_normalize(const char *s, char out[static PCI_ADDRESS_MAX]);

/* Number of bridges two devices share from the root port down (0: none). */
size_t device_common_bridges(const Device *a, const Device *b);
/* Top switch upstream port of a device (parents[1]), or NULL. */
const char *device_switch(const Device *d);

char **strv_free(char **l);
size_t strv_length(char *const *l);
int strv_push(char ***l, const char *s);
