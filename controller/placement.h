/* SPDX-License-Identifier: MIT */
#pragma once

/* Placement: an in-memory index of the approved slots of every node, which
 * ones are free right now, and which nodes can take work (online and active).
 * It answers "which free slots should this launch get" (best fit: the
 * smallest group that still holds the request, so large blocks stay free)
 * and "which of a SKU's GPU counts can some node host right now" without
 * touching the database.
 *
 * The database stays the truth: the index is loaded from it at start and
 * told about every slot transition (slot-state.c) and every node going
 * online/offline, only after the transaction that made the change committed.
 * A launch still reserves its slots with "UPDATE ... WHERE state =
 * 'available'", so a stale index can cost a retry, never a shared slot.
 *
 * A slot matches a SKU when every GPU of the slot has a vendor:device in the
 * SKU's pci_ids. The SKU's topology says which slots may go together: any
 * slots of one node ("node"), of one NUMA node ("numa"), or behind one PCIe
 * switch ("switch"). */

#include <stdbool.h>
#include <stddef.h>

typedef struct Db Db;
typedef struct Placement Placement;
typedef struct Sku Sku; /* catalog.h */

typedef enum PlacementTopology {
        PLACEMENT_TOPOLOGY_NODE,
        PLACEMENT_TOPOLOGY_NUMA,
        PLACEMENT_TOPOLOGY_SWITCH,
        _PLACEMENT_TOPOLOGY_MAX,
        _PLACEMENT_TOPOLOGY_INVALID = -1,
} PlacementTopology;

const char *placement_topology_to_string(PlacementTopology t);
PlacementTopology placement_topology_from_string(const char *s);

#define PLACEMENT_MAX_COUNTS 64 /* gpu_counts a SKU may list (SKU_GPU_COUNT_MAX) */
#define PLACEMENT_MAX_SLOTS  64 /* slots one pick may return */

/* What placement needs to know of a SKU. pci_ids are "vvvv:dddd", lower case. */
typedef struct PlacementRule {
        PlacementTopology topology;
        const char *const *pci_ids;
        size_t n_pci_ids;
} PlacementRule;

/* One slot as the index sees it. gpu_pci_ids is the JSON array stored in
 * node_resource_slots ('["10de:2330"]'); switch_id may be NULL (unknown), and
 * then the slot is its own switch group; numa_node < 0 likewise. */
typedef struct PlacementSlot {
        const char *id;
        const char *node_id;
        const char *slot_key; /* orders the slots of a node */
        const char *gpu_pci_ids;
        int numa_node;
        const char *switch_id;
        bool free; /* state 'available' */
} PlacementSlot;

typedef struct PlacementPick {
        char node_id[64];
        size_t n_slots;
        char slot_ids[PLACEMENT_MAX_SLOTS][64];
} PlacementPick;

/* rule borrows the SKU's strings. -EINVAL for an unknown topology. */
int placement_rule_from_sku(const Sku *sku, PlacementRule *ret);

int placement_new(Placement **ret);
Placement *placement_free(Placement *p);

/* Drops everything and loads every approved slot and every node from db. */
int placement_load(Placement *p, Db *db);

/* Adds or replaces a slot. */
int placement_slot_put(Placement *p, const PlacementSlot *slot);
/* The slot is free ('available') or not; -ENOENT for a slot it does not know. */
int placement_slot_set_free(Placement *p, const char *slot_id, bool free);
void placement_slot_remove(Placement *p, const char *slot_id);

typedef enum PlacementNodeStatus {
        PLACEMENT_NODE_SCHEDULABLE, /* online and active: takes work */
        PLACEMENT_NODE_OFFLINE,     /* approved and active, but its agent is away */
        PLACEMENT_NODE_EXCLUDED,    /* draining, disabled, not approved yet */
} PlacementNodeStatus;

/* Unknown nodes are remembered, so the order of slot_put and node_set does
 * not matter; a node not set yet counts as excluded. */
int placement_node_set(Placement *p, const char *node_id, PlacementNodeStatus status);
/* Re-reads one node (status and every slot) from db, after a transaction
 * that changed it committed. */
int placement_node_reload(Placement *p, Db *db, const char *node_id);

/* Best fit for gpu_count slots under rule on a schedulable node: 0 and *ret,
 * or -ENOSPC. Does not change the index: the launch marks the picked slots
 * taken (placement_slot_set_free) while its transaction is open and gives
 * them back if it rolls back (one loop: nothing else runs in between). */
int placement_pick(Placement *p, const PlacementRule *rule, unsigned gpu_count, PlacementPick *ret);

/* Largest number of matching free slots one group holds, among schedulable
 * nodes (online=true) or among approved nodes that are not schedulable now
 * (online=false: active but their agent is away). */
unsigned placement_max_group(Placement *p, const PlacementRule *rule, bool online);

/* Of counts[0..n), those some schedulable node can host now, ascending, into
 * ret_counts (room for n); their number into *ret_n. */
int placement_rule_available_counts(Placement *p, const PlacementRule *rule, const unsigned *counts,
                                    size_t n, unsigned *ret_counts, size_t *ret_n);

/* The SKU's gpu_counts that some online node can host right now, ascending,
 * into ret_counts (room for PLACEMENT_MAX_COUNTS); their number into *ret_n.
 * Used by GET /api/v1/catalog/skus. */
int placement_available_counts(Placement *p, const Sku *sku, unsigned *ret_counts, size_t *ret_n);

/* Totals, for metrics and tests. */
size_t placement_n_slots(Placement *p);
size_t placement_n_free(Placement *p);
