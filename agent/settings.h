/* SPDX-License-Identifier: MIT */
#pragma once

/* The agent daemon's configuration keys (common/config.h has the precedence
 * rule): a key is also GPUSLICE_AGENT_<KEY> and --key-with-dashes. */

#include "config.h"

extern const ConfigKey agent_settings[];
extern const size_t agent_n_settings;

int agent_config_new(Config **ret);
