/* SPDX-License-Identifier: MIT */
/* pci-bind.c on a temporary tree: which file gets which value, idempotency,
 * and that a probe nobody answered is -ENXIO rather than success. The real
 * hand-over (nvme -> vfio-pci -> nvme, /dev/vfio/N) is proven in tests/vm. */

#include "hostops-test.h"
#include "pci-bind.h"

#define DEV     "0000:3b:00.0"
#define T(name) Test(pci_bind, name, .init = setup, .fini = tree_fini, .timeout = 30)

static void setup(void)
{
        tree_init();
        tpci(DEV, "nvme");
        tdriver("vfio-pci");
        tdir("sys/kernel/iommu_groups/17");
        tlink("../../../../kernel/iommu_groups/17", "sys/bus/pci/devices/" DEV "/iommu_group");
}

T(reads_the_bound_driver_and_the_iommu_group)
{
        _cleanup_free_ char *d = NULL, *g = NULL;
        cr_assert_eq(pci_driver_of(hroot, DEV, &d), 0);
        cr_expect_str_eq(d, "nvme");
        cr_assert_eq(pci_iommu_group(hroot, DEV, &g), 0);
        cr_expect_str_eq(g, "17");
}

T(an_unbound_device_has_no_driver_and_an_absent_one_is_enodev)
{
        _cleanup_free_ char *d = NULL;
        unlink(tpath("sys/bus/pci/devices/" DEV "/driver"));
        cr_assert_eq(pci_driver_of(hroot, DEV, &d), 0);
        cr_expect_null(d);
        cr_expect_eq(pci_driver_of(hroot, "0000:99:00.0", &d), -ENODEV);
}

T(binding_writes_override_then_unbind_then_probe_and_checks_the_result)
{
        cr_expect_eq(pci_bind(hroot, DEV, "vfio-pci", 1000), -ENXIO,
                     "no kernel took the device, so this is not success");
        cr_expect_str_eq(tget("sys/bus/pci/devices/" DEV "/driver_override"), "vfio-pci");
        cr_expect_str_eq(tget("sys/bus/pci/drivers/nvme/unbind"), DEV);
        cr_expect_str_eq(tget("sys/bus/pci/drivers_probe"), DEV);
}

T(binding_to_the_current_driver_only_pins_the_override)
{
        tput("sys/bus/pci/devices/" DEV "/driver_override", "(null)\n");
        cr_expect_eq(pci_bind(hroot, DEV, "nvme", 1000), 0);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" DEV "/driver_override"), "nvme");
        cr_expect_str_eq(tget("sys/bus/pci/drivers/nvme/unbind"), "");
        cr_expect_str_eq(tget("sys/bus/pci/drivers_probe"), "");
        tput("sys/bus/pci/devices/" DEV "/driver_override", "nvme\n");
        cr_expect_eq(pci_bind(hroot, DEV, "nvme", 1000), 0);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" DEV "/driver_override"), "nvme\n",
                         "an override already in place is not written again");
}

T(a_driver_that_is_not_registered_is_enodev_and_touches_nothing)
{
        cr_expect_eq(pci_bind(hroot, DEV, "mlx5_core", 1000), -ENODEV);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" DEV "/driver_override"), "(null)\n");
}

T(driver_names_that_could_escape_a_path_are_refused)
{
        const char *bad[] = {"", "..", "a/b", "vfio-pci\n", "a b", NULL};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                cr_expect_eq(pci_bind(hroot, DEV, bad[i], 1000), -EINVAL, "%s", strempty(bad[i]));
        cr_expect_eq(pci_bind(hroot, "../x", "vfio-pci", 1000), -EINVAL);
}

T(unbind_clears_the_override_and_releases_the_driver)
{
        tput("sys/bus/pci/devices/" DEV "/driver_override", "vfio-pci\n");
        cr_expect_eq(pci_unbind(hroot, DEV, 1000), 1);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" DEV "/driver_override"), "\n");
        cr_expect_str_eq(tget("sys/bus/pci/drivers/nvme/unbind"), DEV);
}

T(unbind_of_a_free_device_does_nothing)
{
        unlink(tpath("sys/bus/pci/devices/" DEV "/driver"));
        cr_expect_eq(pci_unbind(hroot, DEV, 1000), 0);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" DEV "/driver_override"), "(null)\n");
}

T(an_unbind_that_blocks_comes_back_on_its_deadline)
{
        unlink(tpath("sys/bus/pci/drivers/nvme/unbind"));
        tfifo("sys/bus/pci/drivers/nvme/unbind");
        int r = pci_bind(hroot, DEV, "vfio-pci", 200);
        tfifo_drain("sys/bus/pci/drivers/nvme/unbind");
        cr_expect_eq(r, -ETIMEDOUT);
}
