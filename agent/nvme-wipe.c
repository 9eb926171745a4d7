/* SPDX-License-Identifier: MIT */
#include "nvme-wipe.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/nvme_ioctl.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <time.h>

#include "macro.h"
#include "pci-sysfs.h"
#include "sysfs-path.h"

enum {
        NVME_ADMIN_IDENTIFY = 0x06,
        NVME_ADMIN_GET_LOG_PAGE = 0x02,
        NVME_ADMIN_FORMAT_NVM = 0x80,
        NVME_ADMIN_SANITIZE = 0x84,
        NVME_LOG_SANITIZE_STATUS = 0x81,
        NVME_NSID_ALL = 0xffffffffu,
};

static const char *const method_names[_NVME_WIPE_MAX] = {
    [NVME_WIPE_NONE] = "none",
    [NVME_WIPE_SANITIZE_BLOCK] = "sanitize_block_erase",
    [NVME_WIPE_SANITIZE_CRYPTO] = "sanitize_crypto_erase",
    [NVME_WIPE_FORMAT_USER_DATA] = "format_user_data_erase",
    [NVME_WIPE_FORMAT_CRYPTO] = "format_crypto_erase",
    [NVME_WIPE_OVERWRITE] = "overwrite",
};

const char *nvme_wipe_method_name(NvmeWipeMethod m)
{
        return m < _NVME_WIPE_MAX ? method_names[m] : "unknown";
}

static uint16_t le16(const uint8_t *p)
{
        return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void nvme_caps_parse(const uint8_t id[4096], NvmeCaps *ret)
{
        uint16_t oacs = le16(id + 256);
        uint8_t fna = id[524];
        uint32_t sanicap = le32(id + 328);

        *ret = (NvmeCaps){
            .sanitize_crypto = sanicap & 0x1,
            .sanitize_block = sanicap & 0x2,
            .format = oacs & 0x2,
            .ns_management = oacs & 0x8,
            .format_all_ns = fna & 0x1,
            .format_crypto = fna & 0x4,
            .cntlid = le16(id + 78),
        };
}

size_t nvme_wipe_plan(const NvmeCaps *caps, unsigned allowed, NvmeWipeMethod out[_NVME_WIPE_MAX])
{
        size_t n = 0;
#define ADD(cond, m)                                                                               \
        do {                                                                                       \
                if ((cond) && (allowed & NVME_WIPE_ALLOW(m)))                                      \
                        out[n++] = (m);                                                            \
        } while (0)
        ADD(caps->sanitize_block, NVME_WIPE_SANITIZE_BLOCK);
        ADD(caps->sanitize_crypto, NVME_WIPE_SANITIZE_CRYPTO);
        ADD(caps->format, NVME_WIPE_FORMAT_USER_DATA);
        ADD(caps->format && caps->format_crypto, NVME_WIPE_FORMAT_CRYPTO);
        ADD(true, NVME_WIPE_OVERWRITE);
#undef ADD
        return n;
}

int nvme_admin(int fd, uint8_t opcode, uint32_t nsid, uint32_t cdw10, uint32_t cdw11, void *data,
               uint32_t len, unsigned timeout_ms, uint32_t *result)
{
        struct nvme_admin_cmd cmd = {
            .opcode = opcode,
            .nsid = nsid,
            .addr = (uint64_t)(uintptr_t)data,
            .data_len = len,
            .cdw10 = cdw10,
            .cdw11 = cdw11,
            .timeout_ms = timeout_ms,
        };
        int r = ioctl(fd, NVME_IOCTL_ADMIN_CMD, &cmd);
        if (r < 0)
                return negative_errno();
        if (result)
                *result = cmd.result;
        return r;
}

/* Status codes that mean "this controller does not do that": try the next method. */
static bool status_unsupported(int status)
{
        int sct = (status >> 8) & 0x7, sc = status & 0xff;
        if (sct == 0 && (sc == 0x01 || sc == 0x02)) /* invalid opcode / field */
                return true;
        return sct == 1 && sc == 0x0a; /* invalid format */
}

_printf_(2, 3) static void note(NvmeWipeResult *res, const char *fmt, ...)
{
        size_t used = strlen(res->detail);
        va_list ap;
        if (used >= sizeof(res->detail) - 1)
                return;
        if (used > 0)
                res->detail[used++] = ';', res->detail[used++] = ' ', res->detail[used] = '\0';
        va_start(ap, fmt);
        vsnprintf(res->detail + used, sizeof(res->detail) - used, fmt, ap);
        va_end(ap);
}

static int identify(int fd, uint8_t cns, uint32_t nsid, uint8_t buf[4096])
{
        memset(buf, 0, 4096);
        return nvme_admin(fd, NVME_ADMIN_IDENTIFY, nsid, cns, 0, buf, 4096, 5000, NULL);
}

/* Namespace ID lists: CNS 0x02 active, 0x10 allocated. */
static int ns_list(int fd, uint8_t cns, uint32_t ids[1024], size_t *n)
{
        _cleanup_free_ uint8_t *buf = malloc(4096);
        int r;

        if (!buf)
                return -ENOMEM;
        r = identify(fd, cns, 0, buf);
        if (r != 0)
                return r;
        *n = 0;
        for (size_t i = 0; i < 1024; i++) {
                uint32_t id = le32(buf + 4 * i);
                if (id == 0)
                        break;
                ids[(*n)++] = id;
        }
        return 0;
}

static int sanitize(int fd, NvmeWipeMethod m, unsigned long long deadline, NvmeWipeResult *res)
{
        uint32_t sanact = m == NVME_WIPE_SANITIZE_BLOCK ? 2 : 4;
        uint8_t log[512];
        int r;

        r = nvme_admin(fd, NVME_ADMIN_SANITIZE, 0, sanact, 0, NULL, 0, 10000, NULL);
        if (r != 0)
                return r;
        /* Sanitize runs in the background; its status log says when it ends. */
        for (;;) {
                memset(log, 0, sizeof(log));
                uint32_t numd = sizeof(log) / 4 - 1;
                r = nvme_admin(fd, NVME_ADMIN_GET_LOG_PAGE, NVME_NSID_ALL,
                               NVME_LOG_SANITIZE_STATUS | (numd << 16), 0, log, sizeof(log), 5000,
                               NULL);
                if (r != 0)
                        return r < 0 ? r : -EIO;
                unsigned sstat = log[2] & 0x7;
                if (sstat == 1 || sstat == 4)
                        return 0;
                if (sstat == 3) {
                        note(res, "%s: the controller reports the sanitize failed",
                             nvme_wipe_method_name(m));
                        return -EIO;
                }
                if (pci_now_ms() >= deadline)
                        return -ETIMEDOUT;
                struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
                nanosleep(&ts, NULL); /* poll interval */
        }
}

static int format_ns(int fd, uint32_t nsid, uint32_t like_nsid, unsigned ses, unsigned timeout_ms)
{
        uint8_t id[4096];
        int r;

        /* Keep the namespace's current LBA format, metadata and protection. */
        r = identify(fd, 0x00, like_nsid, id);
        if (r != 0)
                return r;
        uint8_t flbas = id[26], dps = id[29];
        uint32_t lbaf = (flbas & 0xf) | ((uint32_t)((flbas >> 5) & 0x3) << 4);
        uint32_t cdw10 = (lbaf & 0xf) | ((uint32_t)(flbas >> 4 & 1) << 4) | ((dps & 0x7u) << 5) |
                         ((uint32_t)(dps >> 3 & 1) << 8) | (ses << 9) | ((lbaf >> 4) << 12);
        return nvme_admin(fd, NVME_ADMIN_FORMAT_NVM, nsid, cdw10, 0, NULL, 0, timeout_ms, NULL);
}

int nvme_namespace_block(const char *root, const char *ctrl, uint32_t nsid, char **ret)
{
        _cleanup_free_ char *rel = NULL, *dir = NULL;
        DIR *d;
        struct dirent *de;
        int r = -ENOENT;

        if (asprintf(&rel, "sys/class/nvme/%s", ctrl) < 0)
                return -ENOMEM;
        dir = sysfs_join(root, rel);
        if (!dir)
                return -ENOMEM;
        d = opendir(dir);
        if (!d)
                return negative_errno();
        while ((de = readdir(d))) {
                unsigned a, c, x;
                char head[64];
                /* nvme<S>c<C>n<X>: a multipath path; the disk is nvme<S>n<X>. */
                if (sscanf(de->d_name, "nvme%uc%un%u", &a, &c, &x) == 3)
                        snprintf(head, sizeof(head), "nvme%un%u", a, x);
                else if (sscanf(de->d_name, "nvme%un%u", &a, &x) == 2 && !strchr(de->d_name, 'p'))
                        snprintf(head, sizeof(head), "%.63s", de->d_name);
                else
                        continue;
                _cleanup_free_ char *nsrel = NULL, *v = NULL;
                long id;
                if (asprintf(&nsrel, "sys/block/%s/nsid", head) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (sysfs_read_attr(root, nsrel, &v) < 0 || sysfs_parse_long(v, 10, &id) < 0)
                        continue;
                if ((uint32_t)id == nsid) {
                        *ret = strdup(head);
                        r = *ret ? 0 : -ENOMEM;
                        break;
                }
        }
        closedir(d);
        return r;
}

int nvme_controller_of(const char *root, const char *pci_addr, char **ret)
{
        _cleanup_free_ char *dir = pci_device_path(root, pci_addr, "nvme");
        DIR *d;
        struct dirent *de;
        int r = -ENOENT;

        if (!pci_address_is_valid(pci_addr))
                return -EINVAL;
        if (!dir)
                return -ENOMEM;
        d = opendir(dir);
        if (!d)
                return negative_errno();
        while ((de = readdir(d)))
                if (startswith(de->d_name, "nvme")) {
                        *ret = strdup(de->d_name);
                        r = *ret ? 0 : -ENOMEM;
                        break;
                }
        closedir(d);
        return r;
}

static int overwrite_ns(const char *root, const char *ctrl, uint32_t nsid,
                        unsigned long long deadline)
{
        _cleanup_free_ char *blk = NULL, *rel = NULL, *path = NULL;
        _cleanup_free_ void *zeros = NULL;
        _cleanup_close_ int fd = -1;
        const size_t chunk = 1u << 20;
        uint64_t size;
        int r;

        r = nvme_namespace_block(root, ctrl, nsid, &blk);
        if (r < 0)
                return r;
        if (asprintf(&rel, "dev/%s", blk) < 0 || !(path = sysfs_join(root, rel)))
                return -ENOMEM;
        fd = open(path, O_WRONLY | O_CLOEXEC | O_DIRECT | O_EXCL);
        if (fd < 0)
                return negative_errno();
        if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                return negative_errno();
        if (posix_memalign(&zeros, 4096, chunk) != 0)
                return -ENOMEM;
        memset(zeros, 0, chunk);
        for (uint64_t off = 0; off < size;) {
                size_t n = (size_t)MIN((uint64_t)chunk, size - off);
                ssize_t w = pwrite(fd, zeros, n, (off_t)off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return w < 0 ? negative_errno() : -EIO;
                off += (uint64_t)w;
                if (pci_now_ms() >= deadline)
                        return -ETIMEDOUT;
        }
        return fsync(fd) < 0 ? negative_errno() : 0;
}

static bool valid_ctrl_name(const char *c)
{
        unsigned n;
        char tail;
        return c && strlen(c) < 16 && sscanf(c, "nvme%u%c", &n, &tail) == 1;
}

int nvme_wipe(const char *root, const char *ctrl, unsigned allowed, unsigned timeout_ms,
              NvmeWipeResult *ret)
{
        _cleanup_free_ char *rel = NULL, *path = NULL;
        _cleanup_free_ uint8_t *id = malloc(4096);
        _cleanup_free_ uint32_t *active = calloc(1024, sizeof(uint32_t));
        _cleanup_free_ uint32_t *allocated = calloc(1024, sizeof(uint32_t));
        _cleanup_close_ int fd = -1;
        unsigned long long deadline = pci_now_ms() + timeout_ms;
        NvmeWipeMethod plan[_NVME_WIPE_MAX];
        size_t n_active = 0, n_alloc = 0, n_plan;
        NvmeCaps caps;
        int r;

        *ret = (NvmeWipeResult){0};
        if (!valid_ctrl_name(ctrl))
                return -EINVAL;
        if (!id || !active || !allocated)
                return -ENOMEM;
        if (asprintf(&rel, "dev/%s", ctrl) < 0 || !(path = sysfs_join(root, rel)))
                return -ENOMEM;
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                note(ret, "cannot open %s: %s", path, strerror(errno));
                return negative_errno();
        }
        r = identify(fd, 0x01, 0, id);
        if (r != 0) {
                note(ret, "identify controller failed (%s%d)", r < 0 ? "errno " : "status ",
                     r < 0 ? -r : r);
                return r < 0 ? r : -EIO;
        }
        nvme_caps_parse(id, &caps);
        r = ns_list(fd, 0x02, active, &n_active);
        if (r != 0) {
                note(ret, "active namespace list failed (%d)", r);
                return r < 0 ? r : -EIO;
        }
        n_plan = nvme_wipe_plan(&caps, allowed, plan);

        bool has_sanitize = false;
        for (size_t i = 0; i < n_plan; i++)
                has_sanitize |=
                    plan[i] == NVME_WIPE_SANITIZE_BLOCK || plan[i] == NVME_WIPE_SANITIZE_CRYPTO;
        if (caps.ns_management && !has_sanitize && ns_list(fd, 0x10, allocated, &n_alloc) == 0) {
                for (size_t i = 0; i < n_alloc; i++) {
                        bool attached = false;
                        for (size_t j = 0; j < n_active; j++)
                                attached |= allocated[i] == active[j];
                        if (!attached) {
                                note(ret,
                                     "namespace %u is allocated but not attached, and only "
                                     "Sanitize (not supported here) would erase it",
                                     allocated[i]);
                                return -ENOTRECOVERABLE;
                        }
                }
        }

        for (size_t i = 0; i < n_plan; i++) {
                NvmeWipeMethod m = plan[i];
                unsigned left = (unsigned)(deadline > pci_now_ms() ? deadline - pci_now_ms() : 1);
                switch (m) {
                case NVME_WIPE_SANITIZE_BLOCK:
                case NVME_WIPE_SANITIZE_CRYPTO:
                        r = sanitize(fd, m, deadline, ret);
                        break;
                case NVME_WIPE_FORMAT_USER_DATA:
                case NVME_WIPE_FORMAT_CRYPTO: {
                        unsigned ses = m == NVME_WIPE_FORMAT_USER_DATA ? 1 : 2;
                        r = 0;
                        if (caps.format_all_ns)
                                r = n_active ? format_ns(fd, NVME_NSID_ALL, active[0], ses, left)
                                             : 0;
                        else
                                for (size_t j = 0; j < n_active && r == 0; j++)
                                        r = format_ns(fd, active[j], active[j], ses, left);
                        break;
                }
                case NVME_WIPE_OVERWRITE:
                        r = 0;
                        for (size_t j = 0; j < n_active && r == 0; j++)
                                r = overwrite_ns(root, ctrl, active[j], deadline);
                        break;
                default:
                        r = -EINVAL;
                }
                if (r == 0) {
                        ret->method = m;
                        ret->namespaces = (unsigned)n_active;
                        return 0;
                }
                if (r > 0 && status_unsupported(r)) {
                        note(ret, "%s: not supported (status 0x%x)", nvme_wipe_method_name(m),
                             (unsigned)r);
                        continue;
                }
                if (r > 0) {
                        note(ret, "%s: failed with status 0x%x", nvme_wipe_method_name(m),
                             (unsigned)r);
                        return -EIO;
                }
                note(ret, "%s: %s", nvme_wipe_method_name(m), strerror(-r));
                return r;
        }
        note(ret, "no allowed method left");
        return -ENOTSUP;
}
