/* SPDX-License-Identifier: MIT */
#pragma once

/* "sha256:<hex>" over a canonical text form of the inventory, so the
 * controller can tell changed hardware from unchanged. What the agent itself
 * changes while running (bound drivers, enabled NIC VFs, num_vfs) is left
 * out; GPU VFs stay in because they are the slots. */

#include "inventory.h"

#define FINGERPRINT_MAX (7 + 64 + 1)

/* The canonical serialization (malloc'ed), exposed for tests and debugging. */
int fingerprint_canonical(const Inventory *inv, char **ret);
int fingerprint_compute(const Inventory *inv, char out[static FINGERPRINT_MAX]);
