/* SPDX-License-Identifier: MIT */
#pragma once

/* A small sysfs-like tree under a temporary root for the host-operation unit
 * tests. Nothing reacts to writes here (no kernel): these tests pin argument
 * checks, idempotency, which file gets which value, and deadlines. The
 * kernel's reactions are checked for real in tests/vm. */

#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

static char hroot[64];

static inline void tree_init(void)
{
        strcpy(hroot, "/tmp/gpuslice-hostops-XXXXXX");
        cr_assert(mkdtemp(hroot), "mkdtemp: %m");
}

static inline void tree_fini(void)
{
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", hroot);
        (void)!system(cmd);
}

_printf_(1, 2) static inline char *tpath(const char *fmt, ...)
{
        static char buf[8][512];
        static int i;
        char rel[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rel, sizeof(rel), fmt, ap);
        va_end(ap);
        char *b = buf[i++ % 8];
        snprintf(b, 512, "%s/%s", hroot, rel);
        return b;
}

/* mkdir -p of a path relative to the root. */
static inline void tdir(const char *rel)
{
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "mkdir -p '%s/%s'", hroot, rel);
        cr_assert(system(cmd) == 0);
}

static inline void tput(const char *rel, const char *content)
{
        FILE *f = fopen(tpath("%s", rel), "we");
        cr_assert(f, "%s: %m", rel);
        fputs(content, f);
        fclose(f);
}

/* The file's content ("" when absent). */
static inline char *tget(const char *rel)
{
        static char buf[4][256];
        static int i;
        char *b = buf[i++ % 4];
        b[0] = '\0';
        FILE *f = fopen(tpath("%s", rel), "re");
        if (f) {
                size_t n = fread(b, 1, 255, f);
                b[n] = '\0';
                fclose(f);
        }
        return b;
}

static inline void tlink(const char *target, const char *rel)
{
        cr_assert(symlink(target, tpath("%s", rel)) == 0, "symlink %s: %m", rel);
}

/* A FIFO nobody reads: opening it for writing blocks, as a sysfs write does
 * while the kernel waits for a device's holder. */
static inline void tfifo(const char *rel)
{
        cr_assert(mkfifo(tpath("%s", rel), 0600) == 0, "mkfifo %s: %m", rel);
}

/* Lets the writer stuck on a FIFO finish, so no process outlives the test. */
static inline void tfifo_drain(const char *rel)
{
        int fd = open(tpath("%s", rel), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        (void)poll(&p, 1, 2000);
        char b[64];
        (void)!read(fd, b, sizeof(b));
        close(fd);
}

/* A PCI function under sys/bus/pci/devices with a few attributes, bound to
 * driver (NULL: none). */
static inline void tpci(const char *addr, const char *driver)
{
        tdir("sys/bus/pci/devices");
        tdir("sys/bus/pci/drivers");
        tput("sys/bus/pci/drivers_probe", "");
        char rel[256];
        snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s", addr);
        tdir(rel);
        snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s/driver_override", addr);
        tput(rel, "(null)\n");
        if (driver) {
                char d[256], target[256];
                snprintf(d, sizeof(d), "sys/bus/pci/drivers/%s", driver);
                tdir(d);
                snprintf(d, sizeof(d), "sys/bus/pci/drivers/%s/unbind", driver);
                tput(d, "");
                snprintf(target, sizeof(target), "../../drivers/%s", driver);
                snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s/driver", addr);
                tlink(target, rel);
        }
}

static inline void tdriver(const char *driver)
{
        char d[256];
        snprintf(d, sizeof(d), "sys/bus/pci/drivers/%s", driver);
        tdir(d);
        snprintf(d, sizeof(d), "sys/bus/pci/drivers/%s/unbind", driver);
        tput(d, "");
}
