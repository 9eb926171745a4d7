/* SPDX-License-Identifier: MIT */
/* The agent's configuration keys and its environment namespace. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "config.h"
#include "macro.h"
#include "settings.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(Config *, config_free);

/* scripts/run.sh runs both daemons from one environment, where
 * GPUSLICE_AGENT_LISTEN is the controller's agent_listen. */
Test(agent_settings, the_controllers_agent_listen_is_left_alone, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *err = NULL;
        char *envp[] = {"GPUSLICE_AGENT_LISTEN=127.0.0.1:7443", NULL};
        cr_assert_eq(agent_config_new(&c), 0);
        cr_assert_eq(config_load_env(c, envp, &err), 0, "%s", strempty(err));
}

Test(agent_settings, an_unknown_agent_variable_is_refused_by_name, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *err = NULL;
        char *envp[] = {"GPUSLICE_AGENT_LISTENER=x", NULL};
        cr_assert_eq(agent_config_new(&c), 0);
        cr_assert_eq(config_load_env(c, envp, &err), -ENOENT);
        cr_assert(err && strstr(err, "GPUSLICE_AGENT_LISTENER"), "%s", strempty(err));
}

Test(agent_settings, a_known_key_is_read_from_its_variable, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *err = NULL;
        char *envp[] = {"GPUSLICE_AGENT_LOG_LEVEL=debug", NULL};
        cr_assert_eq(agent_config_new(&c), 0);
        cr_assert_eq(config_load_env(c, envp, &err), 0, "%s", strempty(err));
        cr_assert_str_eq(config_get(c, "log_level"), "debug");
}
