/* SPDX-License-Identifier: MIT */
#include "pci-bind.h"

#include <sys/stat.h>

#include "macro.h"
#include "pci-sysfs.h"
#include "sysfs-path.h"

int pci_driver_of(const char *root, const char *addr, char **ret)
{
        _cleanup_free_ char *dir = NULL;
        int r;

        if (!pci_address_is_valid(addr))
                return -EINVAL;
        dir = pci_device_path(root, addr, NULL);
        if (!dir)
                return -ENOMEM;
        if (access(dir, F_OK) < 0)
                return -ENODEV;
        r = pci_link_basename(root, addr, "driver", ret);
        if (r == -ENOENT) {
                *ret = NULL;
                return 0;
        }
        return r;
}

int pci_iommu_group(const char *root, const char *addr, char **ret)
{
        return pci_link_basename(root, addr, "iommu_group", ret);
}

static bool valid_driver_name(const char *d)
{
        if (!d || !*d || strlen(d) > 64 || streq(d, ".") || streq(d, ".."))
                return false;
        return strchr(d, '/') == NULL && strpbrk(d, " \n\t") == NULL;
}

static int driver_registered(const char *root, const char *driver)
{
        _cleanup_free_ char *rel = NULL, *path = NULL;

        if (asprintf(&rel, "sys/bus/pci/drivers/%s", driver) < 0)
                return -ENOMEM;
        path = sysfs_join(root, rel);
        if (!path)
                return -ENOMEM;
        return access(path, F_OK) == 0 ? 0 : -ENODEV;
}

static int override_is(const char *root, const char *addr, const char *want)
{
        _cleanup_free_ char *cur = NULL;
        int r = pci_read_attr(root, addr, "driver_override", &cur);
        if (r == -EBADMSG) /* empty: no override (a fake tree without "(null)") */
                return want == NULL;
        if (r < 0)
                return r;
        if (!want)
                return streq(cur, "(null)");
        return streq(cur, want);
}

static int set_override(const char *root, const char *addr, const char *driver, unsigned timeout_ms)
{
        int r = override_is(root, addr, driver);
        if (r < 0)
                return r;
        if (r > 0)
                return 0;
        /* A lone newline clears the override. */
        return pci_write_attr(root, addr, "driver_override", driver ? driver : "\n", timeout_ms);
}

static int unbind_from(const char *root, const char *addr, const char *driver, unsigned timeout_ms)
{
        _cleanup_free_ char *rel = NULL;
        if (asprintf(&rel, "sys/bus/pci/drivers/%s/unbind", driver) < 0)
                return -ENOMEM;
        return sysfs_write_bounded(root, rel, addr, timeout_ms);
}

int pci_bind(const char *root, const char *addr, const char *driver, unsigned timeout_ms)
{
        _cleanup_free_ char *cur = NULL, *after = NULL;
        int r;

        if (!pci_address_is_valid(addr) || !valid_driver_name(driver))
                return -EINVAL;
        r = pci_driver_of(root, addr, &cur);
        if (r < 0)
                return r;
        r = driver_registered(root, driver);
        if (r < 0)
                return r;
        r = set_override(root, addr, driver, timeout_ms);
        if (r < 0)
                return r;
        if (cur && streq(cur, driver))
                return 0;
        if (cur) {
                r = unbind_from(root, addr, cur, timeout_ms);
                if (r < 0 && r != -ENODEV) /* -ENODEV: it let go by itself meanwhile */
                        return r;
        }
        r = sysfs_write_bounded(root, "sys/bus/pci/drivers_probe", addr, timeout_ms);
        if (r < 0)
                return r;
        r = pci_driver_of(root, addr, &after);
        if (r < 0)
                return r;
        return after && streq(after, driver) ? 1 : -ENXIO;
}

int pci_unbind(const char *root, const char *addr, unsigned timeout_ms)
{
        _cleanup_free_ char *cur = NULL;
        int r, changed = 0;

        r = pci_driver_of(root, addr, &cur);
        if (r < 0)
                return r;
        /* Clear the override first, or nothing; an unbound device with an
         * override would be taken again by that driver on the next probe. */
        r = override_is(root, addr, NULL);
        if (r < 0 && r != -ENOENT)
                return r;
        if (r == 0) {
                r = pci_write_attr(root, addr, "driver_override", "\n", timeout_ms);
                if (r < 0)
                        return r;
                changed = 1;
        }
        if (cur) {
                r = unbind_from(root, addr, cur, timeout_ms);
                if (r < 0 && r != -ENODEV)
                        return r;
                changed = 1;
        }
        return changed;
}

int pci_restore(const char *root, const char *addr, const char *driver, unsigned timeout_ms)
{
        int r, changed;

        if (!driver)
                return pci_unbind(root, addr, timeout_ms);
        changed = r = pci_bind(root, addr, driver, timeout_ms);
        if (r < 0)
                return r;
        r = set_override(root, addr, NULL, timeout_ms);
        if (r < 0)
                return r;
        return changed;
}
