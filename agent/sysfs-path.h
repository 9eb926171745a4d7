/* SPDX-License-Identifier: MIT */
#pragma once

/* Reading a sysfs tree that lives under a configurable root ("/" for the
 * live host, a snapshot directory otherwise). Symlinks are followed as if the
 * root were "/", so absolute links in a snapshot stay inside it, and a link
 * loop ends in -ELOOP instead of a hang. */

/* Resolves rel (relative to root) and returns the resolved path, relative to
 * root, without a leading slash. -ENOENT, -ELOOP, -errno. */
int sysfs_chase(const char *root, const char *rel, char **ret);

/* Reads a one-value attribute file, trailing newline removed. -ENOENT when
 * absent, -EBADMSG when empty (a truncated snapshot), -errno otherwise. */
int sysfs_read_attr(const char *root, const char *rel, char **ret);

/* Parses "0x10de" / "0x030000" / "12" / "-1"; -EBADMSG when malformed. */
int sysfs_parse_long(const char *s, int base, long *ret);

/* "root/rel" without doubled slashes; NULL on OOM. */
char *sysfs_join(const char *root, const char *rel);
