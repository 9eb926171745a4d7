/* SPDX-License-Identifier: MIT */
#include "discovery-json.h"

#include "log.h"
#include "macro.h"

static json_t *int_or_null(long long v)
{
        return v < 0 ? json_null() : json_integer(v);
}

static json_t *str_or_null(const char *s)
{
        return s ? json_string(s) : json_null();
}

static json_t *hex4_or_null(int v)
{
        char buf[16];
        if (v < 0)
                return json_null();
        snprintf(buf, sizeof(buf), "%04x", (unsigned)v & 0xffffu);
        return json_string(buf);
}

static json_t *strv_or_null(char *const *l)
{
        if (!l)
                return json_null();
        json_t *a = json_array();
        for (char *const *i = l; a && *i; i++)
                json_array_append_new(a, json_string(*i));
        return a;
}

/* json_object_set_new() takes ownership even on failure; a NULL value (OOM)
 * makes it fail, which the caller notices through the final check. */
static int set(json_t *o, const char *k, json_t *v)
{
        return v && json_object_set_new(o, k, v) == 0 ? 0 : -ENOMEM;
}

static json_t *numa_json(const NumaNode *n)
{
        json_t *o = json_object();
        int r = 0;
        if (!o)
                return NULL;
        r |= set(o, "id", json_integer(n->id));
        r |= set(o, "cpus", str_or_null(n->cpus));
        r |= set(o, "memory_bytes", int_or_null(n->memory_bytes));
        r |= set(o, "memory_only", n->cpus ? json_boolean(!numa_node_has_cpus(n)) : json_null());
        if (r) {
                json_decref(o);
                return NULL;
        }
        return o;
}

static json_t *device_json(const Device *d)
{
        json_t *o = json_object();
        int r = 0;
        if (!o)
                return NULL;
        r |= set(o, "address", json_string(d->address));
        r |= set(o, "kind", json_string(device_kind_to_string(d->kind)));
        r |= set(o, "vendor", hex4_or_null(d->vendor));
        r |= set(o, "device", hex4_or_null(d->device));
        r |= set(o, "class", hex4_or_null(d->class_code));
        r |= set(o, "numa_node", int_or_null(d->numa_node));
        r |= set(o, "iommu_group", int_or_null(d->iommu_group));
        r |= set(o, "driver", str_or_null(d->driver));
        if (d->sriov == SRIOV_CAPABLE) {
                json_t *s = json_object();
                if (s) {
                        r |= set(s, "total_vfs", int_or_null(d->total_vfs));
                        r |= set(s, "num_vfs", int_or_null(d->num_vfs));
                }
                r |= set(o, "sriov", s);
        } else
                r |= set(o, "sriov", json_null());
        r |= set(o, "physfn", str_or_null(d->physfn));
        /* Extras. */
        r |= set(o, "sriov_known", json_boolean(d->sriov != SRIOV_UNKNOWN));
        r |= set(o, "virtual_function", json_boolean(d->is_vf));
        r |= set(o, "virtfns", strv_or_null(d->virtfns));
        r |= set(o, "parents", strv_or_null(d->parents));
        r |= set(o, "switch", str_or_null(device_switch(d)));
        r |= set(o, "name", str_or_null(d->name));
        if (r) {
                json_decref(o);
                return NULL;
        }
        return o;
}

static json_t *slot_json(const Slot *s)
{
        json_t *o = json_object();
        int r = 0;
        if (!o)
                return NULL;
        r |= set(o, "id", json_string(s->id));
        r |= set(o, "gpus", strv_or_null(s->gpus));
        r |= set(o, "nic", str_or_null(s->nic));
        r |= set(o, "vf_index", int_or_null(s->vf_index));
        r |= set(o, "nvme", str_or_null(s->nvme));
        r |= set(o, "numa_node", int_or_null(s->numa_node));
        r |= set(o, "cpus", str_or_null(s->cpus));
        r |= set(o, "ok", json_boolean(s->ok));
        json_t *p = json_array();
        for (char **i = s->problems; p && i && *i; i++)
                json_array_append_new(p, json_string(*i));
        r |= set(o, "problems", p);
        /* Extras. */
        r |= set(o, "memory_bytes", int_or_null(s->memory_bytes));
        r |= set(o, "nic_locality",
                 s->nic ? json_string(locality_to_string(s->nic_locality)) : json_null());
        r |= set(o, "nvme_locality",
                 s->nvme ? json_string(locality_to_string(s->nvme_locality)) : json_null());
        json_t *iv = json_object();
        for (size_t k = 0; iv && k < _INVARIANT_MAX; k++)
                r |= set(iv, invariant_to_string(k), json_boolean(s->invariant_ok[k]));
        r |= set(o, "invariants", iv);
        if (r) {
                json_decref(o);
                return NULL;
        }
        return o;
}

static json_t *invariant_json(const char *name, const Invariant *iv)
{
        json_t *o = json_object();
        int r = 0;
        if (!o)
                return NULL;
        r |= set(o, "name", json_string(name));
        r |= set(o, "ok", json_boolean(iv->ok));
        r |= set(o, "detail", json_string(strempty(iv->detail)));
        if (r) {
                json_decref(o);
                return NULL;
        }
        return o;
}

int discovery_to_json(const Inventory *inv, const SlotMap *map, const char *fingerprint,
                      json_t **ret)
{
        _cleanup_(json_decrefp) json_t *root = json_object();
        json_t *a;
        int r = 0;

        if (!root)
                return log_oom();

        json_t *src = json_object();
        if (src) {
                r |= set(src, "kind", json_string(inventory_source_kind_to_string(inv->source)));
                r |= set(src, "path", json_string(inv->source_path));
        }
        r |= set(root, "source", src);
        r |= set(root, "simulated", json_false());

        a = json_array();
        for (size_t i = 0; a && i < inv->n_numa_nodes; i++)
                r |= json_array_append_new(a, numa_json(&inv->numa_nodes[i])) ? -ENOMEM : 0;
        r |= set(root, "numa_nodes", a);

        a = json_array();
        for (size_t i = 0; a && i < inv->n_devices; i++)
                r |= json_array_append_new(a, device_json(&inv->devices[i])) ? -ENOMEM : 0;
        r |= set(root, "devices", a);

        a = json_array();
        for (size_t i = 0; a && i < map->n_slots; i++)
                r |= json_array_append_new(a, slot_json(&map->slots[i])) ? -ENOMEM : 0;
        r |= set(root, "slots", a);

        a = json_array();
        for (size_t k = 0; a && k < _INVARIANT_MAX; k++)
                r |= json_array_append_new(
                         a, invariant_json(invariant_to_string(k), &map->invariants[k]))
                         ? -ENOMEM
                         : 0;
        r |= set(root, "invariants", a);
        r |= set(root, "iommu_isolation", invariant_json("iommu_isolation", &map->iommu));
        a = json_array();
        for (char **n = inv->notes; a && n && *n; n++)
                r |= json_array_append_new(a, json_string(*n)) ? -ENOMEM : 0;
        for (char **n = map->notes; a && n && *n; n++)
                r |= json_array_append_new(a, json_string(*n)) ? -ENOMEM : 0;
        r |= set(root, "notes", a);
        r |= set(root, "ok", json_boolean(map->ok));
        r |= set(root, "fingerprint", json_string(fingerprint));
        if (r)
                return log_oom();

        *ret = TAKE_PTR(root);
        return 0;
}
