/* SPDX-License-Identifier: MIT */
#include "alloc-ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "hooks.h"
#include "log.h"
#include "macro.h"
#include "pci-bind.h"
#include "pci-sysfs.h"
#include "simulated-ops.h"
#include "sriov.h"

#define NOT_ATTEMPTED "not_attempted"

/* NULL-terminated string lists, here rather than inventory.c's strv so this
 * module links without the discovery code (tests/vm builds it alone). */
static char **list_free(char **l)
{
        for (char **i = l; i && *i; i++)
                free(*i);
        free(l);
        return NULL;
}

static void list_freep(char ***l)
{
        list_free(*l);
}

static int list_push(char ***l, const char *s)
{
        size_t n = 0;
        while (*l && (*l)[n])
                n++;
        char **m = realloc(*l, (n + 2) * sizeof(char *));
        if (!m)
                return -ENOMEM;
        *l = m;
        if (!(m[n] = strdup(s)))
                return -ENOMEM;
        m[n + 1] = NULL;
        return 0;
}

/* ---- the request ---- */

static const ProtoField assign_fields[] = {
    {"allocation_id", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_ID_MAX, false},
    {"image", PROTO_TYPE_MAP, PROTO_REQUIRED, 0, false},
    {"network", PROTO_TYPE_MAP, PROTO_REQUIRED, 0, false},
    {"ssh_keys", PROTO_TYPE_ARRAY, PROTO_REQUIRED, ALLOC_MAX_SSH_KEYS, false},
    {"slots", PROTO_TYPE_ARRAY, PROTO_REQUIRED, ALLOC_MAX_SLOTS, false},
};

static const ProtoField release_fields[] = {
    {"allocation_id", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_ID_MAX, false},
    {"slots", PROTO_TYPE_ARRAY, PROTO_REQUIRED, ALLOC_MAX_SLOTS, false},
};

static const ProtoField image_fields[] = {
    {"id", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_ID_MAX, false},
    {"name", PROTO_TYPE_STR, PROTO_REQUIRED, 256, false},
    {"source", PROTO_TYPE_STR, PROTO_REQUIRED, 4096, false},
    {"ssh_user", PROTO_TYPE_STR, PROTO_REQUIRED, 32, false},
};

static const ProtoField network_fields[] = {
    {"id", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_ID_MAX, false},
    {"vlan", PROTO_TYPE_UINT, PROTO_REQUIRED, 0, false},
    {"spoofchk", PROTO_TYPE_BOOL, PROTO_REQUIRED, 0, false},
    {"trust", PROTO_TYPE_BOOL, PROTO_REQUIRED, 0, false},
};

static const ProtoField slot_fields_assign[] = {
    {"slot_id", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_ID_MAX, false},
    {"slot_key", PROTO_TYPE_STR, PROTO_REQUIRED, 128, false},
    {"gpus", PROTO_TYPE_ARRAY, PROTO_REQUIRED, ALLOC_MAX_GPUS, false},
    {"nic", PROTO_TYPE_STR, PROTO_REQUIRED, 16, true},
    {"vf_index", PROTO_TYPE_UINT, PROTO_REQUIRED, 0, true},
    {"nvme", PROTO_TYPE_STR, PROTO_REQUIRED, 16, true},
    /* nil: the network's "hardware" MAC policy, the VF keeps its own */
    {"mac", PROTO_TYPE_STR, PROTO_REQUIRED, 17, true},
};

/* A release names the same slots; the MAC it does not need may be left out
 * (or nil). */
static const ProtoField slot_fields_release[] = {
    {"slot_id", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_ID_MAX, false},
    {"slot_key", PROTO_TYPE_STR, PROTO_REQUIRED, 128, false},
    {"gpus", PROTO_TYPE_ARRAY, PROTO_REQUIRED, ALLOC_MAX_GPUS, false},
    {"nic", PROTO_TYPE_STR, PROTO_REQUIRED, 16, true},
    {"vf_index", PROTO_TYPE_UINT, PROTO_REQUIRED, 0, true},
    {"nvme", PROTO_TYPE_STR, PROTO_REQUIRED, 16, true},
    {"mac", PROTO_TYPE_STR, PROTO_OPTIONAL, 17, true},
};

_printf_(3, 4) static int bad(char **reason, const ProtoValue *v, const char *fmt, ...)
{
        if (reason) {
                _cleanup_free_ char *msg = NULL;
                va_list ap;
                va_start(ap, fmt);
                if (vasprintf(&msg, fmt, ap) < 0)
                        msg = NULL;
                va_end(ap);
                free(*reason);
                if (asprintf(reason, "%s: %s", v->path, msg ? msg : "invalid") < 0)
                        *reason = NULL;
        }
        return -EPROTO;
}

static void alloc_slot_done(AllocSlot *s)
{
        free(s->slot_id);
        free(s->slot_key);
        list_free(s->gpus);
        free(s->nic);
        free(s->nvme);
}

AllocRequest *alloc_request_free(AllocRequest *r)
{
        if (!r)
                return NULL;
        free(r->allocation_id);
        free(r->image_id);
        free(r->image_name);
        free(r->image_source);
        free(r->ssh_user);
        free(r->network_id);
        list_free(r->ssh_keys);
        for (size_t i = 0; i < r->n_slots; i++)
                alloc_slot_done(&r->slots[i]);
        free(r->slots);
        free(r);
        return NULL;
}

/* One line of text without control characters (it goes into a file or the
 * hook's environment). */
static bool is_one_line(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 && *s != '\t')
                        return false;
        return true;
}

/* A POSIX user name, as useradd accepts it. */
static bool is_user_name(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 32 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
                return false;
        for (size_t i = 1; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
                      s[i] == '-'))
                        return false;
        return true;
}

static int get_id(const ProtoValue *map, const char *key, char **ret, char **reason)
{
        ProtoValue v;
        int r = proto_get_strdup(map, key, PROTO_REQUIRED, PROTO_ID_MAX, ret, reason);
        if (r < 0)
                return r;
        if (!hook_id_is_valid(*ret)) {
                (void)proto_lookup(map, key, PROTO_REQUIRED, &v, NULL);
                return bad(reason, &v, "not an id ([A-Za-z0-9_.-], 1-64 characters)");
        }
        return 0;
}

/* A nullable PCI address field: NULL for nil. */
static int get_pci(const ProtoValue *map, const char *key, char **ret, char **reason)
{
        ProtoValue v;
        int r = proto_lookup(map, key, PROTO_OPTIONAL, &v, reason);
        *ret = NULL;
        if (r <= 0 || proto_value_is_nil(&v))
                return r < 0 ? r : 0;
        r = proto_value_strdup(&v, 16, ret, reason);
        if (r < 0)
                return r;
        if (!pci_address_is_valid(*ret))
                return bad(reason, &v, "not a PCI address (dddd:bb:dd.f, lower case)");
        return 0;
}

static int parse_slot(AllocKind kind, const ProtoValue *v, AllocSlot *s, char **reason)
{
        ProtoValue gpus, g, vf;
        size_t n;
        int r;

        r = kind == ALLOC_ASSIGN
                ? proto_check_fields(v, slot_fields_assign, ELEMENTSOF(slot_fields_assign), reason)
                : proto_check_fields(v, slot_fields_release, ELEMENTSOF(slot_fields_release),
                                     reason);
        if (r < 0)
                return r;
        if ((r = get_id(v, "slot_id", &s->slot_id, reason)) < 0)
                return r;
        if ((r = proto_get_strdup(v, "slot_key", PROTO_REQUIRED, 128, &s->slot_key, reason)) < 0)
                return r;
        if (!s->slot_key[0] || !is_one_line(s->slot_key)) {
                (void)proto_lookup(v, "slot_key", PROTO_REQUIRED, &g, NULL);
                return bad(reason, &g, "not a slot key");
        }
        if ((r = proto_get_array(v, "gpus", PROTO_REQUIRED, ALLOC_MAX_GPUS, &gpus, &n, reason)) < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *a = NULL;
                if ((r = proto_array_at(&gpus, i, &g)) < 0 ||
                    (r = proto_value_strdup(&g, 16, &a, reason)) < 0)
                        return r == -EPROTO ? r : bad(reason, &gpus, "unreadable");
                if (!pci_address_is_valid(a))
                        return bad(reason, &g, "not a PCI address (dddd:bb:dd.f, lower case)");
                if ((r = list_push(&s->gpus, a)) < 0)
                        return r;
                s->n_gpus++;
        }
        if ((r = get_pci(v, "nic", &s->nic, reason)) < 0 ||
            (r = get_pci(v, "nvme", &s->nvme, reason)) < 0)
                return r;
        if ((r = proto_lookup(v, "vf_index", PROTO_REQUIRED, &vf, reason)) < 0)
                return r;
        if (proto_value_is_nil(&vf) != !s->nic)
                return bad(reason, &vf,
                           s->nic ? "required with a nic" : "must be nil without a nic");
        if (s->nic) {
                uint64_t idx;
                if ((r = proto_value_uint(&vf, &idx, reason)) < 0)
                        return r;
                if (idx >= 256)
                        return bad(reason, &vf, "out of range (0-255)");
                s->vf_index = (unsigned)idx;
        }
        if (proto_lookup(v, "mac", PROTO_OPTIONAL, &g, NULL) == 1 && !proto_value_is_nil(&g)) {
                char mac[18];
                VfConfig c = {.spoofchk = true};
                if ((r = proto_value_str(&g, mac, sizeof(mac), reason)) < 0)
                        return r;
                if (vf_mac_parse(mac, c.mac) < 0 || vf_config_validate(&c) < 0 ||
                    memcmp(c.mac, (uint8_t[6]){0}, 6) == 0)
                        return bad(reason, &g, "not a unicast MAC address (aa:bb:cc:dd:ee:ff)");
                memcpy(s->mac, c.mac, 6);
                s->has_mac = true;
        }
        if (s->n_gpus == 0 && !s->nic && !s->nvme)
                return bad(reason, v, "a slot without any device");
        return 0;
}

/* No function, and no VF of a PF, in two slots of the command. */
static int check_distinct(const AllocRequest *req, const ProtoValue *slots, char **reason)
{
        _cleanup_(list_freep) char **seen = NULL;
        for (size_t i = 0; i < req->n_slots; i++) {
                const AllocSlot *s = &req->slots[i];
                _cleanup_(list_freep) char **mine = NULL;
                char vf[32];
                ProtoValue v;
                if (proto_array_at(slots, i, &v) < 0)
                        return -EPROTO;
                int r = list_push(&mine, s->slot_id);
                for (size_t k = 0; r >= 0 && k < s->n_gpus; k++)
                        r = list_push(&mine, s->gpus[k]);
                if (r >= 0 && s->nvme)
                        r = list_push(&mine, s->nvme);
                if (r >= 0 && s->nic) {
                        snprintf(vf, sizeof(vf), "%s vf %u", s->nic, s->vf_index);
                        r = list_push(&mine, vf);
                }
                if (r < 0)
                        return r;
                for (char **m = mine; *m; m++) {
                        for (char **o = seen; o && *o; o++)
                                if (streq(*o, *m))
                                        return bad(reason, &v, "%s appears twice in the command",
                                                   *m);
                        if ((r = list_push(&seen, *m)) < 0)
                                return r;
                }
        }
        return 0;
}

int alloc_request_parse(AllocKind kind, const ProtoValue *body, AllocRequest **ret, char **reason)
{
        _cleanup_(alloc_request_freep) AllocRequest *req = calloc(1, sizeof(*req));
        ProtoValue image, network, keys, slots, v;
        size_t n;
        int r;

        if (!req)
                return -ENOMEM;
        req->kind = kind;
        r = kind == ALLOC_ASSIGN
                ? proto_check_fields(body, assign_fields, ELEMENTSOF(assign_fields), reason)
                : proto_check_fields(body, release_fields, ELEMENTSOF(release_fields), reason);
        if (r < 0)
                return r;
        if ((r = get_id(body, "allocation_id", &req->allocation_id, reason)) < 0)
                return r;

        if (kind == ALLOC_ASSIGN) {
                if ((r = proto_get_map(body, "image", PROTO_REQUIRED, 0, &image, reason)) < 0 ||
                    (r = proto_check_fields(&image, image_fields, ELEMENTSOF(image_fields),
                                            reason)) < 0 ||
                    (r = get_id(&image, "id", &req->image_id, reason)) < 0 ||
                    (r = proto_get_strdup(&image, "name", PROTO_REQUIRED, 256, &req->image_name,
                                          reason)) < 0 ||
                    (r = proto_get_strdup(&image, "source", PROTO_REQUIRED, 4096,
                                          &req->image_source, reason)) < 0 ||
                    (r = proto_get_strdup(&image, "ssh_user", PROTO_REQUIRED, 32, &req->ssh_user,
                                          reason)) < 0)
                        return r;
                if (!is_one_line(req->image_name) || !is_one_line(req->image_source)) {
                        (void)proto_lookup(&image, is_one_line(req->image_name) ? "source" : "name",
                                           PROTO_REQUIRED, &v, NULL);
                        return bad(reason, &v, "control characters");
                }
                if (!is_user_name(req->ssh_user)) {
                        (void)proto_lookup(&image, "ssh_user", PROTO_REQUIRED, &v, NULL);
                        return bad(reason, &v, "not a user name ([a-z_][a-z0-9_-]*, 1-32)");
                }

                uint64_t vlan;
                if ((r = proto_get_map(body, "network", PROTO_REQUIRED, 0, &network, reason)) < 0 ||
                    (r = proto_check_fields(&network, network_fields, ELEMENTSOF(network_fields),
                                            reason)) < 0 ||
                    (r = get_id(&network, "id", &req->network_id, reason)) < 0 ||
                    (r = proto_get_uint(&network, "vlan", PROTO_REQUIRED, &vlan, reason)) < 0 ||
                    (r = proto_get_bool(&network, "spoofchk", PROTO_REQUIRED, &req->spoofchk,
                                        reason)) < 0 ||
                    (r = proto_get_bool(&network, "trust", PROTO_REQUIRED, &req->trust, reason)) <
                        0)
                        return r;
                if (vlan > 4094) {
                        (void)proto_lookup(&network, "vlan", PROTO_REQUIRED, &v, NULL);
                        return bad(reason, &v, "out of range (0-4094, 0 = untagged)");
                }
                req->vlan = (unsigned)vlan;

                if ((r = proto_get_array(body, "ssh_keys", PROTO_REQUIRED, ALLOC_MAX_SSH_KEYS,
                                         &keys, &n, reason)) < 0)
                        return r;
                if (!(req->ssh_keys = calloc(1, sizeof(char *))))
                        return -ENOMEM;
                for (size_t i = 0; i < n; i++) {
                        _cleanup_free_ char *k = NULL;
                        if ((r = proto_array_at(&keys, i, &v)) < 0 ||
                            (r = proto_value_strdup(&v, ALLOC_SSH_KEY_MAX, &k, reason)) < 0)
                                return r == -EPROTO ? r : bad(reason, &keys, "unreadable");
                        if (!k[0] || !is_one_line(k) || !strchr(k, ' '))
                                return bad(reason, &v, "not an OpenSSH public key line");
                        if ((r = list_push(&req->ssh_keys, k)) < 0)
                                return r;
                }
        }

        if ((r = proto_get_array(body, "slots", PROTO_REQUIRED, ALLOC_MAX_SLOTS, &slots, &n,
                                 reason)) < 0)
                return r;
        if (n == 0)
                return bad(reason, &slots, "an allocation has at least one slot");
        req->slots = calloc(n, sizeof(AllocSlot));
        if (!req->slots)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if ((r = proto_array_at(&slots, i, &v)) < 0)
                        return bad(reason, &slots, "unreadable");
                req->n_slots++;
                if ((r = parse_slot(kind, &v, &req->slots[i], reason)) < 0)
                        return r;
        }
        if ((r = check_distinct(req, &slots, reason)) < 0)
                return r;
        *ret = TAKE_PTR(req);
        return 0;
}

/* ---- the host ---- */

struct AllocHost {
        pthread_mutex_t lock;
        bool simulated;
        SimulatedHost *sim;
        char *root, *hook_dir, *hook, *runtime_dir, *public_address, *gpu_host_driver;
        char *state_dir; /* the VFs' baseline MACs (vf-baseline.h) */
        unsigned step_timeout_ms, hook_timeout_ms, wipe_timeout_ms;
        AllocVfPlan *vf_plan; /* pf strings owned */
        size_t n_vf_plan;
};

static int strdup_or_null(const char *s, char **ret)
{
        *ret = NULL;
        if (s && !(*ret = strdup(s)))
                return -ENOMEM;
        return 0;
}

int alloc_host_new(const AllocHostOptions *o, AllocHost **ret)
{
        _cleanup_(alloc_host_freep) AllocHost *h = calloc(1, sizeof(*h));
        int r;

        if (!h)
                return log_oom();
        pthread_mutex_init(&h->lock, NULL);
        if (!o->state_dir || !o->hook_dir)
                return -EINVAL;
        h->simulated = o->simulated;
        h->step_timeout_ms = o->step_timeout_ms ? o->step_timeout_ms : 30000;
        h->hook_timeout_ms = o->hook_timeout_ms ? o->hook_timeout_ms : 300000;
        h->wipe_timeout_ms = o->wipe_timeout_ms ? o->wipe_timeout_ms : 3600000;
        if (o->hook && !hook_id_is_valid(o->hook))
                return log_error_errno(-EINVAL, "hook must be a file name in hook_dir, not '%s'",
                                       o->hook);
        if (strdup_or_null(o->root ? o->root : "/", &h->root) < 0 ||
            strdup_or_null(o->state_dir, &h->state_dir) < 0 ||
            strdup_or_null(o->hook_dir, &h->hook_dir) < 0 ||
            strdup_or_null(o->hook, &h->hook) < 0 ||
            strdup_or_null(o->public_address, &h->public_address) < 0 ||
            strdup_or_null(o->gpu_host_driver, &h->gpu_host_driver) < 0)
                return log_oom();
        if (o->runtime_dir)
                r = strdup_or_null(o->runtime_dir, &h->runtime_dir);
        else
                r = asprintf(&h->runtime_dir, "%s/runtime", o->state_dir) < 0 ? -ENOMEM : 0;
        if (r < 0)
                return log_oom();
        if (o->n_vf_plan > 0 && !(h->vf_plan = calloc(o->n_vf_plan, sizeof(AllocVfPlan))))
                return log_oom();
        for (size_t i = 0; i < o->n_vf_plan; i++, h->n_vf_plan++)
                if (!(h->vf_plan[i].pf = strdup(o->vf_plan[i].pf)))
                        return log_oom();
                else
                        h->vf_plan[i].num_vfs = o->vf_plan[i].num_vfs;
        if (o->simulated && (r = simulated_host_open(o->state_dir, &h->sim)) < 0)
                return r;
        *ret = TAKE_PTR(h);
        return 0;
}

AllocHost *alloc_host_free(AllocHost *h)
{
        if (!h)
                return NULL;
        simulated_host_free(h->sim);
        free(h->root);
        free(h->state_dir);
        free(h->hook_dir);
        free(h->hook);
        free(h->runtime_dir);
        free(h->public_address);
        free(h->gpu_host_driver);
        for (size_t i = 0; i < h->n_vf_plan; i++)
                free((char *)h->vf_plan[i].pf);
        free(h->vf_plan);
        pthread_mutex_destroy(&h->lock);
        free(h);
        return NULL;
}

void alloc_host_hook(const AllocHost *h, const char **ret_hook_dir, const char **ret_hook,
                     const char **ret_runtime_dir)
{
        *ret_hook_dir = h->hook_dir;
        *ret_hook = h->hook;
        *ret_runtime_dir = h->runtime_dir;
}

/* The node's planned VF count of pf (from its slot map), at least at_least. */
static unsigned planned_vfs(const AllocHost *h, const char *pf, unsigned at_least)
{
        for (size_t i = 0; i < h->n_vf_plan; i++)
                if (streq(h->vf_plan[i].pf, pf))
                        return MAX(h->vf_plan[i].num_vfs, at_least);
        return at_least;
}

/* The netdev of a NIC PF (the first entry of its net/ directory). */
static int nic_ifname(AllocHost *h, const char *pf, char **ret)
{
        if (h->simulated)
                return simulated_nic_ifname(pf, ret);
        _cleanup_free_ char *path = pci_device_path(h->root, pf, "net");
        if (!path)
                return -ENOMEM;
        DIR *d = opendir(path);
        if (!d)
                return negative_errno();
        struct dirent *de;
        int r = -ENODEV;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                        *ret = strdup(de->d_name);
                        r = *ret ? 0 : -ENOMEM;
                        break;
                }
        closedir(d);
        return r;
}

static void slot_spec(AllocHost *h, const AllocRequest *req, const AllocSlot *s, char *ifname,
                      SlotSpec *spec)
{
        *spec = (SlotSpec){
            .root = h->root,
            .slot_id = s->slot_id,
            .allocation_id = req->allocation_id,
            .gpus = (const char *const *)s->gpus,
            .n_gpus = s->n_gpus,
            .gpu_host_driver = h->gpu_host_driver,
            .nic_pf = s->nic,
            .nic_ifname = ifname,
            .nic_num_vfs = s->nic ? planned_vfs(h, s->nic, s->vf_index + 1) : 0,
            .vf_index = s->vf_index,
            .state_dir = h->state_dir,
            .nvme = s->nvme,
            .hook_dir = h->hook_dir,
            .hook = NULL, /* the allocation's hook runs once, outside the slots */
            .runtime_dir = h->runtime_dir,
            .step_timeout_ms = h->step_timeout_ms,
            .wipe_timeout_ms = h->wipe_timeout_ms,
        };
        memcpy(spec->vf.mac, s->mac, 6);
        spec->vf.keep_mac = !s->has_mac;
        spec->vf.vlan = req->vlan;
        spec->vf.spoofchk = req->spoofchk;
        spec->vf.trust = req->trust;
        spec->vf.link_state = VF_LINK_STATE_ENABLE;
}

static void result_init(AllocResult *ret, const AllocRequest *req)
{
        *ret = (AllocResult){.kind = req->kind, .allocation_id = req->allocation_id};
}

void alloc_result_done(AllocResult *r)
{
        free(r->slots);
        free(r->conn_host);
        free(r->conn_user);
        free(r->error_message);
        *r = (AllocResult){0};
}

_printf_(3, 4) static void fail_first(AllocResult *ret, const char *code, const char *fmt, ...)
{
        if (ret->error_code)
                return;
        ret->error_code = code;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&ret->error_message, fmt, ap) < 0)
                ret->error_message = NULL;
        va_end(ap);
}

static const SlotStepResult *failed_step(const SlotReport *rep)
{
        for (size_t i = 0; i < rep->n_steps; i++)
                if (rep->steps[i].error < 0)
                        return &rep->steps[i];
        return NULL;
}

/* ---- the workload hook ---- */

typedef struct HookArgs {
        const char *devs[ALLOC_MAX_SLOTS * (ALLOC_MAX_GPUS + 2)];
        size_t n_devs;
        char vf[ALLOC_MAX_SLOTS][16];
        char *groups[ALLOC_MAX_SLOTS * (ALLOC_MAX_GPUS + 2)];
        size_t n_groups;
        char *env[8];
        size_t n_env;
        char *runtime_dir;
} HookArgs;

static void hook_args_done(HookArgs *a)
{
        for (size_t i = 0; i < a->n_groups; i++)
                free(a->groups[i]);
        for (size_t i = 0; i < a->n_env; i++)
                free(a->env[i]);
        free(a->runtime_dir);
}

_printf_(2, 3) static int add_env(HookArgs *a, const char *fmt, ...)
{
        if (a->n_env >= ELEMENTSOF(a->env))
                return -E2BIG;
        va_list ap;
        va_start(ap, fmt);
        int r = vasprintf(&a->env[a->n_env], fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        a->n_env++;
        return 0;
}

static int add_group(AllocHost *h, HookArgs *a, const char *addr)
{
        _cleanup_free_ char *g = NULL, *path = NULL;
        if (h->simulated || pci_iommu_group(h->root, addr, &g) < 0)
                return 0; /* no IOMMU group to name: the hook finds none */
        if (asprintf(&path, "/dev/vfio/%s", g) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < a->n_groups; i++)
                if (streq(a->groups[i], path))
                        return 0;
        a->groups[a->n_groups++] = TAKE_PTR(path);
        return 0;
}

/* The devices of every slot, in slot order: GPUs, the VF, the NVMe drive. */
static int hook_args(AllocHost *h, const AllocRequest *req, HookArgs *a)
{
        int r;
        for (size_t i = 0; i < req->n_slots; i++) {
                const AllocSlot *s = &req->slots[i];
                for (size_t k = 0; k < s->n_gpus; k++)
                        a->devs[a->n_devs++] = s->gpus[k];
                if (s->nic) {
                        _cleanup_free_ char *vf = NULL;
                        if (h->simulated)
                                r = simulated_vf_address(s->nic, s->vf_index, a->vf[i]);
                        else if ((r = sriov_vf_address(h->root, s->nic, s->vf_index, &vf)) >= 0)
                                snprintf(a->vf[i], sizeof(a->vf[i]), "%s", vf);
                        if (r >= 0)
                                a->devs[a->n_devs++] = a->vf[i];
                }
                if (s->nvme)
                        a->devs[a->n_devs++] = s->nvme;
        }
        for (size_t i = 0; i < a->n_devs; i++)
                if ((r = add_group(h, a, a->devs[i])) < 0)
                        return r;
        if (asprintf(&a->runtime_dir, "%s/%s", h->runtime_dir, req->allocation_id) < 0) {
                a->runtime_dir = NULL;
                return -ENOMEM;
        }
        size_t len = 1;
        for (size_t i = 0; i < req->n_slots; i++)
                len += strlen(req->slots[i].slot_id) + 1;
        _cleanup_free_ char *ids = calloc(1, len);
        if (!ids)
                return -ENOMEM;
        for (size_t i = 0; i < req->n_slots; i++) {
                if (i)
                        strcat(ids, " ");
                strcat(ids, req->slots[i].slot_id);
        }
        return add_env(a, "GPUSLICE_SLOT_IDS=%s", ids);
}

static int mkdir_0700(const char *p)
{
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        return 0;
}

/* <runtime_dir>/authorized_keys, written whole (0600) and renamed in place. */
static int write_authorized_keys(const char *dir, char *const *keys, char **ret_path)
{
        _cleanup_free_ char *path = NULL, *tmp = NULL;
        if (asprintf(&path, "%s/authorized_keys", dir) < 0 ||
            asprintf(&tmp, "%s/.authorized_keys.tmp", dir) < 0)
                return -ENOMEM;
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return negative_errno();
        _cleanup_fclose_ FILE *f = fdopen(TAKE_FD(fd), "w");
        if (!f)
                return negative_errno();
        for (char *const *k = keys; k && *k; k++)
                fprintf(f, "%s\n", *k);
        if (fflush(f) != 0 || fsync(fileno(f)) < 0)
                return negative_errno();
        if (rename(tmp, path) < 0)
                return negative_errno();
        *ret_path = TAKE_PTR(path);
        return 0;
}

/* Where the tenant connects, from the hook's start output: the last line
 * that is a JSON object with "ssh". Missing fields keep their defaults. */
static void parse_connection(const char *out, AllocResult *ret)
{
        _cleanup_free_ char *copy = strdup(out ? out : "");
        json_t *ssh = NULL, *doc = NULL;
        char *save = NULL;
        if (!copy)
                return;
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                json_t *d = line[0] == '{' ? json_loads(line, 0, NULL) : NULL;
                if (d && json_is_object(json_object_get(d, "ssh"))) {
                        json_decref(doc);
                        doc = d;
                } else
                        json_decref(d);
        }
        if (!doc) {
                if (out && out[0])
                        log_warning("The hook's start printed no {\"ssh\":{...}} object; the "
                                    "connection is the node's default");
                return;
        }
        ssh = json_object_get(doc, "ssh");
        const char *host = json_string_value(json_object_get(ssh, "host"));
        const char *user = json_string_value(json_object_get(ssh, "user"));
        json_t *port = json_object_get(ssh, "port");
        if (host && host[0] && strlen(host) <= 253 && is_one_line(host) && !strchr(host, ' ')) {
                char *d = strdup(host);
                if (d) {
                        free(ret->conn_host);
                        ret->conn_host = d;
                }
        }
        if (user && is_user_name(user)) {
                char *d = strdup(user);
                if (d) {
                        free(ret->conn_user);
                        ret->conn_user = d;
                }
        }
        if (json_is_integer(port) && json_integer_value(port) > 0 &&
            json_integer_value(port) <= 65535)
                ret->conn_port = (unsigned)json_integer_value(port);
        json_decref(doc);
}

static int default_connection(AllocHost *h, const AllocRequest *req, AllocResult *ret)
{
        char host[256] = "";
        if (h->public_address)
                snprintf(host, sizeof(host), "%s", h->public_address);
        else if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
                snprintf(host, sizeof(host), "localhost");
        ret->conn_host = strdup(host);
        ret->conn_user = strdup(req->ssh_user ? req->ssh_user : "root");
        ret->conn_port = ALLOC_SSH_PORT;
        ret->has_connection = true;
        return ret->conn_host && ret->conn_user ? 0 : -ENOMEM;
}

/* Runs the hook's verb for the allocation; on a simulated host the fault
 * rules of the matching step apply first. */
static int run_workload_hook(AllocHost *h, const AllocRequest *req, HookVerb verb, HookArgs *a,
                             char **ret_out, char *detail, size_t len)
{
        SlotStep step = verb == HOOK_START ? SLOT_STEP_START_WORKLOAD : SLOT_STEP_STOP_WORKLOAD;
        HookResult res = {0};
        int r;

        if (h->sim) {
                r = simulated_fault(h->sim, step, req->allocation_id, req->slots[0].slot_id,
                                    h->hook_timeout_ms, detail, len);
                if (r < 0)
                        return r;
        }
        HookContext ctx = {
            .slot_id = req->slots[0].slot_id,
            .allocation_id = req->allocation_id,
            .vfio_devices = a->devs,
            .n_vfio_devices = a->n_devs,
            .vfio_groups = (const char *const *)a->groups,
            .n_vfio_groups = a->n_groups,
            .runtime_dir = a->runtime_dir,
            .env = (const char *const *)a->env,
            .n_env = a->n_env,
        };
        r = hook_run(h->hook_dir, h->hook, verb, &ctx, h->hook_timeout_ms, &res);
        snprintf(detail, len, "hook %s %s: %s (exit %d)%s", h->hook, hook_verb_name(verb),
                 r == 0 ? "ok" : strerror(-r), res.exit_code, h->sim ? " (simulated host)" : "");
        if (ret_out)
                *ret_out = TAKE_PTR(res.out);
        hook_result_done(&res);
        return r;
}

/* ---- assign ---- */

int alloc_assign(AllocHost *h, const AllocRequest *req, AllocResult *ret)
{
        _cleanup_(hook_args_done) HookArgs args = {0};
        unsigned long long t0 = pci_now_ms();
        char detail[512];
        int r;

        result_init(ret, req);
        if (req->kind != ALLOC_ASSIGN)
                return -EINVAL;
        ret->slots = calloc(req->n_slots, sizeof(AllocSlotResult));
        if (!ret->slots)
                return -ENOMEM;
        ret->n_slots = req->n_slots;
        ret->workload_reason = NOT_ATTEMPTED;

        pthread_mutex_lock(&h->lock);
        log_info("Assigning an allocation | allocation_id=%s slots=%zu simulated=%s",
                 req->allocation_id, req->n_slots, h->simulated ? "true" : "false");
        bool slots_ok = true;
        for (size_t i = 0; i < req->n_slots; i++) {
                const AllocSlot *s = &req->slots[i];
                AllocSlotResult *sr = &ret->slots[i];
                _cleanup_free_ char *ifname = NULL;
                SlotSpec spec;

                sr->slot_id = s->slot_id;
                if (!slots_ok) {
                        sr->reason = NOT_ATTEMPTED;
                        continue;
                }
                if (s->nic && (r = nic_ifname(h, s->nic, &ifname)) < 0)
                        log_warning_errno(r, "No netdev for NIC %s: %m", s->nic);
                slot_spec(h, req, s, ifname, &spec);
                sr->attempted = true;
                sr->error = h->sim ? simulated_slot_assign(h->sim, &spec, &sr->report)
                                   : slot_assign(&spec, &sr->report);
                if (sr->error < 0) {
                        const SlotStepResult *f = failed_step(&sr->report);
                        sr->reason =
                            sr->report.reason ? sr->report.reason : "host_operation_failed";
                        fail_first(ret, sr->reason, "slot %s: %s%s%s", s->slot_id,
                                   f ? slot_step_name(f->step) : strerror(-sr->error),
                                   f ? ": " : "", f ? f->detail : "");
                        slots_ok = false;
                }
        }

        if (slots_ok && !h->hook) {
                ret->workload_ok = true;
                ret->workload_reason = NULL;
        } else if (slots_ok) {
                unsigned long long w0 = pci_now_ms();
                _cleanup_free_ char *out = NULL, *keys = NULL;
                r = hook_args(h, req, &args);
                if (r >= 0 && (r = mkdir_0700(h->runtime_dir)) >= 0 &&
                    (r = mkdir_0700(args.runtime_dir)) >= 0 &&
                    (r = write_authorized_keys(args.runtime_dir, req->ssh_keys, &keys)) >= 0 &&
                    (r = add_env(&args, "GPUSLICE_SSH_AUTHORIZED_KEYS=%s", keys)) >= 0 &&
                    (r = add_env(&args, "GPUSLICE_SSH_USER=%s", req->ssh_user)) >= 0 &&
                    (r = add_env(&args, "GPUSLICE_IMAGE_ID=%s", req->image_id)) >= 0 &&
                    (r = add_env(&args, "GPUSLICE_IMAGE_NAME=%s", req->image_name)) >= 0 &&
                    (r = add_env(&args, "GPUSLICE_IMAGE_SOURCE=%s", req->image_source)) >= 0)
                        r = run_workload_hook(h, req, HOOK_START, &args, &out, detail,
                                              sizeof(detail));
                else
                        snprintf(detail, sizeof(detail), "preparing %s: %s",
                                 strempty(args.runtime_dir), strerror(-r));
                ret->workload_ms = pci_now_ms() - w0;
                ret->workload_ok = r >= 0;
                ret->workload_reason =
                    r < 0 ? slot_reason_for_step(SLOT_STEP_START_WORKLOAD, r) : NULL;
                if (r < 0)
                        fail_first(ret, ret->workload_reason, "workload: %s", detail);
                else if (default_connection(h, req, ret) >= 0)
                        parse_connection(out, ret);
        }
        pthread_mutex_unlock(&h->lock);

        if (ret->error_code)
                log_warning("Allocation not assigned | allocation_id=%s reason=%s detail=\"%s\" "
                            "ms=%llu simulated=%s",
                            req->allocation_id, ret->error_code, strempty(ret->error_message),
                            pci_now_ms() - t0, h->simulated ? "true" : "false");
        else {
                if (!ret->has_connection && default_connection(h, req, ret) < 0)
                        return -ENOMEM;
                log_info("Allocation assigned | allocation_id=%s slots=%zu ssh=%s@%s:%u ms=%llu "
                         "simulated=%s",
                         req->allocation_id, req->n_slots, ret->conn_user, ret->conn_host,
                         ret->conn_port, pci_now_ms() - t0, h->simulated ? "true" : "false");
        }
        return 0;
}

/* ---- release ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)ftw;
        if ((flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT)
                return -1;
        return 0;
}

static int remove_tree(const char *path)
{
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : negative_errno();
        if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
                return negative_errno();
        return 0;
}

int alloc_release(AllocHost *h, const AllocRequest *req, AllocResult *ret)
{
        _cleanup_(hook_args_done) HookArgs args = {0};
        unsigned long long t0 = pci_now_ms();
        char detail[512];
        int r = 0;

        result_init(ret, req);
        if (req->kind != ALLOC_RELEASE)
                return -EINVAL;
        ret->slots = calloc(req->n_slots, sizeof(AllocSlotResult));
        if (!ret->slots)
                return -ENOMEM;
        ret->n_slots = req->n_slots;

        pthread_mutex_lock(&h->lock);
        log_info("Releasing an allocation | allocation_id=%s slots=%zu simulated=%s",
                 req->allocation_id, req->n_slots, h->simulated ? "true" : "false");
        ret->workload_ok = true;
        if (h->hook) {
                unsigned long long w0 = pci_now_ms();
                r = hook_args(h, req, &args);
                if (r >= 0)
                        r = run_workload_hook(h, req, HOOK_STOP, &args, NULL, detail,
                                              sizeof(detail));
                else
                        snprintf(detail, sizeof(detail), "%s", strerror(-r));
                ret->workload_ms = pci_now_ms() - w0;
                ret->workload_ok = r >= 0;
                if (r < 0) {
                        ret->workload_reason = slot_reason_for_step(SLOT_STEP_STOP_WORKLOAD, r);
                        fail_first(ret, ret->workload_reason,
                                   "workload: %s; nothing was torn down (the workload may still "
                                   "hold the devices)",
                                   detail);
                } else if ((r = remove_tree(args.runtime_dir)) < 0)
                        log_warning_errno(r, "Cannot remove %s: %m", args.runtime_dir);
        }

        for (size_t i = 0; i < req->n_slots; i++) {
                const AllocSlot *s = &req->slots[i];
                AllocSlotResult *sr = &ret->slots[i];
                _cleanup_free_ char *ifname = NULL;
                SlotSpec spec;

                sr->slot_id = s->slot_id;
                if (!ret->workload_ok) {
                        sr->error = -EBUSY;
                        sr->reason = ret->workload_reason;
                        continue;
                }
                if (s->nic && (r = nic_ifname(h, s->nic, &ifname)) < 0)
                        log_warning_errno(r, "No netdev for NIC %s: %m", s->nic);
                slot_spec(h, req, s, ifname, &spec);
                sr->attempted = true;
                /* A failing slot does not keep the others from being cleaned. */
                sr->error = h->sim ? simulated_slot_teardown(h->sim, &spec, &sr->report)
                                   : slot_teardown(&spec, &sr->report);
                if (sr->error < 0) {
                        const SlotStepResult *f = failed_step(&sr->report);
                        sr->reason =
                            sr->report.reason ? sr->report.reason : "host_operation_failed";
                        fail_first(ret, sr->reason, "slot %s: %s%s%s", s->slot_id,
                                   f ? slot_step_name(f->step) : strerror(-sr->error),
                                   f ? ": " : "", f ? f->detail : "");
                } else
                        sr->wipe_method = !s->nvme       ? "none"
                                          : h->simulated ? "simulated"
                                                         : nvme_wipe_method_name(sr->report.wipe);
        }
        pthread_mutex_unlock(&h->lock);

        size_t clean = 0;
        for (size_t i = 0; i < ret->n_slots; i++)
                clean += ret->slots[i].error == 0;
        if (ret->error_code)
                log_warning("Allocation release failed | allocation_id=%s reason=%s "
                            "detail=\"%s\" clean_slots=%zu/%zu ms=%llu simulated=%s",
                            req->allocation_id, ret->error_code, strempty(ret->error_message),
                            clean, ret->n_slots, pci_now_ms() - t0,
                            h->simulated ? "true" : "false");
        else
                log_info("Allocation released | allocation_id=%s slots=%zu ms=%llu simulated=%s",
                         req->allocation_id, ret->n_slots, pci_now_ms() - t0,
                         h->simulated ? "true" : "false");
        return 0;
}

/* ---- the reply ---- */

static void write_opt_str(ProtoWriter *w, const char *key, const char *v)
{
        proto_write_key(w, key);
        if (v)
                proto_write_str(w, v);
        else
                proto_write_nil(w);
}

/* The per-slot "start/stop workload: no hook" entries say nothing: the
 * allocation's workload has its own entry. */
static bool step_is_noise(const SlotStepResult *st)
{
        return (st->step == SLOT_STEP_START_WORKLOAD || st->step == SLOT_STEP_STOP_WORKLOAD) &&
               st->error == 0 && streq(st->detail, "no hook");
}

int alloc_reply_body(const char *command_id, const AllocResult *r, void **ret, size_t *ret_len)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        const void *p;
        size_t n;

        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "command_id", command_id);
        proto_write_kv_bool(&w, "ok", !r->error_code);
        proto_write_key(&w, "result");
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "allocation_id", r->allocation_id);
        proto_write_key(&w, "slots");
        proto_write_array_begin(&w);
        for (size_t i = 0; i < r->n_slots; i++) {
                const AllocSlotResult *s = &r->slots[i];
                proto_write_map_begin(&w);
                proto_write_kv_str(&w, "slot_id", s->slot_id);
                proto_write_kv_bool(&w, "ok", s->attempted && s->error == 0);
                write_opt_str(&w, "reason", s->reason);
                write_opt_str(&w, "vf_address",
                              s->report.vf_address[0] ? s->report.vf_address : NULL);
                write_opt_str(&w, "wipe_method", r->kind == ALLOC_RELEASE ? s->wipe_method : NULL);
                if (r->kind == ALLOC_ASSIGN) {
                        /* The MAC in force: the controller's, or the VF's own. */
                        char mac[18];
                        vf_mac_format(s->report.mac, mac);
                        write_opt_str(&w, "mac", s->report.has_mac ? mac : NULL);
                }
                proto_write_key(&w, "steps");
                proto_write_array_begin(&w);
                for (size_t k = 0; k < s->report.n_steps; k++) {
                        const SlotStepResult *st = &s->report.steps[k];
                        if (step_is_noise(st))
                                continue;
                        proto_write_map_begin(&w);
                        proto_write_kv_str(&w, "name", slot_step_name(st->step));
                        proto_write_kv_bool(&w, "ok", st->error == 0);
                        write_opt_str(&w, "error", st->error < 0 ? strerror(-st->error) : NULL);
                        proto_write_kv_uint(&w, "ms", st->ms);
                        proto_write_kv_str(&w, "detail", st->detail);
                        proto_write_end(&w);
                }
                proto_write_end(&w);
                proto_write_end(&w);
        }
        proto_write_end(&w);
        proto_write_key(&w, "workload");
        proto_write_map_begin(&w);
        proto_write_kv_bool(&w, "ok", r->workload_ok);
        write_opt_str(&w, "reason", r->workload_reason);
        proto_write_kv_uint(&w, "ms", r->workload_ms);
        proto_write_end(&w);
        proto_write_key(&w, "connection");
        if (r->kind == ALLOC_ASSIGN && r->has_connection && !r->error_code) {
                proto_write_map_begin(&w);
                proto_write_kv_str(&w, "host", r->conn_host);
                proto_write_kv_uint(&w, "port", r->conn_port);
                proto_write_kv_str(&w, "user", r->conn_user);
                proto_write_end(&w);
        } else
                proto_write_nil(&w);
        proto_write_end(&w);
        proto_write_key(&w, "error");
        if (r->error_code) {
                proto_write_map_begin(&w);
                proto_write_kv_str(&w, "code", r->error_code);
                proto_write_kv_str(&w, "message",
                                   r->error_message ? r->error_message : r->error_code);
                proto_write_end(&w);
        } else
                proto_write_nil(&w);
        proto_write_end(&w);

        int e = proto_writer_data(&w, &p, &n);
        if (e < 0)
                return e;
        *ret = malloc(n);
        if (!*ret)
                return -ENOMEM;
        memcpy(*ret, p, n);
        *ret_len = n;
        return 0;
}
