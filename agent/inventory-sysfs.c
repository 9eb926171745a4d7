/* SPDX-License-Identifier: MIT */
/* Inventory from a sysfs tree: the live host ("/") or a snapshot directory
 * laid out like one (sys/bus/pci/devices, sys/devices/system/node, proc/...).
 * Every path is built from the root; partial trees are expected (snapshots
 * keep only some files), so a missing attribute is unknown, while a present
 * but malformed one (a truncated file) is bad input. */

#include <dirent.h>
#include <limits.h>
#include <unistd.h>
#include <hwloc.h>
#include <sys/stat.h>

#include "inventory.h"
#include "log.h"
#include "macro.h"
#include "sysfs-path.h"

static void bitmap_freep(hwloc_bitmap_t *b)
{
        if (*b)
                hwloc_bitmap_free(*b);
}

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

/* Linux cpumask: comma-separated 32-bit hex words, most significant first. */
static int parse_cpumask(const char *s, hwloc_bitmap_t set)
{
        size_t nwords = 1;
        for (const char *p = s; *p; p++)
                if (*p == ',')
                        nwords++;
        const char *p = s;
        for (size_t w = nwords; w > 0; w--) {
                char *end;
                unsigned long v = strtoul(p, &end, 16);
                if (end == p || (*end != ',' && *end != '\0'))
                        return -EBADMSG;
                for (unsigned b = 0; b < 32; b++)
                        if (v & (1UL << b))
                                hwloc_bitmap_set(set, (unsigned)((w - 1) * 32 + b));
                p = *end ? end + 1 : end;
        }
        return 0;
}

static int read_hex_attr(const char *root, const char *dir, const char *name, int *ret)
{
        _cleanup_free_ char *rel = NULL, *s = NULL;
        long v;
        int r;

        if (asprintf(&rel, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        r = sysfs_read_attr(root, rel, &s);
        if (r == -ENOENT)
                return 0; /* unknown: keep the default */
        if (r >= 0)
                r = sysfs_parse_long(s, 16, &v);
        if (r < 0)
                return log_error_errno(r, "Cannot parse %s/%s: %s", root, rel,
                                       r == -EBADMSG ? "empty or malformed (truncated?)"
                                                     : strerror(-r));
        *ret = (int)v;
        return 1;
}

static int read_int_attr(const char *root, const char *dir, const char *name, long *ret)
{
        _cleanup_free_ char *rel = NULL, *s = NULL;
        int r;

        if (asprintf(&rel, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        r = sysfs_read_attr(root, rel, &s);
        if (r == -ENOENT)
                return 0;
        if (r >= 0)
                r = sysfs_parse_long(s, 10, ret);
        if (r < 0)
                return log_error_errno(r, "Cannot parse %s/%s: %s", root, rel,
                                       r == -EBADMSG ? "empty or malformed (truncated?)"
                                                     : strerror(-r));
        return 1;
}

/* Follows dir/name (a sysfs link) and returns the last component of its
 * target; 0 when the link is absent. */
/* The last component of a link's own target (driver, iommu_group). Only the
 * directory holding the link is resolved: the target itself need not exist,
 * since snapshots (scripts/snapshot-sysfs.sh, a clone of the fixtures) keep
 * the links but not /sys/bus/pci/drivers. The target text is only read,
 * never followed, so nothing outside the root is touched. */
static int read_link_basename(const char *root, const char *dir, const char *name, char **ret)
{
        _cleanup_free_ char *resolved_dir = NULL, *rel = NULL, *path = NULL;
        char target[PATH_MAX];
        int r;

        r = sysfs_chase(root, dir, &resolved_dir);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "Cannot follow link %s/%s: %m", root, dir);
        if (asprintf(&rel, "%s/%s", resolved_dir, name) < 0)
                return -ENOMEM;
        path = sysfs_join(root, rel);
        if (!path)
                return -ENOMEM;
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n < 0) {
                if (errno == ENOENT || errno == EINVAL) /* absent, or not a link */
                        return 0;
                return log_error_errno(-errno, "Cannot read link %s: %m", path);
        }
        target[n] = '\0';
        while (n > 1 && target[n - 1] == '/')
                target[--n] = '\0';
        const char *b = strrchr(target, '/');
        b = b ? b + 1 : target;
        if (*b == '\0' || streq(b, ".") || streq(b, ".."))
                return 0;
        *ret = strdup(b);
        return *ret ? 1 : -ENOMEM;
}

/* Bridge chain from the resolved device path:
 * sys/devices/pci0000:17/0000:17:00.0/0000:18:00.0 -> [0000:17:00.0]. */
static int parents_from_path(const char *resolved, char ***ret)
{
        _cleanup_free_ char *copy = strdup(resolved);
        char **l = calloc(1, sizeof(char *));
        char *save = NULL, *last = NULL;
        bool in_pci = false;

        if (!copy || !l) {
                free(l);
                return -ENOMEM;
        }
        for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                char norm[PCI_ADDRESS_MAX];
                if (startswith(c, "pci") && strchr(c, ':')) {
                        in_pci = true;
                        continue;
                }
                if (!in_pci || pci_address_normalize(c, norm) < 0)
                        continue;
                if (last && strv_push(&l, last) < 0) {
                        strv_free(l);
                        return -ENOMEM;
                }
                last = c;
        }
        *ret = l;
        return 0;
}

/* The one CPU-bearing NUMA node whose CPUs contain the device's local CPUs. */
static int numa_from_local_cpus(const Inventory *inv, const char *root, const char *dir)
{
        _cleanup_(bitmap_freep) hwloc_bitmap_t set = hwloc_bitmap_alloc();
        _cleanup_free_ char *rel = NULL, *s = NULL;
        int found = -1;

        if (!set)
                return -1;
        if (asprintf(&rel, "%s/local_cpulist", dir) < 0)
                return -1;
        if (sysfs_read_attr(root, rel, &s) >= 0) {
                if (hwloc_bitmap_list_sscanf(set, s) < 0)
                        return -1;
        } else {
                free(rel);
                rel = NULL;
                if (asprintf(&rel, "%s/local_cpus", dir) < 0)
                        return -1;
                if (sysfs_read_attr(root, rel, &s) < 0 || parse_cpumask(s, set) < 0)
                        return -1;
        }
        if (hwloc_bitmap_iszero(set))
                return -1;
        for (size_t i = 0; i < inv->n_numa_nodes; i++) {
                const NumaNode *n = &inv->numa_nodes[i];
                _cleanup_(bitmap_freep) hwloc_bitmap_t ns = hwloc_bitmap_alloc();
                if (!ns || !numa_node_has_cpus(n) || hwloc_bitmap_list_sscanf(ns, n->cpus) < 0)
                        continue;
                if (!hwloc_bitmap_isincluded(set, ns))
                        continue;
                if (found >= 0)
                        return -1;
                found = n->id;
        }
        return found;
}

static int strcmp_ptr(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* max_link_speed ("8.0 GT/s PCIe") x max_link_width, in GB/s; 0 if unknown.
 * Only used to prefer a data NIC over a management port at equal locality. */
static double link_bandwidth(const char *root, const char *dir)
{
        _cleanup_free_ char *rs = NULL, *rw = NULL, *speed = NULL, *width = NULL;
        double gt;
        long w;

        if (asprintf(&rs, "%s/max_link_speed", dir) < 0 ||
            asprintf(&rw, "%s/max_link_width", dir) < 0)
                return 0;
        if (sysfs_read_attr(root, rs, &speed) < 0 || sysfs_read_attr(root, rw, &width) < 0)
                return 0;
        if (sscanf(speed, "%lf", &gt) != 1 || sysfs_parse_long(width, 10, &w) < 0 || w <= 0)
                return 0;
        /* 8b/10b below 8 GT/s, 128b/130b from there on. */
        return gt * (double)w * (gt < 8.0 ? 0.8 : 128.0 / 130.0) / 8.0;
}

static int load_device(Inventory *inv, const char *root, const char *name, bool *saw_sriov)
{
        _cleanup_free_ char *entry = NULL, *dir = NULL;
        char addr[PCI_ADDRESS_MAX];
        struct stat st;
        long v;
        int r;

        if (pci_address_normalize(name, addr) < 0) {
                log_warning("Ignoring %s/sys/bus/pci/devices/%s: not a PCI address", root, name);
                return 0;
        }
        if (asprintf(&entry, "sys/bus/pci/devices/%s", name) < 0)
                return log_oom();

        r = sysfs_chase(root, entry, &dir);
        if (r < 0)
                return log_error_errno(r, "Cannot resolve %s/%s: %m", root, entry);
        _cleanup_free_ char *full = sysfs_join(root, dir);
        if (!full)
                return log_oom();
        if (stat(full, &st) < 0 || !S_ISDIR(st.st_mode))
                return log_error_errno(-ENOTDIR, "%s/%s does not lead to a device directory", root,
                                       entry);

        Device *d = inventory_add_device(inv, addr);
        if (!d)
                return log_oom();

        /* A snapshot that copied bus/pci/devices as plain directories lost
         * the links that carry the bridge chain: the chain is unknown. */
        _cleanup_free_ char *entry_full = sysfs_join(root, entry);
        if (!entry_full)
                return log_oom();
        if (lstat(entry_full, &st) == 0 && S_ISLNK(st.st_mode) && strstr(dir, "devices/pci")) {
                r = parents_from_path(dir, &d->parents);
                if (r < 0)
                        return log_oom();
        }

        r = read_hex_attr(root, dir, "vendor", &d->vendor);
        if (r < 0)
                return r;
        r = read_hex_attr(root, dir, "device", &d->device);
        if (r < 0)
                return r;
        int cls = PCI_ID_UNKNOWN;
        r = read_hex_attr(root, dir, "class", &cls);
        if (r < 0)
                return r;
        if (cls != PCI_ID_UNKNOWN)
                d->class_code = (cls >> 8) & 0xffff;

        d->link_gbytes = link_bandwidth(root, dir);

        r = read_int_attr(root, dir, "numa_node", &v);
        if (r < 0)
                return r;
        if (r > 0 && v >= 0)
                d->numa_node = (int)v;
        else if (r == 0)
                d->numa_node = numa_from_local_cpus(inv, root, dir);

        _cleanup_free_ char *group = NULL;
        r = read_link_basename(root, dir, "iommu_group", &group);
        if (r < 0)
                return r;
        if (r > 0 && sysfs_parse_long(group, 10, &v) >= 0)
                d->iommu_group = (int)v;

        r = read_link_basename(root, dir, "driver", &d->driver);
        if (r < 0)
                return r;
        d->driver_known = true;

        r = read_int_attr(root, dir, "sriov_totalvfs", &v);
        if (r < 0)
                return r;
        if (r > 0) {
                *saw_sriov = true;
                d->sriov = SRIOV_CAPABLE;
                d->total_vfs = (int)v;
                r = read_int_attr(root, dir, "sriov_numvfs", &v);
                if (r < 0)
                        return r;
                if (r > 0)
                        d->num_vfs = (int)v;
        }

        _cleanup_free_ char *pf = NULL;
        r = read_link_basename(root, dir, "physfn", &pf);
        if (r < 0)
                return r;
        if (r > 0) {
                char norm[PCI_ADDRESS_MAX];
                if (pci_address_normalize(pf, norm) < 0)
                        return log_error_errno(
                            -EBADMSG, "%s/%s/physfn does not name a PCI function", root, dir);
                d->physfn = strdup(norm);
                if (!d->physfn)
                        return log_oom();
        }

        /* virtfn0, virtfn1, ... in index order; the first gap ends the list. */
        for (unsigned i = 0; i < 4096; i++) {
                char link[32];
                _cleanup_free_ char *vf = NULL;
                char norm[PCI_ADDRESS_MAX];
                snprintf(link, sizeof(link), "virtfn%u", i);
                r = read_link_basename(root, dir, link, &vf);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (pci_address_normalize(vf, norm) < 0)
                        return log_error_errno(-EBADMSG, "%s/%s/%s does not name a PCI function",
                                               root, dir, link);
                if (strv_push(&d->virtfns, norm) < 0)
                        return log_oom();
        }
        if (!d->virtfns && d->sriov == SRIOV_CAPABLE) {
                d->virtfns = calloc(1, sizeof(char *));
                if (!d->virtfns)
                        return log_oom();
        }

        /* The NVIDIA driver lists the GPUs it owns; a trimmed snapshot may keep
         * that list where it dropped the vendor file. */
        if (d->vendor == PCI_ID_UNKNOWN) {
                _cleanup_free_ char *rel = NULL, *nv = NULL;
                if (asprintf(&rel, "proc/driver/nvidia/gpus/%s", addr) < 0)
                        return log_oom();
                nv = sysfs_join(root, rel);
                if (!nv)
                        return log_oom();
                if (access(nv, F_OK) == 0) {
                        d->vendor = PCI_VENDOR_NVIDIA;
                        if (!d->driver) {
                                d->driver = strdup("nvidia");
                                if (!d->driver)
                                        return log_oom();
                        }
                }
        }
        return 0;
}

static int meminfo_total(const char *root, const char *rel, int64_t *ret)
{
        _cleanup_free_ char *path = sysfs_join(root, rel);
        _cleanup_fclose_ FILE *f = NULL;
        char line[256];

        if (!path)
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f)
                return negative_errno();
        while (fgets(line, sizeof(line), f)) {
                char *p = strstr(line, "MemTotal:");
                unsigned long long kb;
                if (p && sscanf(p, "MemTotal: %llu kB", &kb) == 1) {
                        *ret = (int64_t)kb * 1024;
                        return 0;
                }
        }
        return -EBADMSG;
}

static int load_numa_nodes(Inventory *inv, const char *root)
{
        _cleanup_free_ char *path = sysfs_join(root, "sys/devices/system/node");
        _cleanup_(closedirp) DIR *dir = NULL;
        struct dirent *de;
        int r;

        if (!path)
                return log_oom();
        dir = opendir(path);
        if (!dir) {
                if (errno == ENOENT) {
                        log_warning("No NUMA information under %s: NUMA nodes unknown", path);
                        return 0;
                }
                return log_error_errno(negative_errno(), "Cannot read %s: %m", path);
        }
        while ((de = readdir(dir))) {
                unsigned id;
                int n = 0;
                if (sscanf(de->d_name, "node%u%n", &id, &n) != 1 || de->d_name[n] != '\0')
                        continue;
                NumaNode *node = inventory_add_numa_node(inv, (int)id);
                if (!node)
                        return log_oom();

                _cleanup_free_ char *rel = NULL, *cpus = NULL;
                if (asprintf(&rel, "sys/devices/system/node/%s/cpulist", de->d_name) < 0)
                        return log_oom();
                r = sysfs_read_attr(root, rel, &cpus);
                if (r == -EBADMSG) {
                        /* An empty cpulist is a memory-only node. */
                        cpus = strdup("");
                        if (!cpus)
                                return log_oom();
                } else if (r < 0 && r != -ENOENT)
                        return log_error_errno(r, "Cannot read %s/%s: %m", root, rel);
                if (cpus && cpus[0]) {
                        _cleanup_(bitmap_freep) hwloc_bitmap_t b = hwloc_bitmap_alloc();
                        if (!b)
                                return log_oom();
                        if (hwloc_bitmap_list_sscanf(b, cpus) < 0)
                                return log_error_errno(-EBADMSG, "Cannot parse %s/%s: %s", root,
                                                       rel, cpus);
                }
                node->cpus = TAKE_PTR(cpus);

                free(rel);
                rel = NULL;
                if (asprintf(&rel, "sys/devices/system/node/%s/meminfo", de->d_name) < 0)
                        return log_oom();
                r = meminfo_total(root, rel, &node->memory_bytes);
                if (r == -EBADMSG)
                        return log_error_errno(r, "Cannot parse %s/%s: no MemTotal line", root,
                                               rel);
                if (r < 0 && r != -ENOENT)
                        return log_error_errno(r, "Cannot read %s/%s: %m", root, rel);
        }
        /* Sorted so numa_from_local_cpus and the output see a stable order. */
        return 0;
}

int inventory_load_sysfs(Inventory *inv, const char *root)
{
        _cleanup_free_ char *pci = NULL;
        _cleanup_(closedirp) DIR *dir = NULL;
        struct stat st;
        struct dirent *de;
        bool saw_sriov = false;
        int r;

        if (stat(root, &st) < 0)
                return log_error_errno(negative_errno(), "Cannot use sysfs root %s: %m", root);
        if (!S_ISDIR(st.st_mode))
                return log_error_errno(-ENOTDIR, "Sysfs root %s is not a directory", root);
        if (access(root, R_OK | X_OK) < 0)
                return log_error_errno(negative_errno(), "Cannot read sysfs root %s: %m", root);

        r = load_numa_nodes(inv, root);
        if (r < 0)
                return r;

        pci = sysfs_join(root, "sys/bus/pci/devices");
        if (!pci)
                return log_oom();
        dir = opendir(pci);
        if (!dir)
                return log_error_errno(negative_errno(), "Cannot read %s (is %s a sysfs root?): %m",
                                       pci, root);

        /* Names first, sorted, so errors and the log are deterministic. */
        char **names = NULL;
        while ((de = readdir(dir))) {
                if (de->d_name[0] == '.')
                        continue;
                if (strv_push(&names, de->d_name) < 0) {
                        strv_free(names);
                        return log_oom();
                }
        }
        size_t n = strv_length(names);
        if (n > 0)
                qsort(names, n, sizeof(char *), strcmp_ptr);
        r = 0;
        for (size_t i = 0; i < n; i++) {
                r = load_device(inv, root, names[i], &saw_sriov);
                if (r < 0)
                        break;
        }
        strv_free(names);
        if (r < 0)
                return r;

        /* The kernel creates sriov_totalvfs for every SR-IOV capable function.
         * On the live host, or a snapshot that kept those files, absence means
         * "not capable"; a snapshot without any of them cannot tell. */
        bool visible = saw_sriov || streq(root, "/");
        for (size_t i = 0; i < inv->n_devices; i++)
                if (inv->devices[i].sriov == SRIOV_UNKNOWN && visible)
                        inv->devices[i].sriov = SRIOV_NONE;
        return 0;
}
