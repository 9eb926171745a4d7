/* SPDX-License-Identifier: MIT */
#include "host.h"

#include "discovery-json.h"
#include "log.h"
#include "macro.h"
#include "simulate.h"
#include "slotmap.h"

int host_source_from_config(const Config *c, HostSource *ret)
{
        HostSource h = {.simulate = config_get_bool(c, "simulate")};
        const char *sysfs = config_get(c, "sysfs_root"), *xml = config_get(c, "hwloc_xml");
        int r;
        if (h.simulate) {
                const char *topo = config_get(c, "simulate_topology");
                if (topo) {
                        h.path = strdup(topo);
                        if (!h.path)
                                return log_oom();
                } else if ((r = simulate_default_topology(&h.path)) < 0)
                        return r;
                h.src = (InventorySource){.kind = INVENTORY_SOURCE_HWLOC_XML, .path = h.path};
        } else if (sysfs && xml) {
                return log_error_errno(-EINVAL, "sysfs_root and hwloc_xml are exclusive, set one");
        } else if (sysfs || xml) {
                h.path = strdup(sysfs ? sysfs : xml);
                if (!h.path)
                        return log_oom();
                h.src = (InventorySource){.kind = sysfs ? INVENTORY_SOURCE_SYSFS_ROOT
                                                        : INVENTORY_SOURCE_HWLOC_XML,
                                          .path = h.path};
        } else
                h.src = (InventorySource){.kind = INVENTORY_SOURCE_LIVE, .path = "/"};
        *ret = h;
        return 0;
}

void host_source_done(HostSource *h)
{
        free(h->path);
        h->path = NULL;
}

int host_load(const HostSource *h, Inventory **ret)
{
        if (h->simulate)
                return simulate_load(h->path, ret);
        return inventory_load(&h->src, ret);
}

int host_fingerprint(const HostSource *h, char fingerprint[static FINGERPRINT_MAX])
{
        _cleanup_(inventory_freep) Inventory *inv = NULL;
        int r = host_load(h, &inv);
        if (r < 0)
                return r;
        return fingerprint_compute(inv, fingerprint);
}

int host_discover(const HostSource *h, json_t **ret_doc, char fingerprint[static FINGERPRINT_MAX])
{
        _cleanup_(inventory_freep) Inventory *inv = NULL;
        int r = host_load(h, &inv);
        if (r < 0)
                return r;
        _cleanup_(slot_map_freep) SlotMap *map = NULL;
        r = slot_map_plan(inv, &map);
        if (r < 0)
                return r;
        r = fingerprint_compute(inv, fingerprint);
        if (r < 0)
                return r;
        json_t *doc = NULL;
        r = discovery_to_json(inv, map, fingerprint, &doc);
        if (r < 0)
                return r;
        json_t *values = json_array();
        if (!values || json_object_set_new(doc, "simulated", json_boolean(h->simulate)) < 0) {
                json_decref(values);
                json_decref(doc);
                return log_oom();
        }
        for (char **n = inv->notes; h->simulate && n && *n; n++)
                if (startswith(*n, "simulated"))
                        json_array_append_new(values, json_string(*n));
        if (json_object_set_new(doc, "simulated_values", values) < 0) {
                json_decref(doc);
                return log_oom();
        }
        *ret_doc = doc;
        return 0;
}
