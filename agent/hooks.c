/* SPDX-License-Identifier: MIT */
#include "hooks.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "macro.h"
#include "pci-sysfs.h"

#define HOOK_OUT_MAX  (64 * 1024)
#define HOOK_GRACE_MS 2000

static const char *const verb_names[_HOOK_VERB_MAX] = {
    [HOOK_START] = "start",
    [HOOK_STOP] = "stop",
    [HOOK_STATUS] = "status",
    [HOOK_CONSOLE] = "console",
};

const char *hook_verb_name(HookVerb v)
{
        return v < _HOOK_VERB_MAX ? verb_names[v] : NULL;
}

bool hook_id_is_valid(const char *id)
{
        size_t n = id ? strlen(id) : 0;
        if (n == 0 || n > 128 || id[0] == '.' || id[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = id[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '.' || c == '-'))
                        return false;
        }
        return true;
}

void hook_result_done(HookResult *r)
{
        free(r->out);
        r->out = NULL;
}

static char *join_words(const char *const *v, size_t n)
{
        size_t len = 1;
        for (size_t i = 0; i < n; i++)
                len += strlen(v[i]) + 1;
        char *s = malloc(len), *p = s;
        if (!s)
                return NULL;
        *p = '\0';
        for (size_t i = 0; i < n; i++)
                p += sprintf(p, "%s%s", i ? " " : "", v[i]);
        return s;
}

static int wait_child(pid_t pid, int *status, unsigned long long deadline)
{
        for (;;) {
                pid_t w = waitpid(pid, status, WNOHANG);
                if (w == pid)
                        return 0;
                if (w < 0 && errno != EINTR)
                        return negative_errno();
                if (pci_now_ms() >= deadline)
                        return -ETIMEDOUT;
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL); /* poll interval */
        }
}

/* The hook's path, argv and environment, checked: what hook_run() and
 * hook_exec() execute. */
typedef struct HookCommand {
        char *path;
        const char **argv;
        char **envp;
} HookCommand;

static void hook_command_done(HookCommand *c)
{
        free(c->path);
        free(c->argv);
        for (char **e = c->envp; e && *e; e++)
                free(*e);
        free(c->envp);
        *c = (HookCommand){0};
}

static bool env_entry_is_valid(const char *e)
{
        const char *eq = e ? strchr(e, '=') : NULL;
        if (!eq || !startswith(e, "GPUSLICE_") || eq == e + STRLEN("GPUSLICE_"))
                return false;
        for (const char *c = e; c < eq; c++)
                if (!((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_'))
                        return false;
        for (const char *c = eq + 1; *c; c++)
                if ((unsigned char)*c < 0x20 && *c != '\t')
                        return false;
        return true;
}

static int hook_command_new(const char *hook_dir, const char *name, HookVerb verb,
                            const HookContext *ctx, HookCommand *ret)
{
        _cleanup_(hook_command_done) HookCommand c = {0};
        _cleanup_free_ char *devs = NULL, *groups = NULL;
        struct stat st;
        size_t n = 0;

        *ret = (HookCommand){0};
        if (!hook_id_is_valid(name) || !hook_verb_name(verb) || !ctx ||
            !hook_id_is_valid(ctx->slot_id) || !hook_id_is_valid(ctx->allocation_id))
                return -EINVAL;
        for (size_t i = 0; i < ctx->n_vfio_devices; i++)
                if (!pci_address_is_valid(ctx->vfio_devices[i]))
                        return -EINVAL;
        for (size_t i = 0; i < ctx->n_env; i++)
                if (!env_entry_is_valid(ctx->env[i]))
                        return -EINVAL;
        if (asprintf(&c.path, "%s/%s", hook_dir, name) < 0) {
                c.path = NULL;
                return -ENOMEM;
        }
        if (stat(c.path, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode) || access(c.path, X_OK) < 0)
                return -EACCES;

        devs = join_words(ctx->vfio_devices, ctx->n_vfio_devices);
        groups = join_words(ctx->vfio_groups, ctx->vfio_groups ? ctx->n_vfio_groups : 0);
        c.envp = calloc(7 + ctx->n_env, sizeof(char *));
        c.argv = calloc(4 + ctx->n_vfio_devices + 1, sizeof(char *));
        if (!devs || !groups || !c.envp || !c.argv)
                return -ENOMEM;
        if (asprintf(&c.envp[n++], "GPUSLICE_SLOT_ID=%s", ctx->slot_id) < 0 ||
            asprintf(&c.envp[n++], "GPUSLICE_ALLOCATION_ID=%s", ctx->allocation_id) < 0 ||
            asprintf(&c.envp[n++], "GPUSLICE_VFIO_DEVICES=%s", devs) < 0 ||
            asprintf(&c.envp[n++], "GPUSLICE_VFIO_GROUPS=%s", groups) < 0 ||
            asprintf(&c.envp[n++], "GPUSLICE_RUNTIME_DIR=%s", strempty(ctx->runtime_dir)) < 0 ||
            !(c.envp[n++] =
                  strdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"))) {
                c.envp[n - 1] = NULL; /* asprintf leaves it undefined on failure */
                return -ENOMEM;
        }
        for (size_t i = 0; i < ctx->n_env; i++)
                if (!(c.envp[n++] = strdup(ctx->env[i])))
                        return -ENOMEM;

        c.argv[0] = c.path;
        c.argv[1] = hook_verb_name(verb);
        c.argv[2] = ctx->slot_id;
        c.argv[3] = ctx->allocation_id;
        for (size_t i = 0; i < ctx->n_vfio_devices; i++)
                c.argv[4 + i] = ctx->vfio_devices[i];
        *ret = c;
        c = (HookCommand){0};
        return 0;
}

int hook_exec(const char *hook_dir, const char *name, HookVerb verb, const HookContext *ctx)
{
        _cleanup_(hook_command_done) HookCommand c = {0};
        int r = hook_command_new(hook_dir, name, verb, ctx, &c);
        if (r < 0)
                return r;
        execve(c.path, (char *const *)c.argv, c.envp);
        return negative_errno();
}

int hook_run(const char *hook_dir, const char *name, HookVerb verb, const HookContext *ctx,
             unsigned timeout_ms, HookResult *ret)
{
        _cleanup_(hook_command_done) HookCommand cmd = {0};
        _cleanup_free_ char *out = NULL;
        size_t out_len = 0;
        int p[2];

        *ret = (HookResult){.exit_code = -1};
        int r = hook_command_new(hook_dir, name, verb, ctx, &cmd);
        if (r < 0)
                return r;

        if (pipe2(p, O_CLOEXEC) < 0)
                return negative_errno();
        pid_t pid = fork();
        if (pid < 0) {
                r = negative_errno();
                close(p[0]);
                close(p[1]);
                return r;
        }
        if (pid == 0) {
                /* Own process group, so a timeout ends the hook and what it started. */
                setpgid(0, 0);
                int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(p[1], 1) < 0)
                        _exit(127);
                (void)syscall(SYS_close_range, 3, ~0u, 0);
                signal(SIGPIPE, SIG_DFL);
                execve(cmd.path, (char *const *)cmd.argv, cmd.envp);
                _exit(127);
        }
        setpgid(pid, pid); /* either side may win the race; both set the same */
        close(p[1]);

        unsigned long long deadline = pci_now_ms() + timeout_ms;
        bool timed_out = false;
        out = malloc(HOOK_OUT_MAX + 1);
        if (!out) {
                kill(-pid, SIGKILL);
                close(p[0]);
                waitpid(pid, NULL, 0);
                return -ENOMEM;
        }
        for (;;) {
                unsigned long long now = pci_now_ms();
                if (now >= deadline) {
                        timed_out = true;
                        break;
                }
                struct pollfd pfd = {.fd = p[0], .events = POLLIN};
                int n = poll(&pfd, 1, (int)(deadline - now));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        timed_out = n == 0;
                        break;
                }
                char buf[4096];
                ssize_t got = read(p[0], buf, sizeof(buf));
                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0)
                        break; /* EOF: the hook (and whatever held stdout) is done */
                size_t keep = MIN((size_t)got, (size_t)HOOK_OUT_MAX - out_len);
                memcpy(out + out_len, buf, keep);
                out_len += keep;
        }
        close(p[0]);
        out[out_len] = '\0';

        int status = 0;
        if (timed_out) {
                kill(-pid, SIGTERM);
                if (wait_child(pid, &status, pci_now_ms() + HOOK_GRACE_MS) < 0) {
                        kill(-pid, SIGKILL);
                        waitpid(pid, &status, 0);
                }
                ret->out = TAKE_PTR(out);
                return -ETIMEDOUT;
        }
        /* stdout closed: the hook itself should be gone or going. */
        r = wait_child(pid, &status, deadline > pci_now_ms() ? deadline : pci_now_ms() + 100);
        if (r < 0) {
                kill(-pid, SIGKILL);
                waitpid(pid, &status, 0);
                ret->out = TAKE_PTR(out);
                return -ETIMEDOUT;
        }
        ret->out = TAKE_PTR(out);
        ret->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return ret->exit_code == 0 ? 0 : -EPROTO;
}
