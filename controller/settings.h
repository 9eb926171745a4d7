/* SPDX-License-Identifier: MIT */
#pragma once

/* The controller's configuration keys (see common/config.h for the
 * precedence rule). Every key is also GPUSLICE_<KEY> and --key-with-dashes. */

#include "config.h"

extern const ConfigKey controller_settings[];
extern const size_t controller_n_settings;

int controller_config_new(Config **ret);
