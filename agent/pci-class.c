/* SPDX-License-Identifier: MIT */
#include "pci-class.h"

#include "macro.h"

static const char *const device_kind_table[_DEVICE_KIND_MAX] = {
    [DEVICE_KIND_GPU] = "gpu",       [DEVICE_KIND_NIC] = "nic",     [DEVICE_KIND_NVME] = "nvme",
    [DEVICE_KIND_SWITCH] = "switch", [DEVICE_KIND_OTHER] = "other",
};

const char *device_kind_to_string(DeviceKind k)
{
        if (k < 0 || k >= _DEVICE_KIND_MAX)
                return NULL;
        return device_kind_table[k];
}

typedef struct {
        int vendor;
        int device; /* PCI_ID_UNKNOWN: any device of the vendor */
        const char *why;
} PciIdRule;

/* Display-class functions that are management or board chips, never GPUs a
 * tenant can rent. */
static const PciIdRule not_gpu_table[] = {
    {0x1a03, PCI_ID_UNKNOWN, "ASPEED BMC video"},
    {0x102b, PCI_ID_UNKNOWN, "Matrox BMC/server video"},
    {0x19a2, PCI_ID_UNKNOWN, "Emulex/ServerEngines Pilot BMC video"},
    {0x1b36, PCI_ID_UNKNOWN, "QEMU emulated video"},
    {0x1234, PCI_ID_UNKNOWN, "Bochs/QEMU emulated video"},
    {0x15ad, PCI_ID_UNKNOWN, "VMware SVGA"},
    {0x1af4, PCI_ID_UNKNOWN, "virtio GPU"},
    {0x1002, 0x515e, "ATI ES1000 server video (BMC)"},
    {0x1002, 0x5159, "ATI RV100/ES1000 server video"},
    {0x1002, 0x4752, "ATI Rage XL server video"},
    {0x10de, 0x1ac0, "NVSwitch"},
    {0x10de, 0x1ac1, "NVSwitch"},
    {0x10de, 0x1ac2, "NVSwitch"},
    {0x10de, 0x22a3, "NVSwitch"},
};

/* SR-IOV virtual function ids as they appear in exports that carry no
 * physfn link. 1138:00cf is how hwloc's 16intel64-manyVFs recorded two Cisco
 * usNIC VFs. */
static const PciIdRule vf_table[] = {
    {0x1137, 0x00cf, "Cisco VIC usNIC VF"},
    {0x1138, 0x00cf, "Cisco VIC usNIC VF (vendor as recorded by firmware)"},
    {0x1137, 0x0071, "Cisco VIC SR-IOV VF"},
    {0x8086, 0x10ca, "Intel 82576 VF"},
    {0x8086, 0x1520, "Intel I350 VF"},
    {0x8086, 0x10ed, "Intel 82599 VF"},
    {0x8086, 0x154c, "Intel 700 series VF"},
    {0x8086, 0x37cd, "Intel X722 VF"},
    {0x8086, 0x1889, "Intel E810 adaptive VF"},
    {0x15b3, 0x1004, "ConnectX-3 VF"},
    {0x15b3, 0x1014, "ConnectX-4 VF"},
    {0x15b3, 0x1016, "ConnectX-4 Lx VF"},
    {0x15b3, 0x1018, "ConnectX-5 VF"},
    {0x15b3, 0x101a, "ConnectX-5 Ex VF"},
    {0x15b3, 0x101c, "ConnectX-6 VF"},
    {0x15b3, 0x101e, "ConnectX family VF"},
    {0x14e4, 0x16dc, "Broadcom NetXtreme-E VF"},
    {0x14e4, 0x1806, "Broadcom NetXtreme-E VF"},
    {0x14e4, 0x1807, "Broadcom NetXtreme-E VF"},
};

static const PciIdRule *find_rule(const PciIdRule *t, size_t n, int vendor, int device)
{
        for (size_t i = 0; i < n; i++)
                if (t[i].vendor == vendor &&
                    (t[i].device == PCI_ID_UNKNOWN || t[i].device == device))
                        return &t[i];
        return NULL;
}

bool pci_id_is_virtual_function(int vendor, int device)
{
        if (vendor == PCI_ID_UNKNOWN || device == PCI_ID_UNKNOWN)
                return false;
        return find_rule(vf_table, ELEMENTSOF(vf_table), vendor, device) != NULL;
}

static bool is_gpu_vendor(int vendor)
{
        return vendor == PCI_VENDOR_NVIDIA || vendor == PCI_VENDOR_AMD ||
               vendor == PCI_VENDOR_INTEL;
}

/* 0300 VGA, 0302 3D, 0380 other display, 1200 processing accelerator. */
static bool is_gpu_class(int class_code)
{
        return class_code == 0x0300 || class_code == 0x0301 || class_code == 0x0302 ||
               class_code == 0x0380 || class_code == 0x1200;
}

const char *pci_not_gpu_reason(int vendor, int device, int class_code)
{
        const PciIdRule *r = find_rule(not_gpu_table, ELEMENTSOF(not_gpu_table), vendor, device);
        if (r)
                return r->why;
        if (class_code == 0x0b40)
                return "co-processor (QAT, DLB, vector engine)";
        if (is_gpu_class(class_code) && vendor != PCI_ID_UNKNOWN && !is_gpu_vendor(vendor))
                return "display/accelerator function of a non-GPU vendor";
        return NULL;
}

DeviceKind pci_classify(int vendor, int device, int class_code, bool is_bridge_below_bridge)
{
        if (class_code == PCI_ID_UNKNOWN)
                return DEVICE_KIND_OTHER;

        if (is_gpu_class(class_code)) {
                if (pci_not_gpu_reason(vendor, device, class_code))
                        return DEVICE_KIND_OTHER;
                /* Intel's only 1200-class parts are not GPUs (Gaudi uses
                 * vendor 1da3); Intel data-centre GPUs are 0380/0302. */
                if (class_code == 0x1200 && vendor == PCI_VENDOR_INTEL)
                        return DEVICE_KIND_OTHER;
                if (is_gpu_vendor(vendor))
                        return DEVICE_KIND_GPU;
                return DEVICE_KIND_OTHER;
        }

        switch (class_code) {
        case 0x0200: /* Ethernet */
        case 0x0207: /* InfiniBand */
                return DEVICE_KIND_NIC;
        case 0x0280: /* "other network": Mellanox VPI cards (ConnectX-3) say this; Wi-Fi too */
                return vendor == 0x15b3 ? DEVICE_KIND_NIC : DEVICE_KIND_OTHER;
        case 0x0108: /* NVM Express */
                return DEVICE_KIND_NVME;
        case 0x0604: /* PCI-to-PCI bridge: a switch port unless it is a root port */
                return is_bridge_below_bridge ? DEVICE_KIND_SWITCH : DEVICE_KIND_OTHER;
        default:
                return DEVICE_KIND_OTHER;
        }
}
