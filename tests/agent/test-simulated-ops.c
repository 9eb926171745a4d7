/* SPDX-License-Identifier: MIT */
/* The simulated host's slot steps: the same order, reasons and SR-IOV rules
 * as slot_assign()/slot_teardown() (a non-zero VF count never changes, more
 * than the total is refused), its state files, and the fault rules (a step
 * name, hang:, @id, comments) read again by every step, and the VF's own MAC
 * recorded at first sight and put back by every teardown. The daemon's use
 * of it is in test-alloc-ops.c. */

#include <jansson.h>

#include "hostops-test.h"
#include "pci-sysfs.h"
#include "simulated-ops.h"
#include "vf-baseline.h"

#define T(name) Test(simulated_ops, name, .init = setup, .fini = teardown, .timeout = 30)

static SimulatedHost *sim;
static char state_dir[512]; /* the agent's: simulated-host/ and vf-baselines/ */

static void setup(void)
{
        tree_init();
        snprintf(state_dir, sizeof(state_dir), "%s", tpath("state"));
        cr_assert_eq(simulated_host_open(state_dir, &sim), 0);
}

static void teardown(void)
{
        simulated_host_free(sim);
        sim = NULL;
        tree_fini();
}

static const char *gpus[] = {"0000:d1:00.0"};

static SlotSpec spec(const char *slot, unsigned vf_index)
{
        SlotSpec s = {.root = "/nonexistent",
                      .slot_id = slot,
                      .allocation_id = "alc_1",
                      .gpus = gpus,
                      .n_gpus = 1,
                      .nic_pf = "0000:d5:00.0",
                      .nic_num_vfs = 2,
                      .vf_index = vf_index,
                      .state_dir = state_dir,
                      .nvme = "0000:9a:00.0",
                      .step_timeout_ms = 300};
        vf_mac_parse("02:00:00:00:00:01", s.vf.mac);
        s.vf.vlan = 7;
        s.vf.spoofchk = true;
        s.vf.link_state = VF_LINK_STATE_ENABLE;
        return s;
}

static json_t *state(const char *kind, const char *name)
{
        json_t *j = json_load_file(tpath("state/simulated-host/%s/%s.json", kind, name), 0, NULL);
        cr_assert(j, "%s/%s.json", kind, name);
        return j;
}

static void step_names(const SlotReport *rep, const char *want)
{
        char got[512] = "";
        for (size_t i = 0; i < rep->n_steps; i++)
                snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? " " : "",
                         slot_step_name(rep->steps[i].step));
        cr_expect_str_eq(got, want);
}

T(assign_and_teardown_follow_the_real_steps_and_leave_the_state_files)
{
        SlotSpec s = spec("slt_a", 0);
        SlotReport rep;
        cr_assert_eq(simulated_slot_assign(sim, &s, &rep), 0, "%s", strempty(rep.reason));
        step_names(&rep, "create_vfs configure_vf bind_vf bind_nvme bind_gpu start_workload");
        cr_expect_str_eq(rep.vf_address, "0000:d5:00.1");
        json_t *nic = state("nics", "0000:d5:00.0");
        cr_expect_eq(json_integer_value(json_object_get(nic, "num_vfs")), 2, "the planned count");
        cr_expect_eq(json_integer_value(json_object_get(nic, "total_vfs")), 16);
        json_decref(nic);
        json_t *slot = state("slots", "slt_a");
        cr_expect_str_eq(json_string_value(json_object_get(slot, "state")), "assigned");
        json_t *vf = json_object_get(slot, "vf");
        cr_expect_str_eq(json_string_value(json_object_get(vf, "mac")), "02:00:00:00:00:01");
        cr_expect_eq(json_integer_value(json_object_get(vf, "vlan")), 7);
        cr_expect_str_eq(json_string_value(json_object_get(vf, "link_state")), "enable");
        cr_expect(json_is_true(json_object_get(slot, "simulated")));
        json_decref(slot);

        cr_assert_eq(simulated_slot_teardown(sim, &s, &rep), 0, "%s", strempty(rep.reason));
        step_names(&rep, "stop_workload reset reset reset wipe_nvme reset_vf_config rebind rebind");
        slot = state("slots", "slt_a");
        cr_expect_str_eq(json_string_value(json_object_get(slot, "state")), "available");
        json_t *nvme = json_object_get(slot, "nvme");
        cr_expect_str_eq(json_string_value(json_object_get(nvme, "wipe_method")), "simulated");
        cr_expect_str_eq(json_string_value(json_object_get(nvme, "driver")), "nvme");
        cr_expect_eq(
            json_integer_value(json_object_get(json_object_get(slot, "resets"), "0000:d5:00.1")),
            1);
        json_decref(slot);

        /* Idempotent: again, same result. */
        cr_expect_eq(simulated_slot_teardown(sim, &s, &rep), 0);
        cr_expect_eq(simulated_slot_assign(sim, &s, &rep), 0);
}

T(a_pf_with_vfs_is_never_recounted_and_the_total_bounds_the_plan)
{
        SlotSpec a = spec("slt_a", 0), b = spec("slt_b", 1), c = spec("slt_c", 2);
        SlotReport rep;
        a.nic_num_vfs = 1; /* the PF gets one VF */
        cr_assert_eq(simulated_slot_assign(sim, &a, &rep), 0);
        cr_expect_eq(simulated_slot_assign(sim, &b, &rep), -EBUSY, "1 -> 2 would destroy VF 0");
        cr_expect_str_eq(rep.reason, "vf_create_failed");

        c.nic_pf = "0000:c5:00.0";
        c.nic_num_vfs = 17;
        cr_expect_eq(simulated_slot_assign(sim, &c, &rep), -ERANGE);
        cr_expect_str_eq(rep.reason, "vf_create_failed");

        /* Teardown of a slot whose VF never existed fails like the real one. */
        cr_expect_eq(simulated_slot_teardown(sim, &c, &rep), -ENOENT);
        cr_expect_str_eq(rep.reason, "workload_stop_failed");
}

static void faults(const char *text)
{
        tput("state/simulated-host/faults", text);
}

T(fault_rules_fail_the_step_named_and_only_for_the_id_named)
{
        SlotSpec s = spec("slt_a", 0);
        SlotReport rep;
        faults("# a comment\n\n  bind_nvme   # failing\n");
        cr_expect_eq(simulated_slot_assign(sim, &s, &rep), -ENXIO);
        cr_expect_str_eq(rep.reason, "nvme_bind_failed");
        step_names(&rep, "create_vfs configure_vf bind_vf bind_nvme");
        cr_expect(strstr(rep.steps[3].detail, "simulated fault: bind_nvme"), "%s",
                  rep.steps[3].detail);

        faults("bind_nvme@slt_other\nwipe_nvme@alc_1\n");
        cr_expect_eq(simulated_slot_assign(sim, &s, &rep), 0, "a rule for another slot");
        cr_expect_eq(simulated_slot_teardown(sim, &s, &rep), -EIO, "a rule for the allocation");
        cr_expect_str_eq(rep.reason, "nvme_wipe_failed");
        json_t *slot = state("slots", "slt_a");
        cr_expect_str_eq(json_string_value(json_object_get(slot, "state")), "teardown_failed");
        cr_expect_str_eq(json_string_value(json_object_get(slot, "failed_step")), "wipe_nvme");
        json_decref(slot);

        faults("");
        cr_expect_eq(simulated_slot_teardown(sim, &s, &rep), 0, "the rule is gone: done");
}

T(a_hang_waits_for_the_step_timeout_then_times_out)
{
        SlotSpec s = spec("slt_a", 0);
        SlotReport rep;
        faults("hang:reset_vf_config\n");
        cr_assert_eq(simulated_slot_assign(sim, &s, &rep), 0);
        unsigned long long t0 = pci_now_ms();
        cr_expect_eq(simulated_slot_teardown(sim, &s, &rep), -ETIMEDOUT);
        cr_expect_geq(pci_now_ms() - t0, 300, "it waited the step timeout");
        cr_expect_str_eq(rep.reason, "vf_config_failed");

        char detail[256];
        faults("hang:start_workload@alc_1\n");
        cr_expect_eq(simulated_fault(sim, SLOT_STEP_START_WORKLOAD, "alc_1", NULL, 50, detail,
                                     sizeof(detail)),
                     -ETIMEDOUT);
        cr_expect_eq(simulated_fault(sim, SLOT_STEP_STOP_WORKLOAD, "alc_1", NULL, 50, detail,
                                     sizeof(detail)),
                     0);
}

T(names_and_addresses)
{
        char vf[16];
        _cleanup_free_ char *ifname = NULL;
        cr_expect_eq(simulated_vf_address("0000:d5:00.0", 0, vf), 0);
        cr_expect_str_eq(vf, "0000:d5:00.1");
        cr_expect_eq(simulated_vf_address("0000:d5:00.0", 7, vf), 0);
        cr_expect_str_eq(vf, "0000:d5:01.0");
        cr_expect_eq(simulated_vf_address("0000:d5:1f.0", 8, vf), -ERANGE);
        cr_expect_eq(simulated_vf_address("d5:00.0", 0, vf), -EINVAL);
        cr_expect_eq(simulated_nic_ifname("0000:c5:00.0", &ifname), 0);
        cr_expect_str_eq(ifname, "sim-enp197s0f0");
        cr_expect_lt(strlen(ifname), 16, "fits IFNAMSIZ");

        SlotSpec s = spec("../slt", 0);
        SlotReport rep;
        cr_expect_eq(simulated_slot_assign(sim, &s, &rep), -EINVAL, "ids become file names");
        s = spec("slt_a", 0);
        s.hook = "some-hook";
        cr_expect_eq(simulated_slot_assign(sim, &s, &rep), -EINVAL, "the hook runs outside");
}

T(keep_mac_leaves_the_vfs_own_mac_reports_it_and_fails_without_one)
{
        uint8_t hw[6];
        char mac[18];
        cr_assert_eq(simulated_vf_hardware_mac("0000:d5:00.0", 1, hw), 0);
        vf_mac_format(hw, mac);
        cr_expect_str_eq(mac, "00:5a:d5:00:00:01", "bus, devfn, index; universally administered");
        cr_expect_eq(simulated_vf_hardware_mac("d5:00.0", 1, hw), -EINVAL);

        /* The tenant's MAC is reported as set. */
        SlotSpec s = spec("slt_a", 0);
        SlotReport rep;
        cr_assert_eq(simulated_slot_assign(sim, &s, &rep), 0, "%s", strempty(rep.reason));
        cr_expect(rep.has_mac);
        vf_mac_format(rep.mac, mac);
        cr_expect_str_eq(mac, "02:00:00:00:00:01");

        /* keep_mac: the VF's own MAC, the rest as asked. */
        s = spec("slt_b", 1);
        s.vf.keep_mac = true;
        memset(s.vf.mac, 0xff, 6); /* not looked at */
        cr_assert_eq(simulated_slot_assign(sim, &s, &rep), 0, "%s", strempty(rep.reason));
        cr_expect(rep.has_mac);
        vf_mac_format(rep.mac, mac);
        cr_expect_str_eq(mac, "00:5a:d5:00:00:01");
        json_t *slot = state("slots", "slt_b");
        json_t *vf = json_object_get(slot, "vf");
        cr_expect_str_eq(json_string_value(json_object_get(vf, "mac")), "00:5a:d5:00:00:01");
        cr_expect_eq(json_integer_value(json_object_get(vf, "vlan")), 7);
        cr_expect(json_is_true(json_object_get(vf, "spoofchk")));
        cr_expect_str_eq(json_string_value(json_object_get(vf, "link_state")), "enable");
        json_decref(slot);

        /* After the baseline (its own MAC, as first seen) the VF has it again. */
        cr_assert_eq(simulated_slot_teardown(sim, &s, &rep), 0, "%s", strempty(rep.reason));
        cr_assert_eq(simulated_slot_assign(sim, &s, &rep), 0, "%s", strempty(rep.reason));
        vf_mac_format(rep.mac, mac);
        cr_expect_str_eq(mac, "00:5a:d5:00:00:01");
        cr_assert_eq(simulated_slot_teardown(sim, &s, &rep), 0);

        /* A PF that gives the VF no MAC: configure_vf fails, vf_config_failed. */
        tput("state/simulated-host/nics/0000:c5:00.0.json",
             "{\"hardware_macs\": {\"0\": \"00:00:00:00:00:00\"}}");
        s = spec("slt_c", 0);
        s.nic_pf = "0000:c5:00.0";
        s.vf.keep_mac = true;
        cr_expect_eq(simulated_slot_assign(sim, &s, &rep), -EADDRNOTAVAIL);
        cr_expect_str_eq(rep.reason, "vf_config_failed");
        cr_expect(!rep.has_mac);
        step_names(&rep, "create_vfs configure_vf");
        cr_expect(strstr(rep.steps[1].detail, "no hardware MAC"), "%s", rep.steps[1].detail);
        /* With a MAC of the controller's it works. */
        s.vf.keep_mac = false;
        cr_expect_eq(simulated_slot_assign(sim, &s, &rep), 0, "%s", strempty(rep.reason));
}

/* The MAC the simulated VF of slot has now (its slot record). */
static const char *vf_mac_now(const char *slot)
{
        static char buf[18];
        json_t *j = state("slots", slot);
        snprintf(buf, sizeof(buf), "%s",
                 strempty(json_string_value(json_object_get(json_object_get(j, "vf"), "mac"))));
        json_decref(j);
        return buf;
}

/* The VF's recorded baseline MAC, "" when none. */
static const char *baseline(const char *pf, unsigned index)
{
        static char buf[18];
        uint8_t m[6];
        buf[0] = '\0';
        if (vf_baseline_load(state_dir, pf, index, m) == 0)
                vf_mac_format(m, buf);
        return buf;
}

static const char *step_detail(const SlotReport *rep, SlotStep step)
{
        for (size_t i = 0; i < rep->n_steps; i++)
                if (rep->steps[i].step == step)
                        return rep->steps[i].detail;
        return "";
}

T(the_vfs_own_mac_is_recorded_at_first_sight_and_every_teardown_puts_it_back)
{
        SlotSpec gen = spec("slt_a", 1), hw = spec("slt_a", 1);
        hw.vf.keep_mac = true;
        SlotReport rep;
        char mac[18];

        /* A "generated" allocation first: the VF's own MAC is recorded before
         * the tenant's is set. */
        cr_expect_str_eq(baseline("0000:d5:00.0", 1), "", "never seen");
        cr_assert_eq(simulated_slot_assign(sim, &gen, &rep), 0, "%s", strempty(rep.reason));
        cr_expect_str_eq(baseline("0000:d5:00.0", 1), "00:5a:d5:00:00:01");
        cr_expect(strstr(step_detail(&rep, SLOT_STEP_CONFIGURE_VF), "recorded"), "%s",
                  step_detail(&rep, SLOT_STEP_CONFIGURE_VF));
        cr_expect_str_eq(vf_mac_now("slt_a"), "02:00:00:00:00:01");

        /* Applied again (the command re-run after a restart): the VF carries
         * the tenant's MAC now, the record stays. */
        cr_assert_eq(simulated_slot_assign(sim, &gen, &rep), 0);
        cr_expect_str_eq(baseline("0000:d5:00.0", 1), "00:5a:d5:00:00:01", "never overwritten");
        cr_expect(!strstr(step_detail(&rep, SLOT_STEP_CONFIGURE_VF), "recorded"));

        /* The teardown puts the VF's own MAC back, not the zero MAC. */
        cr_assert_eq(simulated_slot_teardown(sim, &gen, &rep), 0, "%s", strempty(rep.reason));
        cr_expect_str_eq(vf_mac_now("slt_a"), "00:5a:d5:00:00:01");
        cr_expect(strstr(step_detail(&rep, SLOT_STEP_RESET_VF_CONFIG), "00:5a:d5:00:00:01"), "%s",
                  step_detail(&rep, SLOT_STEP_RESET_VF_CONFIG));

        /* So the next "hardware" allocation on that VF gets it, and again
         * after its own teardown. */
        for (int i = 0; i < 2; i++) {
                cr_assert_eq(simulated_slot_assign(sim, &hw, &rep), 0, "%s", strempty(rep.reason));
                vf_mac_format(rep.mac, mac);
                cr_expect_str_eq(mac, "00:5a:d5:00:00:01", "round %d", i);
                cr_assert_eq(simulated_slot_teardown(sim, &hw, &rep), 0);
                cr_expect_str_eq(vf_mac_now("slt_a"), "00:5a:d5:00:00:01");
        }

        /* Another slot id on the same VF (the node enrolled again) finds the
         * same record. */
        SlotSpec other = spec("slt_z", 1);
        cr_assert_eq(simulated_slot_assign(sim, &other, &rep), 0);
        cr_assert_eq(simulated_slot_teardown(sim, &other, &rep), 0);
        cr_expect_str_eq(vf_mac_now("slt_z"), "00:5a:d5:00:00:01");
}

/* A crash between the record and the set (here: the set fails after the
 * record) leaves the record of the VF's own MAC; the re-run sets the tenant's
 * without recording it. */
T(a_rerun_after_a_failure_between_record_and_set_keeps_the_first_record)
{
        SlotSpec s = spec("slt_a", 0);
        SlotReport rep;
        faults("configure_vf\n");
        cr_expect_eq(simulated_slot_assign(sim, &s, &rep), -EIO);
        cr_expect_str_eq(rep.reason, "vf_config_failed");
        cr_expect_str_eq(baseline("0000:d5:00.0", 0), "00:5a:d5:00:00:00", "recorded first");
        cr_expect_str_eq(vf_mac_now("slt_a"), "", "nothing set");

        faults("");
        cr_assert_eq(simulated_slot_assign(sim, &s, &rep), 0, "%s", strempty(rep.reason));
        cr_expect_str_eq(vf_mac_now("slt_a"), "02:00:00:00:00:01");
        cr_expect_str_eq(baseline("0000:d5:00.0", 0), "00:5a:d5:00:00:00");
        cr_assert_eq(simulated_slot_teardown(sim, &s, &rep), 0);
        cr_expect_str_eq(vf_mac_now("slt_a"), "00:5a:d5:00:00:00");
}

/* The record lost (the state directory was): a re-run that finds the
 * tenant's MAC on the VF records nothing, and the teardown falls back to the
 * zero MAC, saying so. */
T(without_a_record_the_tenants_mac_is_never_taken_for_the_vfs_own)
{
        SlotSpec s = spec("slt_a", 0);
        SlotReport rep;
        cr_assert_eq(simulated_slot_assign(sim, &s, &rep), 0);
        char *path = NULL;
        cr_assert_eq(vf_baseline_path(state_dir, "0000:d5:00.0", 0, &path), 0);
        cr_assert_eq(unlink(path), 0);
        free(path);

        cr_assert_eq(simulated_slot_assign(sim, &s, &rep), 0, "%s", strempty(rep.reason));
        cr_expect_str_eq(baseline("0000:d5:00.0", 0), "", "02:00:00:00:00:01 is not recorded");
        cr_assert_eq(simulated_slot_teardown(sim, &s, &rep), 0, "%s", strempty(rep.reason));
        cr_expect_str_eq(vf_mac_now("slt_a"), "00:00:00:00:00:00");
        cr_expect(strstr(step_detail(&rep, SLOT_STEP_RESET_VF_CONFIG), "no record"), "%s",
                  step_detail(&rep, SLOT_STEP_RESET_VF_CONFIG));
}

/* A VF its PF gives no MAC: zero is its own, and the baseline stays zero. */
T(a_vf_first_seen_without_a_mac_is_parked_with_the_zero_mac)
{
        tput("state/simulated-host/nics/0000:d5:00.0.json",
             "{\"hardware_macs\": {\"0\": \"00:00:00:00:00:00\"}}");
        SlotSpec s = spec("slt_a", 0);
        SlotReport rep;
        cr_assert_eq(simulated_slot_assign(sim, &s, &rep), 0, "%s", strempty(rep.reason));
        cr_expect_str_eq(baseline("0000:d5:00.0", 0), "00:00:00:00:00:00");
        cr_assert_eq(simulated_slot_teardown(sim, &s, &rep), 0);
        cr_expect_str_eq(vf_mac_now("slt_a"), "00:00:00:00:00:00");
        s.vf.keep_mac = true;
        cr_expect_eq(simulated_slot_assign(sim, &s, &rep), -EADDRNOTAVAIL, "still none to keep");
}
