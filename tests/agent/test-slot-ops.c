/* SPDX-License-Identifier: MIT */
/* The slot sequences: their reasons from the API contract, their order, that
 * they stop at the first failed step and quarantine, and that a step that
 * blocks ends on its deadline. The full sequence on a real kernel (NVMe handed
 * over, reset, wiped, returned) runs in tests/vm. */

#include "hooks.h"
#include "hostops-test.h"
#include "pci-sysfs.h"
#include "slot-ops.h"

#define NVME    "0000:3b:00.0"
#define GPU     "0000:17:00.0"
#define T(name) Test(slot_ops, name, .init = setup, .fini = tree_fini, .timeout = 30)

static void hook(const char *name, const char *body)
{
        char rel[128];
        snprintf(rel, sizeof(rel), "hooks/%s", name);
        tput(rel, body);
        cr_assert(chmod(tpath("%s", rel), 0755) == 0);
}

static void setup(void)
{
        tree_init();
        tpci(NVME, "vfio-pci");
        tpci(GPU, "vfio-pci");
        tdriver("nvme");
        tput("sys/bus/pci/devices/" NVME "/reset", "");
        tput("sys/bus/pci/devices/" GPU "/reset", "");
        tdir("hooks");
        tdir("run");
        hook("ok", "#!/bin/sh\necho \"$1\" >> \"$GPUSLICE_RUNTIME_DIR/calls\"\n");
        hook("stop-fails", "#!/bin/sh\n[ \"$1\" = stop ] && exit 1\nexit 0\n");
}

static SlotSpec spec(const char *hook_name)
{
        static const char *gpus[] = {GPU};
        return (SlotSpec){.root = hroot,
                          .slot_id = "slt_1",
                          .allocation_id = "alc_1",
                          .gpus = gpus,
                          .n_gpus = 1,
                          .nvme = NVME,
                          .hook_dir = tpath("hooks"),
                          .hook = hook_name,
                          .runtime_dir = tpath("run"),
                          .step_timeout_ms = 300};
}

T(reasons_are_the_contract_codes)
{
        cr_expect_str_eq(slot_reason_for_step(SLOT_STEP_BIND_VF, -EIO), "vf_bind_failed");
        cr_expect_str_eq(slot_reason_for_step(SLOT_STEP_WIPE_NVME, -EIO), "nvme_wipe_failed");
        cr_expect_str_eq(slot_reason_for_step(SLOT_STEP_RESET, -ETIMEDOUT), "reset_failed");
        cr_expect_str_eq(slot_reason_for_step(SLOT_STEP_DISABLE_VFS, -ETIMEDOUT), "reset_failed");
        cr_expect_null(slot_reason_for_step(SLOT_STEP_RESET, 0));
        for (SlotStep s = 0; s < _SLOT_STEP_MAX; s++) {
                cr_expect_neq(strcmp(slot_step_name(s), "unknown"), 0);
                cr_expect(slot_reason_for_step(s, -EIO) != NULL);
        }
}

T(only_a_clean_teardown_makes_the_slot_available)
{
        cr_expect_str_eq(slot_state_after_teardown(0), "available");
        cr_expect_str_eq(slot_state_after_teardown(-EIO), "quarantined");
        cr_expect_str_eq(slot_state_after_teardown(-ETIMEDOUT), "quarantined");
}

T(a_failing_stop_hook_ends_the_teardown_before_anything_is_touched)
{
        SlotSpec s = spec("stop-fails");
        SlotReport rep;
        cr_expect_eq(slot_teardown(&s, &rep), -EPROTO);
        cr_expect_str_eq(rep.reason, "workload_stop_failed");
        cr_expect_eq(rep.n_steps, 1);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" GPU "/reset"), "",
                         "no reset after a "
                         "failed stop");
}

T(a_reset_that_blocks_is_reset_failed_on_its_deadline_and_stops_there)
{
        SlotSpec s = spec("ok");
        SlotReport rep;
        unlink(tpath("sys/bus/pci/devices/" NVME "/reset"));
        tfifo("sys/bus/pci/devices/" NVME "/reset");
        unsigned long long t0 = pci_now_ms();
        int r = slot_teardown(&s, &rep);
        tfifo_drain("sys/bus/pci/devices/" NVME "/reset");
        cr_expect_eq(r, -ETIMEDOUT);
        cr_expect(pci_now_ms() - t0 < 5000);
        cr_expect_str_eq(rep.reason, "reset_failed");
        cr_assert_eq(rep.n_steps, 3, "stop, reset GPU, reset NVMe");
        cr_expect_eq(rep.steps[0].step, SLOT_STEP_STOP_WORKLOAD);
        cr_expect_eq(rep.steps[1].step, SLOT_STEP_RESET);
        cr_expect_str_eq(tget("sys/bus/pci/devices/" GPU "/reset"), "1");
        cr_expect_str_eq(tget("run/calls"), "stop\n");
        cr_expect_str_eq(slot_state_after_teardown(r), "quarantined");
}

T(the_wipe_step_fails_when_the_drive_does_not_come_back_to_nvme)
{
        /* No kernel: the rebind to nvme is never answered (-ENXIO). */
        SlotSpec s = spec("ok");
        SlotReport rep;
        int r = slot_teardown(&s, &rep);
        cr_expect_lt(r, 0);
        cr_expect_str_eq(rep.reason, "nvme_wipe_failed");
        cr_expect_eq(rep.steps[rep.n_steps - 1].step, SLOT_STEP_WIPE_NVME);
        cr_expect_eq(rep.wipe, NVME_WIPE_NONE);
}

T(assignment_binds_in_order_and_names_the_failed_step)
{
        SlotSpec s = spec("ok");
        SlotReport rep;
        /* Both already on vfio-pci: binding is a no-op; the start hook runs. */
        cr_expect_eq(slot_assign(&s, &rep), 0);
        cr_expect_null(rep.reason);
        cr_assert_eq(rep.n_steps, 3);
        cr_expect_eq(rep.steps[0].step, SLOT_STEP_BIND_NVME);
        cr_expect_eq(rep.steps[1].step, SLOT_STEP_BIND_GPU);
        cr_expect_eq(rep.steps[2].step, SLOT_STEP_START_WORKLOAD);
        cr_expect_str_eq(tget("run/calls"), "start\n");

        /* A GPU on another driver, with no kernel to take it: gpu_bind_failed. */
        unlink(tpath("sys/bus/pci/devices/" GPU "/driver"));
        tlink("../../drivers/nvme", "sys/bus/pci/devices/" GPU "/driver");
        cr_expect_eq(slot_assign(&s, &rep), -ENXIO);
        cr_expect_str_eq(rep.reason, "gpu_bind_failed");
}

T(missing_ids_are_refused)
{
        SlotSpec s = spec("ok");
        SlotReport rep;
        s.allocation_id = NULL;
        cr_expect_eq(slot_assign(&s, &rep), -EINVAL);
        cr_expect_eq(slot_teardown(&s, &rep), -EINVAL);
}
