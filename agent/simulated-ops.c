/* SPDX-License-Identifier: MIT */
#include "simulated-ops.h"

#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>

#include "hooks.h"
#include "log.h"
#include "macro.h"
#include "pci-sysfs.h"
#include "simulate.h"
#include "timeutil.h"
#include "vf-baseline.h"

#ifndef GPUSLICE_HOOKDIR
#define GPUSLICE_HOOKDIR "/usr/libexec/gpuslice/hooks"
#endif

#define VFIO_DRIVER "vfio-pci"

struct SimulatedHost {
        char *dir;
};

/* The errno each step fails with when a fault is injected: what the real
 * module returns in the matching situation (sriov, pci-bind, ...). */
static const int fault_errno[_SLOT_STEP_MAX] = {
    [SLOT_STEP_CREATE_VFS] = EBUSY,     [SLOT_STEP_CONFIGURE_VF] = EIO,
    [SLOT_STEP_BIND_VF] = ENXIO,        [SLOT_STEP_BIND_NVME] = ENXIO,
    [SLOT_STEP_BIND_GPU] = ENXIO,       [SLOT_STEP_START_WORKLOAD] = EPROTO,
    [SLOT_STEP_STOP_WORKLOAD] = EPROTO, [SLOT_STEP_RESET] = EOPNOTSUPP,
    [SLOT_STEP_WIPE_NVME] = EIO,        [SLOT_STEP_RESET_VF_CONFIG] = EIO,
    [SLOT_STEP_REBIND] = ENXIO,         [SLOT_STEP_DISABLE_VFS] = ETIMEDOUT,
};

static int mkdir_p0700(const char *p)
{
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        return 0;
}

int simulated_host_open(const char *state_dir, SimulatedHost **ret)
{
        _cleanup_free_ char *dir = NULL, *slots = NULL, *nics = NULL;
        int r;

        if (!state_dir)
                return -EINVAL;
        if (asprintf(&dir, "%s/%s", state_dir, SIMULATED_HOST_DIR) < 0 ||
            asprintf(&slots, "%s/slots", dir) < 0 || asprintf(&nics, "%s/nics", dir) < 0)
                return log_oom();
        if ((r = mkdir_p0700(state_dir)) < 0 || (r = mkdir_p0700(dir)) < 0 ||
            (r = mkdir_p0700(slots)) < 0 || (r = mkdir_p0700(nics)) < 0)
                return log_error_errno(r, "Cannot create the simulated host's directory %s: %m",
                                       dir);
        SimulatedHost *h = calloc(1, sizeof(*h));
        if (!h)
                return log_oom();
        h->dir = TAKE_PTR(dir);
        *ret = h;
        return 0;
}

void simulated_host_free(SimulatedHost *h)
{
        if (!h)
                return;
        free(h->dir);
        free(h);
}

const char *simulated_host_dir(const SimulatedHost *h)
{
        return h->dir;
}

/* ---- names ---- */

static int parse_address(const char *a, unsigned *dom, unsigned *bus, unsigned *dev, unsigned *fn)
{
        if (!pci_address_is_valid(a) || sscanf(a, "%x:%x:%x.%x", dom, bus, dev, fn) != 4)
                return -EINVAL;
        return 0;
}

int simulated_nic_ifname(const char *pf, char **ret)
{
        unsigned dom, bus, dev, fn;
        if (parse_address(pf, &dom, &bus, &dev, &fn) < 0)
                return -EINVAL;
        return asprintf(ret, "sim-enp%us%uf%u", bus, dev, fn) < 0 ? -ENOMEM : 0;
}

int simulated_vf_address(const char *pf, unsigned index, char buf[static 16])
{
        unsigned dom, bus, dev, fn;
        if (parse_address(pf, &dom, &bus, &dev, &fn) < 0)
                return -EINVAL;
        /* VFs follow the PF's function (offset 1, stride 1), as many NICs do. */
        unsigned long n = (unsigned long)dev * 8 + fn + 1 + index;
        if (n / 8 > 31)
                return -ERANGE;
        snprintf(buf, 16, "%04x:%02x:%02lx.%lx", dom, bus, n / 8, n % 8);
        return 0;
}

int simulated_vf_hardware_mac(const char *pf, unsigned index, uint8_t ret[6])
{
        unsigned dom, bus, dev, fn;
        if (parse_address(pf, &dom, &bus, &dev, &fn) < 0 || index > 0xff)
                return -EINVAL;
        /* Universally administered (the generated ones are local), unique
         * per PF and index on one simulated host. */
        ret[0] = 0x00;
        ret[1] = 0x5a;
        ret[2] = (uint8_t)bus;
        ret[3] = (uint8_t)(dev << 3 | fn);
        ret[4] = 0x00;
        ret[5] = (uint8_t)index;
        return 0;
}

int simulated_default_hook_dir(char **ret)
{
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        const char *rel[] = {"../hooks", "../libexec/gpuslice/hooks"};
        char *p;
        if (n > 0) {
                exe[n] = 0;
                const char *dir = dirname(exe);
                for (size_t i = 0; i < ELEMENTSOF(rel); i++) {
                        if (asprintf(&p, "%s/%s", dir, rel[i]) < 0)
                                return -ENOMEM;
                        _cleanup_free_ char *hook = NULL;
                        if (asprintf(&hook, "%s/%s", p, SIMULATED_DEFAULT_HOOK) < 0) {
                                free(p);
                                return -ENOMEM;
                        }
                        if (access(hook, X_OK) == 0) {
                                char *real = realpath(p, NULL); /* no "sbin/../" in logs */
                                if (real) {
                                        free(p);
                                        p = real;
                                }
                                *ret = p;
                                return 0;
                        }
                        free(p);
                }
        }
        if (access(GPUSLICE_HOOKDIR "/" SIMULATED_DEFAULT_HOOK, X_OK) == 0) {
                p = strdup(GPUSLICE_HOOKDIR);
                if (!p)
                        return -ENOMEM;
                *ret = p;
                return 0;
        }
        return log_error_errno(-ENOENT,
                               "Cannot find the shipped hook %s (beside the binary in ../hooks "
                               "or ../libexec/gpuslice/hooks, or in %s); set hook_dir",
                               SIMULATED_DEFAULT_HOOK, GPUSLICE_HOOKDIR);
}

/* ---- faults ---- */

static void sleep_ms(unsigned ms)
{
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000 * 1000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Looks the step up in the faults file: 0 none, 1 fail, 2 hang. */
static int fault_rule(SimulatedHost *h, SlotStep step, const char *id1, const char *id2)
{
        _cleanup_free_ char *path = NULL, *line = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t cap = 0;
        int found = 0;

        if (asprintf(&path, "%s/faults", h->dir) < 0)
                return 0;
        f = fopen(path, "re");
        if (!f)
                return 0;
        while (!found && getline(&line, &cap, f) >= 0) {
                char *s = line, *e, *at;
                int kind = 1;
                if ((e = strchr(s, '#')))
                        *e = '\0';
                while (*s == ' ' || *s == '\t')
                        s++;
                e = s + strlen(s);
                while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
                        *--e = '\0';
                if (!*s)
                        continue;
                if (startswith(s, "hang:")) {
                        kind = 2;
                        s += STRLEN("hang:");
                }
                if ((at = strchr(s, '@'))) {
                        *at++ = '\0';
                        if (!streq_ptr(at, id1) && !streq_ptr(at, id2))
                                continue;
                }
                if (streq(s, slot_step_name(step)))
                        found = kind;
        }
        return found;
}

int simulated_fault(SimulatedHost *h, SlotStep step, const char *id1, const char *id2,
                    unsigned timeout_ms, char *detail, size_t detail_len)
{
        int kind = fault_rule(h, step, id1, id2);
        if (kind == 0)
                return 0;
        log_warning("Simulated host: injected fault | step=%s id=%s kind=%s simulated=true",
                    slot_step_name(step), id1 ? id1 : strempty(id2), kind == 2 ? "hang" : "fail");
        if (kind == 2) {
                sleep_ms(timeout_ms);
                snprintf(detail, detail_len,
                         "simulated fault: hang:%s in %s/faults, timed out after %u ms",
                         slot_step_name(step), h->dir, timeout_ms);
                return -ETIMEDOUT;
        }
        int e = step < _SLOT_STEP_MAX && fault_errno[step] ? fault_errno[step] : EIO;
        snprintf(detail, detail_len, "simulated fault: %s in %s/faults (%s)", slot_step_name(step),
                 h->dir, strerror(e));
        return -e;
}

/* ---- state files ---- */

static char *state_path(SimulatedHost *h, const char *kind, const char *name)
{
        char *p;
        return asprintf(&p, "%s/%s/%s.json", h->dir, kind, name) < 0 ? NULL : p;
}

static json_t *state_load(SimulatedHost *h, const char *kind, const char *name)
{
        _cleanup_free_ char *p = state_path(h, kind, name);
        json_t *o = p ? json_load_file(p, 0, NULL) : NULL;
        if (o && !json_is_object(o)) {
                json_decref(o);
                o = NULL;
        }
        return o ? o : json_object();
}

static int state_save(SimulatedHost *h, const char *kind, const char *name, json_t *o)
{
        _cleanup_free_ char *p = state_path(h, kind, name), *tmp = NULL;
        char ts[RFC3339_MAX];
        if (!p || asprintf(&tmp, "%s.tmp", p) < 0)
                return -ENOMEM;
        format_rfc3339(now_usec(), ts, sizeof(ts));
        json_object_set_new(o, "simulated", json_true());
        json_object_set_new(o, "updated_at", json_string(ts));
        if (json_dump_file(o, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) < 0)
                return -EIO;
        if (rename(tmp, p) < 0)
                return negative_errno();
        return 0;
}

static void set_str(json_t *o, const char *key, const char *v)
{
        json_object_set_new(o, key, v ? json_string(v) : json_null());
}

static void set_now(json_t *o, const char *key)
{
        char ts[RFC3339_MAX];
        format_rfc3339(now_usec(), ts, sizeof(ts));
        json_object_set_new(o, key, json_string(ts));
}

static json_t *child(json_t *o, const char *key)
{
        json_t *c = json_object_get(o, key);
        if (!json_is_object(c)) {
                c = json_object();
                json_object_set_new(o, key, c);
        }
        return c;
}

/* The entry of one function (a GPU) in the slot's "gpus" object. */
static json_t *gpu_entry(json_t *slot, const char *addr)
{
        return child(child(slot, "gpus"), addr);
}

/* ---- the steps ---- */

typedef struct Run {
        SimulatedHost *h;
        const SlotSpec *s;
        SlotReport *rep;
        json_t *slot;
        unsigned long long t0;
} Run;

static unsigned step_timeout(const SlotSpec *s)
{
        return s->step_timeout_ms ? s->step_timeout_ms : PCI_WRITE_TIMEOUT_MS_DEFAULT;
}

_printf_(4, 5) static int record(Run *run, SlotStep step, int r, const char *fmt, ...)
{
        SlotReport *rep = run->rep;
        if (rep->n_steps >= ELEMENTSOF(rep->steps))
                return r;
        SlotStepResult *res = &rep->steps[rep->n_steps++];
        res->step = step;
        res->error = r < 0 ? r : 0;
        res->ms = pci_now_ms() - run->t0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(res->detail, sizeof(res->detail), fmt, ap);
        va_end(ap);
        if (r < 0 && !rep->reason) {
                rep->reason = slot_reason_for_step(step, r);
                set_str(run->slot, "failed_step", slot_step_name(step));
                set_str(run->slot, "failed_detail", res->detail);
        }
        set_str(run->slot, "last_step", slot_step_name(step));
        (void)state_save(run->h, "slots", run->s->slot_id, run->slot);
        run->t0 = pci_now_ms();
        return r < 0 ? r : 0;
}

/* The fault check every step starts with; detail gets the sentence. */
static int fault(Run *run, SlotStep step, unsigned timeout_ms, char *detail, size_t len)
{
        return simulated_fault(run->h, step, run->s->slot_id, run->s->allocation_id, timeout_ms,
                               detail, len);
}

static void mac_string(const uint8_t m[6], char buf[static 18])
{
        snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

static void vf_config_store(json_t *vf, const VfConfig *c)
{
        char mac[18];
        static const char *const link[] = {"auto", "enable", "disable"};
        mac_string(c->mac, mac);
        set_str(vf, "mac", mac);
        json_object_set_new(vf, "vlan", json_integer(c->vlan));
        json_object_set_new(vf, "qos", json_integer(c->qos));
        json_object_set_new(vf, "spoofchk", json_boolean(c->spoofchk));
        json_object_set_new(vf, "trust", json_boolean(c->trust));
        set_str(vf, "link_state", c->link_state <= 2 ? link[c->link_state] : "unknown");
}

/* The MAC VF vf_index has now, as a PF would report it: the last one set on
 * it (the slot's record; the zero MAC too, as a real PF keeps it), else,
 * never set, its hardware MAC (nics/<pf>.json "hardware_macs": {"<index>":
 * "aa:..."} when there, else simulated_vf_hardware_mac()). */
static int current_mac(Run *run, json_t *vf, uint8_t ret[6])
{
        const SlotSpec *s = run->s;
        char key[16];
        if (vf_mac_parse(json_string_value(json_object_get(vf, "mac")), ret) >= 0)
                return 0;
        json_t *nic = state_load(run->h, "nics", s->nic_pf);
        snprintf(key, sizeof(key), "%u", s->vf_index);
        const char *hw =
            json_string_value(json_object_get(json_object_get(nic, "hardware_macs"), key));
        int r = hw ? vf_mac_parse(hw, ret) : simulated_vf_hardware_mac(s->nic_pf, s->vf_index, ret);
        json_decref(nic);
        return r;
}

/* As slot_assign(): before the VF is configured, the MAC it has is recorded
 * as its own the first time (vf-baseline.h, under the agent's state_dir).
 * 1 when recorded now, 0 when already recorded, -errno. */
static int first_sight(Run *run, json_t *vf)
{
        const SlotSpec *s = run->s;
        uint8_t mac[6];
        int r = vf_baseline_recorded(s->state_dir, s->nic_pf, s->vf_index);
        if (r != 0)
                return r < 0 ? r : 0;
        if ((r = current_mac(run, vf, mac)) < 0)
                return r;
        return vf_baseline_first_sight(s->state_dir, s->nic_pf, s->vf_index, mac, &s->vf);
}

/* The VF of the slot, when the PF has it (virtfn<index> exists). */
static int find_vf(Run *run)
{
        const SlotSpec *s = run->s;
        json_t *nic = state_load(run->h, "nics", s->nic_pf);
        json_int_t n = json_integer_value(json_object_get(nic, "num_vfs"));
        json_decref(nic);
        if (n <= (json_int_t)s->vf_index)
                return -ENOENT;
        return simulated_vf_address(s->nic_pf, s->vf_index, run->rep->vf_address);
}

static int create_vfs(Run *run, char *detail, size_t len)
{
        const SlotSpec *s = run->s;
        int r = fault(run, SLOT_STEP_CREATE_VFS, step_timeout(s), detail, len);
        if (r < 0)
                return r;
        json_t *nic = state_load(run->h, "nics", s->nic_pf);
        json_int_t n = json_integer_value(json_object_get(nic, "num_vfs"));
        json_object_set_new(nic, "pf", json_string(s->nic_pf));
        json_object_set_new(nic, "total_vfs", json_integer(SIMULATE_NIC_TOTAL_VFS));
        if (n <= (json_int_t)s->vf_index) {
                unsigned want = MAX(s->nic_num_vfs, s->vf_index + 1);
                /* As on a real PF: a non-zero count never changes from a slot. */
                if (n != 0)
                        r = -EBUSY;
                else if (want > SIMULATE_NIC_TOTAL_VFS)
                        r = -ERANGE;
                else {
                        json_object_set_new(nic, "num_vfs", json_integer(want));
                        json_object_set_new(nic, "drivers_autoprobe", json_false());
                        r = state_save(run->h, "nics", s->nic_pf, nic);
                }
        }
        json_decref(nic);
        if (r >= 0)
                r = find_vf(run);
        snprintf(detail, len, "%s: %s (simulated)", s->nic_pf,
                 r < 0 ? strerror(-r) : run->rep->vf_address);
        return r;
}

int simulated_slot_assign(SimulatedHost *h, const SlotSpec *s, SlotReport *rep)
{
        char detail[256];
        int r;

        *rep = (SlotReport){0};
        if (!s->slot_id || !s->allocation_id || !hook_id_is_valid(s->slot_id) || s->hook)
                return -EINVAL;
        Run run = {.h = h, .s = s, .rep = rep, .t0 = pci_now_ms()};
        run.slot = state_load(h, "slots", s->slot_id);
        if (!run.slot)
                return -ENOMEM;
        set_str(run.slot, "slot_id", s->slot_id);
        set_str(run.slot, "allocation_id", s->allocation_id);
        set_str(run.slot, "state", "assigning");
        json_object_del(run.slot, "failed_step");
        json_object_del(run.slot, "failed_detail");
        log_info("Simulated host: assigning a slot | slot_id=%s allocation_id=%s simulated=true",
                 s->slot_id, s->allocation_id);

        if (s->nic_pf) {
                json_t *vf = child(run.slot, "vf");
                set_str(vf, "pf", s->nic_pf);
                json_object_set_new(vf, "index", json_integer(s->vf_index));
                r = create_vfs(&run, detail, sizeof(detail));
                set_str(vf, "address", rep->vf_address[0] ? rep->vf_address : NULL);
                if ((r = record(&run, SLOT_STEP_CREATE_VFS, r, "%s", detail)) < 0)
                        goto out;

                /* The record comes first; a configure_vf fault then fails the
                 * set after it, as a crash between the two would. */
                r = first_sight(&run, vf);
                bool recorded = r > 0;
                if (r < 0)
                        snprintf(detail, sizeof(detail), "vf %u of %s: recording its own MAC: %s",
                                 s->vf_index, s->nic_pf, strerror(-r));
                else
                        r = fault(&run, SLOT_STEP_CONFIGURE_VF, step_timeout(s), detail,
                                  sizeof(detail));
                if (r == 0) {
                        /* What the kernel would refuse (multicast MAC, VLAN > 4094). */
                        VfConfig c = s->vf;
                        bool no_mac = false;
                        r = vf_config_validate(&c);
                        if (r == 0 && c.keep_mac && (r = current_mac(&run, vf, c.mac)) == 0 &&
                            vf_mac_is_zero(c.mac)) {
                                no_mac = true;
                                r = -EADDRNOTAVAIL;
                        }
                        if (r == 0) {
                                vf_config_store(vf, &c);
                                memcpy(rep->mac, c.mac, 6);
                                rep->has_mac = true;
                        }
                        char mac[18];
                        vf_mac_format(c.mac, mac);
                        snprintf(detail, sizeof(detail), "vf %u of %s: %s%s%s%s (simulated)",
                                 s->vf_index, s->nic_pf,
                                 no_mac  ? "the VF has no hardware MAC (00:00:00:00:00:00)"
                                 : r < 0 ? strerror(-r)
                                         : "ok, mac ",
                                 r < 0 ? "" : mac, r == 0 && c.keep_mac ? " (hardware)" : "",
                                 recorded ? "; its own MAC recorded as its baseline" : "");
                }
                if ((r = record(&run, SLOT_STEP_CONFIGURE_VF, r, "%s", detail)) < 0)
                        goto out;

                r = fault(&run, SLOT_STEP_BIND_VF, step_timeout(s), detail, sizeof(detail));
                if (r == 0)
                        set_str(vf, "driver", VFIO_DRIVER);
                if ((r = record(&run, SLOT_STEP_BIND_VF, r, "%s: %s", rep->vf_address,
                                r < 0 ? detail : VFIO_DRIVER " (simulated)")) < 0)
                        goto out;
        }
        if (s->nvme) {
                json_t *nvme = child(run.slot, "nvme");
                set_str(nvme, "address", s->nvme);
                r = fault(&run, SLOT_STEP_BIND_NVME, step_timeout(s), detail, sizeof(detail));
                if (r == 0) {
                        set_str(nvme, "driver", VFIO_DRIVER);
                        json_object_set_new(nvme, "wiped", json_false());
                }
                if ((r = record(&run, SLOT_STEP_BIND_NVME, r, "%s: %s", s->nvme,
                                r < 0 ? detail : VFIO_DRIVER " (simulated)")) < 0)
                        goto out;
        }
        for (size_t i = 0; i < s->n_gpus; i++) {
                r = fault(&run, SLOT_STEP_BIND_GPU, step_timeout(s), detail, sizeof(detail));
                if (r == 0)
                        set_str(gpu_entry(run.slot, s->gpus[i]), "driver", VFIO_DRIVER);
                if ((r = record(&run, SLOT_STEP_BIND_GPU, r, "%s: %s", s->gpus[i],
                                r < 0 ? detail : VFIO_DRIVER " (simulated)")) < 0)
                        goto out;
        }
        /* The workload runs outside the slot steps (the allocation's hook). */
        r = record(&run, SLOT_STEP_START_WORKLOAD, 0, "no hook");
out:
        set_str(run.slot, "state", r < 0 ? "assign_failed" : "assigned");
        if (r == 0)
                set_now(run.slot, "assigned_at");
        (void)state_save(h, "slots", s->slot_id, run.slot);
        json_decref(run.slot);
        log_info("Simulated host: slot %s | slot_id=%s allocation_id=%s reason=%s simulated=true",
                 r < 0 ? "assignment failed" : "assigned", s->slot_id, s->allocation_id,
                 strempty(rep->reason));
        return r;
}

int simulated_slot_teardown(SimulatedHost *h, const SlotSpec *s, SlotReport *rep)
{
        char detail[256];
        int r;

        *rep = (SlotReport){0};
        if (!s->slot_id || !s->allocation_id || !hook_id_is_valid(s->slot_id) || s->hook)
                return -EINVAL;
        Run run = {.h = h, .s = s, .rep = rep, .t0 = pci_now_ms()};
        run.slot = state_load(h, "slots", s->slot_id);
        if (!run.slot)
                return -ENOMEM;
        set_str(run.slot, "slot_id", s->slot_id);
        set_str(run.slot, "state", "tearing_down");
        json_object_del(run.slot, "failed_step");
        json_object_del(run.slot, "failed_detail");
        log_info("Simulated host: tearing a slot down | slot_id=%s allocation_id=%s "
                 "simulated=true",
                 s->slot_id, s->allocation_id);
        json_t *vf = s->nic_pf ? child(run.slot, "vf") : NULL;

        if (s->nic_pf && (r = find_vf(&run)) < 0) {
                r = record(&run, SLOT_STEP_STOP_WORKLOAD, r, "VF %u of %s: %s (simulated)",
                           s->vf_index, s->nic_pf, strerror(-r));
                goto out;
        }
        /* 1. The workload was stopped by the allocation's hook. */
        r = record(&run, SLOT_STEP_STOP_WORKLOAD, 0, "no hook");

        /* 2. Reset of every function. */
        const char *fns[36];
        size_t n = 0;
        for (size_t i = 0; i < s->n_gpus && n < 32; i++)
                fns[n++] = s->gpus[i];
        if (rep->vf_address[0])
                fns[n++] = rep->vf_address;
        if (s->nvme)
                fns[n++] = s->nvme;
        for (size_t i = 0; i < n; i++) {
                r = fault(&run, SLOT_STEP_RESET, step_timeout(s), detail, sizeof(detail));
                if (r == 0) {
                        json_t *resets = child(run.slot, "resets");
                        json_object_set_new(
                            resets, fns[i],
                            json_integer(json_integer_value(json_object_get(resets, fns[i])) + 1));
                }
                if ((r = record(&run, SLOT_STEP_RESET, r, "%s: %s", fns[i],
                                r < 0 ? detail : "reset (simulated)")) < 0)
                        goto out;
        }

        /* 3. The drive back to the nvme driver and wiped. */
        if (s->nvme) {
                json_t *nvme = child(run.slot, "nvme");
                set_str(nvme, "address", s->nvme);
                r = fault(&run, SLOT_STEP_WIPE_NVME,
                          s->wipe_timeout_ms ? s->wipe_timeout_ms : step_timeout(s), detail,
                          sizeof(detail));
                if (r == 0) {
                        set_str(nvme, "driver", "nvme");
                        set_str(nvme, "wipe_method", "simulated");
                        json_object_set_new(nvme, "wiped", json_true());
                        set_now(nvme, "wiped_at");
                } else
                        json_object_set_new(nvme, "wiped", json_false());
                if ((r = record(&run, SLOT_STEP_WIPE_NVME, r, "%s: %s", s->nvme,
                                r < 0 ? detail : "simulated wipe")) < 0)
                        goto out;
        }

        /* 4. VF config back to the baseline, with the VF's own MAC as first
         *    seen (zero without a record). */
        if (s->nic_pf) {
                VfConfig base;
                char mac[18];
                bool known = vf_baseline_config(s->state_dir, s->nic_pf, s->vf_index, &base) >= 0;
                vf_mac_format(base.mac, mac);
                r = fault(&run, SLOT_STEP_RESET_VF_CONFIG, step_timeout(s), detail, sizeof(detail));
                if (r == 0)
                        vf_config_store(vf, &base);
                if ((r = record(&run, SLOT_STEP_RESET_VF_CONFIG, r, "vf %u of %s: %s%s%s%s",
                                s->vf_index, s->nic_pf, r < 0 ? detail : "baseline, mac ",
                                r < 0 ? "" : mac,
                                r < 0 || known ? "" : " (no record of the VF's own MAC)",
                                r < 0 ? "" : " (simulated)")) < 0)
                        goto out;
        }

        /* 5. VF parked without a driver, GPUs where the node wants them. */
        if (rep->vf_address[0]) {
                r = fault(&run, SLOT_STEP_REBIND, step_timeout(s), detail, sizeof(detail));
                if (r == 0)
                        set_str(vf, "driver", NULL);
                if ((r = record(&run, SLOT_STEP_REBIND, r, "%s: %s", rep->vf_address,
                                r < 0 ? detail : "unbound (simulated)")) < 0)
                        goto out;
        }
        for (size_t i = 0; i < s->n_gpus; i++) {
                const char *d = s->gpu_host_driver ? s->gpu_host_driver : VFIO_DRIVER;
                r = fault(&run, SLOT_STEP_REBIND, step_timeout(s), detail, sizeof(detail));
                if (r == 0)
                        set_str(gpu_entry(run.slot, s->gpus[i]), "driver", d);
                if ((r = record(&run, SLOT_STEP_REBIND, r, "%s: %s%s", s->gpus[i],
                                r < 0 ? detail : d, r < 0 ? "" : " (simulated)")) < 0)
                        goto out;
        }
        r = 0;
out:
        set_str(run.slot, "state", r < 0 ? "teardown_failed" : "available");
        if (r == 0) {
                set_str(run.slot, "allocation_id", NULL);
                set_now(run.slot, "torn_down_at");
        }
        (void)state_save(h, "slots", s->slot_id, run.slot);
        json_decref(run.slot);
        log_info("Simulated host: slot %s | slot_id=%s allocation_id=%s reason=%s "
                 "simulated=true",
                 r < 0 ? "teardown failed" : "torn down", s->slot_id, s->allocation_id,
                 strempty(rep->reason));
        return r;
}
