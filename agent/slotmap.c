/* SPDX-License-Identifier: MIT */
#include "slotmap.h"

#include <stdarg.h>

#include "log.h"
#include "macro.h"

static const char *const invariant_table[_INVARIANT_MAX] = {
    [INVARIANT_PER_SLOT_VF] = "per_slot_vf",
    [INVARIANT_NVME_OWNERSHIP] = "nvme_ownership",
    [INVARIANT_NUMA_LOCALITY] = "numa_locality",
};

const char *invariant_to_string(InvariantId i)
{
        if (i < 0 || i >= _INVARIANT_MAX)
                return NULL;
        return invariant_table[i];
}

static const char *const locality_table[] = {
    [LOCALITY_NONE] = "none",
    [LOCALITY_NUMA] = "numa",
    [LOCALITY_ROOT_PORT] = "root_port",
    [LOCALITY_SWITCH] = "switch",
};

const char *locality_to_string(Locality l)
{
        if (l < 0 || (size_t)l >= ELEMENTSOF(locality_table))
                return NULL;
        return locality_table[l];
}

static _printf_(2, 3) int strv_pushf(char ***l, const char *fmt, ...)
{
        _cleanup_free_ char *s = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        return strv_push(l, s);
}

static char *strv_join(char *const *l, const char *sep)
{
        size_t len = 1;
        for (char *const *i = l; i && *i; i++)
                len += strlen(*i) + strlen(sep);
        char *s = malloc(len), *p = s;
        if (!s)
                return NULL;
        *p = '\0';
        for (char *const *i = l; i && *i; i++) {
                if (i != l)
                        p = stpcpy(p, sep);
                p = stpcpy(p, *i);
        }
        return s;
}

static void slot_done(Slot *s)
{
        free(s->id);
        strv_free(s->gpus);
        free(s->nic);
        free(s->nvme);
        free(s->cpus);
        strv_free(s->problems);
}

SlotMap *slot_map_free(SlotMap *m)
{
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_slots; i++)
                slot_done(&m->slots[i]);
        free(m->slots);
        for (size_t i = 0; i < _INVARIANT_MAX; i++)
                free(m->invariants[i].detail);
        free(m->iommu.detail);
        strv_free(m->notes);
        free(m);
        return NULL;
}

Slot *slot_map_add(SlotMap *m, const char *gpu_address)
{
        Slot *n = realloc(m->slots, sizeof(Slot) * (m->n_slots + 1));
        if (!n)
                return NULL;
        m->slots = n;
        Slot *s = &n[m->n_slots++];
        *s = (Slot){.vf_index = -1, .numa_node = -1, .memory_bytes = -1};
        /* Derived from the GPU address so re-discovery of unchanged hardware
         * yields the same ids whatever else changed. */
        if (asprintf(&s->id, "slot-%s", gpu_address) < 0) {
                s->id = NULL;
                m->n_slots--;
                return NULL;
        }
        if (strv_push(&s->gpus, gpu_address) < 0) {
                slot_done(s);
                m->n_slots--;
                return NULL;
        }
        return s;
}

const Slot *slot_map_find(const SlotMap *m, const char *id)
{
        for (size_t i = 0; i < m->n_slots; i++)
                if (streq(m->slots[i].id, id))
                        return &m->slots[i];
        return NULL;
}

/* A device on another NUMA node is never local; an unknown node is local
 * only when the two share a PCIe bridge (they then sit on one socket). */
static Locality locality(const Device *gpu, const Device *d)
{
        size_t common = device_common_bridges(gpu, d);

        if (gpu->numa_node >= 0 && d->numa_node >= 0 && gpu->numa_node != d->numa_node)
                return LOCALITY_NONE;
        if (common >= 2)
                return LOCALITY_SWITCH;
        if (common == 1)
                return LOCALITY_ROOT_PORT;
        if (gpu->numa_node >= 0 && gpu->numa_node == d->numa_node)
                return LOCALITY_NUMA;
        return LOCALITY_NONE;
}

static bool gpu_pf_has_gpu_vfs(const Inventory *inv, const Device *d)
{
        for (char **v = d->virtfns; v && *v; v++) {
                const Device *vf = inventory_find_device(inv, *v);
                if (vf && vf->kind == DEVICE_KIND_GPU)
                        return true;
        }
        return false;
}

static bool nic_can_host_vfs(const Device *d)
{
        if (d->kind != DEVICE_KIND_NIC || d->is_vf)
                return false;
        if (d->sriov == SRIOV_NONE)
                return false;
        return !(d->sriov == SRIOV_CAPABLE && d->total_vfs == 0);
}

static bool nic_has_capacity(const Device *d, int assigned)
{
        return d->sriov != SRIOV_CAPABLE || d->total_vfs < 0 || assigned < d->total_vfs;
}

int slot_map_plan(const Inventory *inv, SlotMap **ret)
{
        _cleanup_(slot_map_freep) SlotMap *m = calloc(1, sizeof(SlotMap));
        _cleanup_free_ int *nic_assigned = calloc(inv->n_devices + 1, sizeof(int));
        _cleanup_free_ bool *nvme_taken = calloc(inv->n_devices + 1, sizeof(bool));
        int r;

        if (!m || !nic_assigned || !nvme_taken)
                return log_oom();

        for (size_t i = 0; i < inv->n_devices; i++) {
                const Device *g = &inv->devices[i];
                if (g->kind != DEVICE_KIND_GPU)
                        continue;
                /* A GPU split into VFs (vGPU/MxGPU) hands out its VFs, not itself. */
                if (!g->is_vf && gpu_pf_has_gpu_vfs(inv, g))
                        continue;

                Slot *s = slot_map_add(m, g->address);
                if (!s)
                        return log_oom();

                const NumaNode *home =
                    g->numa_node >= 0 ? inventory_find_numa_node(inv, g->numa_node) : NULL;
                if (numa_node_has_cpus(home))
                        s->numa_node = home->id;

                /* NIC: the closest SR-IOV PF with a free VF; at equal
                 * locality the wider PCIe link (a data NIC, not a management
                 * port), then the PF with fewer planned VFs (spreads slots
                 * over both ports of a dual-port card), then the lower
                 * address. */
                ssize_t best = -1;
                Locality best_loc = LOCALITY_NONE;
                bool best_cap = false;
                for (size_t j = 0; j < inv->n_devices; j++) {
                        const Device *n = &inv->devices[j];
                        if (!nic_can_host_vfs(n))
                                continue;
                        Locality loc = locality(g, n);
                        if (loc == LOCALITY_NONE)
                                continue;
                        bool cap = nic_has_capacity(n, nic_assigned[j]);
                        if (best >= 0) {
                                const Device *b = &inv->devices[best];
                                if (cap != best_cap) {
                                        if (!cap)
                                                continue;
                                } else if (loc != best_loc) {
                                        if (loc < best_loc)
                                                continue;
                                } else if (n->link_gbytes != b->link_gbytes) {
                                        if (n->link_gbytes < b->link_gbytes)
                                                continue;
                                } else if (nic_assigned[j] >= nic_assigned[best])
                                        continue;
                        }
                        best = (ssize_t)j;
                        best_loc = loc;
                        best_cap = cap;
                }
                if (best >= 0) {
                        s->nic = strdup(inv->devices[best].address);
                        if (!s->nic)
                                return log_oom();
                        s->vf_index = nic_assigned[best]++;
                        s->nic_locality = best_loc;
                }

                /* NVMe: the closest drive no earlier slot took. */
                best = -1;
                best_loc = LOCALITY_NONE;
                for (size_t j = 0; j < inv->n_devices; j++) {
                        const Device *n = &inv->devices[j];
                        if (n->kind != DEVICE_KIND_NVME || n->is_vf || nvme_taken[j])
                                continue;
                        Locality loc = locality(g, n);
                        if (loc == LOCALITY_NONE || (best >= 0 && loc <= best_loc))
                                continue;
                        best = (ssize_t)j;
                        best_loc = loc;
                }
                if (best >= 0) {
                        s->nvme = strdup(inv->devices[best].address);
                        if (!s->nvme)
                                return log_oom();
                        nvme_taken[best] = true;
                        s->nvme_locality = best_loc;
                } else {
                        /* Say so when a close drive exists but an earlier slot has it. */
                        for (size_t j = 0; j < inv->n_devices; j++) {
                                const Device *n = &inv->devices[j];
                                if (n->kind != DEVICE_KIND_NVME || !nvme_taken[j] ||
                                    locality(g, n) == LOCALITY_NONE)
                                        continue;
                                r = strv_pushf(&m->notes,
                                               "NVMe %s is close to %s too but already belongs "
                                               "to an earlier slot; %s gets no drive",
                                               n->address, s->id, s->id);
                                if (r < 0)
                                        return log_oom();
                                break;
                        }
                }
        }

        /* CPU and memory share: the home node's CPUs, its memory split evenly. */
        for (size_t i = 0; i < m->n_slots; i++) {
                Slot *s = &m->slots[i];
                const NumaNode *home = inventory_find_numa_node(inv, s->numa_node);
                if (!home)
                        continue;
                s->cpus = strdup(home->cpus);
                if (!s->cpus)
                        return log_oom();
                size_t sharing = 0;
                for (size_t j = 0; j < m->n_slots; j++)
                        if (m->slots[j].numa_node == s->numa_node)
                                sharing++;
                if (home->memory_bytes >= 0)
                        s->memory_bytes = home->memory_bytes / (int64_t)sharing;
        }

        for (size_t i = 0; i < inv->n_numa_nodes; i++) {
                const NumaNode *n = &inv->numa_nodes[i];
                if (n->cpus && !numa_node_has_cpus(n)) {
                        r = strv_pushf(&m->notes,
                                       "NUMA node %d has memory but no CPUs; it is never a "
                                       "slot's home",
                                       n->id);
                        if (r < 0)
                                return log_oom();
                }
        }

        r = slot_map_validate(inv, m);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

static int slot_problem(Slot *s, InvariantId inv_id, char ***overall, const char *fmt, ...)
    _printf_(4, 5);
static int slot_problem(Slot *s, InvariantId inv_id, char ***overall, const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        if (inv_id < _INVARIANT_MAX)
                s->invariant_ok[inv_id] = false;
        s->ok = false;
        if (strv_push(&s->problems, msg) < 0)
                return -ENOMEM;
        if (overall && strv_pushf(overall, "%s: %s", s->id, msg) < 0)
                return -ENOMEM;
        return 0;
}

static const char *numa_str(int n, char buf[static 16])
{
        if (n < 0)
                return "unknown";
        snprintf(buf, 16, "%d", n);
        return buf;
}

static int check_per_slot_vf(const Inventory *inv, SlotMap *m, char ***bad)
{
        int r;

        for (size_t i = 0; i < m->n_slots; i++) {
                Slot *s = &m->slots[i];
                char b[16];
                const Device *g = inventory_find_device(inv, s->gpus ? s->gpus[0] : NULL);
                if (!s->nic) {
                        r = slot_problem(s, INVARIANT_PER_SLOT_VF, bad,
                                         "no SR-IOV NIC on the GPU's NUMA node %s or PCIe switch "
                                         "for %s",
                                         numa_str(g ? g->numa_node : -1, b), strempty(s->gpus[0]));
                        if (r < 0)
                                return r;
                        continue;
                }
                const Device *n = inventory_find_device(inv, s->nic);
                if (!n || n->kind != DEVICE_KIND_NIC) {
                        r = slot_problem(s, INVARIANT_PER_SLOT_VF, bad, "%s is not a NIC", s->nic);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (s->vf_index < 0)
                        r = slot_problem(s, INVARIANT_PER_SLOT_VF, bad,
                                         "no VF index planned on NIC %s", s->nic);
                else if (n->sriov == SRIOV_UNKNOWN)
                        r = slot_problem(s, INVARIANT_PER_SLOT_VF, bad,
                                         "SR-IOV capacity of NIC %s is unknown (the %s source "
                                         "cannot tell); VF %d is planned, not verified",
                                         s->nic, inventory_source_kind_to_string(inv->source),
                                         s->vf_index);
                else if (n->sriov == SRIOV_NONE)
                        r = slot_problem(s, INVARIANT_PER_SLOT_VF, bad,
                                         "NIC %s is not SR-IOV capable", s->nic);
                else if (n->total_vfs >= 0 && s->vf_index >= n->total_vfs)
                        r = slot_problem(s, INVARIANT_PER_SLOT_VF, bad,
                                         "VF %d needed on NIC %s, which has only %d VFs "
                                         "(total_vfs)",
                                         s->vf_index, s->nic, n->total_vfs);
                else
                        r = 0;
                if (r < 0)
                        return r;

                for (size_t j = 0; j < i; j++) {
                        Slot *o = &m->slots[j];
                        if (!o->nic || !streq(o->nic, s->nic) || o->vf_index != s->vf_index)
                                continue;
                        r = slot_problem(s, INVARIANT_PER_SLOT_VF, bad,
                                         "VF %d of NIC %s is also planned for %s", s->vf_index,
                                         s->nic, o->id);
                        if (r < 0)
                                return r;
                        if (o->invariant_ok[INVARIANT_PER_SLOT_VF]) {
                                r = slot_problem(o, INVARIANT_PER_SLOT_VF, NULL,
                                                 "VF %d of NIC %s is also planned for %s",
                                                 o->vf_index, o->nic, s->id);
                                if (r < 0)
                                        return r;
                        }
                }
        }
        return 0;
}

static int check_nvme_ownership(const Inventory *inv, SlotMap *m, char ***bad)
{
        int r;

        for (size_t i = 0; i < m->n_slots; i++) {
                Slot *s = &m->slots[i];
                if (!s->nvme)
                        continue;
                const Device *d = inventory_find_device(inv, s->nvme);
                if (!d || d->kind != DEVICE_KIND_NVME) {
                        r = slot_problem(s, INVARIANT_NVME_OWNERSHIP, bad,
                                         "%s is not an NVMe controller on this host", s->nvme);
                        if (r < 0)
                                return r;
                }
                for (size_t j = 0; j < i; j++) {
                        Slot *o = &m->slots[j];
                        if (!o->nvme || !streq(o->nvme, s->nvme))
                                continue;
                        r = slot_problem(s, INVARIANT_NVME_OWNERSHIP, bad, "NVMe %s is also in %s",
                                         s->nvme, o->id);
                        if (r < 0)
                                return r;
                        if (o->invariant_ok[INVARIANT_NVME_OWNERSHIP]) {
                                r = slot_problem(o, INVARIANT_NVME_OWNERSHIP, NULL,
                                                 "NVMe %s is also in %s", o->nvme, s->id);
                                if (r < 0)
                                        return r;
                        }
                }
        }
        return 0;
}

static int check_member_numa(const Inventory *inv, Slot *s, const char *what, const char *addr,
                             char ***bad)
{
        char b1[16], b2[16];
        const Device *d = inventory_find_device(inv, addr);
        int numa = d ? d->numa_node : -1;

        if (!addr || (numa >= 0 && numa == s->numa_node))
                return 0;
        return slot_problem(s, INVARIANT_NUMA_LOCALITY, bad,
                            "%s %s is on NUMA node %s, the slot's home is NUMA node %s", what, addr,
                            numa_str(numa, b1), numa_str(s->numa_node, b2));
}

static int check_numa_locality(const Inventory *inv, SlotMap *m, char ***bad)
{
        int r;

        for (size_t i = 0; i < m->n_slots; i++) {
                Slot *s = &m->slots[i];
                const NumaNode *home = inventory_find_numa_node(inv, s->numa_node);
                if (!home || !numa_node_has_cpus(home)) {
                        const Device *g = inventory_find_device(inv, s->gpus[0]);
                        const NumaNode *gn = g ? inventory_find_numa_node(inv, g->numa_node) : NULL;
                        if (gn && gn->cpus && !numa_node_has_cpus(gn))
                                r = slot_problem(s, INVARIANT_NUMA_LOCALITY, bad,
                                                 "GPU %s sits on memory-only NUMA node %d, "
                                                 "which cannot be a slot's home",
                                                 s->gpus[0], gn->id);
                        else
                                r = slot_problem(s, INVARIANT_NUMA_LOCALITY, bad,
                                                 "NUMA node of GPU %s is unknown",
                                                 strempty(s->gpus[0]));
                        if (r < 0)
                                return r;
                        continue;
                }
                for (char **g = s->gpus; g && *g; g++) {
                        r = check_member_numa(inv, s, "GPU", *g, bad);
                        if (r < 0)
                                return r;
                }
                r = check_member_numa(inv, s, "NIC", s->nic, bad);
                if (r < 0)
                        return r;
                r = check_member_numa(inv, s, "NVMe", s->nvme, bad);
                if (r < 0)
                        return r;
        }
        return 0;
}

static const Slot *slot_owning(const SlotMap *m, const char *addr)
{
        for (size_t i = 0; i < m->n_slots; i++) {
                const Slot *s = &m->slots[i];
                if (s->nvme && streq(s->nvme, addr))
                        return s;
                for (char **g = s->gpus; g && *g; g++)
                        if (streq(*g, addr))
                                return s;
        }
        return NULL;
}

/* Devices in one IOMMU group can only be passed through together: a group
 * that holds devices of two slots (ACS off behind a switch) cannot be
 * split. Bridges in a group are not passed through and do not count. */
static int check_iommu(const Inventory *inv, SlotMap *m, char ***bad)
{
        int r;

        for (size_t i = 0; i < inv->n_devices; i++) {
                const Device *a = &inv->devices[i];
                const Slot *sa = slot_owning(m, a->address);
                if (a->iommu_group < 0 || !sa)
                        continue;
                for (size_t j = i + 1; j < inv->n_devices; j++) {
                        const Device *b = &inv->devices[j];
                        if (b->iommu_group != a->iommu_group)
                                continue;
                        const Slot *sb = slot_owning(m, b->address);
                        if (!sb || sb == sa)
                                continue;
                        r = slot_problem((Slot *)sa, _INVARIANT_MAX, bad,
                                         "IOMMU group %d holds %s (%s) and %s (%s); a group "
                                         "cannot be split across slots (ACS off?)",
                                         a->iommu_group, a->address, sa->id, b->address, sb->id);
                        if (r < 0)
                                return r;
                        r = slot_problem((Slot *)sb, _INVARIANT_MAX, NULL,
                                         "IOMMU group %d holds %s (%s) and %s (%s); a group "
                                         "cannot be split across slots (ACS off?)",
                                         a->iommu_group, b->address, sb->id, a->address, sa->id);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int set_invariant(Invariant *iv, char **bad, const char *ok_detail)
{
        free(iv->detail);
        iv->ok = strv_length(bad) == 0;
        iv->detail = iv->ok ? strdup(ok_detail) : strv_join(bad, "; ");
        return iv->detail ? 0 : -ENOMEM;
}

static char *per_slot_vf_ok_detail(const Inventory *inv, const SlotMap *m)
{
        char **parts = NULL;
        char *s = NULL, *j;
        int r = 0;

        if (m->n_slots == 0)
                return strdup("no slots (no GPU found)");
        for (size_t i = 0; r >= 0 && i < inv->n_devices; i++) {
                const Device *d = &inv->devices[i];
                int planned = 0;
                for (size_t k = 0; k < m->n_slots; k++)
                        if (m->slots[k].nic && streq(m->slots[k].nic, d->address))
                                planned++;
                if (planned > 0)
                        r = strv_pushf(&parts, "%s: %d of %d VFs planned", d->address, planned,
                                       d->total_vfs);
        }
        j = r >= 0 ? strv_join(parts, ", ") : NULL;
        if (j && asprintf(&s, "each of %zu slots has its own VF (%s)", m->n_slots, j) < 0)
                s = NULL;
        free(j);
        strv_free(parts);
        return s;
}

static int set_all_invariants(const Inventory *inv, SlotMap *m, char **bad[])
{
        _cleanup_free_ char *vf_ok = per_slot_vf_ok_detail(inv, m);
        _cleanup_free_ char *nvme_ok = NULL, *numa_ok = NULL;
        size_t drives = 0;
        int r;

        for (size_t i = 0; i < m->n_slots; i++)
                if (m->slots[i].nvme)
                        drives++;
        if (asprintf(&nvme_ok, "%zu NVMe drive(s) planned, none in two slots", drives) < 0)
                nvme_ok = NULL;
        if (m->n_slots > 0 &&
            asprintf(&numa_ok, "each of %zu slots keeps GPU, VF and NVMe on its home NUMA node",
                     m->n_slots) < 0)
                numa_ok = NULL;
        if (m->n_slots == 0)
                numa_ok = strdup("no slots (no GPU found)");
        if (!vf_ok || !nvme_ok || !numa_ok)
                return -ENOMEM;
        r = set_invariant(&m->invariants[INVARIANT_PER_SLOT_VF], bad[INVARIANT_PER_SLOT_VF], vf_ok);
        if (r >= 0)
                r = set_invariant(&m->invariants[INVARIANT_NVME_OWNERSHIP],
                                  bad[INVARIANT_NVME_OWNERSHIP], nvme_ok);
        if (r >= 0)
                r = set_invariant(&m->invariants[INVARIANT_NUMA_LOCALITY],
                                  bad[INVARIANT_NUMA_LOCALITY], numa_ok);
        if (r >= 0)
                r = set_invariant(&m->iommu, bad[_INVARIANT_MAX],
                                  "no IOMMU group is split across slots");
        if (r < 0)
                return r;

        m->ok = m->n_slots > 0 && m->iommu.ok;
        for (size_t k = 0; k < _INVARIANT_MAX; k++)
                m->ok = m->ok && m->invariants[k].ok;
        for (size_t i = 0; i < m->n_slots; i++)
                m->ok = m->ok && m->slots[i].ok;
        return 0;
}

int slot_map_validate(const Inventory *inv, SlotMap *m)
{
        char **bad[_INVARIANT_MAX + 1] = {};
        int r;

        for (size_t i = 0; i < m->n_slots; i++) {
                Slot *s = &m->slots[i];
                s->problems = strv_free(s->problems);
                s->ok = true;
                for (size_t k = 0; k < _INVARIANT_MAX; k++)
                        s->invariant_ok[k] = true;
        }

        r = check_per_slot_vf(inv, m, &bad[INVARIANT_PER_SLOT_VF]);
        if (r >= 0)
                r = check_nvme_ownership(inv, m, &bad[INVARIANT_NVME_OWNERSHIP]);
        if (r >= 0)
                r = check_numa_locality(inv, m, &bad[INVARIANT_NUMA_LOCALITY]);
        if (r >= 0)
                r = check_iommu(inv, m, &bad[_INVARIANT_MAX]);
        if (r >= 0)
                r = set_all_invariants(inv, m, bad);
        for (size_t k = 0; k <= _INVARIANT_MAX; k++)
                strv_free(bad[k]);
        return r < 0 ? log_oom() : 0;
}
