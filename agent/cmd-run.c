/* SPDX-License-Identifier: MIT */
/* gpuslice-agent run --config FILE [--simulate] [--KEY VALUE ...]
 * Runs the daemon: dials the controller and applies its commands. Every
 * key of agent/settings.c is also GPUSLICE_AGENT_<KEY> and --key. */

#include <unistd.h>

#include "commands.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "macro.h"
#include "settings.h"

extern char **environ;

static void run_usage(FILE *f, const Config *c)
{
        fputs("Usage: gpuslice-agent run --config FILE [--simulate] [--KEY VALUE ...]\n"
              "  Dials the controller (agent_endpoint) and applies its commands until\n"
              "  SIGTERM. Keys (also GPUSLICE_AGENT_<KEY> and the config file):\n",
              f);
        config_print_help(c, f);
        fputs("Exit status: 0 stopped by a signal, 2 bad configuration, 1 failure.\n", f);
}

int cmd_run(int argc, char **argv)
{
        Config *c = NULL;
        _cleanup_free_ char *err = NULL;
        int r, next;

        r = agent_config_new(&c);
        if (r < 0)
                return 1;
        for (int i = 1; i < argc; i++)
                if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
                        run_usage(stdout, c);
                        config_free(c);
                        return 0;
                }
        r = config_load_all(c, argc, argv, 1, environ, &next, &err);
        if (r < 0 || next < argc) {
                fprintf(stderr, "gpuslice-agent run: %s\n",
                        err ? err : "unexpected argument (see --help)");
                config_free(c);
                return 2;
        }
        LogLevel level;
        if (log_level_from_string(config_get(c, "log_level"), &level) < 0) {
                fprintf(stderr, "gpuslice-agent run: log_level must be error, warning, info or "
                                "debug\n");
                config_free(c);
                return 2;
        }
        log_set_level(level);
        static const char *const required[] = {"agent_endpoint", "node_id"};
        for (size_t i = 0; i < ELEMENTSOF(required); i++)
                if (!config_get(c, required[i]) || !*config_get(c, required[i])) {
                        fprintf(stderr,
                                "gpuslice-agent run: %s is not set; enroll the host with "
                                "scripts/bootstrap.sh, which writes the config\n",
                                required[i]);
                        config_free(c);
                        return 2;
                }
        r = daemon_run(c);
        config_free(c);
        return r;
}
