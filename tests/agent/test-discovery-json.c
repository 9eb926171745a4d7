/* SPDX-License-Identifier: MIT */
/* The discovery document follows the contract's field names and types. */
#include <jansson.h>
#include <regex.h>

#include "agent-test.h"
#include "discovery-json.h"
#include "fingerprint.h"

#define T(name) Test(discovery_json, name, .timeout = 60)

static json_t *doc_for(const Inventory *inv)
{
        _cleanup_(slot_map_freep) SlotMap *m = plan(inv);
        char fp[FINGERPRINT_MAX];
        json_t *doc = NULL;
        cr_assert_eq(fingerprint_compute(inv, fp), 0);
        cr_assert_eq(discovery_to_json(inv, m, fp, &doc), 0);
        return doc;
}

static bool is_addr(const json_t *v)
{
        regex_t re;
        cr_assert_eq(regcomp(&re, "^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\\.[0-7]$", REG_EXTENDED),
                     0);
        bool ok = json_is_string(v) && regexec(&re, json_string_value(v), 0, NULL, 0) == 0;
        regfree(&re);
        return ok;
}

static void expect_keys(const json_t *o, const char *const *keys)
{
        cr_assert(json_is_object(o));
        for (; *keys; keys++)
                cr_expect_not_null(json_object_get(o, *keys), "missing field %s", *keys);
}

static void check_contract(json_t *doc)
{
        expect_keys(doc, (const char *const[]){"numa_nodes", "devices", "slots", "invariants",
                                               "fingerprint", NULL});
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(doc, "numa_nodes"), i, v)
        {
                expect_keys(v, (const char *const[]){"id", "cpus", "memory_bytes", NULL});
                cr_expect(json_is_integer(json_object_get(v, "id")));
        }
        json_array_foreach(json_object_get(doc, "devices"), i, v)
        {
                expect_keys(v, (const char *const[]){"address", "kind", "vendor", "device", "class",
                                                     "numa_node", "iommu_group", "driver", "sriov",
                                                     "physfn", NULL});
                cr_expect(is_addr(json_object_get(v, "address")));
                const char *k = json_string_value(json_object_get(v, "kind"));
                cr_expect(k && (streq(k, "gpu") || streq(k, "nic") || streq(k, "nvme") ||
                                streq(k, "switch") || streq(k, "other")));
                json_t *s = json_object_get(v, "sriov");
                cr_expect(json_is_null(s) ||
                          (json_object_get(s, "total_vfs") && json_object_get(s, "num_vfs")));
                json_t *pf = json_object_get(v, "physfn");
                cr_expect(json_is_null(pf) || is_addr(pf));
        }
        json_array_foreach(json_object_get(doc, "slots"), i, v)
        {
                expect_keys(v, (const char *const[]){"id", "gpus", "nic", "vf_index", "nvme",
                                                     "numa_node", "cpus", "ok", "problems", NULL});
                size_t j;
                json_t *g;
                json_array_foreach(json_object_get(v, "gpus"), j, g) cr_expect(is_addr(g));
                cr_expect(json_is_boolean(json_object_get(v, "ok")));
                cr_expect(json_is_array(json_object_get(v, "problems")));
                json_t *nic = json_object_get(v, "nic");
                cr_expect(json_is_null(nic) || is_addr(nic));
        }
        const char *names[] = {"per_slot_vf", "nvme_ownership", "numa_locality"};
        cr_assert_eq(json_array_size(json_object_get(doc, "invariants")), 3);
        json_array_foreach(json_object_get(doc, "invariants"), i, v)
        {
                expect_keys(v, (const char *const[]){"name", "ok", "detail", NULL});
                cr_expect_str_eq(json_string_value(json_object_get(v, "name")), names[i]);
                cr_expect(json_is_boolean(json_object_get(v, "ok")));
        }
        cr_expect(startswith(json_string_value(json_object_get(doc, "fingerprint")), "sha256:"));
}

T(xml_document_follows_the_contract_with_nulls_for_unknowns)
{
        _cleanup_(inventory_freep) Inventory *inv = load_xml("mpibind/cts1-pascal.xml");
        json_t *doc = doc_for(inv);
        check_contract(doc);
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(doc, "devices"), i, v)
        {
                cr_expect(json_is_null(json_object_get(v, "iommu_group")));
                cr_expect(json_is_null(json_object_get(v, "driver")));
                cr_expect(json_is_null(json_object_get(v, "sriov")));
                cr_expect(json_is_false(json_object_get(v, "sriov_known")));
        }
        json_decref(doc);
}

T(sysfs_document_follows_the_contract)
{
        _cleanup_free_ char *root = fixture("synthetic/synthetic-gpu-vfs");
        _cleanup_(inventory_freep) Inventory *inv = load_sysfs(root);
        json_t *doc = doc_for(inv);
        check_contract(doc);
        size_t i;
        json_t *v;
        bool seen_vf = false;
        json_array_foreach(json_object_get(doc, "devices"), i, v)
        {
                const char *a = json_string_value(json_object_get(v, "address"));
                if (streq(a, "0000:03:00.4")) {
                        seen_vf = true;
                        cr_expect_str_eq(json_string_value(json_object_get(v, "physfn")),
                                         "0000:03:00.0");
                        cr_expect_str_eq(json_string_value(json_object_get(v, "kind")), "gpu");
                }
                if (streq(a, "0000:04:00.0")) {
                        json_t *s = json_object_get(v, "sriov");
                        cr_expect_eq(json_integer_value(json_object_get(s, "total_vfs")), 8);
                        cr_expect_eq(json_integer_value(json_object_get(s, "num_vfs")), 0);
                        cr_expect_str_eq(json_string_value(json_object_get(v, "driver")),
                                         "mlx5_core");
                        cr_expect_eq(json_integer_value(json_object_get(v, "iommu_group")), 20);
                }
        }
        cr_expect(seen_vf);
        json_t *s0 = json_array_get(json_object_get(doc, "slots"), 0);
        cr_expect_str_eq(json_string_value(json_object_get(s0, "id")), "slot-0000:03:00.4");
        cr_expect_eq(json_integer_value(json_object_get(s0, "vf_index")), 0);
        cr_expect_str_eq(json_string_value(json_object_get(s0, "cpus")), "0-7");
        json_decref(doc);
}

T(same_hardware_same_document)
{
        _cleanup_(inventory_freep) Inventory *a = load_xml("mpibind/eas-tioga.xml");
        _cleanup_(inventory_freep) Inventory *b = load_xml("mpibind/eas-tioga.xml");
        json_t *da = doc_for(a), *db = doc_for(b);
        _cleanup_free_ char *sa = json_dumps(da, JSON_PRESERVE_ORDER);
        _cleanup_free_ char *sb = json_dumps(db, JSON_PRESERVE_ORDER);
        cr_expect_str_eq(sa, sb);
        json_decref(da);
        json_decref(db);
}
