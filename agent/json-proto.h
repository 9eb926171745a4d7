/* SPDX-License-Identifier: MIT */
#pragma once

/* Writes a JSON value into a ProtoWriter (msgpack): objects become maps,
 * non-negative integers uint, negative ones int, reals float 64. Used to
 * carry the discovery document in a reply. */

#include <jansson.h>

#include "proto.h"

int json_to_proto(ProtoWriter *w, const json_t *v);
