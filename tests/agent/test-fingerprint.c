/* SPDX-License-Identifier: MIT */
#include "agent-test.h"
#include "fingerprint.h"

#define T(name) Test(fingerprint, name, .timeout = 60)

T(format_and_stability)
{
        _cleanup_(inventory_freep) Inventory *a = load_xml("hwloc/nvidiaDGX2.xml");
        _cleanup_(inventory_freep) Inventory *b = load_xml("hwloc/nvidiaDGX2.xml");
        char fa[FINGERPRINT_MAX], fb[FINGERPRINT_MAX];
        cr_assert_eq(fingerprint_compute(a, fa), 0);
        cr_assert_eq(fingerprint_compute(b, fb), 0);
        cr_expect(startswith(fa, "sha256:"));
        cr_expect_eq(strlen(fa), 7 + 64);
        cr_expect_str_eq(fa, fb);
}

T(different_machines_differ)
{
        _cleanup_(inventory_freep) Inventory *a = load_xml("mpibind/cts1-pascal.xml");
        _cleanup_(inventory_freep) Inventory *b = load_xml("mpibind/coral-ea-hwloc1.xml");
        char fa[FINGERPRINT_MAX], fb[FINGERPRINT_MAX];
        cr_assert_eq(fingerprint_compute(a, fa), 0);
        cr_assert_eq(fingerprint_compute(b, fb), 0);
        cr_expect_str_neq(fa, fb);
}

/* Runtime state the agent itself changes (drivers, NIC VFs) is not hardware;
 * a removed GPU is. */
T(runtime_state_is_ignored_hardware_is_not)
{
        _cleanup_free_ char *src = fixture("synthetic/synthetic-exhausted-vfs");
        char tmpl[] = "/tmp/gpuslice-fp-XXXXXX", cmd[4096], root[600];
        cr_assert(mkdtemp(tmpl));
        snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s/h'", src, tmpl);
        cr_assert_eq(system(cmd), 0);
        snprintf(root, sizeof(root), "%s/h", tmpl);

        Inventory *inv = load_sysfs(root);
        char before[FINGERPRINT_MAX], after[FINGERPRINT_MAX], removed[FINGERPRINT_MAX];
        cr_assert_eq(fingerprint_compute(inv, before), 0);
        inventory_free(inv);

        const char *br = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:03.0";
        const char *gpu =
            "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0/0000:03:00.0";
        snprintf(
            cmd, sizeof(cmd),
            "set -e; cd '%s'; b=%s; echo 1 > $b/0000:06:00.0/sriov_numvfs; rm -f %s/driver;"
            " mkdir $b/0000:06:00.2; cp $b/0000:06:00.0/vendor $b/0000:06:00.0/class"
            " $b/0000:06:00.0/numa_node $b/0000:06:00.2/;"
            " echo 0x1018 > $b/0000:06:00.2/device; ln -s ../0000:06:00.0 $b/0000:06:00.2/physfn;"
            " ln -s ../0000:06:00.2 $b/0000:06:00.0/virtfn0;"
            " ln -s ../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:03.0/0000:06:00.2"
            " sys/bus/pci/devices/0000:06:00.2",
            root, br, gpu);
        cr_assert_eq(system(cmd), 0);
        inv = load_sysfs(root);
        cr_expect_eq(inventory_count(inv, DEVICE_KIND_NIC, true), 3);
        cr_assert_eq(fingerprint_compute(inv, after), 0);
        inventory_free(inv);
        cr_expect_str_eq(before, after, "driver binding and NIC VFs do not change the fingerprint");

        snprintf(cmd, sizeof(cmd), "cd '%s'; rm sys/bus/pci/devices/0000:03:00.0", root);
        cr_assert_eq(system(cmd), 0);
        inv = load_sysfs(root);
        cr_assert_eq(fingerprint_compute(inv, removed), 0);
        inventory_free(inv);
        cr_expect_str_neq(before, removed, "a GPU gone is changed hardware");
        rm_rf(tmpl);
}

T(canonical_form_is_readable)
{
        _cleanup_(inventory_freep) Inventory *a = load_xml("mpibind/cts1-pascal.xml");
        _cleanup_free_ char *c = NULL;
        cr_assert_eq(fingerprint_canonical(a, &c), 0);
        cr_expect(startswith(c, "gpuslice-inventory-v1\n"));
        cr_expect(strstr(c, "numa 0 cpus="));
        cr_expect(strstr(c, "id=10de:15f8 class=0302 kind=gpu"));
}
