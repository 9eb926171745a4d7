/* SPDX-License-Identifier: MIT */
#include "pci-sysfs.h"

#include <ctype.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "macro.h"
#include "sysfs-path.h"

bool pci_address_is_valid(const char *addr)
{
        /* dddd:bb:dd.f */
        static const char shape[] = "xxxx:xx:xx.x";

        if (!addr || strlen(addr) != STRLEN(shape))
                return false;
        for (size_t i = 0; shape[i]; i++) {
                char c = addr[i];
                if (shape[i] != 'x') {
                        if (c != shape[i])
                                return false;
                } else if (!(isdigit((unsigned char)c) || (c >= 'a' && c <= 'f')))
                        return false;
        }
        /* device is 5 bits (00-1f), function 3 bits (0-7) */
        return addr[8] <= '1' && addr[11] <= '7';
}

char *pci_device_path(const char *root, const char *addr, const char *attr)
{
        _cleanup_free_ char *rel = NULL;

        if (asprintf(&rel, "sys/bus/pci/devices/%s%s%s", addr, attr ? "/" : "", attr ? attr : "") <
            0)
                return NULL;
        return sysfs_join(root, rel);
}

unsigned long long pci_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (unsigned long long)ts.tv_sec * 1000ull +
               (unsigned long long)ts.tv_nsec / 1000000ull;
}

/* In the grandchild: only async-signal-safe calls (the agent has threads). */
_noreturn_ static void write_and_report(const char *path, const char *value, size_t len, int report)
{
        int e = 0;
        /* A stuck writer must not keep the agent's sockets and files alive. */
        if (report > 3)
                (void)syscall(SYS_close_range, 3, report - 1, 0);
        (void)syscall(SYS_close_range, report + 1, ~0u, 0);

        int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC |
                                O_NOCTTY); /* O_TRUNC as a shell redirect does: a no-op on sysfs */
        if (fd < 0)
                e = errno;
        else {
                ssize_t n = write(fd, value, len);
                if (n < 0)
                        e = errno;
                else if ((size_t)n != len)
                        e = EIO;
                if (close(fd) < 0 && e == 0 && errno != EINTR)
                        e = errno;
        }
        (void)!write(report, &e, sizeof(e));
        _exit(0);
}

int sysfs_write_bounded(const char *root, const char *rel, const char *value, unsigned timeout_ms)
{
        _cleanup_free_ char *path = sysfs_join(root, rel);
        int p[2];

        if (!path)
                return -ENOMEM;
        if (pipe2(p, O_CLOEXEC) < 0)
                return negative_errno();

        pid_t pid = fork();
        if (pid < 0) {
                int r = negative_errno();
                close(p[0]);
                close(p[1]);
                return r;
        }
        if (pid == 0) {
                /* Middle child: exits at once so the parent reaps it now and
                 * the writer is re-parented to init however long it blocks. */
                close(p[0]);
                pid_t w = fork();
                if (w == 0)
                        write_and_report(path, value, strlen(value), p[1]);
                _exit(w < 0 ? 1 : 0);
        }
        close(p[1]);
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                close(p[0]);
                return -EAGAIN; /* the writer could not be forked */
        }

        unsigned long long deadline = pci_now_ms() + timeout_ms;
        int r;
        for (;;) {
                unsigned long long now = pci_now_ms();
                if (now >= deadline) {
                        r = -ETIMEDOUT;
                        break;
                }
                struct pollfd pfd = {.fd = p[0], .events = POLLIN};
                int n = poll(&pfd, 1, (int)(deadline - now));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = negative_errno();
                        break;
                }
                if (n == 0) {
                        r = -ETIMEDOUT;
                        break;
                }
                int e;
                ssize_t got = read(p[0], &e, sizeof(e));
                if (got < 0 && errno == EINTR)
                        continue;
                r = got == (ssize_t)sizeof(e) ? -e : -EIO;
                break;
        }
        close(p[0]);
        return r;
}

int pci_link_basename(const char *root, const char *addr, const char *link, char **ret)
{
        _cleanup_free_ char *rel = NULL, *resolved = NULL;
        int r;

        if (!pci_address_is_valid(addr))
                return -EINVAL;
        if (asprintf(&rel, "sys/bus/pci/devices/%s/%s", addr, link) < 0)
                return -ENOMEM;
        r = sysfs_chase(root, rel, &resolved);
        if (r < 0)
                return r;
        const char *base = strrchr(resolved, '/');
        char *s = strdup(base ? base + 1 : resolved);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int pci_read_attr(const char *root, const char *addr, const char *attr, char **ret)
{
        _cleanup_free_ char *rel = NULL;

        if (!pci_address_is_valid(addr))
                return -EINVAL;
        if (asprintf(&rel, "sys/bus/pci/devices/%s/%s", addr, attr) < 0)
                return -ENOMEM;
        return sysfs_read_attr(root, rel, ret);
}

int pci_write_attr(const char *root, const char *addr, const char *attr, const char *value,
                   unsigned timeout_ms)
{
        _cleanup_free_ char *rel = NULL;

        if (!pci_address_is_valid(addr))
                return -EINVAL;
        if (asprintf(&rel, "sys/bus/pci/devices/%s/%s", addr, attr) < 0)
                return -ENOMEM;
        return sysfs_write_bounded(root, rel, value, timeout_ms);
}

int sysfs_wait_path(const char *root, const char *rel, bool gone, unsigned timeout_ms)
{
        _cleanup_free_ char *path = sysfs_join(root, rel);
        unsigned long long deadline = pci_now_ms() + timeout_ms;

        if (!path)
                return -ENOMEM;
        for (;;) {
                struct stat st;
                bool present = stat(path, &st) == 0;
                if (present != gone)
                        return 0;
                if (pci_now_ms() >= deadline)
                        return -ETIMEDOUT;
                struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
                nanosleep(&ts, NULL); /* a poll interval, not a wait for an event */
        }
}
