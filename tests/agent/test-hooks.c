/* SPDX-License-Identifier: MIT */
/* The runtime hook contract: argv, environment (and nothing else of the
 * agent's), exit codes, captured stdout, and the deadline that ends the hook's
 * whole process group. */

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "hooks.h"
#include "hostops-test.h"
#include "pci-sysfs.h"

#define T(name) Test(hooks, name, .init = setup, .fini = tree_fini, .timeout = 30)

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
        tdir("hooks");
        tdir("run");
        hook("echo", "#!/bin/sh\n"
                     "echo \"argv=$*\"\n"
                     "echo \"slot=$GPUSLICE_SLOT_ID alloc=$GPUSLICE_ALLOCATION_ID\"\n"
                     "echo \"devs=$GPUSLICE_VFIO_DEVICES groups=$GPUSLICE_VFIO_GROUPS\"\n"
                     "echo \"rt=$GPUSLICE_RUNTIME_DIR secret=${GPUSLICE_TEST_SECRET:-unset}\"\n"
                     "read line && echo \"stdin=$line\" || echo stdin=empty\n");
        hook("fail", "#!/bin/sh\necho nope >&2\nexit 3\n");
        hook("status", "#!/bin/sh\necho '{\"state\":\"running\"}'\n");
        hook("slow", "#!/bin/sh\nsleep 30 &\necho $! > \"$GPUSLICE_RUNTIME_DIR/child.pid\"\n"
                     "exec sleep 30\n");
        tput("hooks/noexec", "#!/bin/sh\nexit 0\n");
}

static HookContext ctx(void)
{
        static const char *devs[] = {"0000:3b:00.0", "0000:3b:00.1"};
        static const char *groups[] = {"/dev/vfio/17", "/dev/vfio/18"};
        return (HookContext){.slot_id = "slt_1",
                             .allocation_id = "alc_9",
                             .vfio_devices = devs,
                             .n_vfio_devices = 2,
                             .vfio_groups = groups,
                             .n_vfio_groups = 2,
                             .runtime_dir = tpath("run")};
}

T(argv_and_environment_follow_the_contract_and_nothing_else_leaks)
{
        HookContext c = ctx();
        HookResult res;
        setenv("GPUSLICE_TEST_SECRET", "agent-only", 1);
        int r = hook_run(tpath("hooks"), "echo", HOOK_START, &c, 5000, &res);
        unsetenv("GPUSLICE_TEST_SECRET");
        cr_assert_eq(r, 0, "%d: %s", r, res.out ? res.out : "");
        cr_expect(strstr(res.out, "argv=start slt_1 alc_9 0000:3b:00.0 0000:3b:00.1\n"), "%s",
                  res.out);
        cr_expect(strstr(res.out, "slot=slt_1 alloc=alc_9\n"));
        cr_expect(strstr(res.out, "devs=0000:3b:00.0 0000:3b:00.1 groups=/dev/vfio/17 "
                                  "/dev/vfio/18\n"));
        cr_expect(strstr(res.out, "secret=unset"), "the agent's environment leaked: %s", res.out);
        cr_expect(strstr(res.out, "stdin=empty"));
        hook_result_done(&res);
}

T(extra_gpuslice_variables_reach_the_hook_and_nothing_else_is_allowed)
{
        HookContext c = ctx();
        HookResult res;
        const char *env[] = {"GPUSLICE_TEST_SECRET=for the hook", "GPUSLICE_SSH_USER=ubuntu"};
        c.env = env;
        c.n_env = 2;
        cr_assert_eq(hook_run(tpath("hooks"), "echo", HOOK_START, &c, 5000, &res), 0);
        cr_expect(strstr(res.out, "secret=for the hook\n"), "%s", res.out);
        hook_result_done(&res);

        /* Only GPUSLICE_ names, one line each: nothing can override PATH or
         * smuggle a second variable in. */
        const char *bad[][1] = {{"PATH=/tmp"}, {"GPUSLICE_=x"}, {"GPUSLICE_X"},
                                {"GPUSLICE_x=lower"}, {"GPUSLICE_X=a\nPATH=/tmp"}};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                c.env = bad[i];
                c.n_env = 1;
                cr_expect_eq(hook_run(tpath("hooks"), "echo", HOOK_START, &c, 5000, &res), -EINVAL,
                             "%s", bad[i][0]);
                hook_result_done(&res);
        }
}

T(hook_exec_replaces_the_process_with_the_same_argv_and_environment)
{
        HookContext c = ctx();
        int p[2];
        cr_assert(pipe(p) == 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                dup2(p[1], 1);
                int devnull = open("/dev/null", O_RDONLY);
                dup2(devnull, 0);
                int r = hook_exec(tpath("hooks"), "echo", HOOK_CONSOLE, &c);
                _exit(100 - r);
        }
        close(p[1]);
        char buf[4096] = "";
        size_t n = 0;
        ssize_t got;
        while (n < sizeof(buf) - 1 && (got = read(p[0], buf + n, sizeof(buf) - 1 - n)) > 0)
                n += (size_t)got;
        close(p[0]);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
        cr_expect(strstr(buf, "argv=console slt_1 alc_9 0000:3b:00.0 0000:3b:00.1\n"), "%s", buf);
        cr_expect(strstr(buf, "rt=/"), "%s", buf);

        /* A hook that is not there: -ENOENT, the caller stays. */
        cr_expect_eq(hook_exec(tpath("hooks"), "missing", HOOK_CONSOLE, &c), -ENOENT);
}

T(each_verb_is_passed_by_name)
{
        const char *want[] = {"start", "stop", "status", "console"};
        HookContext c = ctx();
        for (HookVerb v = 0; v < _HOOK_VERB_MAX; v++) {
                HookResult res;
                char needle[64];
                cr_assert_eq(hook_run(tpath("hooks"), "echo", v, &c, 5000, &res), 0);
                snprintf(needle, sizeof(needle), "argv=%s slt_1", want[v]);
                cr_expect(strstr(res.out, needle), "%s", res.out);
                hook_result_done(&res);
        }
}

T(a_non_zero_exit_is_eproto_with_the_code)
{
        HookContext c = ctx();
        HookResult res;
        cr_expect_eq(hook_run(tpath("hooks"), "fail", HOOK_STOP, &c, 5000, &res), -EPROTO);
        cr_expect_eq(res.exit_code, 3);
        hook_result_done(&res);
}

T(status_json_comes_back_on_stdout)
{
        HookContext c = ctx();
        HookResult res;
        cr_assert_eq(hook_run(tpath("hooks"), "status", HOOK_STATUS, &c, 5000, &res), 0);
        cr_expect_str_eq(res.out, "{\"state\":\"running\"}\n");
        hook_result_done(&res);
}

T(the_deadline_ends_the_hook_and_everything_it_started)
{
        HookContext c = ctx();
        HookResult res;
        unsigned long long t0 = pci_now_ms();
        cr_expect_eq(hook_run(tpath("hooks"), "slow", HOOK_START, &c, 300, &res), -ETIMEDOUT);
        cr_expect(pci_now_ms() - t0 < 5000);
        hook_result_done(&res);
        FILE *f = fopen(tpath("run/child.pid"), "re");
        cr_assert(f);
        int pid = 0;
        cr_assert_eq(fscanf(f, "%d", &pid), 1);
        fclose(f);
        /* The background child got the group's SIGTERM too (poll: it may still be exiting). */
        unsigned long long deadline = pci_now_ms() + 5000;
        while (kill(pid, 0) == 0 && pci_now_ms() < deadline) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        cr_expect_neq(kill(pid, 0), 0, "the hook's child %d outlived the timeout", pid);
}

T(missing_unexecutable_and_badly_named_hooks_are_refused)
{
        HookContext c = ctx();
        HookResult res;
        cr_expect_eq(hook_run(tpath("hooks"), "absent", HOOK_START, &c, 1000, &res), -ENOENT);
        cr_expect_eq(hook_run(tpath("hooks"), "noexec", HOOK_START, &c, 1000, &res), -EACCES);
        cr_expect_eq(hook_run(tpath("hooks"), "../hooks/echo", HOOK_START, &c, 1000, &res),
                     -EINVAL);
        cr_expect_eq(hook_run(tpath("hooks"), ".hidden", HOOK_START, &c, 1000, &res), -EINVAL);
        cr_expect_eq(hook_run(tpath("hooks"), "echo", _HOOK_VERB_MAX, &c, 1000, &res), -EINVAL);
}

T(ids_and_addresses_that_could_inject_are_refused)
{
        HookContext c = ctx();
        HookResult res;
        c.slot_id = "slt_1; rm -rf /";
        cr_expect_eq(hook_run(tpath("hooks"), "echo", HOOK_START, &c, 1000, &res), -EINVAL);
        c = ctx();
        c.allocation_id = "-x";
        cr_expect_eq(hook_run(tpath("hooks"), "echo", HOOK_START, &c, 1000, &res), -EINVAL);
        c = ctx();
        const char *bad[] = {"0000:3b:00.0 --evil"};
        c.vfio_devices = bad, c.n_vfio_devices = 1;
        cr_expect_eq(hook_run(tpath("hooks"), "echo", HOOK_START, &c, 1000, &res), -EINVAL);
        cr_expect(hook_id_is_valid("alc_01HZX.a-b"));
}

/* The shipped example (hooks/qemu-example), on the verbs that need no VM. */
static char *shipped_hooks(void)
{
        char *p;
        cr_assert(asprintf(&p, "%s/hooks", getenv("GPUSLICE_TEST_SOURCE_ROOT")) >= 0);
        return p;
}

T(the_qemu_example_reports_stopped_refuses_a_console_and_stops_idempotently)
{
        _cleanup_free_ char *dir = shipped_hooks();
        HookContext c = ctx();
        HookResult res;
        cr_assert_eq(hook_run(dir, "qemu-example", HOOK_STATUS, &c, 5000, &res), 0);
        cr_expect_str_eq(res.out, "{\"state\":\"stopped\"}\n");
        hook_result_done(&res);
        /* The console attaches to a running VM's serial port only. */
        cr_expect_eq(hook_run(dir, "qemu-example", HOOK_CONSOLE, &c, 5000, &res), -EPROTO);
        cr_expect_eq(res.exit_code, 1);
        hook_result_done(&res);
        cr_expect_eq(hook_run(dir, "qemu-example", HOOK_STOP, &c, 5000, &res), 0);
        hook_result_done(&res);
}

T(the_qemu_example_refuses_to_start_without_an_image)
{
        _cleanup_free_ char *dir = shipped_hooks();
        HookContext c = ctx();
        HookResult res;
        cr_expect_eq(hook_run(dir, "qemu-example", HOOK_START, &c, 5000, &res), -EPROTO);
        cr_expect_eq(res.exit_code, 1);
        hook_result_done(&res);
}
