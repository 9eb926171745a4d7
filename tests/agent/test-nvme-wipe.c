/* SPDX-License-Identifier: MIT */
/* The wipe decision table from Identify Controller data, and the paths the
 * wipe takes to its devices. The commands themselves (Format NVM SES=1, the
 * overwrite, a Sanitize QEMU refuses, the detached namespace) run in tests/vm. */

#include "hostops-test.h"
#include "nvme-wipe.h"

#define T(name) Test(nvme_wipe, name, .init = tree_init, .fini = tree_fini, .timeout = 30)

static void identify(uint8_t id[4096], uint16_t oacs, uint8_t fna, uint32_t sanicap)
{
        memset(id, 0, 4096);
        id[78] = 0x41, id[79] = 0x00; /* cntlid 0x41 */
        id[256] = (uint8_t)oacs, id[257] = (uint8_t)(oacs >> 8);
        id[524] = fna;
        for (int i = 0; i < 4; i++)
                id[328 + i] = (uint8_t)(sanicap >> (8 * i));
}

static size_t plan_for(uint16_t oacs, uint8_t fna, uint32_t sanicap, unsigned allowed,
                       NvmeWipeMethod out[_NVME_WIPE_MAX])
{
        uint8_t id[4096];
        NvmeCaps caps;
        identify(id, oacs, fna, sanicap);
        nvme_caps_parse(id, &caps);
        return nvme_wipe_plan(&caps, allowed, out);
}

T(identify_fields_are_read_from_their_offsets)
{
        uint8_t id[4096];
        NvmeCaps c;
        identify(id, 0x000a, 0x05, 0x3);
        nvme_caps_parse(id, &c);
        cr_expect(c.sanitize_crypto && c.sanitize_block);
        cr_expect(c.format && c.ns_management);
        cr_expect(c.format_all_ns && c.format_crypto);
        cr_expect_eq(c.cntlid, 0x41);
        identify(id, 0, 0, 0);
        nvme_caps_parse(id, &c);
        cr_expect(!c.sanitize_crypto && !c.sanitize_block && !c.format && !c.format_crypto);
}

T(sanitize_comes_first_when_sanicap_offers_it)
{
        NvmeWipeMethod p[_NVME_WIPE_MAX];
        size_t n = plan_for(0x2, 0x4, 0x3, NVME_WIPE_ALLOW_ALL, p);
        cr_assert_eq(n, 5);
        cr_expect_eq(p[0], NVME_WIPE_SANITIZE_BLOCK);
        cr_expect_eq(p[1], NVME_WIPE_SANITIZE_CRYPTO);
        cr_expect_eq(p[2], NVME_WIPE_FORMAT_USER_DATA);
        cr_expect_eq(p[3], NVME_WIPE_FORMAT_CRYPTO);
        cr_expect_eq(p[4], NVME_WIPE_OVERWRITE);
}

T(crypto_sanitize_alone_then_format)
{
        NvmeWipeMethod p[_NVME_WIPE_MAX];
        size_t n = plan_for(0x2, 0x0, 0x1, NVME_WIPE_ALLOW_ALL, p);
        cr_assert_eq(n, 3);
        cr_expect_eq(p[0], NVME_WIPE_SANITIZE_CRYPTO);
        cr_expect_eq(p[1], NVME_WIPE_FORMAT_USER_DATA);
        cr_expect_eq(p[2], NVME_WIPE_OVERWRITE);
}

T(without_sanicap_format_with_user_data_erase_is_first_as_on_qemu)
{
        NvmeWipeMethod p[_NVME_WIPE_MAX];
        size_t n = plan_for(0xa, 0x0, 0x0, NVME_WIPE_ALLOW_ALL, p);
        cr_assert_eq(n, 2);
        cr_expect_eq(p[0], NVME_WIPE_FORMAT_USER_DATA);
        cr_expect_eq(p[1], NVME_WIPE_OVERWRITE);
}

T(crypto_format_only_where_fna_says_so)
{
        NvmeWipeMethod p[_NVME_WIPE_MAX];
        cr_expect_eq(plan_for(0x2, 0x4, 0, NVME_WIPE_ALLOW_ALL, p), 3);
        cr_expect_eq(p[1], NVME_WIPE_FORMAT_CRYPTO);
        cr_expect_eq(plan_for(0x0, 0x4, 0, NVME_WIPE_ALLOW_ALL, p), 1,
                     "no Format NVM in OACS: FNA does not matter");
}

T(a_controller_with_nothing_gets_the_overwrite)
{
        NvmeWipeMethod p[_NVME_WIPE_MAX];
        cr_assert_eq(plan_for(0, 0, 0, NVME_WIPE_ALLOW_ALL, p), 1);
        cr_expect_eq(p[0], NVME_WIPE_OVERWRITE);
}

T(the_allowed_mask_limits_the_plan)
{
        NvmeWipeMethod p[_NVME_WIPE_MAX];
        cr_assert_eq(plan_for(0x2, 0x4, 0x3, NVME_WIPE_ALLOW(NVME_WIPE_OVERWRITE), p), 1);
        cr_expect_eq(p[0], NVME_WIPE_OVERWRITE);
        cr_expect_eq(plan_for(0x2, 0x4, 0x3, 0, p), 0);
}

T(method_names_are_what_the_teardown_records)
{
        cr_expect_str_eq(nvme_wipe_method_name(NVME_WIPE_SANITIZE_BLOCK), "sanitize_block_erase");
        cr_expect_str_eq(nvme_wipe_method_name(NVME_WIPE_SANITIZE_CRYPTO), "sanitize_crypto_erase");
        cr_expect_str_eq(nvme_wipe_method_name(NVME_WIPE_FORMAT_USER_DATA),
                         "format_user_data_erase");
        cr_expect_str_eq(nvme_wipe_method_name(NVME_WIPE_FORMAT_CRYPTO), "format_crypto_erase");
        cr_expect_str_eq(nvme_wipe_method_name(NVME_WIPE_OVERWRITE), "overwrite");
        cr_expect_str_eq(nvme_wipe_method_name(_NVME_WIPE_MAX), "unknown");
}

T(controller_names_are_checked_and_a_missing_one_fails)
{
        NvmeWipeResult res;
        cr_expect_eq(nvme_wipe(hroot, "../nvme0", NVME_WIPE_ALLOW_ALL, 1000, &res), -EINVAL);
        cr_expect_eq(nvme_wipe(hroot, "nvme0n1", NVME_WIPE_ALLOW_ALL, 1000, &res), -EINVAL);
        cr_expect_eq(nvme_wipe(hroot, "sda", NVME_WIPE_ALLOW_ALL, 1000, &res), -EINVAL);
        cr_expect_eq(nvme_wipe(hroot, "nvme0", NVME_WIPE_ALLOW_ALL, 1000, &res), -ENOENT);
        cr_expect_eq(res.method, NVME_WIPE_NONE);
        cr_expect(strstr(res.detail, "dev/nvme0"), "%s", res.detail);
}

T(namespace_block_devices_are_found_with_and_without_multipath)
{
        _cleanup_free_ char *a = NULL, *b = NULL, *none = NULL;
        tdir("sys/class/nvme/nvme0/nvme0c0n1");
        tdir("sys/class/nvme/nvme0/nvme0c0n2");
        tdir("sys/block/nvme0n1");
        tdir("sys/block/nvme0n2");
        tput("sys/block/nvme0n1/nsid", "1\n");
        tput("sys/block/nvme0n2/nsid", "2\n");
        cr_assert_eq(nvme_namespace_block(hroot, "nvme0", 2, &a), 0);
        cr_expect_str_eq(a, "nvme0n2");
        tdir("sys/class/nvme/nvme1/nvme1n1");
        tdir("sys/block/nvme1n1");
        tput("sys/block/nvme1n1/nsid", "1\n");
        cr_assert_eq(nvme_namespace_block(hroot, "nvme1", 1, &b), 0);
        cr_expect_str_eq(b, "nvme1n1");
        cr_expect_eq(nvme_namespace_block(hroot, "nvme0", 3, &none), -ENOENT);
}

T(the_controller_of_a_pci_function)
{
        _cleanup_free_ char *c = NULL;
        tdir("sys/bus/pci/devices/0000:01:00.0/nvme/nvme3");
        cr_assert_eq(nvme_controller_of(hroot, "0000:01:00.0", &c), 0);
        cr_expect_str_eq(c, "nvme3");
        cr_expect_eq(nvme_controller_of(hroot, "0000:02:00.0", &c), -ENOENT);
}
