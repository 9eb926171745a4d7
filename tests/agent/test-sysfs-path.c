/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <sys/stat.h>

#include "macro.h"
#include "sysfs-path.h"

#define T(name) Test(sysfs_path, name, .timeout = 10)

static char root[] = "/tmp/gpuslice-sysfs-XXXXXX";

static void mk(const char *rel)
{
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", root, rel);
        cr_assert(mkdir(p, 0755) == 0 || errno == EEXIST, "mkdir %s: %m", p);
}

static void ln(const char *target, const char *rel)
{
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", root, rel);
        cr_assert(symlink(target, p) == 0, "symlink %s: %m", p);
}

static void put(const char *rel, const char *content)
{
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", root, rel);
        FILE *f = fopen(p, "we");
        cr_assert(f);
        fputs(content, f);
        fclose(f);
}

static void setup(void)
{
        strcpy(root, "/tmp/gpuslice-sysfs-XXXXXX");
        cr_assert(mkdtemp(root));
        mk("sys");
        mk("sys/devices");
        mk("sys/devices/pci0000:00");
        mk("sys/devices/pci0000:00/0000:00:01.0");
        put("sys/devices/pci0000:00/0000:00:01.0/vendor", "0x8086\n");
        put("sys/devices/pci0000:00/0000:00:01.0/empty", "");
        mk("sys/bus");
        ln("../devices/pci0000:00/0000:00:01.0", "sys/bus/dev");
        ln("/sys/devices/pci0000:00", "sys/abs");
        ln("loop-b", "sys/loop-a");
        ln("loop-a", "sys/loop-b");
}

static void teardown(void)
{
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        (void)!system(cmd);
}

Test(sysfs_path, relative_links_resolve_inside_root, .init = setup, .fini = teardown, .timeout = 10)
{
        _cleanup_free_ char *r = NULL;
        cr_assert_eq(sysfs_chase(root, "sys/bus/dev", &r), 0);
        cr_expect_str_eq(r, "sys/devices/pci0000:00/0000:00:01.0");
}

Test(sysfs_path, absolute_links_stay_under_root, .init = setup, .fini = teardown, .timeout = 10)
{
        _cleanup_free_ char *r = NULL;
        cr_assert_eq(sysfs_chase(root, "sys/abs/0000:00:01.0", &r), 0);
        cr_expect_str_eq(r, "sys/devices/pci0000:00/0000:00:01.0");
}

Test(sysfs_path, link_loops_end_in_eloop, .init = setup, .fini = teardown, .timeout = 10)
{
        _cleanup_free_ char *r = NULL;
        cr_expect_eq(sysfs_chase(root, "sys/loop-a", &r), -ELOOP);
        cr_expect_null(r);
}

Test(sysfs_path, missing_paths_are_enoent, .init = setup, .fini = teardown, .timeout = 10)
{
        _cleanup_free_ char *r = NULL, *v = NULL;
        cr_expect_eq(sysfs_chase(root, "sys/nothing/here", &r), -ENOENT);
        cr_expect_eq(sysfs_read_attr(root, "sys/nothing", &v), -ENOENT);
}

Test(sysfs_path, attributes_and_truncation, .init = setup, .fini = teardown, .timeout = 10)
{
        _cleanup_free_ char *v = NULL, *e = NULL;
        cr_assert_eq(sysfs_read_attr(root, "sys/bus/dev/vendor", &v), 0);
        cr_expect_str_eq(v, "0x8086");
        cr_expect_eq(sysfs_read_attr(root, "sys/bus/dev/empty", &e), -EBADMSG);
}

T(parse_long)
{
        long v;
        cr_expect_eq(sysfs_parse_long("0x10de", 16, &v), 0);
        cr_expect_eq(v, 0x10de);
        cr_expect_eq(sysfs_parse_long("-1", 10, &v), 0);
        cr_expect_eq(v, -1);
        cr_expect_eq(sysfs_parse_long("0x", 16, &v), -EBADMSG);
        cr_expect_eq(sysfs_parse_long("", 16, &v), -EBADMSG);
        cr_expect_eq(sysfs_parse_long("12abc", 10, &v), -EBADMSG);
}

T(join)
{
        _cleanup_free_ char *a = sysfs_join("/", "sys/x"), *b = sysfs_join("/r/", "/sys");
        cr_expect_str_eq(a, "/sys/x");
        cr_expect_str_eq(b, "/r/sys");
}
