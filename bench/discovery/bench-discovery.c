/* SPDX-License-Identifier: MIT */
/* Times one full discovery (load, classify, plan, fingerprint, JSON) of a
 * topology source, repeated; prints median and p99 in milliseconds.
 * Usage: bench-discovery [--sysfs-root DIR | --hwloc-xml FILE] [ITERATIONS] */

#include <jansson.h>
#include <time.h>

#include "discovery-json.h"
#include "fingerprint.h"
#include "inventory.h"
#include "log.h"
#include "macro.h"
#include "slotmap.h"

static double now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static int discover_once(const InventorySource *src)
{
        _cleanup_(inventory_freep) Inventory *inv = NULL;
        _cleanup_(slot_map_freep) SlotMap *map = NULL;
        char fp[FINGERPRINT_MAX];
        json_t *doc = NULL;
        int r;

        r = inventory_load(src, &inv);
        if (r < 0)
                return r;
        r = slot_map_plan(inv, &map);
        if (r < 0)
                return r;
        r = fingerprint_compute(inv, fp);
        if (r < 0)
                return r;
        r = discovery_to_json(inv, map, fp, &doc);
        if (r < 0)
                return r;
        char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(doc);
        if (!s)
                return -ENOMEM;
        free(s);
        return 0;
}

int main(int argc, char **argv)
{
        InventorySource src = {.kind = INVENTORY_SOURCE_HWLOC_XML,
                               .path = "tests/fixtures/topology/hwloc/nvidiaDGX2.xml"};
        int iterations = 200, i = 1;

        if (argc > 2 && (streq(argv[1], "--sysfs-root") || streq(argv[1], "--hwloc-xml"))) {
                src.kind = streq(argv[1], "--sysfs-root") ? INVENTORY_SOURCE_SYSFS_ROOT
                                                          : INVENTORY_SOURCE_HWLOC_XML;
                src.path = argv[2];
                i = 3;
        }
        if (argc > i)
                iterations = atoi(argv[i]);
        if (iterations < 1)
                iterations = 1;

        double *t = calloc((size_t)iterations, sizeof(double));
        if (!t)
                return 1;
        if (discover_once(&src) < 0) /* warm-up, and fail fast on bad input */
                return 2;
        for (int k = 0; k < iterations; k++) {
                double start = now_ms();
                if (discover_once(&src) < 0)
                        return 1;
                t[k] = now_ms() - start;
        }
        qsort(t, (size_t)iterations, sizeof(double), cmp_double);
        size_t p99 = (size_t)((double)iterations * 0.99);
        if (p99 >= (size_t)iterations)
                p99 = (size_t)iterations - 1;
        printf("discovery %s: %d runs, median %.2f ms, p99 %.2f ms, max %.2f ms\n", src.path,
               iterations, t[iterations / 2], t[p99], t[iterations - 1]);
        free(t);
        return 0;
}
