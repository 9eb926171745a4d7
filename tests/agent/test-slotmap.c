/* SPDX-License-Identifier: MIT */
/* Slot maps of real machines (facts from SOURCES.md: which GPU shares a switch
 * or socket with which NIC/NVMe) and of SYNTHETIC snapshots for what no real
 * file shows (GPU VFs, exhausted VFs, ACS off, a drive in two slots). */
#include "agent-test.h"

#define T(name) Test(slotmap, name, .timeout = 60)

static size_t slots_with_nic(const SlotMap *m)
{
        size_t n = 0;
        for (size_t i = 0; i < m->n_slots; i++)
                if (m->slots[i].nic)
                        n++;
        return n;
}

/* A slot's NIC and NVMe are always on the GPU's NUMA node. */
static void expect_never_cross_numa(const Inventory *inv, const SlotMap *m)
{
        for (size_t i = 0; i < m->n_slots; i++) {
                const Slot *s = &m->slots[i];
                const Device *g = dev(inv, s->gpus[0]);
                if (s->nic && g->numa_node >= 0 && dev(inv, s->nic)->numa_node >= 0)
                        cr_expect_eq(dev(inv, s->nic)->numa_node, g->numa_node, "%s", s->id);
                if (s->nvme && g->numa_node >= 0 && dev(inv, s->nvme)->numa_node >= 0)
                        cr_expect_eq(dev(inv, s->nvme)->numa_node, g->numa_node, "%s", s->id);
        }
}

/* LLNL Pascal: both P100s share one PCIe switch with the ConnectX-5 (PIX). */
T(pascal_gpus_pair_with_the_connectx5_on_their_switch)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("mpibind/cts1-pascal.xml");
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 2);
        for (size_t i = 0; i < 2; i++) {
                const Slot *s = &m->slots[i];
                cr_assert_not_null(s->nic);
                cr_expect_eq(dev(inv, s->nic)->vendor, 0x15b3);
                cr_expect_eq(dev(inv, s->nic)->device, 0x1017);
                cr_expect_eq(s->nic_locality, LOCALITY_SWITCH);
                cr_expect_eq(s->vf_index, (int)i);
                /* XML cannot tell SR-IOV capacity: not ok, and it says why. */
                cr_expect_not(s->invariant_ok[INVARIANT_PER_SLOT_VF]);
                cr_expect(strv_contains(s->problems, "unknown"));
        }
        cr_expect_not(m->invariants[INVARIANT_PER_SLOT_VF].ok);
        cr_expect(strstr(m->invariants[INVARIANT_PER_SLOT_VF].detail, "unknown"));
        cr_expect(m->invariants[INVARIANT_NUMA_LOCALITY].ok);
        cr_expect_not(m->ok);
}

/* JUWELS: 4 V100 and 2 EDR HCAs, every GPU PIX to an HCA. */
T(juwels_each_gpu_gets_the_hca_behind_its_switch)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("psmgmt/topo.jwc09n003.xml");
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 4);
        for (size_t i = 0; i < m->n_slots; i++) {
                const Slot *s = &m->slots[i];
                cr_assert_not_null(s->nic, "%s", s->id);
                cr_expect_eq(dev(inv, s->nic)->vendor, 0x15b3, "%s gets the HCA", s->id);
                cr_expect_eq(s->nic_locality, LOCALITY_SWITCH);
                cr_expect_neq(device_switch(dev(inv, s->nic)), NULL);
                cr_expect_str_eq(device_switch(dev(inv, s->nic)),
                                 device_switch(dev(inv, s->gpus[0])));
        }
        expect_never_cross_numa(inv, m);
}

/* Corona: the NICs sit on one socket; 4 GPUs are SYS to every NIC, so their
 * slots have no NIC and fail per_slot_vf; the one NVMe is local (PHB/NODE)
 * to 4 GPUs and SYS to the other 4, so exactly one local slot gets it. */
T(corona_half_the_gpus_have_no_local_nic)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("flux-core/corona.xml");
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 8);
        cr_expect_eq(slots_with_nic(m), 4);
        size_t nvme = 0;
        for (size_t i = 0; i < m->n_slots; i++) {
                const Slot *s = &m->slots[i];
                if (!s->nic)
                        cr_expect(strv_contains(s->problems, "no SR-IOV NIC"));
                if (s->nvme) {
                        nvme++;
                        cr_expect_neq(s->nvme_locality, LOCALITY_NONE);
                }
        }
        cr_expect_eq(nvme, 1);
        expect_never_cross_numa(inv, m);
}

/* SL390s: the 82576 is PHB to one Tesla, SYS to the other two. */
T(sl390s_one_gpu_shares_the_socket_with_the_nic)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("hwloc/24em64t-2n6c2t-pci.xml");
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 3);
        cr_expect_eq(slots_with_nic(m), 1);
        expect_never_cross_numa(inv, m);
}

/* Chimera: one GPU shares a host bridge with the I211s, the other is SYS. */
T(chimera_one_gpu_has_a_nic)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("flux-sched/chimera.xml");
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 2);
        cr_expect_eq(slots_with_nic(m), 1);
        expect_never_cross_numa(inv, m);
}

/* Tioga: 4 NUMA nodes, each GPU PHB or NODE to a Slingshot NIC; NVMe NODE
 * to 2 GPUs only. */
T(tioga_every_gcd_gets_a_slingshot_nic_on_its_node)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("mpibind/eas-tioga.xml");
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 8);
        cr_expect_eq(slots_with_nic(m), 8);
        size_t nvme = 0;
        for (size_t i = 0; i < m->n_slots; i++) {
                cr_expect_eq(dev(inv, m->slots[i].nic)->vendor, 0x17db);
                nvme += m->slots[i].nvme != NULL;
        }
        cr_expect_eq(nvme, 2);
        cr_expect(m->invariants[INVARIANT_NVME_OWNERSHIP].ok);
        cr_expect(m->invariants[INVARIANT_NUMA_LOCALITY].ok);
        expect_never_cross_numa(inv, m);
}

/* CORAL EA, Ulna: every GPU has a NIC on its node (NODE / PHB). */
T(coral_and_ulna_gpus_all_get_nics)
{
        _cleanup_(inventory_freep) Inventory *c = load_xml("mpibind/coral-ea-hwloc1.xml");
        _cleanup_(slot_map_freep) SlotMap *mc = plan(c);
        cr_expect_eq(mc->n_slots, 4);
        cr_expect_eq(slots_with_nic(mc), 4);
        expect_never_cross_numa(c, mc);
        _cleanup_(inventory_freep) Inventory *u = load_xml("mpibind/arm64-ulna-hwloc1.xml");
        _cleanup_(slot_map_freep) SlotMap *mu = plan(u);
        cr_expect_eq(mu->n_slots, 2);
        cr_expect_eq(slots_with_nic(mu), 2);
        expect_never_cross_numa(u, mu);
}

/* DGX-2 and POWER8 exports have no NICs: every slot fails per_slot_vf. */
T(no_nic_no_ok_slot)
{
        const char *files[] = {"hwloc/nvidiaDGX2.xml", "hwloc/power8gpudistances.xml"};
        size_t want[] = {16, 4};
        for (size_t f = 0; f < ELEMENTSOF(files); f++) {
                _cleanup_(inventory_freep) Inventory *inv = load_xml(files[f]);
                _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
                cr_expect_eq(m->n_slots, want[f]);
                for (size_t i = 0; i < m->n_slots; i++) {
                        cr_expect_not(m->slots[i].ok);
                        cr_expect_null(m->slots[i].nic);
                        cr_expect_geq(m->slots[i].numa_node, 0);
                }
                cr_expect_not(m->invariants[INVARIANT_PER_SLOT_VF].ok);
        }
}

/* No GPU (Gigabyte R282-Z90, NEC Aurora, UCS, ghw): no slots, not ok. */
T(no_gpu_no_slots)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("psmgmt/topo.mel4001.xml");
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_expect_eq(m->n_slots, 0);
        cr_expect_not(m->ok);
}

/* POWER9: no slot may be homed on the GPUs' memory-only NUMA nodes. */
T(power9_slots_live_on_cpu_nodes)
{
        _cleanup_free_ char *root = NULL;
        _cleanup_free_ char *tmp =
            unpack_fixture("hwloc/nvidiagpunumanodes.sysfs.tar.bz2", "nvidiagpunumanodes", &root);
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(root);
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 6);
        for (size_t i = 0; i < m->n_slots; i++) {
                cr_expect(m->slots[i].numa_node == 0 || m->slots[i].numa_node == 8);
                cr_expect_not_null(m->slots[i].cpus);
                cr_expect_gt(m->slots[i].memory_bytes, 0);
        }
        cr_expect(strv_contains(m->notes, "NUMA node 250 has memory but no CPUs"));
        rm_rf(tmp);
}

static char *synthetic(const char *name)
{
        char *rel;
        cr_assert(asprintf(&rel, "synthetic/%s", name) >= 0);
        char *p = fixture(rel);
        free(rel);
        return p;
}

/* SYNTHETIC: a GPU split into 2 VFs; each VF is a slot, the PF is not. */
T(synthetic_gpu_vfs_are_slots)
{
        _cleanup_free_ char *root = synthetic("synthetic-gpu-vfs");
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(root);
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 2);
        cr_expect_str_eq(m->slots[0].gpus[0], "0000:03:00.4");
        cr_expect_str_eq(m->slots[1].gpus[0], "0000:03:00.5");
        cr_expect_str_eq(dev(inv, "0000:03:00.4")->physfn, "0000:03:00.0");
        cr_expect_eq(strv_length(dev(inv, "0000:03:00.0")->virtfns), 2);
        /* Dual-port NIC: one VF per port, both behind the GPU's switch. */
        cr_expect_str_eq(m->slots[0].nic, "0000:04:00.0");
        cr_expect_str_eq(m->slots[1].nic, "0000:04:00.1");
        cr_expect_eq(m->slots[0].nic_locality, LOCALITY_SWITCH);
        /* One drive, two candidate slots: it goes to one slot only. */
        cr_expect_str_eq(m->slots[0].nvme, "0000:05:00.0");
        cr_expect_null(m->slots[1].nvme);
        cr_expect(strv_contains(m->notes, "already belongs to an earlier slot"));
        cr_expect(m->ok);
        cr_expect_eq(m->slots[0].memory_bytes, 32LL * 1024 * 1024 * 1024);
        cr_expect_str_eq(m->slots[0].cpus, "0-7");
}

/* SYNTHETIC: a NIC with total_vfs=2 and three GPUs on NUMA 0; the NUMA 1 NIC
 * with spare VFs must not be used. */
T(synthetic_exhausted_vfs)
{
        _cleanup_free_ char *root = synthetic("synthetic-exhausted-vfs");
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(root);
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 3);
        for (size_t i = 0; i < 3; i++)
                cr_expect_str_eq(m->slots[i].nic, "0000:06:00.0");
        cr_expect(m->slots[0].ok);
        cr_expect(m->slots[1].ok);
        cr_expect_not(m->slots[2].ok);
        cr_expect(strv_contains(m->slots[2].problems, "only 2 VFs"));
        cr_expect_not(m->invariants[INVARIANT_PER_SLOT_VF].ok);
        cr_expect(strstr(m->invariants[INVARIANT_PER_SLOT_VF].detail, "0000:06:00.0"));
        cr_expect(m->invariants[INVARIANT_NUMA_LOCALITY].ok);
}

/* SYNTHETIC: ACS off puts two GPUs and the drive in one IOMMU group. */
T(synthetic_acs_off_group_cannot_be_split)
{
        _cleanup_free_ char *root = synthetic("synthetic-acs-off");
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(root);
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 2);
        cr_expect_eq(dev(inv, "0000:03:00.0")->iommu_group, 7);
        cr_expect_not(m->iommu.ok);
        cr_expect(strstr(m->iommu.detail, "IOMMU group 7"));
        for (size_t i = 0; i < 2; i++) {
                cr_expect_not(m->slots[i].ok);
                cr_expect(strv_contains(m->slots[i].problems, "IOMMU group 7"));
        }
        cr_expect_not(m->ok);
}

/* SYNTHETIC: an edited map that hands one drive and one VF to two slots. */
T(synthetic_shared_drive_and_vf_fail_validation)
{
        _cleanup_free_ char *root = synthetic("synthetic-gpu-vfs");
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(root);
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert(m->ok);
        m->slots[1].nvme = strdup(m->slots[0].nvme);
        free(m->slots[1].nic);
        m->slots[1].nic = strdup(m->slots[0].nic);
        m->slots[1].vf_index = m->slots[0].vf_index;
        cr_assert_eq(slot_map_validate(inv, m), 0);
        cr_expect_not(m->invariants[INVARIANT_NVME_OWNERSHIP].ok);
        cr_expect(strstr(m->invariants[INVARIANT_NVME_OWNERSHIP].detail, "0000:05:00.0"));
        cr_expect(strstr(m->invariants[INVARIANT_NVME_OWNERSHIP].detail, "slot-0000:03:00.4"));
        cr_expect_not(m->invariants[INVARIANT_PER_SLOT_VF].ok);
        cr_expect_not(m->slots[0].ok);
        cr_expect_not(m->slots[1].ok);
        cr_expect_not(m->ok);
}

T(slot_ids_are_stable)
{
        _cleanup_(inventory_freep) Inventory *a = load_xml("mpibind/eas-tioga.xml");
        _cleanup_(inventory_freep) Inventory *b = load_xml("mpibind/eas-tioga.xml");
        _cleanup_(slot_map_freep) SlotMap *ma = plan(a);
        _cleanup_(slot_map_freep) SlotMap *mb = plan(b);
        cr_assert_eq(ma->n_slots, mb->n_slots);
        for (size_t i = 0; i < ma->n_slots; i++) {
                cr_expect_str_eq(ma->slots[i].id, mb->slots[i].id);
                cr_expect_str_eq(ma->slots[i].nic, mb->slots[i].nic);
                cr_expect_eq(ma->slots[i].vf_index, mb->slots[i].vf_index);
                cr_expect(startswith(ma->slots[i].id, "slot-"));
        }
        cr_expect_not_null(slot_map_find(ma, ma->slots[0].id));
}

/* The lent H200 machine (captured by scripts/snapshot-sysfs.sh, SOURCES in
 * gpuslice-device/): a VM with one H200 passed through at 00:06.0, one
 * virtio-net NIC without SR-IOV, virtio-blk disks (not NVMe), one NUMA node
 * and numa_node = -1 everywhere. One slot, homed on node 0, that cannot get
 * its own VF and has no NVMe. */
T(h200_vm_one_gpu_slot_without_a_vf)
{
        _cleanup_free_ char *root = NULL;
        _cleanup_free_ char *tmp =
            unpack_fixture("gpuslice-device/h200-vm.sysfs.tar.gz", "root", &root);
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(root);
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);

        cr_expect_eq(inv->n_numa_nodes, 1);
        cr_expect_eq(inventory_count(inv, DEVICE_KIND_GPU, true), 1);
        cr_expect_eq(inventory_count(inv, DEVICE_KIND_NIC, true), 1);
        cr_expect_eq(inventory_count(inv, DEVICE_KIND_NVME, true), 0);
        cr_expect_eq(count_id(inv, 0x10de, 0x2335, false), 1);
        const Device *nic = dev(inv, "0000:00:03.0");
        cr_assert_not_null(nic);
        cr_expect_eq(nic->kind, DEVICE_KIND_NIC);
        cr_expect_eq(nic->vendor, 0x1af4);

        cr_assert_eq(m->n_slots, 1);
        const Slot *s = &m->slots[0];
        cr_expect_str_eq(s->gpus[0], "0000:00:06.0");
        cr_expect_null(s->nvme);
        cr_expect_eq(s->numa_node, 0);
        cr_expect_not(s->invariant_ok[INVARIANT_PER_SLOT_VF], "virtio-net has no VFs to give");
        cr_expect_not(s->ok);
        cr_expect_not(m->invariants[INVARIANT_PER_SLOT_VF].ok);
        rm_rf(tmp);
}
