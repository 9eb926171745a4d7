/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>

#include "pci-class.h"

#define T(name) Test(pci_class, name, .timeout = 10)

T(data_centre_gpus_are_gpus)
{
        cr_expect_eq(pci_classify(0x10de, 0x1db8, 0x0302, false), DEVICE_KIND_GPU); /* V100 */
        cr_expect_eq(pci_classify(0x10de, 0x2335, 0x0302, false), DEVICE_KIND_GPU); /* H200 */
        cr_expect_eq(pci_classify(0x1002, 0x7408, 0x0380, false), DEVICE_KIND_GPU); /* MI250X */
        cr_expect_eq(pci_classify(0x1002, 0x66a1, 0x0300, false), DEVICE_KIND_GPU); /* MI50 */
        cr_expect_eq(pci_classify(0x8086, 0x0bd5, 0x0380, false), DEVICE_KIND_GPU); /* Max 1550 */
        cr_expect_eq(pci_classify(0x10de, 0x20b5, 0x1200, false), DEVICE_KIND_GPU);
}

T(bmc_video_is_not_a_gpu)
{
        cr_expect_eq(pci_classify(0x1a03, 0x2000, 0x0300, false), DEVICE_KIND_OTHER); /* ASPEED */
        cr_expect_eq(pci_classify(0x102b, 0x0532, 0x0300, false), DEVICE_KIND_OTHER); /* Matrox */
        cr_expect_eq(pci_classify(0x1002, 0x515e, 0x0300, false), DEVICE_KIND_OTHER); /* ES1000 */
        cr_expect_not_null(pci_not_gpu_reason(0x1002, 0x515e, 0x0300));
}

T(nvswitch_and_coprocessors_are_not_gpus)
{
        cr_expect_eq(pci_classify(0x10de, 0x1ac2, 0x0680, false), DEVICE_KIND_OTHER);
        cr_expect_eq(pci_classify(0x10de, 0x22a3, 0x0680, false), DEVICE_KIND_OTHER);
        cr_expect_eq(pci_classify(0x8086, 0x4940, 0x0b40, false), DEVICE_KIND_OTHER); /* QAT */
        cr_expect_eq(pci_classify(0x8086, 0x2710, 0x0b40, false), DEVICE_KIND_OTHER); /* DLB */
        cr_expect_eq(pci_classify(0x1bcf, 0x001c, 0x0b40, false), DEVICE_KIND_OTHER); /* NEC VE */
        cr_expect_eq(pci_classify(0x1da3, 0x1020, 0x1200, false), DEVICE_KIND_OTHER); /* Gaudi2 */
}

T(unknown_vendor_is_never_guessed_a_gpu)
{
        cr_expect_eq(pci_classify(PCI_ID_UNKNOWN, PCI_ID_UNKNOWN, 0x0302, false),
                     DEVICE_KIND_OTHER);
        cr_expect_eq(pci_classify(0x10de, 0x1db8, PCI_ID_UNKNOWN, false), DEVICE_KIND_OTHER);
}

T(nics_nvme_and_bridges)
{
        cr_expect_eq(pci_classify(0x15b3, 0x101b, 0x0207, false), DEVICE_KIND_NIC); /* IB */
        cr_expect_eq(pci_classify(0x8086, 0x1521, 0x0200, false), DEVICE_KIND_NIC);
        cr_expect_eq(pci_classify(0x15b3, 0x1003, 0x0280, false), DEVICE_KIND_NIC);   /* CX-3 VPI */
        cr_expect_eq(pci_classify(0x8086, 0x24fb, 0x0280, false), DEVICE_KIND_OTHER); /* Wi-Fi */
        cr_expect_eq(pci_classify(0x144d, 0xa808, 0x0108, false), DEVICE_KIND_NVME);
        cr_expect_eq(pci_classify(0x10b5, 0x9797, 0x0604, true), DEVICE_KIND_SWITCH);
        cr_expect_eq(pci_classify(0x8086, 0x2030, 0x0604, false), DEVICE_KIND_OTHER);
        cr_expect_eq(pci_classify(0x8086, 0x0a54, 0x0107, false), DEVICE_KIND_OTHER);
}

T(virtual_function_ids)
{
        cr_expect(pci_id_is_virtual_function(0x8086, 0x1520));
        cr_expect(pci_id_is_virtual_function(0x1137, 0x00cf));
        cr_expect(pci_id_is_virtual_function(0x1138, 0x00cf));
        cr_expect(pci_id_is_virtual_function(0x15b3, 0x101c));
        cr_expect_not(pci_id_is_virtual_function(0x8086, 0x1521));
        cr_expect_not(pci_id_is_virtual_function(PCI_ID_UNKNOWN, 0x1520));
}

T(kind_names_match_the_contract)
{
        cr_expect_str_eq(device_kind_to_string(DEVICE_KIND_GPU), "gpu");
        cr_expect_str_eq(device_kind_to_string(DEVICE_KIND_NIC), "nic");
        cr_expect_str_eq(device_kind_to_string(DEVICE_KIND_NVME), "nvme");
        cr_expect_str_eq(device_kind_to_string(DEVICE_KIND_SWITCH), "switch");
        cr_expect_str_eq(device_kind_to_string(DEVICE_KIND_OTHER), "other");
        cr_expect_null(device_kind_to_string(_DEVICE_KIND_MAX));
}
