/* SPDX-License-Identifier: MIT */
#pragma once

/* The one route table: method, path pattern, handler, who may call it. It is
 * the single place that wires API paths to code; the OpenAPI document and the
 * authorization tests are checked against it. */

#include <h2o.h>
#include <stdbool.h>
#include <stddef.h>

#include "http.h"

typedef int (*RouteHandler)(Request *r);

struct Route {
        const char *method;
        const char *pattern; /* "/api/v1/allocations/{id}": {name} matches one segment */
        RouteHandler handler;
        unsigned roles; /* 0: public; else any of these ROLE_* bits */
        const char *summary;
};

extern const Route routes[];
extern const size_t n_routes;

typedef enum {
        ROUTE_FOUND,
        ROUTE_NO_PATH,
        ROUTE_NO_METHOD,
} RouteMatchResult;

typedef struct RouteMatch {
        const Route *route;
        h2o_iovec_t params[REQUEST_MAX_PARAMS];
        size_t n_params;
        char allow[64]; /* for ROUTE_NO_METHOD: the methods the path has */
} RouteMatch;

RouteMatchResult routes_match(const char *method, size_t method_len, const char *path,
                              size_t path_len, RouteMatch *ret);
