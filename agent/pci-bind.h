/* SPDX-License-Identifier: MIT */
#pragma once

/* Which host driver owns a PCI function, and handing it to another one
 * (vfio-pci for a tenant, back to nvme or none at teardown), the way the
 * kernel documents it: driver_override names the only driver allowed to take
 * the device, the current driver lets go (drivers/<cur>/unbind), and
 * drivers_probe asks the bus to attach it again. The bound driver is read
 * back; a probe that did not take the device is -ENXIO, not success.
 * Every write is bounded (pci-sysfs.h): an unbind can block while a VFIO
 * user holds the device. */

/* The bound driver's name, or *ret = NULL when none is bound. */
int pci_driver_of(const char *root, const char *addr, char **ret);

/* Binds addr to driver. 1 when it changed hands, 0 when it already was bound
 * to driver (the override is still pinned). -ENODEV: the driver is not
 * registered (module not loaded). -ENXIO: the probe left it unbound or bound
 * elsewhere. -ETIMEDOUT: a write blocked. */
int pci_bind(const char *root, const char *addr, const char *driver, unsigned timeout_ms);

/* Releases addr from its driver (if any) and clears driver_override. 1 when
 * something changed, 0 when already unbound with no override. */
int pci_unbind(const char *root, const char *addr, unsigned timeout_ms);

/* Returns addr to driver (NULL: leave it unbound) and clears the override
 * afterwards, so a later probe of the device follows the normal match rules. */
int pci_restore(const char *root, const char *addr, const char *driver, unsigned timeout_ms);

/* The IOMMU group number (the iommu_group link); -ENOENT without an IOMMU. */
int pci_iommu_group(const char *root, const char *addr, char **ret);
