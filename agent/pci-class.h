/* SPDX-License-Identifier: MIT */
#pragma once

/* What a PCI function is, from its ids and class alone. One table decides, so
 * the odd machines (BMC VGA chips, NVSwitches, co-processors, VF ids seen in
 * real exports) are rows, not special cases scattered through the code. */

#include <stdbool.h>
#include <stdint.h>

typedef enum {
        DEVICE_KIND_GPU,
        DEVICE_KIND_NIC,
        DEVICE_KIND_NVME,
        DEVICE_KIND_SWITCH,
        DEVICE_KIND_OTHER,
        _DEVICE_KIND_MAX,
} DeviceKind;

#define PCI_ID_UNKNOWN (-1)

#define PCI_VENDOR_NVIDIA 0x10de
#define PCI_VENDOR_AMD    0x1002
#define PCI_VENDOR_INTEL  0x8086

const char *device_kind_to_string(DeviceKind k);

/* vendor/device may be PCI_ID_UNKNOWN; class_code is the 16-bit base class +
 * subclass (0x0302), or PCI_ID_UNKNOWN. is_bridge_below_bridge tells a PCIe
 * switch port (a bridge under another bridge) from a root port. */
DeviceKind pci_classify(int vendor, int device, int class_code, bool is_bridge_below_bridge);

/* True when vendor:device is a known SR-IOV virtual function id (used where a
 * source has no physfn link, e.g. an hwloc XML export). */
bool pci_id_is_virtual_function(int vendor, int device);

/* Short reason a display/3D/accelerator-class function is not a GPU, or NULL. */
const char *pci_not_gpu_reason(int vendor, int device, int class_code);
