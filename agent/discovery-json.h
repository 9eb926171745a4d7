/* SPDX-License-Identifier: MIT */
#pragma once

/* The discovery document of the API contract ("Discovery JSON"): numa_nodes,
 * devices, slots, invariants, fingerprint; unknown values are null. Extra
 * fields (source, names, bridge chains, locality, memory share, iommu, notes)
 * sit beside the contract's, never instead of them. */

#include <jansson.h>

#include "inventory.h"
#include "slotmap.h"

int discovery_to_json(const Inventory *inv, const SlotMap *map, const char *fingerprint,
                      json_t **ret);
