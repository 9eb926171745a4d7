/* SPDX-License-Identifier: MIT */
/* sriov.c on a temporary tree: validation, idempotency, ERANGE before any
 * write, the VF links, and a write that blocks comes back on its deadline.
 * The kernel's EBUSY/ERANGE and the through-0 change are proven in tests/vm. */

#include "hostops-test.h"
#include "pci-reset.h"
#include "pci-sysfs.h"
#include "sriov.h"

#define PF      "0000:3b:00.0"
#define VF      "0000:3b:00.1"
#define T(name) Test(sriov, name, .init = setup, .fini = tree_fini, .timeout = 30)

static void setup(void)
{
        tree_init();
        tpci(PF, "nvme");
        tpci(VF, NULL);
        tput("sys/bus/pci/devices/" PF "/sriov_totalvfs", "4\n");
        tput("sys/bus/pci/devices/" PF "/sriov_numvfs", "2\n");
        tput("sys/bus/pci/devices/" PF "/sriov_drivers_autoprobe", "1\n");
        tlink("../" VF, "sys/bus/pci/devices/" PF "/virtfn0");
        tlink("../" PF, "sys/bus/pci/devices/" VF "/physfn");
}

T(addresses_that_are_not_canonical_are_refused_before_any_path_is_built)
{
        const char *bad[] = {
            "../../etc", "0000:3B:00.0", "0000:3b:00.8", "0000:3b:20.0", "3b:00.0", "0000:3b:00.0/",
            "",          "0000:3b:00.0 "};
        SriovInfo info;
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                cr_expect(!pci_address_is_valid(bad[i]), "%s", bad[i]);
                cr_expect_eq(sriov_read(hroot, bad[i], &info), -EINVAL, "%s", bad[i]);
                cr_expect_eq(sriov_set_num_vfs(hroot, bad[i], 1, 1000), -EINVAL, "%s", bad[i]);
        }
        cr_expect(pci_address_is_valid("0000:3b:1f.7"));
}

T(reads_total_and_current_counts)
{
        SriovInfo info;
        cr_assert_eq(sriov_read(hroot, PF, &info), 0);
        cr_expect_eq(info.total_vfs, 4);
        cr_expect_eq(info.num_vfs, 2);
}

T(a_device_without_the_capability_or_absent_is_told_apart)
{
        SriovInfo info;
        cr_expect_eq(sriov_read(hroot, VF, &info), -EOPNOTSUPP);
        cr_expect_eq(sriov_read(hroot, "0000:99:00.0", &info), -ENODEV);
}

T(the_same_count_writes_nothing)
{
        cr_expect_eq(sriov_set_num_vfs(hroot, PF, 2, 1000), 0);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" PF "/sriov_numvfs"), "2\n");
}

T(more_than_total_is_erange_and_writes_nothing)
{
        cr_expect_eq(sriov_set_num_vfs(hroot, PF, 5, 1000), -ERANGE);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" PF "/sriov_numvfs"), "2\n");
}

T(a_change_writes_the_count_and_reads_it_back)
{
        /* No kernel here: the last write is what reads back. */
        cr_expect_eq(sriov_set_num_vfs(hroot, PF, 3, 1000), 1);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" PF "/sriov_numvfs"), "3");
        cr_expect_eq(sriov_set_num_vfs(hroot, PF, 0, 1000), 1);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" PF "/sriov_numvfs"), "0");
}

T(autoprobe_is_idempotent)
{
        cr_expect_eq(sriov_set_drivers_autoprobe(hroot, PF, true, 1000), 0);
        cr_expect_eq(sriov_set_drivers_autoprobe(hroot, PF, false, 1000), 1);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" PF "/sriov_drivers_autoprobe"), "0");
        cr_expect_eq(sriov_set_drivers_autoprobe(hroot, VF, false, 1000), -EOPNOTSUPP);
}

T(vf_links_resolve_both_ways)
{
        _cleanup_free_ char *vf = NULL, *pf = NULL, *none = NULL;
        cr_assert_eq(sriov_vf_address(hroot, PF, 0, &vf), 0);
        cr_expect_str_eq(vf, VF);
        cr_assert_eq(sriov_pf_of(hroot, VF, &pf), 0);
        cr_expect_str_eq(pf, PF);
        cr_expect_eq(sriov_vf_address(hroot, PF, 1, &none), -ENOENT);
        cr_expect_eq(sriov_pf_of(hroot, PF, &none), -ENOENT);
}

T(a_blocking_write_returns_etimedout_on_its_deadline)
{
        /* sriov_numvfs as a FIFO nobody reads: the open blocks like the
         * kernel's write does while a VFIO user holds a VF. */
        unlink(tpath("sys/bus/pci/devices/" PF "/sriov_numvfs"));
        tfifo("sys/bus/pci/devices/" PF "/sriov_numvfs");
        unsigned long long t0 = pci_now_ms();
        int r = pci_write_attr(hroot, PF, "sriov_numvfs", "0", 300);
        unsigned long long took = pci_now_ms() - t0;
        tfifo_drain("sys/bus/pci/devices/" PF "/sriov_numvfs");
        cr_expect_eq(r, -ETIMEDOUT);
        cr_expect(took >= 300 && took < 3000, "took %llu ms", took);
}

T(write_errors_come_back_as_negative_errno)
{
        cr_expect_eq(pci_write_attr(hroot, PF, "no_such_attribute", "1", 1000), -ENOENT);
        cr_expect_eq(sysfs_write_bounded(hroot, "sys/bus/pci/devices", "1", 1000), -EISDIR);
}

T(reset_needs_the_reset_attribute_and_is_bounded)
{
        _cleanup_free_ char *m = NULL;
        cr_expect_eq(pci_reset_methods(hroot, PF, &m), -EOPNOTSUPP);
        cr_expect_eq(pci_reset_function(hroot, PF, 1000), -EOPNOTSUPP);
        tput("sys/bus/pci/devices/" PF "/reset", "");
        tput("sys/bus/pci/devices/" PF "/reset_method", "flr bus\n");
        cr_assert_eq(pci_reset_methods(hroot, PF, &m), 0);
        cr_expect_str_eq(m, "flr bus");
        cr_expect_eq(pci_reset_function(hroot, PF, 1000), 0);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" PF "/reset"), "1");
        tfifo("sys/bus/pci/devices/" VF "/reset");
        cr_expect_eq(pci_reset_function(hroot, VF, 200), -ETIMEDOUT);
        tfifo_drain("sys/bus/pci/devices/" VF "/reset");
}
