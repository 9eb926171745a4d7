/* SPDX-License-Identifier: MIT */
#include "sysfs-path.h"

#include <limits.h>
#include <sys/stat.h>

#include "macro.h"

#define CHASE_MAX_HOPS 40

char *sysfs_join(const char *root, const char *rel)
{
        char *s;
        size_t rl = strlen(root);

        while (rl > 0 && root[rl - 1] == '/')
                rl--;
        while (*rel == '/')
                rel++;
        if (asprintf(&s, "%.*s/%s", (int)rl, root, rel) < 0)
                return NULL;
        return s;
}

int sysfs_chase(const char *root, const char *rel, char **ret)
{
        _cleanup_free_ char *remaining = strdup(rel), *done = strdup("");
        unsigned hops = 0;

        if (!remaining || !done)
                return -ENOMEM;

        for (;;) {
                char *p = remaining;
                while (*p == '/')
                        p++;
                if (*p == '\0')
                        break;
                size_t len = strcspn(p, "/");
                _cleanup_free_ char *comp = strndup(p, len);
                _cleanup_free_ char *rest = strdup(p + len);
                if (!comp || !rest)
                        return -ENOMEM;
                free(remaining);
                remaining = TAKE_PTR(rest);

                if (streq(comp, "."))
                        continue;
                if (streq(comp, "..")) {
                        char *slash = strrchr(done, '/');
                        if (slash)
                                *slash = '\0';
                        else
                                done[0] = '\0';
                        continue;
                }

                _cleanup_free_ char *cand = NULL;
                if (asprintf(&cand, "%s%s%s", done, done[0] ? "/" : "", comp) < 0)
                        return -ENOMEM;
                _cleanup_free_ char *full = sysfs_join(root, cand);
                if (!full)
                        return -ENOMEM;

                struct stat st;
                if (lstat(full, &st) < 0)
                        return negative_errno();
                if (!S_ISLNK(st.st_mode)) {
                        free(done);
                        done = TAKE_PTR(cand);
                        continue;
                }
                if (++hops > CHASE_MAX_HOPS)
                        return -ELOOP;

                char target[PATH_MAX];
                ssize_t n = readlink(full, target, sizeof(target) - 1);
                if (n < 0)
                        return negative_errno();
                target[n] = '\0';
                _cleanup_free_ char *nt = NULL;
                if (asprintf(&nt, "%s%s", target, remaining) < 0)
                        return -ENOMEM;
                free(remaining);
                remaining = TAKE_PTR(nt);
                if (target[0] == '/')
                        done[0] = '\0';
        }
        *ret = TAKE_PTR(done);
        return 0;
}

int sysfs_read_attr(const char *root, const char *rel, char **ret)
{
        _cleanup_free_ char *path = sysfs_join(root, rel);
        _cleanup_fclose_ FILE *f = NULL;
        char buf[4096];
        size_t n;

        if (!path)
                return -ENOMEM;
        f = fopen(path, "re");
        if (!f)
                return negative_errno();
        n = fread(buf, 1, sizeof(buf) - 1, f);
        if (ferror(f))
                return -EIO;
        buf[n] = '\0';
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                buf[--n] = '\0';
        if (n == 0)
                return -EBADMSG;
        char *s = strdup(buf);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int sysfs_parse_long(const char *s, int base, long *ret)
{
        char *end;
        long v;

        if (!s || !*s)
                return -EBADMSG;
        errno = 0;
        v = strtol(s, &end, base);
        if (errno != 0 || end == s || *end != '\0')
                return -EBADMSG;
        if (base == 16 && (streq(s, "0x") || streq(s, "0X")))
                return -EBADMSG;
        *ret = v;
        return 0;
}
