/* SPDX-License-Identifier: MIT */
#pragma once

#include <jansson.h>
#include <stdint.h>

/* RFC 3339 UTC string for a wall-clock time in microseconds; JSON null for 0. */
json_t *json_timestamp(uint64_t usec);
