/* SPDX-License-Identifier: MIT */
#include "pci-reset.h"

#include "macro.h"
#include "pci-sysfs.h"

int pci_reset_methods(const char *root, const char *addr, char **ret)
{
        _cleanup_free_ char *reset = NULL;
        int r;

        if (!pci_address_is_valid(addr))
                return -EINVAL;
        reset = pci_device_path(root, addr, "reset");
        if (!reset)
                return -ENOMEM;
        if (access(reset, F_OK) < 0)
                return -EOPNOTSUPP;
        r = pci_read_attr(root, addr, "reset_method", ret);
        if (r == -ENOENT || r == -EBADMSG) {
                /* Kernels before 5.15 have no reset_method: the attribute
                 * alone says some method exists. */
                char *s = strdup("unknown");
                if (!s)
                        return -ENOMEM;
                *ret = s;
                return 0;
        }
        return r;
}

int pci_reset_function(const char *root, const char *addr, unsigned timeout_ms)
{
        _cleanup_free_ char *methods = NULL;
        int r;

        r = pci_reset_methods(root, addr, &methods);
        if (r < 0)
                return r;
        return pci_write_attr(root, addr, "reset", "1", timeout_ms);
}
