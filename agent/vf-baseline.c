/* SPDX-License-Identifier: MIT */
#include "vf-baseline.h"

#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>

#include "log.h"
#include "macro.h"
#include "pci-sysfs.h"
#include "timeutil.h"

int vf_baseline_path(const char *state_dir, const char *pf, unsigned index, char **ret)
{
        if (!state_dir || !pf || !pci_address_is_valid(pf))
                return -EINVAL;
        return asprintf(ret, "%s/" VF_BASELINE_DIR "/%s-vf%u.json", state_dir, pf, index) < 0
                   ? -ENOMEM
                   : 0;
}

int vf_baseline_load(const char *state_dir, const char *pf, unsigned index, uint8_t ret[6])
{
        _cleanup_free_ char *path = NULL;
        json_error_t err;
        int r = vf_baseline_path(state_dir, pf, index, &path);
        if (r < 0)
                return r;
        json_t *o = json_load_file(path, 0, &err);
        if (!o)
                return access(path, F_OK) < 0 && errno == ENOENT ? -ENOENT : -EBADMSG;
        json_t *idx = json_object_get(o, "vf_index");
        r = streq_ptr(json_string_value(json_object_get(o, "pf")), pf) && json_is_integer(idx) &&
                    json_integer_value(idx) == (json_int_t)index
                ? vf_mac_parse(json_string_value(json_object_get(o, "mac")), ret)
                : -EINVAL;
        json_decref(o);
        return r < 0 ? -EBADMSG : 0;
}

int vf_baseline_recorded(const char *state_dir, const char *pf, unsigned index)
{
        _cleanup_free_ char *path = NULL;
        int r = vf_baseline_path(state_dir, pf, index, &path);
        if (r < 0)
                return r;
        if (access(path, F_OK) < 0)
                return errno == ENOENT ? 0 : negative_errno();
        return 1;
}

static int fsync_dir(const char *dir)
{
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return negative_errno();
        return 0;
}

/* Writes the record to a temporary file, syncs it, and links it into place:
 * 1 when linked, 0 when a record was there already (never replaced). */
static int record(const char *state_dir, const char *pf, unsigned index, const uint8_t mac[6])
{
        _cleanup_free_ char *dir = NULL, *path = NULL, *tmp = NULL;
        char m[18], ts[RFC3339_MAX];
        int r;

        if ((r = vf_baseline_path(state_dir, pf, index, &path)) < 0)
                return r;
        if (asprintf(&dir, "%s/" VF_BASELINE_DIR, state_dir) < 0 ||
            asprintf(&tmp, "%s.%d.tmp", path, (int)getpid()) < 0)
                return -ENOMEM;
        if ((mkdir(state_dir, 0700) < 0 && errno != EEXIST) ||
            (mkdir(dir, 0700) < 0 && errno != EEXIST))
                return negative_errno();
        vf_mac_format(mac, m);
        format_rfc3339(now_usec(), ts, sizeof(ts));
        json_t *o = json_pack("{s:s, s:I, s:s, s:s}", "pf", pf, "vf_index", (json_int_t)index,
                              "mac", m, "recorded_at", ts);
        if (!o)
                return -ENOMEM;
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
                json_decref(o);
                return negative_errno();
        }
        r = json_dumpfd(o, fd, JSON_INDENT(2) | JSON_SORT_KEYS) < 0 ? -EIO : 0;
        json_decref(o);
        if (r == 0 && (write(fd, "\n", 1) != 1 || fsync(fd) < 0))
                r = negative_errno();
        if (r == 0)
                r = link(tmp, path) < 0 ? (errno == EEXIST ? 0 : negative_errno()) : 1;
        (void)unlink(tmp);
        if (r > 0 && fsync_dir(dir) < 0)
                r = negative_errno();
        return r;
}

int vf_baseline_first_sight(const char *state_dir, const char *pf, unsigned index,
                            const uint8_t seen[6], const VfConfig *want)
{
        uint8_t had[6];
        char m[18];
        int r = vf_baseline_load(state_dir, pf, index, had);
        if (r == -EBADMSG)
                log_warning("The VF's baseline record is unreadable, kept as it is (remove it to "
                            "record the VF's MAC again) | pf=%s vf=%u",
                            pf, index);
        if (r != -ENOENT)
                return r == -EBADMSG ? 0 : r; /* recorded (even unreadable): never replaced */
        vf_mac_format(seen, m);
        if (want && !want->keep_mac && !vf_mac_is_zero(seen) && memcmp(seen, want->mac, 6) == 0) {
                log_warning("VF already carries the MAC it is being given, with no baseline "
                            "recorded: not recording it as the VF's own (teardown will set the "
                            "zero MAC) | pf=%s vf=%u mac=%s",
                            pf, index, m);
                return 0;
        }
        r = record(state_dir, pf, index, seen);
        if (r < 0)
                return log_error_errno(r, "Cannot record the VF's baseline MAC | pf=%s vf=%u: %m",
                                       pf, index);
        if (r > 0)
                log_info("Recorded the VF's own MAC, restored at every teardown | pf=%s vf=%u "
                         "mac=%s",
                         pf, index, m);
        return r;
}

int vf_baseline_config(const char *state_dir, const char *pf, unsigned index, VfConfig *ret)
{
        vf_config_baseline(ret);
        int r = vf_baseline_load(state_dir, pf, index, ret->mac);
        if (r < 0) {
                memset(ret->mac, 0, 6);
                return log_warning_errno(r,
                                         "No baseline MAC recorded for the VF, teardown sets the "
                                         "zero MAC | pf=%s vf=%u: %m",
                                         pf, index);
        }
        return 0;
}
