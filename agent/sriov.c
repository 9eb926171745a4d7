/* SPDX-License-Identifier: MIT */
#include "sriov.h"

#include "macro.h"
#include "pci-sysfs.h"
#include "sysfs-path.h"

static int read_unsigned(const char *root, const char *addr, const char *attr, unsigned *ret)
{
        _cleanup_free_ char *s = NULL;
        long v;
        int r;

        r = pci_read_attr(root, addr, attr, &s);
        if (r < 0)
                return r;
        r = sysfs_parse_long(s, 10, &v);
        if (r < 0)
                return r;
        if (v < 0 || v > 0xffff)
                return -EBADMSG;
        *ret = (unsigned)v;
        return 0;
}

int sriov_read(const char *root, const char *pf, SriovInfo *ret)
{
        SriovInfo info = {0};
        int r;

        if (!pci_address_is_valid(pf))
                return -EINVAL;
        r = read_unsigned(root, pf, "sriov_totalvfs", &info.total_vfs);
        if (r == -ENOENT) {
                /* No capability, or no such device at all. */
                _cleanup_free_ char *dir = pci_device_path(root, pf, NULL);
                if (!dir)
                        return -ENOMEM;
                return access(dir, F_OK) == 0 ? -EOPNOTSUPP : -ENODEV;
        }
        if (r < 0)
                return r;
        r = read_unsigned(root, pf, "sriov_numvfs", &info.num_vfs);
        if (r < 0)
                return r;
        *ret = info;
        return 0;
}

static int write_count(const char *root, const char *pf, unsigned n, unsigned timeout_ms)
{
        char v[16];
        snprintf(v, sizeof(v), "%u", n);
        return pci_write_attr(root, pf, "sriov_numvfs", v, timeout_ms);
}

int sriov_set_num_vfs(const char *root, const char *pf, unsigned n, unsigned timeout_ms)
{
        SriovInfo info;
        int r;

        r = sriov_read(root, pf, &info);
        if (r < 0)
                return r;
        if (info.num_vfs == n)
                return 0;
        if (n > info.total_vfs)
                return -ERANGE;
        if (info.num_vfs != 0 && n != 0) {
                r = write_count(root, pf, 0, timeout_ms);
                if (r < 0)
                        return r;
        }
        r = write_count(root, pf, n, timeout_ms);
        if (r < 0)
                return r;
        r = sriov_read(root, pf, &info);
        if (r < 0)
                return r;
        return info.num_vfs == n ? 1 : -EIO;
}

int sriov_set_drivers_autoprobe(const char *root, const char *pf, bool on, unsigned timeout_ms)
{
        _cleanup_free_ char *cur = NULL;
        int r;

        r = pci_read_attr(root, pf, "sriov_drivers_autoprobe", &cur);
        if (r < 0)
                return r == -ENOENT ? -EOPNOTSUPP : r;
        if (streq(cur, on ? "1" : "0"))
                return 0;
        r = pci_write_attr(root, pf, "sriov_drivers_autoprobe", on ? "1" : "0", timeout_ms);
        return r < 0 ? r : 1;
}

static int link_target_address(const char *root, const char *addr, const char *link, char **ret)
{
        _cleanup_free_ char *base = NULL;
        int r = pci_link_basename(root, addr, link, &base);
        if (r < 0)
                return r;
        if (!pci_address_is_valid(base))
                return -EBADMSG;
        *ret = TAKE_PTR(base);
        return 0;
}

int sriov_vf_address(const char *root, const char *pf, unsigned index, char **ret)
{
        char link[32];
        snprintf(link, sizeof(link), "virtfn%u", index);
        return link_target_address(root, pf, link, ret);
}

int sriov_pf_of(const char *root, const char *vf, char **ret)
{
        return link_target_address(root, vf, "physfn", ret);
}
