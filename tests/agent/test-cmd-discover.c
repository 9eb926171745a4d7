/* SPDX-License-Identifier: MIT */
/* Runs the real gpuslice-agent binary: exit codes, JSON on stdout, the
 * table, and a message naming the path on bad input. */
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <sys/stat.h>

#include "agent-test.h"

#define T(name) Test(cmd_discover, name, .timeout = 60)

typedef struct {
        int status;
        char *out, *err;
} Run;

static char *slurp(const char *path)
{
        FILE *f = fopen(path, "re");
        cr_assert(f, "%s: %m", path);
        char *buf = NULL;
        size_t n = 0;
        FILE *m = open_memstream(&buf, &n);
        char chunk[4096];
        size_t k;
        while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
                fwrite(chunk, 1, k, m);
        fclose(m);
        fclose(f);
        return buf;
}

static Run run_agent(const char *const *args)
{
        const char *build = getenv("GPUSLICE_TEST_BUILD_ROOT");
        cr_assert(build);
        char bin[512], outp[] = "/tmp/gpuslice-out-XXXXXX", errp[] = "/tmp/gpuslice-err-XXXXXX";
        snprintf(bin, sizeof(bin), "%s/agent/gpuslice-agent", build);
        int ofd = mkstemp(outp), efd = mkstemp(errp);
        cr_assert(ofd >= 0 && efd >= 0);

        char *argv[16] = {bin};
        size_t n = 1;
        for (; args[n - 1] && n < 15; n++)
                argv[n] = (char *)args[n - 1];
        argv[n] = NULL;

        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, ofd, 1);
        posix_spawn_file_actions_adddup2(&fa, efd, 2);
        pid_t pid;
        extern char **environ;
        cr_assert_eq(posix_spawn(&pid, bin, &fa, NULL, argv, environ), 0, "spawn %s", bin);
        posix_spawn_file_actions_destroy(&fa);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        close(ofd);
        close(efd);
        Run r = {.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)};
        r.out = slurp(outp);
        r.err = slurp(errp);
        unlink(outp);
        unlink(errp);
        return r;
}

static void run_done(Run *r)
{
        free(r->out);
        free(r->err);
}

T(json_for_an_xml_export)
{
        _cleanup_free_ char *x = fixture("hwloc/nvidiaDGX2.xml");
        Run r = run_agent((const char *const[]){"discover", "--hwloc-xml", x, "--json", NULL});
        cr_assert_eq(r.status, 0, "stderr: %s", r.err);
        json_error_t e;
        json_t *doc = json_loads(r.out, 0, &e);
        cr_assert_not_null(doc, "stdout is JSON: %s", e.text);
        cr_expect_eq(json_array_size(json_object_get(doc, "slots")), 16);
        cr_expect_eq(json_array_size(json_object_get(doc, "numa_nodes")), 2);
        json_decref(doc);
        run_done(&r);
}

T(json_for_a_sysfs_root_is_deterministic)
{
        _cleanup_free_ char *root = fixture("synthetic/synthetic-gpu-vfs");
        Run a = run_agent((const char *const[]){"discover", "--sysfs-root", root, "--json", NULL});
        Run b = run_agent((const char *const[]){"discover", "--json", "--sysfs-root", root, NULL});
        cr_assert_eq(a.status, 0, "stderr: %s", a.err);
        cr_assert_eq(b.status, 0);
        cr_expect_str_eq(a.out, b.out);
        run_done(&a);
        run_done(&b);
}

T(table_has_one_line_per_slot)
{
        _cleanup_free_ char *root = fixture("synthetic/synthetic-exhausted-vfs");
        Run r = run_agent((const char *const[]){"discover", "--sysfs-root", root, NULL});
        cr_assert_eq(r.status, 0, "stderr: %s", r.err);
        cr_expect(strstr(r.out, "slot-0000:03:00.0"));
        cr_expect(strstr(r.out, "0000:06:00.0 vf 1"));
        cr_expect(strstr(r.out, "problem: VF 2 needed on NIC 0000:06:00.0"));
        cr_expect(strstr(r.out, "per_slot_vf     FAIL"));
        cr_expect(strstr(r.out, "fingerprint: sha256:"));
        run_done(&r);
}

static void expect_bad(const char *const *args, const char *needle)
{
        Run r = run_agent(args);
        cr_expect_eq(r.status, 2, "exit %d for %s; stderr: %s", r.status, args[1], r.err);
        if (needle)
                cr_expect(strstr(r.err, needle), "stderr names %s: %s", needle, r.err);
        cr_expect_eq(r.out[0], '\0', "nothing on stdout");
        run_done(&r);
}

T(bad_input_exits_2_naming_the_path)
{
        expect_bad((const char *const[]){"discover", "--sysfs-root", "/nonexistent/snap", NULL},
                   "/nonexistent/snap");
        expect_bad((const char *const[]){"discover", "--hwloc-xml", "/nonexistent/t.xml", NULL},
                   "/nonexistent/t.xml");
        _cleanup_free_ char *md = fixture("SOURCES.md");
        expect_bad((const char *const[]){"discover", "--hwloc-xml", md, NULL}, md);
        expect_bad((const char *const[]){"discover", "--sysfs-root", md, NULL}, md);

        char tmpl[] = "/tmp/gpuslice-cli-XXXXXX", cmd[4096], p[600];
        cr_assert(mkdtemp(tmpl));
        _cleanup_free_ char *src = fixture("psmgmt/topo.jwc09n003.xml");
        snprintf(cmd, sizeof(cmd),
                 "set -e; cd '%s'; head -c 30000 '%s' > cut.xml;"
                 " mkdir -p l/sys/bus/pci/devices; ln -s 0000:00:02.0 "
                 "l/sys/bus/pci/devices/0000:00:01.0;"
                 " ln -s 0000:00:01.0 l/sys/bus/pci/devices/0000:00:02.0",
                 tmpl, src);
        cr_assert_eq(system(cmd), 0);
        snprintf(p, sizeof(p), "%s/cut.xml", tmpl);
        expect_bad((const char *const[]){"discover", "--hwloc-xml", p, NULL}, p);
        snprintf(p, sizeof(p), "%s/l", tmpl);
        expect_bad((const char *const[]){"discover", "--sysfs-root", p, "--json", NULL}, p);
        rm_rf(tmpl);
}

T(usage_errors_exit_2)
{
        _cleanup_free_ char *x = fixture("hwloc/nvidiaDGX2.xml");
        expect_bad((const char *const[]){"discover", "--sysfs-root", "/", "--hwloc-xml", x, NULL},
                   "exclusive");
        expect_bad((const char *const[]){"discover", "--frobnicate", NULL}, "--frobnicate");
        expect_bad((const char *const[]){"discover", "--hwloc-xml", NULL}, NULL);
        expect_bad((const char *const[]){"discover", "extra", NULL}, "extra");
        expect_bad((const char *const[]){"frobnicate", NULL}, "unknown command 'frobnicate'");
        expect_bad((const char *const[]){NULL}, "Usage");
}

T(help_exits_0)
{
        Run r = run_agent((const char *const[]){"discover", "--help", NULL});
        cr_expect_eq(r.status, 0);
        cr_expect(strstr(r.out, "--sysfs-root"));
        run_done(&r);
}
