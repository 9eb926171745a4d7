/* SPDX-License-Identifier: MIT */
#pragma once

/* The simulated host: a real machine's topology (an hwloc XML export from
 * the fixtures, installed with the agent) with the one fact an XML export
 * cannot tell, the SR-IOV capacity of its NICs, simulated so that the
 * per-slot-VF invariant can hold. Every simulated value is marked: the
 * inventory carries a note for each, and the discovery document says
 * `simulated: true` and lists them. Nothing on the real host is read or
 * touched. */

#include "inventory.h"

#define SIMULATE_TOPOLOGY_FILE "eas-tioga.xml" /* LLNL Tioga: 8 GPUs, 4 NUMA, 4 Slingshot */
#define SIMULATE_NIC_TOTAL_VFS 16

/* Finds the default topology file: next to the binary in the build tree
 * (agent/data/topology/), under ../share/gpuslice/topology/ of an installed
 * binary, then the configured data directory. Malloc'ed path, or -ENOENT. */
int simulate_default_topology(char **ret);

/* Loads the simulated host from an hwloc XML file and simulates what it
 * cannot tell. The notes list every simulated value. */
int simulate_load(const char *topology, Inventory **ret);
