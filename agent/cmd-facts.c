/* SPDX-License-Identifier: MIT */
/* gpuslice-agent facts [--simulate] [--simulate-topology FILE] [--sysfs-root DIR | --hwloc-xml
 * FILE] Prints the facts bootstrap.sh sends with the enrollment request, as JSON: {hostname,
 * kernel, agent_version, simulated, fingerprint, gpus, source}. A host that cannot be discovered
 * still gets facts (fingerprint null). */

#include <jansson.h>
#include <sys/utsname.h>

#include "commands.h"
#include "config.h"
#include "host.h"
#include "log.h"
#include "macro.h"
#include "settings.h"
#include "version.h"

int cmd_facts(int argc, char **argv)
{
        Config *c = NULL;
        _cleanup_free_ char *err = NULL;
        int r, next;

        r = agent_config_new(&c);
        if (r < 0)
                return 1;
        for (int i = 1; i < argc; i++)
                if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
                        puts("Usage: gpuslice-agent facts [--simulate] [--simulate-topology FILE] "
                             "[--sysfs-root DIR | --hwloc-xml FILE] [--config FILE]\n"
                             "  Prints the host facts sent at enrollment as JSON.");
                        config_free(c);
                        return 0;
                }
        r = config_load_all(c, argc, argv, 1, NULL, &next, &err);
        if (r < 0 || next < argc) {
                fprintf(stderr, "gpuslice-agent facts: %s\n", err ? err : "unexpected argument");
                config_free(c);
                return 2;
        }

        HostSource h;
        r = host_source_from_config(c, &h);
        config_free(c);
        if (r < 0)
                return 2;

        struct utsname u;
        char hostname[256] = "";
        (void)gethostname(hostname, sizeof(hostname) - 1);
        if (uname(&u) < 0)
                memset(&u, 0, sizeof(u));

        json_t *facts = json_object();
        json_object_set_new(facts, "hostname", json_string(hostname));
        json_object_set_new(facts, "kernel", json_string(u.release));
        json_object_set_new(facts, "agent_version", json_string(GPUSLICE_VERSION));
        json_object_set_new(facts, "simulated", json_boolean(h.simulate));
        json_object_set_new(
            facts, "source",
            json_string(h.simulate ? h.path : inventory_source_kind_to_string(h.src.kind)));

        _cleanup_(inventory_freep) Inventory *inv = NULL;
        char fp[FINGERPRINT_MAX];
        if (host_load(&h, &inv) >= 0 && fingerprint_compute(inv, fp) >= 0) {
                json_object_set_new(facts, "fingerprint", json_string(fp));
                json_object_set_new(facts, "gpus",
                                    json_integer(inventory_count(inv, DEVICE_KIND_GPU, true)));
        } else {
                json_object_set_new(facts, "fingerprint", json_null());
                json_object_set_new(facts, "gpus", json_null());
        }
        host_source_done(&h);
        r = json_dumpf(facts, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(facts);
        fputc('\n', stdout);
        return r < 0 || fflush(stdout) != 0 ? 1 : 0;
}
