/* SPDX-License-Identifier: MIT */
#pragma once

/* The PCI device attributes the host operations touch, under a configurable
 * root ("/" on a live host, a temporary tree in unit tests):
 *   root/sys/bus/pci/devices/<addr>/<attr>
 * and the one primitive every host write goes through: a write bounded by a
 * deadline. Some sysfs writes block in the kernel for as long as someone else
 * holds the device (sriov_numvfs = 0 or an unbind while a VFIO user keeps a VF
 * open; a reset while the device lock is held), and the blocked task cannot
 * be killed. So the write runs in a short-lived grandchild process; on the
 * deadline the caller gets -ETIMEDOUT and the grandchild is left to finish (or
 * stay stuck) on its own, reaped by init. The caller never hangs. */

#include <stdbool.h>

#define PCI_WRITE_TIMEOUT_MS_DEFAULT 10000u

/* "dddd:bb:dd.f" in lower-case hex, nothing else: every address becomes a path
 * component, so anything looser is refused before a path is built. */
bool pci_address_is_valid(const char *addr);

/* root/sys/bus/pci/devices/<addr>/<attr> (attr may be NULL); NULL on OOM. */
char *pci_device_path(const char *root, const char *addr, const char *attr);

/* Writes value to root/rel within timeout_ms. 0, -errno from open()/write()
 * (the kernel's answer: -EBUSY, -ERANGE, -EINVAL, ...), -ETIMEDOUT. */
int sysfs_write_bounded(const char *root, const char *rel, const char *value, unsigned timeout_ms);

/* Reads an attribute of a PCI device (see sysfs_read_attr). */
int pci_read_attr(const char *root, const char *addr, const char *attr, char **ret);

/* The last path component of what a device's link (driver, iommu_group,
 * physfn, virtfnN) resolves to inside root. -EINVAL for a bad address,
 * -ENOENT without the link, -errno otherwise. */
int pci_link_basename(const char *root, const char *addr, const char *link, char **ret);

/* Writes an attribute of a PCI device (see sysfs_write_bounded). */
int pci_write_attr(const char *root, const char *addr, const char *attr, const char *value,
                   unsigned timeout_ms);

/* Polls until root/rel exists (or, with gone, no longer exists); -ETIMEDOUT. */
int sysfs_wait_path(const char *root, const char *rel, bool gone, unsigned timeout_ms);

/* Monotonic milliseconds, for deadlines. */
unsigned long long pci_now_ms(void);
