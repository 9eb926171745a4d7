/* SPDX-License-Identifier: MIT */
/* The simulated host: Tioga's real topology, SR-IOV capacity simulated and
 * marked, so every slot invariant holds; the document says simulated. */

#include <criterion/criterion.h>
#include <jansson.h>

#include "agent-test.h"
#include "host.h"
#include "simulate.h"

Test(simulate, tioga_with_simulated_sriov_passes_every_invariant, .timeout = 60)
{
        _cleanup_free_ char *xml = fixture("mpibind/eas-tioga.xml");
        Inventory *inv = NULL;
        cr_assert_eq(simulate_load(xml, &inv), 0);
        cr_expect_eq(inv->n_numa_nodes, 4);
        cr_expect_eq(inventory_count(inv, DEVICE_KIND_GPU, true), 8);
        size_t simulated = 0;
        for (char **n = inv->notes; n && *n; n++)
                if (strstr(*n, "simulated: NIC"))
                        simulated++;
        cr_expect_eq(simulated, inventory_count(inv, DEVICE_KIND_NIC, false),
                     "every NIC's simulated capacity is noted");
        SlotMap *m = plan(inv);
        cr_expect_eq(m->n_slots, 8);
        for (size_t k = 0; k < _INVARIANT_MAX; k++)
                cr_expect(m->invariants[k].ok, "%s: %s", invariant_to_string(k),
                          m->invariants[k].detail);
        cr_expect(m->ok, "the simulated host's slot map is ok");
        slot_map_free(m);
        inventory_free(inv);
}

Test(simulate, the_real_fixture_alone_cannot_pass_per_slot_vf, .timeout = 60)
{
        Inventory *inv = load_xml("mpibind/eas-tioga.xml");
        SlotMap *m = plan(inv);
        cr_expect_not(m->invariants[INVARIANT_PER_SLOT_VF].ok,
                      "without simulation the XML cannot tell SR-IOV capacity");
        slot_map_free(m);
        inventory_free(inv);
}

Test(simulate, discovery_document_is_marked_simulated, .timeout = 60)
{
        _cleanup_free_ char *xml = fixture("mpibind/eas-tioga.xml");
        HostSource h = {.simulate = true, .path = xml};
        json_t *doc = NULL;
        char fp[FINGERPRINT_MAX];
        cr_assert_eq(host_discover(&h, &doc, fp), 0);
        cr_expect(json_is_true(json_object_get(doc, "simulated")));
        cr_expect_gt(json_array_size(json_object_get(doc, "simulated_values")), 0);
        cr_expect_str_eq(json_string_value(json_object_get(doc, "fingerprint")), fp);
        cr_expect_eq(json_array_size(json_object_get(doc, "slots")), 8);
        json_t *inv;
        size_t i;
        json_array_foreach(json_object_get(doc, "invariants"), i, inv)
            cr_expect(json_is_true(json_object_get(inv, "ok")), "%s",
                      json_string_value(json_object_get(inv, "name")));
        json_decref(doc);
}

Test(simulate, a_real_source_is_not_marked_simulated, .timeout = 60)
{
        _cleanup_free_ char *xml = fixture("mpibind/eas-tioga.xml");
        HostSource h = {.simulate = false,
                        .src = {.kind = INVENTORY_SOURCE_HWLOC_XML, .path = xml}};
        json_t *doc = NULL;
        char fp[FINGERPRINT_MAX];
        cr_assert_eq(host_discover(&h, &doc, fp), 0);
        cr_expect(json_is_false(json_object_get(doc, "simulated")));
        cr_expect_eq(json_array_size(json_object_get(doc, "simulated_values")), 0);
        json_decref(doc);
}
