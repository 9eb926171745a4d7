/* SPDX-License-Identifier: MIT */
#pragma once

/* The ordered host steps that give a slot to an allocation and take it back,
 * composed of the one-concern modules (sriov, pci-bind, vf-config, pci-reset,
 * nvme-wipe, hooks). Every step is idempotent, so a failed sequence can be
 * run again from the top; each reports a machine-readable reason from the API
 * contract when it fails.
 *
 * Assignment: VFs present on the NIC PF -> VF config (its own MAC recorded
 * the first time, then MAC, VLAN, spoofchk on, trust off, link) -> VF to
 * vfio-pci -> NVMe controller to vfio-pci -> GPUs to vfio-pci -> workload
 * start hook.
 * Teardown: workload stop hook -> FLR of every function -> NVMe back to the
 * nvme driver and wiped -> VF config to baseline (with the VF's recorded
 * MAC) -> rebind (VF parked without a driver, GPUs to their host driver).
 * It stops at the first failure: the slot is then quarantined and the
 * allocation release_failed; only a teardown whose every step succeeded
 * makes the slot available again. */

#include <stddef.h>

#include "nvme-wipe.h"
#include "vf-config.h"

typedef enum {
        SLOT_STEP_CREATE_VFS,
        SLOT_STEP_CONFIGURE_VF,
        SLOT_STEP_BIND_VF,
        SLOT_STEP_BIND_NVME,
        SLOT_STEP_BIND_GPU,
        SLOT_STEP_START_WORKLOAD,
        SLOT_STEP_STOP_WORKLOAD,
        SLOT_STEP_RESET,
        SLOT_STEP_WIPE_NVME,
        SLOT_STEP_RESET_VF_CONFIG,
        SLOT_STEP_REBIND,
        SLOT_STEP_DISABLE_VFS, /* node drain, not per slot: VFs are shared by the PF's slots */
        _SLOT_STEP_MAX,
} SlotStep;

typedef struct {
        const char *root; /* host root for sysfs and /dev ("/") */
        const char *slot_id;
        const char *allocation_id;
        const char *const *gpus; /* PCI addresses */
        size_t n_gpus;
        const char *gpu_host_driver; /* driver GPUs return to; NULL: stay on vfio-pci */
        const char *nic_pf;          /* PCI address of the NIC PF */
        const char *nic_ifname;      /* its netdev, for rtnetlink */
        unsigned nic_num_vfs;        /* the node's planned VF count on that PF */
        unsigned vf_index;
        VfConfig vf; /* the tenant's VF settings */
        /* the agent's state directory: the VF's baseline MAC is recorded
         * there (vf-baseline.h); required with nic_pf */
        const char *state_dir;
        const char *nvme; /* PCI address of the slot's NVMe controller, or NULL */
        const char *hook_dir;
        const char *hook; /* hook name under hook_dir, or NULL for none */
        const char *runtime_dir;
        unsigned step_timeout_ms;
        unsigned wipe_timeout_ms;
        unsigned wipe_allowed; /* NVME_WIPE_ALLOW bits; 0 means all */
} SlotSpec;

typedef struct {
        SlotStep step;
        int error; /* 0 or -errno */
        char detail[256];
        unsigned long long ms;
} SlotStepResult;

typedef struct {
        SlotStepResult steps[_SLOT_STEP_MAX];
        size_t n_steps;
        const char *reason;  /* NULL when every step succeeded */
        NvmeWipeMethod wipe; /* the method that wiped the NVMe drive */
        char vf_address[16]; /* the VF given to the slot */
        /* assign: the MAC the VF has once configured (the tenant's, or with
         * keep_mac its own, read back); has_mac once configure_vf succeeded */
        uint8_t mac[6];
        bool has_mac;
} SlotReport;

const char *slot_step_name(SlotStep s);

/* The API contract's reason for a failure in step s ("vf_bind_failed",
 * "nvme_wipe_failed", "reset_failed", ...). */
const char *slot_reason_for_step(SlotStep s, int error);

/* 0 when the slot is ready for its allocation; -errno with rep->reason. */
int slot_assign(const SlotSpec *spec, SlotReport *rep);

/* 0 when every teardown step succeeded (the slot may be available again);
 * -errno with rep->reason otherwise (allocation release_failed, slot quarantined). */
int slot_teardown(const SlotSpec *spec, SlotReport *rep);

/* "available" after a clean teardown (r == 0), else "quarantined". */
const char *slot_state_after_teardown(int r);
