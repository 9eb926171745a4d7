/* SPDX-License-Identifier: MIT */
/* gpuslice-agent: one verb per invocation; this table is the only place that
 * wires verb names to their handlers. */

#include <stdio.h>

#include "commands.h"
#include "log.h"
#include "macro.h"
#include "version.h"

typedef struct {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *help;
} Verb;

static const Verb verbs[] = {
    {"discover", cmd_discover, "print the host's inventory and candidate slot map"},
    {"run", cmd_run, "run the daemon: dial the controller and apply its commands"},
    {"facts", cmd_facts, "print the host facts sent at enrollment (JSON)"},
};

static void usage(FILE *f)
{
        fprintf(f, "Usage: gpuslice-agent COMMAND [OPTIONS]\n\nCommands:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                fprintf(f, "  %-10s %s\n", verbs[i].name, verbs[i].help);
        fprintf(f, "\nRun 'gpuslice-agent COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
        log_set_component("agent");

        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
                usage(stdout);
                return 0;
        }
        if (streq(argv[1], "--version")) {
                printf("gpuslice-agent %s\n", GPUSLICE_VERSION);
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(argv[1], verbs[i].name))
                        return verbs[i].run(argc - 1, argv + 1);

        fprintf(stderr, "gpuslice-agent: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return 2;
}
