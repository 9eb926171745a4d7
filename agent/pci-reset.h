/* SPDX-License-Identifier: MIT */
#pragma once

/* Function-level reset through the kernel's `reset` attribute, which picks the
 * first method in `reset_method` (flr, pm, bus, ...) that the device supports.
 * The write is bounded (pci-sysfs.h): the kernel takes the device lock, which
 * a stuck driver or user may hold. */

/* The methods the kernel may use, as listed in reset_method ("flr bus"), or
 * -EOPNOTSUPP when the device offers none (no reset attribute). */
int pci_reset_methods(const char *root, const char *addr, char **ret);

/* Resets the function. 0, -EOPNOTSUPP (no reset possible), -ETIMEDOUT, or the
 * kernel's error (-ENOTTY when every method failed). */
int pci_reset_function(const char *root, const char *addr, unsigned timeout_ms);
