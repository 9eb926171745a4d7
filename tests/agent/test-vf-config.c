/* SPDX-License-Identifier: MIT */
/* VF settings checked before they reach the kernel, the baseline, and the
 * errors of a netdev without VFs. Setting and reading a real VF over
 * rtnetlink (netdevsim) is proven in tests/vm. */

#include <criterion/criterion.h>
#include <unistd.h>

#include "macro.h"
#include "vf-config.h"

#define T(name) Test(vf_config, name, .timeout = 30)

static VfConfig tenant(void)
{
        VfConfig c = {.vlan = 100, .qos = 3, .spoofchk = true, .link_state = VF_LINK_STATE_ENABLE};
        cr_assert_eq(vf_mac_parse("02:00:5e:10:00:01", c.mac), 0);
        return c;
}

T(a_tenant_config_is_valid)
{
        VfConfig c = tenant();
        cr_expect_eq(vf_config_validate(&c), 0);
}

T(multicast_and_broadcast_macs_are_refused)
{
        VfConfig c = tenant();
        cr_assert_eq(vf_mac_parse("01:00:5e:00:00:01", c.mac), 0);
        cr_expect_eq(vf_config_validate(&c), -EINVAL);
        cr_assert_eq(vf_mac_parse("ff:ff:ff:ff:ff:ff", c.mac), 0);
        cr_expect_eq(vf_config_validate(&c), -EINVAL);
}

T(vlan_and_qos_ranges)
{
        VfConfig c = tenant();
        c.vlan = 4095;
        cr_expect_eq(vf_config_validate(&c), -EINVAL);
        c.vlan = 4094;
        cr_expect_eq(vf_config_validate(&c), 0);
        c.qos = 8;
        cr_expect_eq(vf_config_validate(&c), -EINVAL);
        c.vlan = 0, c.qos = 1;
        cr_expect_eq(vf_config_validate(&c), -EINVAL, "a priority needs a VLAN tag");
        c.qos = 0, c.link_state = (VfLinkState)3;
        cr_expect_eq(vf_config_validate(&c), -EINVAL);
}

T(mac_parsing_is_strict)
{
        uint8_t m[6];
        cr_expect_eq(vf_mac_parse("02:00:5e:10:00:01", m), 0);
        cr_expect_eq(m[0], 0x02);
        cr_expect_eq(m[5], 0x01);
        cr_expect_eq(vf_mac_parse("02:00:5e:10:00", m), -EINVAL);
        cr_expect_eq(vf_mac_parse("02:00:5e:10:00:0g", m), -EINVAL);
        cr_expect_eq(vf_mac_parse("02-00-5e-10-00-01", m), -EINVAL);
        cr_expect_eq(vf_mac_parse("02:00:5e:10:00:01:", m), -EINVAL);
        cr_expect_eq(vf_mac_parse(NULL, m), -EINVAL);
}

T(the_baseline_parks_the_vf)
{
        VfConfig b;
        const uint8_t zero[6] = {0};
        vf_config_baseline(&b);
        cr_expect_eq(memcmp(b.mac, zero, 6), 0);
        cr_expect_eq(b.vlan, 0);
        cr_expect_eq(b.qos, 0);
        cr_expect(b.spoofchk);
        cr_expect(!b.trust);
        cr_expect_eq(b.link_state, VF_LINK_STATE_DISABLE);
        cr_expect_eq(vf_config_validate(&b), 0);
}

T(diff_names_the_first_differing_field)
{
        VfConfig a = tenant(), b = tenant();
        cr_expect_null(vf_config_diff(&a, &b));
        b.trust = true;
        cr_expect_str_eq(vf_config_diff(&a, &b), "trust");
        b = a, b.mac[5] ^= 1;
        cr_expect_str_eq(vf_config_diff(&a, &b), "mac");
        b = a, b.vlan = 7;
        cr_expect_str_eq(vf_config_diff(&a, &b), "vlan");
}

T(an_invalid_config_never_reaches_netlink)
{
        VfConfig c = tenant();
        c.mac[0] = 0x01;
        cr_expect_eq(vf_config_apply("no-such-netdev0", 0, &c), -EINVAL);
        cr_expect_eq(vf_config_apply("", 0, &c), -EINVAL);
}

T(a_missing_netdev_is_enodev)
{
        VfConfig c = tenant(), got;
        cr_expect_eq(vf_config_apply("gpsl-none0", 0, &c), -ENODEV);
        cr_expect_eq(vf_config_read("gpsl-none0", 0, &got), -ENODEV);
}

T(a_netdev_without_vfs_reports_no_vf_and_refuses_settings)
{
        VfConfig c = tenant(), got;
        cr_expect_eq(vf_config_read("lo", 0, &got), -ENOENT);
        int r = vf_config_apply("lo", 0, &c);
        cr_expect(r == -EOPNOTSUPP || r == -EPERM || r == -EINVAL, "lo took a VF setting: %d", r);
}
