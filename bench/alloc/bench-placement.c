/* SPDX-License-Identifier: MIT */
/* Placement latency: the in-memory index with NODES nodes of 8 slots each
 * (two NUMA nodes of four, PCIe switches of two), filled to a steady state
 * around FILL (share of slots taken), then ROUNDS of a mixed workload: a
 * pick for 1, 2, 4 or 8 GPUs under the node, numa or switch rule, the picked
 * slots taken (as a committed launch does), and random slots freed (as
 * releases do) to hold the fill. Each pick is timed alone; prints p50, p99,
 * p99.9 and max in microseconds. Target: p99 <= 100 us at 10,000 x 8.
 * Usage: bench-placement [NODES=10000] [ROUNDS=200000] [FILL=0.7] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "placement.h"

static double now_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
        unsigned nodes = argc > 1 ? (unsigned)atoi(argv[1]) : 10000;
        unsigned rounds = argc > 2 ? (unsigned)atoi(argv[2]) : 200000;
        double fill = argc > 3 ? atof(argv[3]) : 0.7;
        unsigned n_slots = nodes * 8;
        Placement *p = NULL;
        if (placement_new(&p) < 0)
                return 1;
        char(*ids)[32] = calloc(n_slots, sizeof(*ids));
        bool *taken = calloc(n_slots, sizeof(bool));
        if (!ids || !taken)
                return 1;
        double t0 = now_us();
        for (unsigned n = 0; n < nodes; n++) {
                char node[32];
                snprintf(node, sizeof(node), "nod_%08u", n);
                for (unsigned i = 0; i < 8; i++) {
                        unsigned k = n * 8 + i;
                        char key[16], sw[48];
                        snprintf(ids[k], sizeof(ids[k]), "slt_%08u_%u", n, i);
                        snprintf(key, sizeof(key), "k%u", i);
                        snprintf(sw, sizeof(sw), "%s-sw%u", node, i / 2);
                        PlacementSlot s = {.id = ids[k],
                                           .node_id = node,
                                           .slot_key = key,
                                           .gpu_pci_ids = "[\"10de:2330\"]",
                                           .numa_node = (int)(i / 4),
                                           .switch_id = sw,
                                           .free = true};
                        if (placement_slot_put(p, &s) < 0)
                                return 1;
                }
                placement_node_set(p, node, PLACEMENT_NODE_SCHEDULABLE);
        }
        double t_load = now_us() - t0;

        srand(42);
        /* Fill to the steady state with single slots at random. */
        unsigned n_taken = 0;
        while (n_taken < (unsigned)(fill * n_slots)) {
                unsigned k = (unsigned)rand() % n_slots;
                if (taken[k])
                        continue;
                taken[k] = true;
                placement_slot_set_free(p, ids[k], false);
                n_taken++;
        }

        static const char *const pci[] = {"10de:2330"};
        const PlacementTopology topo[] = {PLACEMENT_TOPOLOGY_NODE, PLACEMENT_TOPOLOGY_NUMA,
                                          PLACEMENT_TOPOLOGY_SWITCH};
        const unsigned counts[] = {1, 1, 1, 2, 2, 4, 8};
        double *lat = calloc(rounds, sizeof(double));
        unsigned misses = 0;
        if (!lat)
                return 1;
        for (unsigned r = 0; r < rounds; r++) {
                PlacementRule rule = {.topology = topo[rand() % 3], .pci_ids = pci, .n_pci_ids = 1};
                unsigned want = counts[rand() % ELEMENTSOF(counts)];
                if (rule.topology == PLACEMENT_TOPOLOGY_SWITCH && want > 2)
                        want = 2;
                if (rule.topology == PLACEMENT_TOPOLOGY_NUMA && want > 4)
                        want = 4;
                PlacementPick pk;
                double a = now_us();
                int ret = placement_pick(p, &rule, want, &pk);
                lat[r] = now_us() - a;
                if (ret < 0) {
                        misses++;
                        continue;
                }
                for (size_t i = 0; i < pk.n_slots; i++) {
                        unsigned n, s;
                        sscanf(pk.slot_ids[i], "slt_%u_%u", &n, &s);
                        taken[n * 8 + s] = true;
                        placement_slot_set_free(p, pk.slot_ids[i], false);
                        n_taken++;
                }
                /* releases keep the fill steady */
                while (n_taken > (unsigned)(fill * n_slots)) {
                        unsigned k = (unsigned)rand() % n_slots;
                        if (!taken[k])
                                continue;
                        taken[k] = false;
                        placement_slot_set_free(p, ids[k], true);
                        n_taken--;
                }
        }
        qsort(lat, rounds, sizeof(double), cmp_double);
        printf("placement: %u nodes x 8 slots, fill %.0f%%, %u picks (%u found nothing)\n", nodes,
               fill * 100, rounds, misses);
        printf("  index build: %.1f ms\n", t_load / 1000);
        printf("  pick latency us: p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", lat[rounds / 2],
               lat[(size_t)(rounds * 0.99)], lat[(size_t)(rounds * 0.999)], lat[rounds - 1]);
        free(lat);
        free(ids);
        free(taken);
        placement_free(p);
        return 0;
}
