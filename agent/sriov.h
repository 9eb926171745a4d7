/* SPDX-License-Identifier: MIT */
#pragma once

/* SR-IOV virtual functions of a physical function, through the kernel's
 * sriov_* attributes under root/sys/bus/pci/devices/<pf>/.
 *
 * The kernel's rules, which this module follows rather than fights:
 * - a non-zero count can only change through 0 ("Disable before enabling":
 *   writing 3 while 2 exist is -EBUSY), so a change writes 0 first;
 * - more than sriov_totalvfs is -ERANGE (checked here first, so the answer is
 *   the same on a tree without a kernel behind it);
 * - writing 0 BLOCKS while a VFIO user holds a VF open: every write is bounded
 *   (pci-sysfs.h) and a blocked one comes back as -ETIMEDOUT;
 * - no PF driver, or a driver without sriov_configure: -ENOENT from the kernel. */

#include <stdbool.h>

typedef struct {
        unsigned total_vfs;
        unsigned num_vfs;
} SriovInfo;

/* -EOPNOTSUPP when the device has no SR-IOV capability, -EINVAL for a bad address. */
int sriov_read(const char *root, const char *pf, SriovInfo *ret);

/* Sets the VF count. 1 when changed, 0 when it already was n (nothing written),
 * -ERANGE (n > total), -EBUSY (the kernel refused), -ETIMEDOUT (a write blocked:
 * a VF is still in use), -ENOENT (no PF driver able to configure SR-IOV),
 * -EIO (the kernel accepted but the count read back differs). */
int sriov_set_num_vfs(const char *root, const char *pf, unsigned n, unsigned timeout_ms);

/* sriov_drivers_autoprobe: off keeps new VFs driverless until they are bound
 * on purpose (a host driver probing a VF meant for a tenant is wasted work,
 * and QEMU's NVMe VFs fail that probe slowly). Idempotent. */
int sriov_set_drivers_autoprobe(const char *root, const char *pf, bool on, unsigned timeout_ms);

/* The address of VF index (the virtfn<index> link); -ENOENT when absent. */
int sriov_vf_address(const char *root, const char *pf, unsigned index, char **ret);

/* The PF of a VF (its physfn link); -ENOENT when addr is not a VF. */
int sriov_pf_of(const char *root, const char *vf, char **ret);
