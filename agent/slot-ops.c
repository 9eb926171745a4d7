/* SPDX-License-Identifier: MIT */
#include "slot-ops.h"

#include <stdarg.h>
#include <time.h>

#include "hooks.h"
#include "macro.h"
#include "pci-bind.h"
#include "pci-reset.h"
#include "pci-sysfs.h"
#include "sriov.h"
#include "sysfs-path.h"
#include "vf-baseline.h"

#define VFIO_DRIVER "vfio-pci"

static const struct {
        const char *name;
        const char *reason;
} steps[_SLOT_STEP_MAX] = {
    [SLOT_STEP_CREATE_VFS] = {"create_vfs", "vf_create_failed"},
    [SLOT_STEP_CONFIGURE_VF] = {"configure_vf", "vf_config_failed"},
    [SLOT_STEP_BIND_VF] = {"bind_vf", "vf_bind_failed"},
    [SLOT_STEP_BIND_NVME] = {"bind_nvme", "nvme_bind_failed"},
    [SLOT_STEP_BIND_GPU] = {"bind_gpu", "gpu_bind_failed"},
    [SLOT_STEP_START_WORKLOAD] = {"start_workload", "workload_start_failed"},
    [SLOT_STEP_STOP_WORKLOAD] = {"stop_workload", "workload_stop_failed"},
    [SLOT_STEP_RESET] = {"reset", "reset_failed"},
    [SLOT_STEP_WIPE_NVME] = {"wipe_nvme", "nvme_wipe_failed"},
    [SLOT_STEP_RESET_VF_CONFIG] = {"reset_vf_config", "vf_config_failed"},
    [SLOT_STEP_REBIND] = {"rebind", "rebind_failed"},
    [SLOT_STEP_DISABLE_VFS] = {"disable_vfs", "reset_failed"},
};

const char *slot_step_name(SlotStep s)
{
        return s < _SLOT_STEP_MAX ? steps[s].name : "unknown";
}

const char *slot_reason_for_step(SlotStep s, int error)
{
        if (error == 0)
                return NULL;
        return s < _SLOT_STEP_MAX ? steps[s].reason : "host_operation_failed";
}

const char *slot_state_after_teardown(int r)
{
        return r == 0 ? "available" : "quarantined";
}

static unsigned step_timeout(const SlotSpec *s)
{
        return s->step_timeout_ms ? s->step_timeout_ms : PCI_WRITE_TIMEOUT_MS_DEFAULT;
}

_printf_(4, 5) static int record(SlotReport *rep, SlotStep step, int r, const char *fmt, ...)
{
        if (rep->n_steps >= ELEMENTSOF(rep->steps))
                return r;
        SlotStepResult *res = &rep->steps[rep->n_steps++];
        res->step = step;
        res->error = r < 0 ? r : 0;
        if (fmt) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(res->detail, sizeof(res->detail), fmt, ap);
                va_end(ap);
        }
        if (r < 0 && !rep->reason)
                rep->reason = slot_reason_for_step(step, r);
        return r < 0 ? r : 0;
}

static void begin(SlotReport *rep)
{
        *rep = (SlotReport){0};
}

static int hook_ctx_devices(const SlotSpec *s, const char **devs, size_t *n)
{
        *n = 0;
        for (size_t i = 0; i < s->n_gpus; i++)
                devs[(*n)++] = s->gpus[i];
        return 0;
}

static int run_hook(const SlotSpec *s, const SlotReport *rep, HookVerb verb, char *detail,
                    size_t detail_len)
{
        const char *devs[34];
        size_t n = 0;
        HookResult res = {0};
        int r;

        if (!s->hook)
                return 0;
        if (s->n_gpus > 32)
                return -E2BIG;
        hook_ctx_devices(s, devs, &n);
        if (rep->vf_address[0])
                devs[n++] = rep->vf_address;
        if (s->nvme)
                devs[n++] = s->nvme;
        HookContext ctx = {.slot_id = s->slot_id,
                           .allocation_id = s->allocation_id,
                           .vfio_devices = devs,
                           .n_vfio_devices = n,
                           .runtime_dir = s->runtime_dir};
        r = hook_run(s->hook_dir, s->hook, verb, &ctx, step_timeout(s), &res);
        snprintf(detail, detail_len, "hook %s %s: %s (exit %d)", s->hook, hook_verb_name(verb),
                 r == 0 ? "ok" : strerror(-r), res.exit_code);
        hook_result_done(&res);
        return r;
}

static int find_vf(const SlotSpec *s, SlotReport *rep)
{
        _cleanup_free_ char *vf = NULL;
        int r;

        if (!s->nic_pf)
                return 0;
        r = sriov_vf_address(s->root, s->nic_pf, s->vf_index, &vf);
        if (r < 0)
                return r;
        snprintf(rep->vf_address, sizeof(rep->vf_address), "%s", vf);
        return 0;
}

/* Before the VF is configured: the MAC it has is recorded as its own the
 * first time (vf-baseline.h), so a re-run after a crash between the record
 * and the set finds the record and never takes the tenant's MAC for it.
 * 1 when recorded now, 0 when already recorded, -errno. */
static int first_sight(const SlotSpec *s)
{
        VfConfig now;
        int r = vf_baseline_recorded(s->state_dir, s->nic_pf, s->vf_index);
        if (r != 0)
                return r < 0 ? r : 0;
        if ((r = vf_config_read(s->nic_ifname, s->vf_index, &now)) < 0)
                return r;
        return vf_baseline_first_sight(s->state_dir, s->nic_pf, s->vf_index, now.mac, &s->vf);
}

int slot_assign(const SlotSpec *s, SlotReport *rep)
{
        unsigned t = step_timeout(s);
        char detail[256];
        int r;

        begin(rep);
        if (!s->root || !s->slot_id || !s->allocation_id)
                return -EINVAL;

        if (s->nic_pf) {
                SriovInfo info;
                unsigned long long t0 = pci_now_ms();
                r = sriov_read(s->root, s->nic_pf, &info);
                if (r == 0 && info.num_vfs <= s->vf_index) {
                        /* Changing a non-zero count destroys every VF of the PF,
                         * other slots' included: only an empty PF is populated. */
                        if (info.num_vfs != 0)
                                r = -EBUSY;
                        else {
                                (void)sriov_set_drivers_autoprobe(s->root, s->nic_pf, false, t);
                                r = sriov_set_num_vfs(s->root, s->nic_pf,
                                                      MAX(s->nic_num_vfs, s->vf_index + 1), t);
                        }
                }
                if (r >= 0)
                        r = find_vf(s, rep);
                r = record(rep, SLOT_STEP_CREATE_VFS, r, "%s: %s", s->nic_pf,
                           r < 0 ? strerror(-r) : rep->vf_address);
                rep->steps[rep->n_steps - 1].ms = pci_now_ms() - t0;
                if (r < 0)
                        return r;

                VfConfig got = {0};
                r = s->nic_ifname ? first_sight(s) : -EINVAL;
                bool recorded = r > 0;
                if (r >= 0)
                        r = vf_config_apply_read(s->nic_ifname, s->vf_index, &s->vf, &got);
                /* "hardware" MAC policy: the VF keeps its own MAC, so it must
                 * have one; a zero MAC would leave the tenant without any. */
                bool no_mac = r >= 0 && s->vf.keep_mac && vf_mac_is_zero(got.mac);
                if (no_mac)
                        r = -EADDRNOTAVAIL;
                char mac[18];
                vf_mac_format(got.mac, mac);
                r = record(rep, SLOT_STEP_CONFIGURE_VF, r, "%s vf %u: %s%s%s%s",
                           strempty(s->nic_ifname), s->vf_index,
                           no_mac  ? "the VF has no hardware MAC (00:00:00:00:00:00)"
                           : r < 0 ? strerror(-r)
                                   : "ok, mac ",
                           r < 0 ? "" : mac, r >= 0 && s->vf.keep_mac ? " (hardware)" : "",
                           recorded ? "; its own MAC recorded as its baseline" : "");
                if (r < 0)
                        return r;
                memcpy(rep->mac, got.mac, 6);
                rep->has_mac = true;

                r = pci_bind(s->root, rep->vf_address, VFIO_DRIVER, t);
                r = record(rep, SLOT_STEP_BIND_VF, r, "%s: %s", rep->vf_address,
                           r < 0 ? strerror(-r) : VFIO_DRIVER);
                if (r < 0)
                        return r;
        }
        if (s->nvme) {
                r = pci_bind(s->root, s->nvme, VFIO_DRIVER, t);
                r = record(rep, SLOT_STEP_BIND_NVME, r, "%s: %s", s->nvme,
                           r < 0 ? strerror(-r) : VFIO_DRIVER);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < s->n_gpus; i++) {
                r = pci_bind(s->root, s->gpus[i], VFIO_DRIVER, t);
                r = record(rep, SLOT_STEP_BIND_GPU, r, "%s: %s", s->gpus[i],
                           r < 0 ? strerror(-r) : VFIO_DRIVER);
                if (r < 0)
                        return r;
        }
        r = run_hook(s, rep, HOOK_START, detail, sizeof(detail));
        return record(rep, SLOT_STEP_START_WORKLOAD, r, "%s", s->hook ? detail : "no hook");
}

static int wait_controller(const SlotSpec *s, char **ctrl)
{
        unsigned long long deadline = pci_now_ms() + step_timeout(s);
        for (;;) {
                /* The controller takes admin commands once its state is "live"
                 * (before that, opening /dev/nvmeN is -EAGAIN). */
                int r = nvme_controller_of(s->root, s->nvme, ctrl);
                if (r == 0) {
                        _cleanup_free_ char *rel = NULL, *state = NULL, *dev = NULL;
                        if (asprintf(&rel, "sys/class/nvme/%s/state", *ctrl) < 0 ||
                            asprintf(&dev, "dev/%s", *ctrl) < 0)
                                return -ENOMEM;
                        if (sysfs_read_attr(s->root, rel, &state) == 0 && streq(state, "live") &&
                            sysfs_wait_path(s->root, dev, false, 0) == 0)
                                return 0;
                        free(*ctrl);
                        *ctrl = NULL;
                }
                if (pci_now_ms() >= deadline)
                        return -ETIMEDOUT;
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL); /* poll interval */
        }
}

int slot_teardown(const SlotSpec *s, SlotReport *rep)
{
        unsigned t = step_timeout(s);
        char detail[256];
        int r;

        begin(rep);
        if (!s->root || !s->slot_id || !s->allocation_id)
                return -EINVAL;
        if (s->nic_pf) {
                r = find_vf(s, rep);
                if (r < 0)
                        return record(rep, SLOT_STEP_STOP_WORKLOAD, r, "VF %u of %s: %s",
                                      s->vf_index, s->nic_pf, strerror(-r));
        }

        /* 1. Nothing may hold the devices while the host takes them back:
         *    a held VFIO device makes the later writes block. */
        r = run_hook(s, rep, HOOK_STOP, detail, sizeof(detail));
        r = record(rep, SLOT_STEP_STOP_WORKLOAD, r, "%s", s->hook ? detail : "no hook");
        if (r < 0)
                return r;

        /* 2. FLR before any host driver touches a function the tenant drove. */
        const char *fns[36];
        size_t n = 0;
        for (size_t i = 0; i < s->n_gpus && n < 32; i++)
                fns[n++] = s->gpus[i];
        if (rep->vf_address[0])
                fns[n++] = rep->vf_address;
        if (s->nvme)
                fns[n++] = s->nvme;
        for (size_t i = 0; i < n; i++) {
                r = pci_reset_function(s->root, fns[i], t);
                r = record(rep, SLOT_STEP_RESET, r, "%s: %s", fns[i],
                           r < 0 ? strerror(-r) : "reset");
                if (r < 0)
                        return r;
        }

        /* 3. The drive goes back to the host's nvme driver and is erased. */
        if (s->nvme) {
                _cleanup_free_ char *ctrl = NULL;
                NvmeWipeResult wipe = {0};
                unsigned long long t0 = pci_now_ms();
                r = pci_restore(s->root, s->nvme, "nvme", t);
                if (r >= 0)
                        r = wait_controller(s, &ctrl);
                if (r >= 0)
                        r = nvme_wipe(s->root, ctrl,
                                      s->wipe_allowed ? s->wipe_allowed : NVME_WIPE_ALLOW_ALL,
                                      s->wipe_timeout_ms ? s->wipe_timeout_ms : 3600 * 1000, &wipe);
                rep->wipe = r == 0 ? wipe.method : NVME_WIPE_NONE;
                r = record(rep, SLOT_STEP_WIPE_NVME, r, "%s %s: %s%s%s", s->nvme, strempty(ctrl),
                           r == 0 ? nvme_wipe_method_name(wipe.method) : strerror(-r),
                           wipe.detail[0] ? "; " : "", wipe.detail);
                rep->steps[rep->n_steps - 1].ms = pci_now_ms() - t0;
                if (r < 0)
                        return r;
        }

        /* 4. Nothing of the tenant's network identity stays on the VF. */
        if (s->nic_pf) {
                /* The VF's own MAC back, as first seen (zero without a record). */
                VfConfig base;
                char mac[18];
                bool known = vf_baseline_config(s->state_dir, s->nic_pf, s->vf_index, &base) >= 0;
                vf_mac_format(base.mac, mac);
                r = s->nic_ifname ? vf_config_apply(s->nic_ifname, s->vf_index, &base) : -EINVAL;
                r = record(rep, SLOT_STEP_RESET_VF_CONFIG, r, "%s vf %u: %s%s%s",
                           strempty(s->nic_ifname), s->vf_index,
                           r < 0 ? strerror(-r) : "baseline, mac ", r < 0 ? "" : mac,
                           r < 0 || known ? "" : " (no record of the VF's own MAC)");
                if (r < 0)
                        return r;
        }

        /* 5. The VF is parked without a driver; GPUs go where the node wants them. */
        if (rep->vf_address[0]) {
                r = pci_unbind(s->root, rep->vf_address, t);
                r = record(rep, SLOT_STEP_REBIND, r, "%s: %s", rep->vf_address,
                           r < 0 ? strerror(-r) : "unbound");
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < s->n_gpus; i++) {
                const char *d = s->gpu_host_driver ? s->gpu_host_driver : VFIO_DRIVER;
                r = s->gpu_host_driver ? pci_restore(s->root, s->gpus[i], d, t)
                                       : pci_bind(s->root, s->gpus[i], d, t);
                r = record(rep, SLOT_STEP_REBIND, r, "%s: %s", s->gpus[i],
                           r < 0 ? strerror(-r) : d);
                if (r < 0)
                        return r;
        }
        return 0;
}
