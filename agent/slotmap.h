/* SPDX-License-Identifier: MIT */
#pragma once

/* The candidate slot map: one slot per GPU (or GPU VF), each with a planned
 * NIC VF, an NVMe drive when one is close, and its NUMA node's CPUs and a share
 * of its memory. Planning and validation are separate so a map an admin edits
 * (or a subset) is judged by the same rules. */

#include <stdbool.h>
#include <stdint.h>

#include "inventory.h"

typedef enum {
        INVARIANT_PER_SLOT_VF,
        INVARIANT_NVME_OWNERSHIP,
        INVARIANT_NUMA_LOCALITY,
        _INVARIANT_MAX,
} InvariantId;

const char *invariant_to_string(InvariantId i);

/* How close a planned device is to the slot's GPU. */
typedef enum {
        LOCALITY_NONE,
        LOCALITY_NUMA,      /* same NUMA node, different PCIe tree */
        LOCALITY_ROOT_PORT, /* below the same root port */
        LOCALITY_SWITCH,    /* below the same PCIe switch */
} Locality;

const char *locality_to_string(Locality l);

typedef struct Slot {
        char *id;
        char **gpus;  /* NULL-terminated addresses */
        char *nic;    /* PF the slot's VF is planned on; NULL: none */
        int vf_index; /* -1: none */
        Locality nic_locality;
        char *nvme; /* NULL: none */
        Locality nvme_locality;
        int numa_node;        /* home; -1: unknown or unusable */
        char *cpus;           /* home node's cpulist; NULL: unknown */
        int64_t memory_bytes; /* share of the home node's memory; -1: unknown */
        bool ok;
        bool invariant_ok[_INVARIANT_MAX];
        char **problems; /* NULL-terminated human sentences */
} Slot;

typedef struct Invariant {
        bool ok;
        char *detail;
} Invariant;

typedef struct SlotMap {
        Slot *slots;
        size_t n_slots;
        Invariant invariants[_INVARIANT_MAX];
        Invariant iommu; /* no IOMMU group split across slots */
        char **notes;    /* facts an admin should see (shared groups, memory-only nodes) */
        bool ok;         /* slots exist and every slot and invariant holds */
} SlotMap;

int slot_map_plan(const Inventory *inv, SlotMap **ret);
/* Recomputes problems, per-slot and overall invariants of map against inv. */
int slot_map_validate(const Inventory *inv, SlotMap *map);

SlotMap *slot_map_free(SlotMap *m);
static inline void slot_map_freep(SlotMap **p)
{
        if (*p)
                slot_map_free(*p);
}

/* Adds an empty slot (for planning and for tests that build maps by hand). */
Slot *slot_map_add(SlotMap *m, const char *gpu_address);
const Slot *slot_map_find(const SlotMap *m, const char *id);
