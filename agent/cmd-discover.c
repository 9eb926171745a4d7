/* SPDX-License-Identifier: MIT */
/* gpuslice-agent discover [--sysfs-root DIR | --hwloc-xml FILE] [--json]
 * Prints the host's inventory and candidate slot map, then exits:
 * 0 ok, 2 bad input (usage, missing/unreadable/malformed source), 1 failure. */

#include <getopt.h>
#include <jansson.h>

#include "commands.h"
#include "discovery-json.h"
#include "fingerprint.h"
#include "inventory.h"
#include "log.h"
#include "macro.h"
#include "slotmap.h"

#define EXIT_BAD_INPUT 2

static void discover_usage(FILE *f)
{
        fputs("Usage: gpuslice-agent discover [--sysfs-root DIR | --hwloc-xml FILE] [--json]\n"
              "  Prints the host's PCI/NUMA inventory and candidate slot map.\n"
              "  --sysfs-root DIR  read a sysfs snapshot rooted at DIR (DIR/sys/...)\n"
              "  --hwloc-xml FILE  read an hwloc XML export\n"
              "  --json            print the discovery document as JSON\n"
              "Exit status: 0 ok, 2 bad input, 1 failure.\n",
              f);
}

static bool is_bad_input(int r)
{
        switch (-r) {
        case ENOENT:
        case EACCES:
        case EPERM:
        case ENOTDIR:
        case EISDIR:
        case EBADMSG:
        case ELOOP:
        case EINVAL:
        case ENAMETOOLONG:
                return true;
        default:
                return false;
        }
}

static void print_table(const Inventory *inv, const SlotMap *map, const char *fingerprint)
{
        printf("source: %s %s\n", inventory_source_kind_to_string(inv->source), inv->source_path);
        printf("NUMA nodes: %zu  GPUs: %zu  NICs: %zu  NVMe: %zu  PCI functions: %zu\n",
               inv->n_numa_nodes, inventory_count(inv, DEVICE_KIND_GPU, true),
               inventory_count(inv, DEVICE_KIND_NIC, false),
               inventory_count(inv, DEVICE_KIND_NVME, false), inv->n_devices);
        for (size_t i = 0; i < inv->n_numa_nodes; i++) {
                const NumaNode *n = &inv->numa_nodes[i];
                char mem[32] = "unknown";
                if (n->memory_bytes >= 0)
                        snprintf(mem, sizeof(mem), "%.1f GiB",
                                 (double)n->memory_bytes / (1024.0 * 1024 * 1024));
                printf("  numa %d: cpus %s, memory %s%s\n", n->id,
                       n->cpus ? (n->cpus[0] ? n->cpus : "none") : "unknown", mem,
                       n->cpus && !n->cpus[0] ? " (memory-only, never a slot's home)" : "");
        }
        printf("\n%-22s %-13s %-22s %-13s %-5s %s\n", "SLOT", "GPU", "NIC VF", "NVMe", "NUMA",
               "STATUS");
        if (map->n_slots == 0)
                printf("(no GPU: no slots)\n");
        for (size_t i = 0; i < map->n_slots; i++) {
                const Slot *s = &map->slots[i];
                char vf[40] = "-", numa[16] = "?";
                if (s->nic)
                        snprintf(vf, sizeof(vf), "%s vf %d", s->nic, s->vf_index);
                if (s->numa_node >= 0)
                        snprintf(numa, sizeof(numa), "%d", s->numa_node);
                printf("%-22s %-13s %-22s %-13s %-5s %s\n", s->id, s->gpus[0], vf,
                       s->nvme ? s->nvme : "-", numa, s->ok ? "ok" : "problem");
                for (char **p = s->problems; p && *p; p++)
                        printf("    problem: %s\n", *p);
        }
        printf("\n");
        for (size_t k = 0; k < _INVARIANT_MAX; k++)
                printf("%-15s %-4s %s\n", invariant_to_string(k),
                       map->invariants[k].ok ? "ok" : "FAIL", strempty(map->invariants[k].detail));
        printf("%-15s %-4s %s\n", "iommu", map->iommu.ok ? "ok" : "FAIL",
               strempty(map->iommu.detail));
        for (char **n = inv->notes; n && *n; n++)
                printf("note: %s\n", *n);
        for (char **n = map->notes; n && *n; n++)
                printf("note: %s\n", *n);
        printf("fingerprint: %s\n", fingerprint);
}

int cmd_discover(int argc, char **argv)
{
        static const struct option options[] = {
            {"sysfs-root", required_argument, NULL, 'r'},
            {"hwloc-xml", required_argument, NULL, 'x'},
            {"json", no_argument, NULL, 'j'},
            {"help", no_argument, NULL, 'h'},
            {},
        };
        InventorySource src = {.kind = INVENTORY_SOURCE_LIVE, .path = "/"};
        bool json = false, have_src = false;
        int c, r;

        optind = 1;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0) {
                switch (c) {
                case 'r':
                case 'x':
                        if (have_src) {
                                fprintf(stderr, "gpuslice-agent discover: --sysfs-root and "
                                                "--hwloc-xml are exclusive, give one\n");
                                return EXIT_BAD_INPUT;
                        }
                        have_src = true;
                        src.kind =
                            c == 'r' ? INVENTORY_SOURCE_SYSFS_ROOT : INVENTORY_SOURCE_HWLOC_XML;
                        src.path = optarg;
                        if (!*optarg) {
                                fprintf(stderr, "gpuslice-agent discover: empty path\n");
                                return EXIT_BAD_INPUT;
                        }
                        break;
                case 'j':
                        json = true;
                        break;
                case 'h':
                        discover_usage(stdout);
                        return 0;
                default:
                        fprintf(stderr,
                                "gpuslice-agent discover: unknown or incomplete option '%s'\n",
                                argv[optind - 1]);
                        discover_usage(stderr);
                        return EXIT_BAD_INPUT;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "gpuslice-agent discover: unexpected argument '%s'\n",
                        argv[optind]);
                discover_usage(stderr);
                return EXIT_BAD_INPUT;
        }

        _cleanup_(inventory_freep) Inventory *inv = NULL;
        r = inventory_load(&src, &inv);
        if (r < 0)
                return is_bad_input(r) ? EXIT_BAD_INPUT : EXIT_FAILURE;

        _cleanup_(slot_map_freep) SlotMap *map = NULL;
        r = slot_map_plan(inv, &map);
        if (r < 0)
                return EXIT_FAILURE;

        char fp[FINGERPRINT_MAX];
        r = fingerprint_compute(inv, fp);
        if (r < 0)
                return EXIT_FAILURE;

        if (json) {
                json_t *doc = NULL;
                r = discovery_to_json(inv, map, fp, &doc);
                if (r < 0)
                        return EXIT_FAILURE;
                r = json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
                json_decref(doc);
                if (r < 0)
                        return log_error_errno(-EIO, "Cannot write JSON to stdout"), EXIT_FAILURE;
                fputc('\n', stdout);
        } else
                print_table(inv, map, fp);

        if (fflush(stdout) != 0)
                return EXIT_FAILURE;
        return 0;
}
