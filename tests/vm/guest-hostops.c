/* SPDX-License-Identifier: MIT */
/* Runs inside the test VM (tests/vm/run-vm.sh) as root against the real
 * kernel: QEMU's SR-IOV NVMe controller behind an emulated IOMMU, vfio-pci,
 * and netdevsim. Each scenario drives the agent's host-operation modules and
 * checks the kernel's reaction; results are TAP lines prefixed with "@@ " so
 * the host can pick them out of the serial console. */

#include <dirent.h>
#include <fcntl.h>
#include <linux/nvme_ioctl.h>
#include <linux/vfio.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "alloc-ops.h"
#include "macro.h"
#include "nvme-wipe.h"
#include "pci-bind.h"
#include "pci-reset.h"
#include "pci-sysfs.h"
#include "slot-ops.h"
#include "sriov.h"
#include "sysfs-path.h"
#include "vf-baseline.h"
#include "vf-config.h"

static const char *root = "/";
static int n_tests, n_failed;

_printf_(2, 3) static void check(bool ok, const char *fmt, ...)
{
        char name[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(name, sizeof(name), fmt, ap);
        va_end(ap);
        n_tests++;
        if (!ok)
                n_failed++;
        printf("@@ %s %d - %s\n", ok ? "ok" : "not ok", n_tests, name);
        fflush(stdout);
}

_printf_(1, 2) static void diag(const char *fmt, ...)
{
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        printf("@@ # %s\n", msg);
        fflush(stdout);
}

static const char *err(int r)
{
        return r < 0 ? strerror(-r) : "ok";
}

/* The first PCI function with this vendor:device. */
static char *find_pci(const char *vendor, const char *device)
{
        DIR *d = opendir("/sys/bus/pci/devices");
        struct dirent *de;
        char *found = NULL;
        while (d && (de = readdir(d)) && !found) {
                _cleanup_free_ char *v = NULL, *dv = NULL;
                if (!pci_address_is_valid(de->d_name))
                        continue;
                if (pci_read_attr(root, de->d_name, "vendor", &v) < 0 ||
                    pci_read_attr(root, de->d_name, "device", &dv) < 0)
                        continue;
                if (streq(v, vendor) && streq(dv, device) &&
                    pci_read_attr(root, de->d_name, "sriov_totalvfs", &v) >= 0)
                        found = strdup(de->d_name);
        }
        if (d)
                closedir(d);
        return found;
}

static bool path_exists(const char *p)
{
        struct stat st;
        return stat(p, &st) == 0;
}

static int vfio_group_path(const char *addr, char *buf, size_t len)
{
        _cleanup_free_ char *g = NULL;
        int r = pci_iommu_group(root, addr, &g);
        if (r < 0)
                return r;
        snprintf(buf, len, "/dev/vfio/%s", g);
        return 0;
}

/* A tenant holding a VF: container + group + device fd, as QEMU would. The
 * child signals readiness on a pipe and then waits to be killed. */
static pid_t hold_vfio_device(const char *addr)
{
        char group[64];
        int p[2];
        if (vfio_group_path(addr, group, sizeof(group)) < 0 || pipe(p) < 0)
                return -1;
        pid_t pid = fork();
        if (pid == 0) {
                close(p[0]);
                char ok = 0;
                int c = open("/dev/vfio/vfio", O_RDWR);
                int g = open(group, O_RDWR);
                if (c >= 0 && g >= 0 && ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) == 0 &&
                    ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) == 0 &&
                    ioctl(g, VFIO_GROUP_GET_DEVICE_FD, addr) >= 0)
                        ok = 1;
                (void)!write(p[1], &ok, 1);
                for (;;)
                        pause();
        }
        close(p[1]);
        char ok = 0;
        if (read(p[0], &ok, 1) != 1 || !ok) {
                close(p[0]);
                if (pid > 0) {
                        kill(pid, SIGKILL);
                        waitpid(pid, NULL, 0);
                }
                return -1;
        }
        close(p[0]);
        return pid;
}

static int write_pattern(const char *blk, uint8_t byte, size_t len)
{
        char path[64];
        snprintf(path, sizeof(path), "/dev/%s", blk);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_DIRECT);
        void *buf;
        if (fd < 0)
                return negative_errno();
        if (posix_memalign(&buf, 4096, len) != 0)
                return -ENOMEM;
        memset(buf, byte, len);
        ssize_t w = pwrite(fd, buf, len, 0);
        free(buf);
        if (w != (ssize_t)len)
                return w < 0 ? negative_errno() : -EIO;
        return fsync(fd) < 0 ? negative_errno() : 0;
}

/* 1 when the whole device reads back as zeros, 0 when not, -errno. */
static int reads_zeros(const char *blk, uint64_t *bytes)
{
        char path[64];
        snprintf(path, sizeof(path), "/dev/%s", blk);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECT);
        const size_t chunk = 1 << 20;
        uint8_t *buf;
        int res = 1;
        if (fd < 0)
                return negative_errno();
        if (posix_memalign((void **)&buf, 4096, chunk) != 0)
                return -ENOMEM;
        *bytes = 0;
        for (;;) {
                ssize_t n = read(fd, buf, chunk);
                if (n < 0) {
                        res = negative_errno();
                        break;
                }
                if (n == 0)
                        break;
                for (ssize_t i = 0; i < n; i++)
                        if (buf[i]) {
                                res = 0;
                                break;
                        }
                *bytes += (uint64_t)n;
                if (res == 0)
                        break;
        }
        free(buf);
        return res;
}

static int wait_dev(const char *name, unsigned ms)
{
        char rel[64];
        snprintf(rel, sizeof(rel), "dev/%s", name);
        return sysfs_wait_path(root, rel, false, ms);
}

/* Namespace Attachment (opcode 0x15), attach nsid to controller cntlid. */
static int attach_namespace(const char *ctrl, uint32_t nsid)
{
        char path[64];
        uint8_t id[4096];
        uint16_t list[2048] = {0};
        snprintf(path, sizeof(path), "/dev/%s", ctrl);
        _cleanup_close_ int fd = open(path, O_RDWR);
        if (fd < 0)
                return negative_errno();
        int r = nvme_admin(fd, 0x06, 0, 1, 0, id, sizeof(id), 5000, NULL);
        if (r != 0)
                return r;
        NvmeCaps caps;
        nvme_caps_parse(id, &caps);
        list[0] = 1;
        list[1] = caps.cntlid;
        r = nvme_admin(fd, 0x15, nsid, 0 /* attach */, 0, list, sizeof(list), 5000, NULL);
        if (r != 0)
                return r;
        return ioctl(fd, NVME_IOCTL_RESCAN) < 0 ? negative_errno() : 0;
}

static void scenario_nvme_sriov(const char *pf)
{
        SriovInfo info = {0};
        char *vf0 = NULL, *vf1 = NULL, *back = NULL, *g0 = NULL, *g1 = NULL;
        int r;

        r = sriov_read(root, pf, &info);
        check(r == 0 && info.total_vfs == 4 && info.num_vfs == 0,
              "nvme PF %s: sriov_totalvfs 4, sriov_numvfs 0 (%s, %u/%u)", pf, err(r), info.num_vfs,
              info.total_vfs);
        r = sriov_set_drivers_autoprobe(root, pf, false, 5000);
        check(r >= 0, "sriov_drivers_autoprobe off (%s)", err(r));

        r = sriov_set_num_vfs(root, pf, 2, 10000);
        check(r == 1, "sriov_numvfs 0 -> 2 changes the count (%d %s)", r, err(r));
        bool found =
            sriov_vf_address(root, pf, 0, &vf0) == 0 && sriov_vf_address(root, pf, 1, &vf1) == 0;
        check(found, "virtfn0 and virtfn1 links appear (%s, %s)", strempty(vf0), strempty(vf1));
        bool linked = vf0 && sriov_pf_of(root, vf0, &back) == 0 && streq(back, pf);
        check(linked, "the VF's physfn link points back to the PF (%s)", strempty(back));
        bool own = vf0 && vf1 && pci_iommu_group(root, vf0, &g0) == 0 &&
                   pci_iommu_group(root, vf1, &g1) == 0 && !streq(g0, g1);
        check(own, "each VF sits in its own IOMMU group (%s, %s)", strempty(g0), strempty(g1));
        r = sriov_set_num_vfs(root, pf, 2, 10000);
        check(r == 0, "setting 2 again is a no-op (%d)", r);

        r = pci_write_attr(root, pf, "sriov_numvfs", "3", 5000);
        check(r == -EBUSY, "the kernel refuses 2 -> 3 directly with EBUSY (%s)", err(r));
        r = sriov_set_num_vfs(root, pf, 3, 10000);
        sriov_read(root, pf, &info);
        check(r == 1 && info.num_vfs == 3, "sriov.c changes 2 -> 3 through 0 (%s, now %u)", err(r),
              info.num_vfs);

        r = pci_write_attr(root, pf, "sriov_numvfs", "5", 5000);
        check(r == -ERANGE, "the kernel refuses more than sriov_totalvfs with ERANGE (%s)", err(r));
        r = sriov_set_num_vfs(root, pf, 5, 10000);
        sriov_read(root, pf, &info);
        check(r == -ERANGE && info.num_vfs == 3,
              "sriov.c reports ERANGE for 5 and leaves the count at 3 (%s, %u)", err(r),
              info.num_vfs);
        free(vf0), free(vf1), free(back), free(g0), free(g1);
}

static void scenario_vfio_bind_and_block(const char *pf)
{
        _cleanup_free_ char *vf = NULL, *drv = NULL, *methods = NULL;
        char group[64] = "";
        int r;

        r = sriov_set_num_vfs(root, pf, 2, 10000);
        check(r >= 0, "back to 2 VFs (%s)", err(r));
        sriov_vf_address(root, pf, 0, &vf);
        pci_driver_of(root, vf, &drv);
        check(vf && drv == NULL, "with autoprobe off the new VF has no driver (%s)",
              drv ? drv : "none");
        if (!vf)
                return;
        r = pci_bind(root, vf, "vfio-pci", 10000);
        free(drv), drv = NULL;
        pci_driver_of(root, vf, &drv);
        vfio_group_path(vf, group, sizeof(group));
        check(r == 1 && drv && streq(drv, "vfio-pci"),
              "VF %s bound to vfio-pci through driver_override + drivers_probe (%s, driver %s)", vf,
              err(r), drv ? drv : "none");
        check(path_exists(group), "%s appears", group);
        r = pci_bind(root, vf, "vfio-pci", 10000);
        check(r == 0, "binding again is a no-op (%d)", r);

        r = pci_reset_methods(root, vf, &methods);
        check(r == 0 && methods && strstr(methods, "flr"), "the VF offers FLR (reset_method: %s)",
              methods ? methods : err(r));
        r = pci_reset_function(root, vf, 10000);
        check(r == 0, "FLR of the VF through the reset attribute (%s)", err(r));

        pid_t holder = hold_vfio_device(vf);
        check(holder > 0, "a tenant process holds the VF open through VFIO (container, group, "
                          "device fd)");
        unsigned long long t0 = pci_now_ms();
        r = sriov_set_num_vfs(root, pf, 0, 2000);
        unsigned long long took = pci_now_ms() - t0;
        check(r == -ETIMEDOUT && took < 6000,
              "sriov_numvfs = 0 blocks in the kernel while the VF is held; the bounded write "
              "gives up after its deadline (%s after %llu ms)",
              err(r), took);
        check(streq(slot_reason_for_step(SLOT_STEP_DISABLE_VFS, r), "reset_failed"),
              "that failure maps to the contract reason reset_failed (%s)",
              slot_reason_for_step(SLOT_STEP_DISABLE_VFS, r));
        if (holder > 0) {
                kill(holder, SIGKILL);
                waitpid(holder, NULL, 0);
        }
        /* The blocked write completes once the holder is gone. */
        SriovInfo info = {.num_vfs = 99};
        unsigned long long deadline = pci_now_ms() + 30000;
        while (pci_now_ms() < deadline) {
                if (sriov_read(root, pf, &info) == 0 && info.num_vfs == 0)
                        break;
                struct timespec ts = {0, 50 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        check(info.num_vfs == 0, "once the holder is gone the blocked write finishes (numvfs %u)",
              info.num_vfs);
        r = sriov_set_num_vfs(root, pf, 0, 5000);
        check(r == 0, "a retried teardown finds 0 VFs and does nothing (%d)", r);
}

static void scenario_nvme_wipe(const char *pf)
{
        _cleanup_free_ char *drv = NULL, *ctrl = NULL, *b1 = NULL, *b2 = NULL;
        char group[64] = "";
        NvmeWipeResult res;
        uint64_t bytes = 0;
        int r;

        r = pci_bind(root, pf, "vfio-pci", 15000);
        pci_driver_of(root, pf, &drv);
        vfio_group_path(pf, group, sizeof(group));
        check(r == 1 && drv && streq(drv, "vfio-pci") && path_exists(group),
              "NVMe controller %s handed to the slot: nvme -> vfio-pci, %s (%s)", pf, group,
              err(r));
        r = pci_reset_function(root, pf, 10000);
        check(r == 0, "FLR of the NVMe controller after the workload stopped (%s)", err(r));
        r = pci_restore(root, pf, "nvme", 15000);
        free(drv), drv = NULL;
        pci_driver_of(root, pf, &drv);
        check(r == 1 && drv && streq(drv, "nvme"), "the controller is rebound to nvme (%s, %s)",
              err(r), drv ? drv : "none");
        unsigned long long t0 = pci_now_ms();
        r = -ENOENT;
        while (pci_now_ms() - t0 < 20000 && (r = nvme_controller_of(root, pf, &ctrl)) < 0) {
                struct timespec ts = {0, 50 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        check(r == 0 && wait_dev(ctrl, 20000) == 0, "controller %s is back (%s)", strempty(ctrl),
              err(r));
        if (!ctrl)
                return;
        t0 = pci_now_ms();
        while (pci_now_ms() - t0 < 20000 && nvme_namespace_block(root, ctrl, 1, &b1) < 0) {
                struct timespec ts = {0, 50 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        check(b1 && wait_dev(b1, 10000) == 0, "namespace 1 is %s", strempty(b1));

        /* Sanitize: QEMU 7.2 reports SANICAP 0 and answers the opcode as invalid. */
        {
                char path[64];
                uint8_t id[4096];
                NvmeCaps caps = {0};
                snprintf(path, sizeof(path), "/dev/%s", ctrl);
                _cleanup_close_ int fd = open(path, O_RDWR);
                r = nvme_admin(fd, 0x06, 0, 1, 0, id, sizeof(id), 5000, NULL);
                nvme_caps_parse(id, &caps);
                check(r == 0 && !caps.sanitize_block && !caps.sanitize_crypto && caps.format,
                      "Identify: no Sanitize in SANICAP, Format NVM in OACS (fna all=%d "
                      "crypto=%d nsmgmt=%d)",
                      caps.format_all_ns, caps.format_crypto, caps.ns_management);
                r = nvme_admin(fd, 0x84, 0, 2, 0, NULL, 0, 5000, NULL);
                check(r > 0 && (r & 0x7ff) == 0x001,
                      "a Sanitize sent anyway is refused as an invalid opcode (status 0x%x): "
                      "the choice has to come from Identify",
                      (unsigned)r);
        }

        if (b1)
                check(write_pattern(b1, 0xa5, 1 << 20) == 0, "tenant data written to %s", b1);
        r = nvme_wipe(root, ctrl, NVME_WIPE_ALLOW_ALL, 60000, &res);
        check(r == -ENOTRECOVERABLE && strstr(res.detail, "namespace 2"),
              "wipe refuses while namespace 2 is allocated but detached (%s: %s)", err(r),
              res.detail);
        check(streq(slot_reason_for_step(SLOT_STEP_WIPE_NVME, r), "nvme_wipe_failed"),
              "that failure maps to nvme_wipe_failed");

        r = attach_namespace(ctrl, 2);
        check(r == 0, "namespace 2 attached (%d)", r);
        t0 = pci_now_ms();
        while (pci_now_ms() - t0 < 20000 && nvme_namespace_block(root, ctrl, 2, &b2) < 0) {
                struct timespec ts = {0, 50 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        check(b2 && wait_dev(b2, 10000) == 0, "namespace 2 is %s", strempty(b2));
        if (b2)
                check(write_pattern(b2, 0x5a, 1 << 20) == 0, "tenant data written to %s", b2);

        r = nvme_wipe(root, ctrl, NVME_WIPE_ALLOW_ALL, 60000, &res);
        check(r == 0 && res.method == NVME_WIPE_FORMAT_USER_DATA && res.namespaces == 2,
              "wipe chooses Format NVM SES=1 from Identify and covers 2 namespaces (%s, %s, %u; "
              "%s)",
              err(r), nvme_wipe_method_name(res.method), res.namespaces, res.detail);
        if (b1) {
                wait_dev(b1, 10000);
                r = reads_zeros(b1, &bytes);
                check(r == 1 && bytes > 0, "%s reads back as zeros (%llu bytes, %d)", b1,
                      (unsigned long long)bytes, r);
        }
        if (b2) {
                wait_dev(b2, 10000);
                r = reads_zeros(b2, &bytes);
                check(r == 1 && bytes > 0, "%s reads back as zeros (%llu bytes, %d)", b2,
                      (unsigned long long)bytes, r);
        }

        if (b1 && b2) {
                write_pattern(b1, 0x11, 1 << 20);
                write_pattern(b2, 0x22, 1 << 20);
                r = nvme_wipe(root, ctrl, NVME_WIPE_ALLOW(NVME_WIPE_OVERWRITE), 60000, &res);
                check(r == 0 && res.method == NVME_WIPE_OVERWRITE,
                      "the overwrite fallback (only method allowed) wipes too (%s, %s)", err(r),
                      res.detail);
                check(reads_zeros(b1, &bytes) == 1 && reads_zeros(b2, &bytes) == 1,
                      "both namespaces read back as zeros after the overwrite");
        }
        r = nvme_wipe(root, "nvme9", NVME_WIPE_ALLOW_ALL, 5000, &res);
        check(r == -ENOENT, "a controller that is not there fails the wipe (%s)", err(r));
}

static int wait_zeros(const char *ctrl, uint32_t nsid)
{
        _cleanup_free_ char *b = NULL;
        uint64_t bytes = 0;
        unsigned long long t0 = pci_now_ms();
        while (pci_now_ms() - t0 < 20000 && nvme_namespace_block(root, ctrl, nsid, &b) < 0) {
                struct timespec ts = {0, 50 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        if (!b || wait_dev(b, 10000) < 0)
                return -ENOENT;
        return reads_zeros(b, &bytes);
}

/* slot-ops.c composes the steps: assignment, a clean teardown, and a teardown
 * blocked by a process that still holds the drive, retried after it is gone. */
static void scenario_slot_ops(const char *pf)
{
        _cleanup_free_ char *ctrl = NULL, *drv = NULL;
        SlotReport rep;
        int r;

        mkdir("/tmp/hooks", 0755);
        mkdir("/tmp/run", 0755);
        FILE *f = fopen("/tmp/hooks/record", "we");
        if (f) {
                fputs("#!/bin/sh\necho \"$*\" >> \"$GPUSLICE_RUNTIME_DIR/calls\"\n", f);
                fclose(f);
        }
        chmod("/tmp/hooks/record", 0755);
        SlotSpec spec = {.root = root,
                         .slot_id = "slt_vm",
                         .allocation_id = "alc_vm",
                         .nvme = pf,
                         .hook_dir = "/tmp/hooks",
                         .hook = "record",
                         .runtime_dir = "/tmp/run",
                         .step_timeout_ms = 15000,
                         .wipe_timeout_ms = 60000};

        if (nvme_controller_of(root, pf, &ctrl) == 0) {
                _cleanup_free_ char *b = NULL;
                if (nvme_namespace_block(root, ctrl, 1, &b) == 0)
                        write_pattern(b, 0x77, 1 << 20);
        }
        r = slot_assign(&spec, &rep);
        pci_driver_of(root, pf, &drv);
        check(r == 0 && !rep.reason && drv && streq(drv, "vfio-pci"),
              "slot_assign: NVMe to vfio-pci, start hook run (%s, %zu steps, %s)", err(r),
              rep.n_steps, rep.reason ? rep.reason : "no failure");
        r = slot_teardown(&spec, &rep);
        check(r == 0 && rep.wipe == NVME_WIPE_FORMAT_USER_DATA &&
                  streq(slot_state_after_teardown(r), "available"),
              "slot_teardown: stop hook, FLR, back to nvme, wiped by %s; slot available (%s%s%s)",
              nvme_wipe_method_name(rep.wipe), err(r), rep.reason ? ", " : "",
              rep.reason ? rep.reason : "");
        for (size_t i = 0; i < rep.n_steps; i++)
                diag("step %s: %s (%s)", slot_step_name(rep.steps[i].step),
                     rep.steps[i].error ? strerror(-rep.steps[i].error) : "ok",
                     rep.steps[i].detail);
        free(ctrl), ctrl = NULL;
        nvme_controller_of(root, pf, &ctrl);
        check(ctrl && wait_zeros(ctrl, 1) == 1 && wait_zeros(ctrl, 2) == 1,
              "after the teardown both namespaces read back as zeros");
        char calls[256] = "";
        f = fopen("/tmp/run/calls", "re");
        if (f) {
                size_t n = fread(calls, 1, sizeof(calls) - 1, f);
                calls[n] = '\0';
                fclose(f);
        }
        check(strstr(calls, "start slt_vm alc_vm 0000:") && strstr(calls, "stop slt_vm alc_vm"),
              "the hook saw start then stop with the slot, allocation and vfio device");

        /* A workload that outlives its stop hook keeps the drive open. */
        r = slot_assign(&spec, &rep);
        pid_t holder = hold_vfio_device(pf);
        check(r == 0 && holder > 0, "assigned again, and a process holds the drive through VFIO");
        spec.step_timeout_ms = 2000;
        unsigned long long t0 = pci_now_ms();
        r = slot_teardown(&spec, &rep);
        unsigned long long took = pci_now_ms() - t0;
        check(r < 0 && rep.reason && streq(slot_state_after_teardown(r), "quarantined") &&
                  took < 15000,
              "the teardown fails on its deadline instead of hanging: %s, slot %s (%s, %llu ms)",
              rep.reason ? rep.reason : "none", slot_state_after_teardown(r), err(r), took);
        for (size_t i = 0; i < rep.n_steps; i++)
                diag("step %s: %s (%s)", slot_step_name(rep.steps[i].step),
                     rep.steps[i].error ? strerror(-rep.steps[i].error) : "ok",
                     rep.steps[i].detail);
        if (holder > 0) {
                kill(holder, SIGKILL);
                waitpid(holder, NULL, 0);
        }
        spec.step_timeout_ms = 15000;
        /* The unbind that timed out finishes once the holder is gone; the retry
         * finds each step done or does it. */
        t0 = pci_now_ms();
        do {
                r = slot_teardown(&spec, &rep);
        } while (r < 0 && pci_now_ms() - t0 < 30000);
        check(r == 0 && streq(slot_state_after_teardown(r), "available"),
              "the retried teardown succeeds once the holder is gone: slot available (%s%s%s)",
              err(r), rep.reason ? ", " : "", rep.reason ? rep.reason : "");
}

/* An allocation command's body as the controller sends it: two or three
 * slots, each one NVMe VF standing in for a GPU (any PCI function works). */
static AllocRequest *alloc_request(AllocKind kind, const char *const *gpus, size_t n,
                                   ProtoEnvelope **env)
{
        ProtoWriter w;
        void *msg = NULL;
        size_t len;
        char *reason = NULL;
        AllocRequest *req = NULL;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "allocation_id", "alc_vm2");
        if (kind == ALLOC_ASSIGN) {
                proto_write_key(&w, "image");
                proto_write_map_begin(&w);
                proto_write_kv_str(&w, "id", "img_vm");
                proto_write_kv_str(&w, "name", "test");
                proto_write_kv_str(&w, "source", "/nonexistent.qcow2");
                proto_write_kv_str(&w, "ssh_user", "tenant");
                proto_write_end(&w);
                proto_write_key(&w, "network");
                proto_write_map_begin(&w);
                proto_write_kv_str(&w, "id", "net_vm");
                proto_write_kv_uint(&w, "vlan", 0);
                proto_write_kv_bool(&w, "spoofchk", true);
                proto_write_kv_bool(&w, "trust", false);
                proto_write_end(&w);
                proto_write_key(&w, "ssh_keys");
                proto_write_array_begin(&w);
                proto_write_str(&w, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsab "
                                    "t@vm");
                proto_write_end(&w);
        }
        proto_write_key(&w, "slots");
        proto_write_array_begin(&w);
        for (size_t i = 0; i < n; i++) {
                char id[16];
                snprintf(id, sizeof(id), "slt_%c", (char)('a' + i));
                proto_write_map_begin(&w);
                proto_write_kv_str(&w, "slot_id", id);
                proto_write_kv_str(&w, "slot_key", id);
                proto_write_key(&w, "gpus");
                proto_write_array_begin(&w);
                proto_write_str(&w, gpus[i]);
                proto_write_end(&w);
                proto_write_key(&w, "nic");
                proto_write_nil(&w);
                proto_write_key(&w, "vf_index");
                proto_write_nil(&w);
                proto_write_key(&w, "nvme");
                proto_write_nil(&w);
                proto_write_kv_str(&w, "mac", "02:00:00:00:00:0a");
                proto_write_end(&w);
        }
        proto_write_end(&w);
        proto_write_end(&w);
        const ProtoHeader h = {.type = "command.allocation.assign", .id = "cmd_vm", .epoch = 1};
        int r = proto_encode_writer(&h, &w, &msg, &len);
        if (r >= 0)
                r = proto_decode(msg, len, env, &reason);
        if (r >= 0)
                r = alloc_request_parse(kind, &(*env)->body, &req, &reason);
        if (r < 0)
                diag("alloc request: %s (%s)", err(r), strempty(reason));
        proto_writer_done(&w);
        free(msg);
        free(reason);
        return req;
}

static int count_lines(const char *path, const char *prefix)
{
        FILE *f = fopen(path, "re");
        char line[512];
        int n = 0;
        while (f && fgets(line, sizeof(line), f))
                n += startswith(line, prefix);
        if (f)
                fclose(f);
        return n;
}

/* command.allocation.assign and .release (alloc-ops) on the real kernel: two
 * slots bound to vfio-pci and the hook started once with both; a release
 * whose first slot cannot be reset still tears the other two down. */
static void scenario_alloc_ops(const char *pf)
{
        _cleanup_free_ char *vf0 = NULL, *vf1 = NULL, *d0 = NULL, *d1 = NULL;
        AllocHost *h = NULL;
        AllocResult res;
        int r;

        r = sriov_set_num_vfs(root, pf, 2, 10000);
        if (r < 0 || sriov_vf_address(root, pf, 0, &vf0) < 0 ||
            sriov_vf_address(root, pf, 1, &vf1) < 0) {
                check(false, "two VFs for the allocation (%s)", err(r));
                return;
        }
        FILE *f = fopen("/tmp/hooks/record-all", "we");
        if (f) {
                fputs("#!/bin/sh\necho \"$*\" >> /tmp/alloc-calls\n", f);
                fclose(f);
        }
        chmod("/tmp/hooks/record-all", 0755);
        const AllocHostOptions o = {.state_dir = "/tmp/alloc-state",
                                    .root = root,
                                    .hook_dir = "/tmp/hooks",
                                    .hook = "record-all",
                                    .runtime_dir = "/tmp/alloc-rt",
                                    .step_timeout_ms = 15000,
                                    .hook_timeout_ms = 15000,
                                    .wipe_timeout_ms = 60000};
        mkdir("/tmp/alloc-state", 0700);
        r = alloc_host_new(&o, &h);
        check(r == 0, "an allocation host on the real root (%s)", err(r));
        if (r < 0)
                return;

        const char *two[] = {vf0, vf1};
        ProtoEnvelope *env = NULL;
        AllocRequest *req = alloc_request(ALLOC_ASSIGN, two, 2, &env);
        r = req ? alloc_assign(h, req, &res) : -EINVAL;
        pci_driver_of(root, vf0, &d0);
        pci_driver_of(root, vf1, &d1);
        check(r == 0 && !res.error_code && res.workload_ok && d0 && streq(d0, "vfio-pci") && d1 &&
                  streq(d1, "vfio-pci"),
              "alloc assign: both slots' functions on vfio-pci, the workload started (%s, %s)",
              err(r), res.error_message ? res.error_message : "no failure");
        check(count_lines("/tmp/alloc-calls", "start slt_a alc_vm2 ") == 1 &&
                  path_exists("/tmp/alloc-rt/alc_vm2/authorized_keys"),
              "the hook started once for the allocation, the tenant's keys beside it");
        void *body = NULL;
        size_t len = 0;
        r = alloc_reply_body("cmd_vm", &res, &body, &len);
        check(r == 0 && len > 0, "the assign reply encodes (%s, %zu bytes)", err(r), len);
        free(body);
        alloc_result_done(&res);
        alloc_request_free(req);
        proto_envelope_free(env);

        /* A release naming a function the host lacks first: its reset fails,
         * the two real slots are still torn down. */
        const char *three[] = {"0000:00:1f.7", vf0, vf1};
        env = NULL;
        req = alloc_request(ALLOC_RELEASE, three, 3, &env);
        r = req ? alloc_release(h, req, &res) : -EINVAL;
        check(r == 0 && res.n_slots == 3 && res.error_code &&
                  streq(res.error_code, "reset_failed") && res.slots[0].error < 0 &&
                  res.slots[1].error == 0 && res.slots[2].error == 0,
              "alloc release: the missing function fails reset_failed, the other two slots are "
              "torn down (%s, %s)",
              err(r), strempty(res.error_message));
        check(count_lines("/tmp/alloc-calls", "stop slt_a alc_vm2 ") == 1 &&
                  !path_exists("/tmp/alloc-rt/alc_vm2"),
              "the hook was stopped once and the allocation's runtime directory removed");
        alloc_result_done(&res);
        alloc_request_free(req);
        proto_envelope_free(env);
        alloc_host_free(h);
        pci_unbind(root, vf0, 10000);
        pci_unbind(root, vf1, 10000);
        r = sriov_set_num_vfs(root, pf, 0, 10000);
        check(r >= 0, "VFs back to 0 (%s)", err(r));
}

static char *netdevsim_ifname(void)
{
        const char *dir = "/sys/bus/netdevsim/devices/netdevsim1/net";
        DIR *d = opendir(dir);
        struct dirent *de;
        char *name = NULL;
        while (d && (de = readdir(d)))
                if (de->d_name[0] != '.') {
                        name = strdup(de->d_name);
                        break;
                }
        if (d)
                closedir(d);
        return name;
}

static void scenario_netdevsim(void)
{
        _cleanup_free_ char *ifname = NULL;
        VfConfig want, got, base;
        int r;

        r = sysfs_write_bounded(root, "sys/bus/netdevsim/new_device", "1 1", 10000);
        check(r == 0, "netdevsim device 1 created (%s)", err(r));
        sysfs_wait_path(root, "sys/bus/netdevsim/devices/netdevsim1/net", false, 10000);
        unsigned long long t0 = pci_now_ms();
        while (!(ifname = netdevsim_ifname()) && pci_now_ms() - t0 < 10000) {
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        check(ifname != NULL, "its netdev is %s", strempty(ifname));
        if (!ifname)
                return;
        r = sysfs_write_bounded(root, "sys/bus/netdevsim/devices/netdevsim1/sriov_numvfs", "4",
                                10000);
        check(r == 0, "4 VFs on the netdevsim PF (%s)", err(r));

        want = (VfConfig){.vlan = 100,
                          .qos = 3,
                          .spoofchk = true,
                          .trust = false,
                          .link_state = VF_LINK_STATE_ENABLE};
        vf_mac_parse("02:00:5e:10:00:01", want.mac);
        r = vf_config_apply(ifname, 1, &want);
        check(r == 0,
              "VF 1: MAC, VLAN 100 QoS 3, spoofchk on, trust off, link enable applied "
              "and read back equal (%s)",
              err(r));
        r = vf_config_read(ifname, 1, &got);
        check(r == 0 && !vf_config_diff(&want, &got),
              "a fresh read over rtnetlink returns the same (%s, differs in %s)", err(r),
              vf_config_diff(&want, &got) ? vf_config_diff(&want, &got) : "nothing");
        r = vf_config_read(ifname, 0, &got);
        check(r == 0 && got.vlan == 0, "VF 0 is untouched (vlan %u)", got.vlan);

        /* keep_mac (a "hardware" network): the MAC is left alone and read back. */
        VfConfig keep = want, kept;
        keep.keep_mac = true;
        keep.vlan = 200;
        memset(keep.mac, 0xff, 6); /* not looked at */
        r = vf_config_apply_read(ifname, 1, &keep, &kept);
        check(r == 0 && kept.vlan == 200 && memcmp(kept.mac, want.mac, 6) == 0,
              "keep_mac: VLAN 200 applied, the MAC left as it was and read back (%s)", err(r));
        r = vf_config_apply_read(ifname, 2, &keep, &kept);
        check(r == 0 && vf_mac_is_zero(kept.mac),
              "keep_mac on a VF never given a MAC reads back the zero MAC (netdevsim gives none; "
              "slot_assign then fails it) (%s)",
              err(r));
        r = vf_config_apply(ifname, 1, &want);
        check(r == 0, "VF 1 back to the first config (%s)", err(r));

        VfConfig bad = want;
        vf_mac_parse("01:00:5e:00:00:01", bad.mac);
        r = vf_config_apply(ifname, 1, &bad);
        check(r == -EINVAL, "a multicast MAC is refused with EINVAL (%s)", err(r));
        r = vf_config_apply(ifname, 7, &want);
        check(r == -EINVAL, "the kernel refuses VF 7 of 4 with EINVAL (%s)", err(r));
        r = vf_config_read(ifname, 1, &got);
        check(r == 0 && !vf_config_diff(&want, &got), "the refused changes left VF 1 as it was");

        /* Teardown's baseline with the VF's own MAC (vf-baseline.h). VF 3
         * stands in for a VF with a firmware-assigned MAC: netdevsim gives
         * none, so one is set first. Records are keyed by a PCI address;
         * netdevsim has none, any stands in. */
        VfConfig fw, tenant = want, restore, hw = want;
        uint8_t own[6], rec[6];
        vf_config_baseline(&fw);
        vf_mac_parse("00:5a:ee:00:00:03", own);
        memcpy(fw.mac, own, 6);
        vf_mac_parse("02:00:5e:10:00:03", tenant.mac);
        r = vf_config_apply(ifname, 3, &fw);
        if (r == 0)
                r = vf_config_read(ifname, 3, &got);
        if (r == 0)
                r = vf_baseline_first_sight("/tmp/vfb-state", "0000:ee:00.0", 3, got.mac, &tenant);
        check(r == 1 && memcmp(got.mac, own, 6) == 0,
              "first sight of VF 3 records the MAC it has, 00:5a:ee:00:00:03 (%s)", err(r));
        r = vf_config_apply(ifname, 3, &tenant);
        if (r == 0)
                r = vf_config_read(ifname, 3, &got);
        if (r == 0)
                r = vf_baseline_first_sight("/tmp/vfb-state", "0000:ee:00.0", 3, got.mac, &tenant);
        int l = vf_baseline_load("/tmp/vfb-state", "0000:ee:00.0", 3, rec);
        check(r == 0 && l == 0 && memcmp(rec, own, 6) == 0,
              "the tenant's MAC set, a later sight records nothing: the record stays (%s)", err(r));
        r = vf_baseline_config("/tmp/vfb-state", "0000:ee:00.0", 3, &restore);
        if (r == 0)
                r = vf_config_apply(ifname, 3, &restore);
        vf_config_read(ifname, 3, &got);
        check(r == 0 && memcmp(got.mac, own, 6) == 0 && !vf_config_diff(&restore, &got) &&
                  got.vlan == 0 && got.link_state == VF_LINK_STATE_DISABLE,
              "teardown's baseline gives VF 3 its own MAC back over rtnetlink, the rest parked "
              "(%s)",
              err(r));
        hw.keep_mac = true;
        r = vf_config_apply_read(ifname, 3, &hw, &kept);
        check(r == 0 && memcmp(kept.mac, own, 6) == 0,
              "a \"hardware\" configuration after it keeps that MAC (%s)", err(r));

        vf_config_baseline(&base);
        r = vf_config_apply(ifname, 1, &base);
        vf_config_read(ifname, 1, &got);
        check(r == 0 && !vf_config_diff(&base, &got),
              "teardown puts the baseline back: zero MAC, no VLAN, spoofchk on, trust off, link "
              "disabled (%s)",
              err(r));
        r = sysfs_write_bounded(root, "sys/bus/netdevsim/devices/netdevsim1/sriov_numvfs", "0",
                                10000);
        check(r == 0, "VFs back to 0 (%s)", err(r));
}

int main(void)
{
        _cleanup_free_ char *pf = find_pci("0x1b36", "0x0010");
        unsigned long long t0 = pci_now_ms();

        check(pf != NULL, "QEMU's SR-IOV NVMe controller is present (%s)", strempty(pf));
        if (pf) {
                scenario_nvme_sriov(pf);
                diag("nvme sriov: %llu ms", pci_now_ms() - t0);
                scenario_vfio_bind_and_block(pf);
                diag("vfio: %llu ms", pci_now_ms() - t0);
                scenario_nvme_wipe(pf);
                diag("wipe: %llu ms", pci_now_ms() - t0);
                scenario_slot_ops(pf);
                diag("slot-ops: %llu ms", pci_now_ms() - t0);
                scenario_alloc_ops(pf);
                diag("alloc-ops: %llu ms", pci_now_ms() - t0);
        }
        scenario_netdevsim();
        diag("total: %llu ms", pci_now_ms() - t0);
        printf("@@ 1..%d\n", n_tests);
        fflush(stdout);
        return n_failed ? 1 : 0;
}
