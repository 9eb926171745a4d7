/* SPDX-License-Identifier: MIT */
#pragma once

/* Where the daemon discovers its host from, and the discovery itself as the
 * daemon and the facts verb use it: the live host, a sysfs snapshot, an
 * hwloc XML export, or the simulated host (simulate.h). */

#include <jansson.h>
#include <stdbool.h>

#include "config.h"
#include "fingerprint.h"
#include "inventory.h"

typedef struct HostSource {
        bool simulate;
        InventorySource src; /* when !simulate */
        char *path;          /* owned copy behind src.path / the simulated topology */
} HostSource;

/* From the config keys simulate, simulate_topology, sysfs_root, hwloc_xml. */
int host_source_from_config(const Config *c, HostSource *ret);
void host_source_done(HostSource *h);

int host_load(const HostSource *h, Inventory **ret);

/* The discovery document (API-CONTRACT "Discovery JSON") plus
 * `simulated` (and `simulated_values`, the notes that say what was simulated). */
int host_discover(const HostSource *h, json_t **ret_doc, char fingerprint[static FINGERPRINT_MAX]);
int host_fingerprint(const HostSource *h, char fingerprint[static FINGERPRINT_MAX]);
