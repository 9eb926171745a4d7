/* SPDX-License-Identifier: MIT */
/* Inventory facts of real machines, taken from tests/fixtures/topology/SOURCES.md
 * (its "machine" and "check" columns), not from the program's own output. */
#include <sys/stat.h>

#include "agent-test.h"

#define T(name) Test(inventory, name, .timeout = 60)

static void expect_counts(const Inventory *inv, size_t numa, size_t gpus, size_t nics, size_t nvme)
{
        cr_expect_eq(inv->n_numa_nodes, numa, "NUMA nodes: %zu, want %zu", inv->n_numa_nodes, numa);
        cr_expect_eq(inventory_count(inv, DEVICE_KIND_GPU, true), gpus, "GPUs: %zu, want %zu",
                     inventory_count(inv, DEVICE_KIND_GPU, true), gpus);
        cr_expect_eq(inventory_count(inv, DEVICE_KIND_NIC, false), nics, "NICs: %zu, want %zu",
                     inventory_count(inv, DEVICE_KIND_NIC, false), nics);
        cr_expect_eq(inventory_count(inv, DEVICE_KIND_NVME, false), nvme, "NVMe: %zu, want %zu",
                     inventory_count(inv, DEVICE_KIND_NVME, false), nvme);
}

/* LLNL Corona: 2 NUMA, 8x MI50, ConnectX-6 + 2x I350, 1 NVMe. */
T(corona)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("flux-core/corona.xml");
        expect_counts(inv, 2, 8, 3, 1);
        cr_expect_eq(count_id(inv, 0x1002, 0x66a1, false), 8);
        cr_expect_eq(count_id(inv, 0x15b3, 0x101b, false), 1);
        cr_expect_eq(count_id(inv, 0x8086, 0x1521, false), 2);
}

/* Chimera: 2 NUMA (one without I/O), GTX 1070 + Vega, 2x I211, Wi-Fi, 1 NVMe.
 * SOURCES' check counts the Wi-Fi (8086:24fb) as a NIC; it is not an
 * Ethernet/InfiniBand function, so discovery keeps it out of the NICs. */
T(chimera_mixed_vendors)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("flux-sched/chimera.xml");
        expect_counts(inv, 2, 2, 2, 1);
        cr_expect_eq(count_id(inv, 0x10de, 0x1b81, false), 1);
        cr_expect_eq(count_id(inv, 0x1002, 0x6863, false), 1);
        cr_expect_eq(count_id(inv, 0x8086, 0x1539, false), 2);
        for (size_t i = 0; i < inv->n_devices; i++)
                if (inv->devices[i].vendor == 0x8086 && inv->devices[i].device == 0x24fb)
                        cr_expect_eq(inv->devices[i].kind, DEVICE_KIND_OTHER);
        /* One of the two NUMA nodes carries all I/O. */
        int io_node = -1;
        for (size_t i = 0; i < inv->n_devices; i++) {
                const Device *d = &inv->devices[i];
                if (d->kind != DEVICE_KIND_GPU)
                        continue;
                if (io_node < 0)
                        io_node = d->numa_node;
        }
        cr_expect_geq(io_node, 0);
}

/* An XML export cannot tell drivers, IOMMU groups or SR-IOV capacity. */
T(xml_unknowns_stay_unknown)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("mpibind/cts1-pascal.xml");
        for (size_t i = 0; i < inv->n_devices; i++) {
                const Device *d = &inv->devices[i];
                cr_expect_eq(d->iommu_group, -1);
                cr_expect_null(d->driver);
                cr_expect_eq(d->sriov, SRIOV_UNKNOWN);
                cr_expect_null(d->physfn);
        }
}

/* ghw derived XML: 2 NUMA, no GPU, 4x BCM5709 + dual I350 with 8 VFs. */
T(ghw_xml_vfs_are_not_extra_nics)
{
        _cleanup_(inventory_freep) Inventory *inv =
            load_xml("ghw/linux-amd64-8581cf3a.derived-hwloc29.xml");
        expect_counts(inv, 2, 0, 6, 0);
        cr_expect_eq(count_id(inv, 0x14e4, 0x1639, false), 4);
        cr_expect_eq(count_id(inv, 0x8086, 0x1520, true), 8);
        cr_expect_eq(count_id(inv, 0x8086, 0x1520, false), 0);
        /* The Matrox G200 BMC VGA is not a GPU. */
        for (size_t i = 0; i < inv->n_devices; i++)
                if (inv->devices[i].vendor == 0x102b)
                        cr_expect_eq(inv->devices[i].kind, DEVICE_KIND_OTHER);
}

/* ghw sysfs snapshot: same machine; VF numa_node follows its PF (0 or 1);
 * no sriov_* files, virtfn/physfn links or iommu_groups in the snapshot. */
T(ghw_sysfs_snapshot)
{
        _cleanup_free_ char *root = NULL;
        _cleanup_free_ char *tmp = unpack_fixture(
            "ghw/linux-amd64-8581cf3a529e5d8b97ea876eade2f60d.sysfs.tar.gz", NULL, &root);
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(root);
        expect_counts(inv, 2, 0, 6, 0);
        cr_expect_eq(count_id(inv, 0x8086, 0x1520, true), 8);
        const Device *pf0 = dev(inv, "0000:05:00.0"), *pf1 = dev(inv, "0000:05:00.1");
        cr_expect_eq(pf0->sriov, SRIOV_UNKNOWN, "no sriov files: capacity unknown");
        for (const char *const *a =
                 (const char *const[]){"0000:05:10.0", "0000:05:10.1", "0000:05:10.4",
                                       "0000:05:10.5", "0000:05:11.0", "0000:05:11.1",
                                       "0000:05:11.4", "0000:05:11.5", NULL};
             *a; a++) {
                const Device *vf = dev(inv, *a);
                cr_expect(vf->is_vf, "%s is a VF", *a);
                cr_expect_null(vf->physfn, "no physfn link in the snapshot");
                cr_expect(vf->numa_node == pf0->numa_node || vf->numa_node == pf1->numa_node);
                cr_expect_eq(vf->iommu_group, -1);
        }
        rm_rf(tmp);
}

/* Cisco UCS: 4 VIC PFs with 12 usNIC VFs (two recorded as vendor 1138), I350. */
T(many_vfs)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("hwloc/16intel64-manyVFs.xml");
        expect_counts(inv, 2, 0, 6, 0);
        size_t vfs = 0;
        for (size_t i = 0; i < inv->n_devices; i++)
                if (inv->devices[i].is_vf)
                        vfs++;
        cr_expect_eq(vfs, 12);
        cr_expect_eq(count_id(inv, 0x1137, 0x0043, false), 4);
}

/* HP SL390s: 3x M2070, ATI ES1000 BMC VGA (not a GPU), dual 82576. */
T(sl390s_bmc_vga_is_not_a_gpu)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("hwloc/24em64t-2n6c2t-pci.xml");
        expect_counts(inv, 2, 3, 2, 0);
        cr_expect_eq(count_id(inv, 0x10de, 0x06d2, false), 3);
        bool seen = false;
        for (size_t i = 0; i < inv->n_devices; i++)
                if (inv->devices[i].vendor == 0x1002 && inv->devices[i].device == 0x515e) {
                        seen = true;
                        cr_expect_eq(inv->devices[i].kind, DEVICE_KIND_OTHER);
                }
        cr_expect(seen, "ES1000 present in the export");
}

/* Dell DCS8000Z: XML and sysfs snapshot of one machine; NVMe (8086:0953),
 * ConnectX-3, I350; 137 PCI functions in the snapshot. */
T(dcs8000z_xml_and_sysfs_agree)
{
        _cleanup_(inventory_freep) Inventory *x =
            load_xml("hwloc/32em64t-2n8c+dax+nvme+mic+dimms.derived-hwloc29.xml");
        expect_counts(x, 2, 0, 3, 1);
        _cleanup_free_ char *root = NULL;
        _cleanup_free_ char *tmp = unpack_fixture(
            "hwloc/32em64t-2n8c+dax+nvme+mic+dimms.sysfs.tar.bz2", "32em64t-2n8c+1mic", &root);
        _cleanup_(inventory_freep) Inventory *s = load_sysfs(root);
        expect_counts(s, 2, 0, 3, 1);
        cr_expect_eq(s->n_devices, 137);
        cr_expect_eq(count_id(s, 0x8086, 0x0953, false), 1);
        cr_expect_eq(count_id(s, 0x15b3, 0x1003, false), 1);
        for (size_t i = 0; i < s->n_numa_nodes; i++)
                cr_expect(numa_node_has_cpus(&s->numa_nodes[i]));
        rm_rf(tmp);
}

/* The libpci dump of the same snapshot lists the same 137 functions. */
#include <pci/pci.h>
static void quiet(char *msg, ...)
{
}
static void load_dump_addresses(const char *dump, char ***ret)
{
        struct pci_access *pacc = pci_alloc();
        pacc->warning = quiet;
        pacc->method = PCI_ACCESS_DUMP;
        pci_set_param(pacc, "dump.name", (char *)dump);
        pci_init(pacc);
        pci_scan_bus(pacc);
        for (struct pci_dev *d = pacc->devices; d; d = d->next) {
                char a[PCI_ADDRESS_MAX];
                snprintf(a, sizeof(a), "%04x:%02x:%02x.%x", d->domain, d->bus, d->dev, d->func);
                cr_assert(strv_push(ret, a) >= 0);
        }
        pci_cleanup(pacc);
}

T(lspci_dumps_match_the_snapshots)
{
        struct {
                const char *dump, *tarball, *subdir;
                size_t n;
        } cases[] = {
            {"hwloc/32em64t-2n8c+dax+nvme+mic+dimms.derived.lspci-x.dump",
             "hwloc/32em64t-2n8c+dax+nvme+mic+dimms.sysfs.tar.bz2", "32em64t-2n8c+1mic", 137},
            {"hwloc/32intel64-2p8co2t+8ve.derived.lspci-x.dump",
             "hwloc/32intel64-2p8co2t+8ve.sysfs.tar.bz2", "32intel64-2p8co2t+8ve", 29},
        };
        for (size_t c = 0; c < ELEMENTSOF(cases); c++) {
                _cleanup_free_ char *dump = fixture(cases[c].dump);
                char **addrs = NULL;
                load_dump_addresses(dump, &addrs);
                cr_expect_eq(strv_length(addrs), cases[c].n, "%s: %zu functions", cases[c].dump,
                             strv_length(addrs));
                _cleanup_free_ char *root = NULL;
                _cleanup_free_ char *tmp = unpack_fixture(cases[c].tarball, cases[c].subdir, &root);
                _cleanup_(inventory_freep) Inventory *s = load_sysfs(root);
                for (char **a = addrs; a && *a; a++) {
                        /* The dump (libpci) may name functions the snapshot's
                         * bus/pci/devices lacks; every listed one must agree. */
                        const Device *d = inventory_find_device(s, *a);
                        if (c == 0)
                                cr_expect_not_null(d, "%s from the dump is in the snapshot", *a);
                }
                strv_free(addrs);
                rm_rf(tmp);
        }
}

/* Supermicro X9DRG-HF: 3x M2075 + Radeon HD 7970, I350, ConnectX-4. The
 * export lists 0000:04:00.0 twice (a SATA controller and the ConnectX-4,
 * the latter under a bridge whose bus range is 84-84); the inconsistent
 * record is dropped and noted rather than given a made-up address. */
T(wholeio_duplicate_address)
{
        _cleanup_(inventory_freep) Inventory *inv =
            load_xml("hwloc/32em64t-2n8c2t-pci-wholeio.xml");
        cr_expect_eq(inventory_count(inv, DEVICE_KIND_GPU, true), 4);
        cr_expect_eq(count_id(inv, 0x10de, 0x1094, false), 3);
        cr_expect_eq(count_id(inv, 0x1002, 0x6798, false), 1);
        cr_expect_eq(count_id(inv, 0x8086, 0x1521, false), 2);
        cr_expect(strv_contains(inv->notes, "0000:04:00.0 is listed twice"));
}

/* NEC SX-Aurora A300-8: 8 VEs (class 0b40, not GPUs) + 2 ConnectX-4 IB in 2
 * PLX switches of 4 VE + 1 HCA; X722 with sriov_totalvfs=64, numvfs=0. */
T(nec_aurora_switches)
{
        _cleanup_free_ char *root = NULL;
        _cleanup_free_ char *tmp = unpack_fixture("hwloc/32intel64-2p8co2t+8ve.sysfs.tar.bz2",
                                                  "32intel64-2p8co2t+8ve", &root);
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(root);
        expect_counts(inv, 2, 0, 4, 0);
        cr_expect_eq(count_id(inv, 0x1bcf, 0x001c, false), 8);
        const Device *hca[2];
        size_t n_hca = 0;
        for (size_t i = 0; i < inv->n_devices; i++)
                if (inv->devices[i].vendor == 0x15b3 && n_hca < 2)
                        hca[n_hca++] = &inv->devices[i];
        cr_assert_eq(n_hca, 2);
        cr_expect_str_neq(device_switch(hca[0]), device_switch(hca[1]));
        for (size_t h = 0; h < 2; h++) {
                size_t ves = 0;
                for (size_t i = 0; i < inv->n_devices; i++) {
                        const Device *d = &inv->devices[i];
                        if (d->vendor == 0x1bcf &&
                            streq_ptr(device_switch(d), device_switch(hca[h])))
                                ves++;
                }
                cr_expect_eq(ves, 4, "switch %s holds %zu VEs", device_switch(hca[h]), ves);
        }
        size_t x722 = 0;
        for (size_t i = 0; i < inv->n_devices; i++) {
                const Device *d = &inv->devices[i];
                if (d->vendor == 0x8086 && d->device == 0x37d2) {
                        x722++;
                        cr_expect_eq(d->sriov, SRIOV_CAPABLE);
                        cr_expect_eq(d->total_vfs, 64);
                        cr_expect_eq(d->num_vfs, 0);
                }
        }
        cr_expect_eq(x722, 2);
        rm_rf(tmp);
}

/* IBM AC922: 6 V100 whose HBM shows as CPU-less NUMA nodes 250-255 (15 GiB
 * each); GPU PCI dirs lack vendor/device files. */
T(power9_memory_only_numa_nodes)
{
        _cleanup_free_ char *root = NULL;
        _cleanup_free_ char *tmp =
            unpack_fixture("hwloc/nvidiagpunumanodes.sysfs.tar.bz2", "nvidiagpunumanodes", &root);
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(root);
        cr_expect_eq(inv->n_numa_nodes, 8);
        size_t memonly = 0;
        for (size_t i = 0; i < inv->n_numa_nodes; i++) {
                const NumaNode *n = &inv->numa_nodes[i];
                if (n->id >= 250 && n->id <= 255) {
                        memonly++;
                        cr_expect(!numa_node_has_cpus(n));
                        cr_expect_eq(n->memory_bytes, 15LL * 1024 * 1024 * 1024);
                } else
                        cr_expect(numa_node_has_cpus(n));
        }
        cr_expect_eq(memonly, 6);
        cr_expect_eq(inventory_count(inv, DEVICE_KIND_GPU, true), 6);
        for (size_t i = 0; i < inv->n_devices; i++) {
                const Device *d = &inv->devices[i];
                cr_expect_eq(d->device, PCI_ID_UNKNOWN, "device id is not guessed");
                cr_expect(d->numa_node == 0 || d->numa_node == 8);
        }
        rm_rf(tmp);
}

/* DGX-2H: 16 V100-SXM3 behind 3-level PLX trees, 2 per leaf switch; its 12
 * NVSwitches (10de:1ac2; the export kept 11 of them) are not GPUs. */
T(dgx2_nvswitches_are_not_gpus)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("hwloc/nvidiaDGX2.xml");
        expect_counts(inv, 2, 16, 0, 0);
        cr_expect_eq(count_id(inv, 0x10de, 0x1db8, false), 16);
        cr_expect_geq(count_id(inv, 0x10de, 0x1ac2, false), 11);
        cr_expect_leq(count_id(inv, 0x10de, 0x1ac2, false), 12);
        for (size_t i = 0; i < inv->n_devices; i++)
                if (inv->devices[i].device == 0x1ac2)
                        cr_expect_eq(inv->devices[i].kind, DEVICE_KIND_OTHER);
        for (size_t i = 0; i < inv->n_devices; i++) {
                const Device *g = &inv->devices[i];
                if (g->kind != DEVICE_KIND_GPU)
                        continue;
                size_t depth = strv_length(g->parents), mates = 0;
                cr_expect_geq(depth, 3, "%s is below a multi-level switch tree", g->address);
                for (size_t j = 0; j < inv->n_devices; j++) {
                        const Device *o = &inv->devices[j];
                        if (o != g && o->kind == DEVICE_KIND_GPU &&
                            device_common_bridges(g, o) >= depth - 1)
                                mates++;
                }
                cr_expect_eq(mates, 1, "%s shares its leaf switch with %zu GPUs", g->address,
                             mates);
        }
}

T(power8_coral_ulna_pascal_tioga_juwels_mel)
{
        _cleanup_(inventory_freep) Inventory *p8 = load_xml("hwloc/power8gpudistances.xml");
        expect_counts(p8, 2, 4, 0, 0);
        _cleanup_(inventory_freep) Inventory *ulna = load_xml("mpibind/arm64-ulna-hwloc1.xml");
        expect_counts(ulna, 2, 2, 4, 0);
        _cleanup_(inventory_freep) Inventory *coral = load_xml("mpibind/coral-ea-hwloc1.xml");
        expect_counts(coral, 2, 4, 4, 0);
        _cleanup_(inventory_freep) Inventory *pascal = load_xml("mpibind/cts1-pascal.xml");
        expect_counts(pascal, 2, 2, 3, 0);
        _cleanup_(inventory_freep) Inventory *tioga = load_xml("mpibind/eas-tioga.xml");
        expect_counts(tioga, 4, 8, 5, 16);
        cr_expect_eq(count_id(tioga, 0x17db, 0x0501, false), 4);
        _cleanup_(inventory_freep) Inventory *jw = load_xml("psmgmt/topo.jwc09n003.xml");
        expect_counts(jw, 2, 4, 6, 0);
        _cleanup_(inventory_freep) Inventory *mel = load_xml("psmgmt/topo.mel4001.xml");
        expect_counts(mel, 2, 0, 8, 2);
        _cleanup_(inventory_freep) Inventory *nec =
            load_xml("hwloc/32intel64-2p8co2t+8ve.derived-hwloc29.xml");
        expect_counts(nec, 2, 0, 4, 0);
}

T(addresses_are_full_and_sorted)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("mpibind/coral-ea-hwloc1.xml");
        for (size_t i = 0; i < inv->n_devices; i++) {
                char norm[PCI_ADDRESS_MAX];
                cr_expect_eq(strlen(inv->devices[i].address), 12);
                cr_expect_eq(pci_address_normalize(inv->devices[i].address, norm), 0);
                if (i > 0)
                        cr_expect_gt(strcmp(inv->devices[i].address, inv->devices[i - 1].address),
                                     0);
        }
        char n[PCI_ADDRESS_MAX];
        cr_expect_eq(pci_address_normalize("3b:00.1", n), 0);
        cr_expect_str_eq(n, "0000:3b:00.1");
        cr_expect_eq(pci_address_normalize("0000:3b:20.0", n), -EINVAL);
        cr_expect_eq(pci_address_normalize("zz", n), -EINVAL);
}

/* Bad input: a clear error, the right errno, no crash. */
static int try_load(InventorySourceKind k, const char *path)
{
        InventorySource src = {.kind = k, .path = path};
        Inventory *inv = NULL;
        int r = inventory_load(&src, &inv);
        inventory_free(inv);
        return r;
}

T(bad_input)
{
        cr_expect_eq(try_load(INVENTORY_SOURCE_SYSFS_ROOT, "/nonexistent/gpuslice"), -ENOENT);
        cr_expect_eq(try_load(INVENTORY_SOURCE_HWLOC_XML, "/nonexistent/x.xml"), -ENOENT);
        _cleanup_free_ char *xml = fixture("SOURCES.md");
        cr_expect_eq(try_load(INVENTORY_SOURCE_SYSFS_ROOT, xml), -ENOTDIR);
        cr_expect_eq(try_load(INVENTORY_SOURCE_HWLOC_XML, xml), -EBADMSG);
        _cleanup_free_ char *dir = fixture("hwloc");
        cr_expect_eq(try_load(INVENTORY_SOURCE_HWLOC_XML, dir), -EISDIR);
        /* A directory that is not a sysfs root. */
        cr_expect_eq(try_load(INVENTORY_SOURCE_SYSFS_ROOT, dir), -ENOENT);

        char tmpl[] = "/tmp/gpuslice-bad-XXXXXX";
        cr_assert(mkdtemp(tmpl));
        char p[512], cmd[4096];
        /* Truncated XML: the first half of a real export. */
        _cleanup_free_ char *src = fixture("mpibind/cts1-pascal.xml");
        snprintf(p, sizeof(p), "%s/truncated.xml", tmpl);
        snprintf(cmd, sizeof(cmd), "head -c 20000 '%s' > '%s'", src, p);
        cr_assert_eq(system(cmd), 0);
        cr_expect_eq(try_load(INVENTORY_SOURCE_HWLOC_XML, p), -EBADMSG);
        /* Well-formed XML that is not hwloc's. */
        snprintf(p, sizeof(p), "%s/other.xml", tmpl);
        snprintf(cmd, sizeof(cmd),
                 "printf '<?xml version=\"1.0\"?>\\n<html><body>hi</body></html>\\n' > '%s'", p);
        cr_assert_eq(system(cmd), 0);
        cr_expect_eq(try_load(INVENTORY_SOURCE_HWLOC_XML, p), -EBADMSG);
        /* Truncated sysfs attribute (an empty vendor file). */
        snprintf(
            cmd, sizeof(cmd),
            "set -e; cd '%s'; mkdir -p t/sys/devices/pci0000:00/0000:00:01.0 t/sys/bus/pci/devices;"
            " : > t/sys/devices/pci0000:00/0000:00:01.0/vendor;"
            " ln -s ../../../devices/pci0000:00/0000:00:01.0 t/sys/bus/pci/devices/0000:00:01.0;"
            " mkdir -p l/sys/bus/pci/devices; ln -s 0000:00:02.0 "
            "l/sys/bus/pci/devices/0000:00:01.0;"
            " ln -s 0000:00:01.0 l/sys/bus/pci/devices/0000:00:02.0;"
            " mkdir -p u; chmod 000 u",
            tmpl);
        cr_assert_eq(system(cmd), 0);
        snprintf(p, sizeof(p), "%s/t", tmpl);
        cr_expect_eq(try_load(INVENTORY_SOURCE_SYSFS_ROOT, p), -EBADMSG);
        snprintf(p, sizeof(p), "%s/l", tmpl);
        cr_expect_eq(try_load(INVENTORY_SOURCE_SYSFS_ROOT, p), -ELOOP);
        snprintf(p, sizeof(p), "%s/u", tmpl);
        if (geteuid() != 0)
                cr_expect_eq(try_load(INVENTORY_SOURCE_SYSFS_ROOT, p), -EACCES);
        snprintf(cmd, sizeof(cmd), "chmod 755 '%s/u'", tmpl);
        (void)!system(cmd);
        rm_rf(tmpl);
}

/* A one-node host (a VM like the H200 test machine) reports numa_node -1 for
 * every device; with one node there is nowhere else to be. */
T(single_node_host_devices_are_on_node_0)
{
        char tmpl[] = "/tmp/gpuslice-one-XXXXXX", cmd[2048];
        cr_assert(mkdtemp(tmpl));
        snprintf(cmd, sizeof(cmd),
                 "set -e; cd '%s'; d=sys/devices/pci0000:00/0000:00:06.0; mkdir -p $d"
                 " sys/bus/pci/devices sys/devices/system/node/node0;"
                 " echo 0-15 > sys/devices/system/node/node0/cpulist;"
                 " echo 0x10de > $d/vendor; echo 0x2335 > $d/device; echo 0x030200 > $d/class;"
                 " echo -1 > $d/numa_node;"
                 " ln -s ../../../devices/pci0000:00/0000:00:06.0 sys/bus/pci/devices/0000:00:06.0",
                 tmpl);
        cr_assert_eq(system(cmd), 0);
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(tmpl);
        cr_expect_eq(dev(inv, "0000:00:06.0")->numa_node, 0);
        cr_expect_eq(dev(inv, "0000:00:06.0")->kind, DEVICE_KIND_GPU);
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        cr_assert_eq(m->n_slots, 1);
        cr_expect_eq(m->slots[0].numa_node, 0);
        cr_expect(m->invariants[INVARIANT_NUMA_LOCALITY].ok);
        rm_rf(tmpl);
}
