/* SPDX-License-Identifier: MIT */
/* placement.c: best fit keeps large blocks free, the SKU's topology rule and
 * pci_ids decide which slots may go together, only schedulable nodes are
 * picked, and the index follows every change (also against a brute-force
 * model under random changes, and when loaded from the database). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "harness.h"
#include "nodes.h"
#include "placement.h"

TestSuite(placement, .timeout = 60);

static const char *const H100[] = {"10de:2330"};
static const char *const A100[] = {"10de:20b2"};
static const char *const BOTH[] = {"10de:2330", "10de:20b2"};

static PlacementRule rule(PlacementTopology t, const char *const *ids, size_t n)
{
        return (PlacementRule){.topology = t, .pci_ids = ids, .n_pci_ids = n};
}

/* node with n slots "<node>-s<i>", numa = i / per_numa, switch = i / per_switch */
static void add_node(Placement *p, const char *node, unsigned n, unsigned per_numa,
                     unsigned per_switch, const char *pci_json)
{
        for (unsigned i = 0; i < n; i++) {
                char id[64], key[64], sw[64];
                snprintf(id, sizeof(id), "%s-s%u", node, i);
                snprintf(key, sizeof(key), "k%02u", i);
                snprintf(sw, sizeof(sw), "%s-sw%u", node, i / per_switch);
                PlacementSlot s = {.id = id,
                                   .node_id = node,
                                   .slot_key = key,
                                   .gpu_pci_ids = pci_json,
                                   .numa_node = (int)(i / per_numa),
                                   .switch_id = sw,
                                   .free = true};
                cr_assert_eq(placement_slot_put(p, &s), 0);
        }
        cr_assert_eq(placement_node_set(p, node, PLACEMENT_NODE_SCHEDULABLE), 0);
}

static void take(Placement *p, const PlacementPick *pk)
{
        for (size_t i = 0; i < pk->n_slots; i++)
                cr_assert_eq(placement_slot_set_free(p, pk->slot_ids[i], false), 0);
}

Test(placement, best_fit_keeps_the_large_block_free)
{
        Placement *p = NULL;
        cr_assert_eq(placement_new(&p), 0);
        add_node(p, "big", 8, 8, 8, "[\"10de:2330\"]");
        add_node(p, "small", 2, 8, 8, "[\"10de:2330\"]");
        PlacementRule r = rule(PLACEMENT_TOPOLOGY_NODE, H100, 1);
        PlacementPick pk;
        cr_assert_eq(placement_pick(p, &r, 2, &pk), 0);
        cr_assert_str_eq(pk.node_id, "small", "two GPUs fit the two-slot node exactly");
        cr_assert_eq(pk.n_slots, 2);
        take(p, &pk);
        cr_assert_eq(placement_pick(p, &r, 1, &pk), 0);
        cr_assert_str_eq(pk.node_id, "big");
        cr_assert_str_eq(pk.slot_ids[0], "big-s0", "slots are taken in slot-key order");
        cr_assert_eq(placement_pick(p, &r, 8, &pk), 0);
        cr_assert_eq(pk.n_slots, 8);
        take(p, &pk);
        cr_assert_eq(placement_pick(p, &r, 1, &pk), -ENOSPC);
        cr_assert_eq(placement_n_free(p), 0);
        cr_assert_eq(placement_n_slots(p), 10);
        cr_assert_eq(placement_slot_set_free(p, "big-s3", true), 0);
        cr_assert_eq(placement_pick(p, &r, 1, &pk), 0);
        cr_assert_str_eq(pk.slot_ids[0], "big-s3");
        cr_assert_eq(placement_slot_set_free(p, "nope", true), -ENOENT);
        placement_free(p);
}

Test(placement, numa_and_switch_rules_keep_slots_together)
{
        Placement *p = NULL;
        cr_assert_eq(placement_new(&p), 0);
        /* 8 slots: numa 0 = s0..s3, numa 1 = s4..s7; switches of two */
        add_node(p, "n1", 8, 4, 2, "[\"10de:2330\"]");
        PlacementRule numa = rule(PLACEMENT_TOPOLOGY_NUMA, H100, 1);
        PlacementRule sw = rule(PLACEMENT_TOPOLOGY_SWITCH, H100, 1);
        PlacementRule node = rule(PLACEMENT_TOPOLOGY_NODE, H100, 1);
        cr_assert_eq(placement_max_group(p, &numa, true), 4);
        cr_assert_eq(placement_max_group(p, &sw, true), 2);
        cr_assert_eq(placement_max_group(p, &node, true), 8);
        PlacementPick pk;
        cr_assert_eq(placement_pick(p, &numa, 5, &pk), -ENOSPC, "no NUMA node has five");
        cr_assert_eq(placement_pick(p, &sw, 3, &pk), -ENOSPC, "no switch has three");
        cr_assert_eq(placement_pick(p, &node, 5, &pk), 0);

        /* take one slot on numa 0: a 4-GPU numa launch must go to numa 1 */
        cr_assert_eq(placement_slot_set_free(p, "n1-s1", false), 0);
        cr_assert_eq(placement_pick(p, &numa, 4, &pk), 0);
        cr_assert_eq(pk.n_slots, 4);
        for (size_t i = 0; i < 4; i++) {
                char want[16];
                snprintf(want, sizeof(want), "n1-s%zu", 4 + i);
                cr_assert_str_eq(pk.slot_ids[i], want);
        }
        /* a 2-GPU switch launch takes the switch left with two free, not the
         * one with s1 taken... both remaining switches on numa 0 */
        cr_assert_eq(placement_pick(p, &sw, 1, &pk), 0);
        cr_assert_str_eq(pk.slot_ids[0], "n1-s0", "best fit: the switch with one free slot");
        cr_assert_eq(placement_pick(p, &sw, 2, &pk), 0);
        cr_assert(strcmp(pk.slot_ids[0], "n1-s2") == 0 || strcmp(pk.slot_ids[0], "n1-s4") == 0 ||
                  strcmp(pk.slot_ids[0], "n1-s6") == 0);
        placement_free(p);
}

Test(placement, unknown_switch_or_numa_is_a_group_of_one)
{
        Placement *p = NULL;
        cr_assert_eq(placement_new(&p), 0);
        for (int i = 0; i < 3; i++) {
                char id[16], key[16];
                snprintf(id, sizeof(id), "u%d", i);
                snprintf(key, sizeof(key), "k%d", i);
                PlacementSlot s = {.id = id,
                                   .node_id = "n",
                                   .slot_key = key,
                                   .gpu_pci_ids = "[\"10de:2330\"]",
                                   .numa_node = -1,
                                   .switch_id = NULL,
                                   .free = true};
                cr_assert_eq(placement_slot_put(p, &s), 0);
        }
        cr_assert_eq(placement_node_set(p, "n", PLACEMENT_NODE_SCHEDULABLE), 0);
        PlacementRule sw = rule(PLACEMENT_TOPOLOGY_SWITCH, H100, 1);
        PlacementRule numa = rule(PLACEMENT_TOPOLOGY_NUMA, H100, 1);
        PlacementRule node = rule(PLACEMENT_TOPOLOGY_NODE, H100, 1);
        cr_assert_eq(placement_max_group(p, &sw, true), 1, "never guess a shared switch");
        cr_assert_eq(placement_max_group(p, &numa, true), 1);
        cr_assert_eq(placement_max_group(p, &node, true), 3);
        placement_free(p);
}

Test(placement, a_slot_matches_only_the_skus_pci_ids)
{
        Placement *p = NULL;
        cr_assert_eq(placement_new(&p), 0);
        add_node(p, "h", 4, 4, 4, "[\"10de:2330\"]");
        add_node(p, "a", 2, 4, 4, "[\"10de:20b2\"]");
        PlacementRule a100 = rule(PLACEMENT_TOPOLOGY_NODE, A100, 1);
        PlacementRule h100 = rule(PLACEMENT_TOPOLOGY_NODE, H100, 1);
        const char *const upper[] = {"10DE:2330"};
        PlacementRule h100_upper = rule(PLACEMENT_TOPOLOGY_NODE, upper, 1);
        const char *const other[] = {"1002:74a1"};
        PlacementRule amd = rule(PLACEMENT_TOPOLOGY_NODE, other, 1);
        PlacementPick pk;
        cr_assert_eq(placement_pick(p, &a100, 3, &pk), -ENOSPC);
        cr_assert_eq(placement_pick(p, &a100, 2, &pk), 0);
        cr_assert_str_eq(pk.node_id, "a");
        cr_assert_eq(placement_pick(p, &h100, 3, &pk), 0);
        cr_assert_str_eq(pk.node_id, "h");
        cr_assert_eq(placement_pick(p, &h100_upper, 4, &pk), 0, "vendor:device is case blind");
        cr_assert_eq(placement_pick(p, &amd, 1, &pk), -ENOSPC);

        /* A SKU selling both models may combine them on one node. */
        add_node(p, "mixed", 0, 1, 1, "[]");
        PlacementSlot s1 = {.id = "m1",
                            .node_id = "mixed",
                            .slot_key = "1",
                            .gpu_pci_ids = "[\"10de:2330\"]",
                            .numa_node = 0,
                            .free = true};
        PlacementSlot s2 = {.id = "m2",
                            .node_id = "mixed",
                            .slot_key = "2",
                            .gpu_pci_ids = "[\"10de:20b2\"]",
                            .numa_node = 0,
                            .free = true};
        cr_assert_eq(placement_slot_put(p, &s1), 0);
        cr_assert_eq(placement_slot_put(p, &s2), 0);
        PlacementRule both = rule(PLACEMENT_TOPOLOGY_NODE, BOTH, 2);
        cr_assert_eq(placement_max_group(p, &both, true), 4);
        cr_assert_eq(placement_pick(p, &both, 2, &pk), 0);
        cr_assert_str_eq(pk.node_id, "a", "best fit: the node with exactly two");
        unsigned counts[] = {1, 2, 4, 8}, out[4];
        size_t n;
        cr_assert_eq(placement_rule_available_counts(p, &both, counts, 4, out, &n), 0);
        cr_assert_eq(n, 3);
        cr_assert_eq(out[2], 4);
        placement_free(p);
}

Test(placement, only_schedulable_nodes_are_picked)
{
        Placement *p = NULL;
        cr_assert_eq(placement_new(&p), 0);
        add_node(p, "n1", 4, 4, 4, "[\"10de:2330\"]");
        PlacementRule r = rule(PLACEMENT_TOPOLOGY_NODE, H100, 1);
        PlacementPick pk;
        cr_assert_eq(placement_node_set(p, "n1", PLACEMENT_NODE_OFFLINE), 0);
        cr_assert_eq(placement_pick(p, &r, 1, &pk), -ENOSPC);
        cr_assert_eq(placement_max_group(p, &r, true), 0);
        cr_assert_eq(placement_max_group(p, &r, false), 4, "node_offline: it would fit there");
        cr_assert_eq(placement_node_set(p, "n1", PLACEMENT_NODE_EXCLUDED), 0);
        cr_assert_eq(placement_max_group(p, &r, false), 0, "a draining node is not offline");
        cr_assert_eq(placement_node_set(p, "n1", PLACEMENT_NODE_SCHEDULABLE), 0);
        cr_assert_eq(placement_pick(p, &r, 4, &pk), 0);
        /* a slot put before its node is known waits for the node */
        PlacementSlot s = {.id = "x1",
                           .node_id = "later",
                           .slot_key = "1",
                           .gpu_pci_ids = "[\"10de:2330\"]",
                           .numa_node = 0,
                           .free = true};
        cr_assert_eq(placement_slot_put(p, &s), 0);
        take(p, &pk);
        cr_assert_eq(placement_pick(p, &r, 1, &pk), -ENOSPC);
        cr_assert_eq(placement_node_set(p, "later", PLACEMENT_NODE_SCHEDULABLE), 0);
        cr_assert_eq(placement_pick(p, &r, 1, &pk), 0);
        cr_assert_str_eq(pk.slot_ids[0], "x1");
        placement_slot_remove(p, "x1");
        cr_assert_eq(placement_pick(p, &r, 1, &pk), -ENOSPC);
        cr_assert_eq(placement_n_slots(p), 4);
        placement_free(p);
}

Test(placement, available_counts_are_those_some_group_can_host)
{
        Placement *p = NULL;
        cr_assert_eq(placement_new(&p), 0);
        add_node(p, "n1", 8, 4, 8, "[\"10de:2330\"]");
        unsigned counts[] = {1, 2, 4, 8}, out[PLACEMENT_MAX_COUNTS];
        size_t n;
        PlacementRule numa = rule(PLACEMENT_TOPOLOGY_NUMA, H100, 1);
        cr_assert_eq(placement_rule_available_counts(p, &numa, counts, 4, out, &n), 0);
        cr_assert_eq(n, 3);
        cr_assert_eq(out[0], 1);
        cr_assert_eq(out[2], 4);
        PlacementRule node = rule(PLACEMENT_TOPOLOGY_NODE, H100, 1);
        cr_assert_eq(placement_rule_available_counts(p, &node, counts, 4, out, &n), 0);
        cr_assert_eq(n, 4);
        cr_assert_eq(placement_slot_set_free(p, "n1-s0", false), 0);
        cr_assert_eq(placement_rule_available_counts(p, &node, counts, 4, out, &n), 0);
        cr_assert_eq(n, 3, "one slot taken: 8 no longer fits");
        placement_free(p);
}

/* Brute force: the smallest free count >= want among groups of the rule. */
static unsigned brute_best(const bool *free_, unsigned n_nodes, unsigned per_node,
                           unsigned per_numa, bool numa, unsigned want, const bool *online)
{
        unsigned best = 0;
        for (unsigned nd = 0; nd < n_nodes; nd++) {
                if (!online[nd])
                        continue;
                unsigned groups = numa ? per_node / per_numa : 1;
                for (unsigned g = 0; g < groups; g++) {
                        unsigned c = 0, size = numa ? per_numa : per_node;
                        for (unsigned i = 0; i < size; i++)
                                c += free_[nd * per_node + g * size + i];
                        if (c >= want && (best == 0 || c < best))
                                best = c;
                }
        }
        return best;
}

Test(placement, random_changes_agree_with_a_brute_force_model)
{
        enum { NODES = 40, PER = 8, PER_NUMA = 4 };
        Placement *p = NULL;
        cr_assert_eq(placement_new(&p), 0);
        bool free_[NODES * PER], online[NODES];
        for (unsigned nd = 0; nd < NODES; nd++) {
                char name[16];
                snprintf(name, sizeof(name), "n%02u", nd);
                add_node(p, name, PER, PER_NUMA, 2, "[\"10de:2330\"]");
                online[nd] = true;
        }
        for (unsigned i = 0; i < NODES * PER; i++)
                free_[i] = true;
        srand(7);
        PlacementRule rn = rule(PLACEMENT_TOPOLOGY_NODE, H100, 1);
        PlacementRule ru = rule(PLACEMENT_TOPOLOGY_NUMA, H100, 1);
        for (int step = 0; step < 4000; step++) {
                int op = rand() % 10;
                if (op < 6) {
                        bool numa = rand() % 2;
                        unsigned want = 1 + (unsigned)rand() % (numa ? PER_NUMA : PER);
                        PlacementPick pk;
                        int r = placement_pick(p, numa ? &ru : &rn, want, &pk);
                        unsigned best = brute_best(free_, NODES, PER, PER_NUMA, numa, want, online);
                        if (best == 0) {
                                cr_assert_eq(r, -ENOSPC, "step %d", step);
                                continue;
                        }
                        cr_assert_eq(r, 0, "step %d", step);
                        cr_assert_eq(pk.n_slots, want);
                        /* the chosen group had exactly `best` free slots */
                        unsigned nd = (unsigned)atoi(pk.node_id + 1), slot0;
                        cr_assert_eq(sscanf(pk.slot_ids[0] + 3, "-s%u", &slot0), 1);
                        unsigned size = numa ? PER_NUMA : PER, g0 = slot0 / size * size, c = 0;
                        for (unsigned i = 0; i < size; i++)
                                c += free_[nd * PER + g0 + i];
                        cr_assert_eq(c, best, "step %d: best fit", step);
                        for (size_t i = 0; i < pk.n_slots; i++) {
                                unsigned s;
                                sscanf(pk.slot_ids[i] + 3, "-s%u", &s);
                                cr_assert(free_[nd * PER + s]);
                                free_[nd * PER + s] = false;
                                cr_assert_eq(placement_slot_set_free(p, pk.slot_ids[i], false), 0);
                        }
                } else if (op < 9) {
                        unsigned i = (unsigned)rand() % (NODES * PER);
                        char id[32];
                        snprintf(id, sizeof(id), "n%02u-s%u", i / PER, i % PER);
                        free_[i] = true;
                        cr_assert_eq(placement_slot_set_free(p, id, true), 0);
                } else {
                        unsigned nd = (unsigned)rand() % NODES;
                        char name[16];
                        snprintf(name, sizeof(name), "n%02u", nd);
                        online[nd] = !online[nd];
                        cr_assert_eq(placement_node_set(p, name,
                                                        online[nd] ? PLACEMENT_NODE_SCHEDULABLE
                                                                   : PLACEMENT_NODE_OFFLINE),
                                     0);
                }
        }
        placement_free(p);
}

Test(placement, loads_from_the_database_and_reloads_a_node)
{
        _cleanup_free_ char *dir = tmpdir_new("placement");
        char path[512];
        snprintf(path, sizeof(path), "%s/db", dir);
        Db *db = NULL;
        cr_assert_eq(db_open(path, &db), 0);
        Node n = {0};
        cr_assert_eq(nodes_insert(db, "h1", false, NULL, &n), 0);
        char sql[1024];
        snprintf(sql, sizeof(sql),
                 "UPDATE nodes SET state = 'active', online = 1 WHERE id = '%s';"
                 "INSERT INTO node_resource_slots (id, node_id, discovery_id, slot_key, gpus, "
                 "numa_node, state, approved_at, gpu_pci_ids, switch) VALUES "
                 "('slt_a', '%s', 'd', 'k1', '[]', 0, 'available', 1, '[\"10de:2330\"]', 'sw0'),"
                 "('slt_b', '%s', 'd', 'k2', '[]', 0, 'available', 1, '[\"10de:2330\"]', 'sw0'),"
                 "('slt_c', '%s', 'd', 'k3', '[]', 1, 'quarantined', 1, '[\"10de:2330\"]', "
                 "'sw1')",
                 n.id, n.id, n.id, n.id);
        cr_assert_eq(db_exec(db, sql), 0);
        Placement *p = NULL;
        cr_assert_eq(placement_new(&p), 0);
        cr_assert_eq(placement_load(p, db), 0);
        cr_assert_eq(placement_n_slots(p), 3);
        cr_assert_eq(placement_n_free(p), 2);
        PlacementRule r = rule(PLACEMENT_TOPOLOGY_SWITCH, H100, 1);
        PlacementPick pk;
        cr_assert_eq(placement_pick(p, &r, 2, &pk), 0);
        cr_assert_str_eq(pk.node_id, n.id);

        snprintf(sql, sizeof(sql),
                 "UPDATE node_resource_slots SET state = 'available' WHERE id = 'slt_c';"
                 "DELETE FROM node_resource_slots WHERE id = 'slt_a';"
                 "UPDATE nodes SET online = 0 WHERE id = '%s'",
                 n.id);
        cr_assert_eq(db_exec(db, sql), 0);
        cr_assert_eq(placement_node_reload(p, db, n.id), 0);
        cr_assert_eq(placement_n_slots(p), 2);
        cr_assert_eq(placement_n_free(p), 2);
        cr_assert_eq(placement_pick(p, &r, 1, &pk), -ENOSPC, "its agent is away");
        cr_assert_eq(placement_max_group(p, &r, false), 1);
        snprintf(sql, sizeof(sql), "UPDATE nodes SET online = 1 WHERE id = '%s'", n.id);
        cr_assert_eq(db_exec(db, sql), 0);
        cr_assert_eq(placement_node_reload(p, db, n.id), 0);
        cr_assert_eq(placement_pick(p, &r, 1, &pk), 0);
        placement_free(p);
        node_done(&n);
        db_close(db);
        tmpdir_remove(dir);
}
