/* SPDX-License-Identifier: MIT */
/* routes.c: the route table and the matcher. The table grows as API areas
 * land, so most checks walk every entry instead of naming paths. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "routes.h"
#include "users.h"

TestSuite(routes, .timeout = 30);

static RouteMatchResult match(const char *method, const char *path, RouteMatch *m)
{
        return routes_match(method, strlen(method), path, strlen(path), m);
}

/* Turns "/a/{id}/b" into "/a/v0/b", recording the values used. */
static void concrete_path(const char *pattern, char *out, size_t size, char values[][16],
                          size_t *n_values)
{
        size_t o = 0, n = 0;
        for (const char *p = pattern; *p && o + 16 < size;) {
                if (*p == '{') {
                        snprintf(values[n], 16, "v%zu_x", n);
                        o += (size_t)snprintf(out + o, size - o, "%s", values[n]);
                        n++;
                        p = strchr(p, '}') + 1;
                } else
                        out[o++] = *p++;
        }
        out[o] = '\0';
        *n_values = n;
}

/* The first route whose concrete path and method match wins; walk the table
 * to find which one that is so that overlapping patterns are accounted for. */
Test(routes, every_route_is_reachable_with_its_params)
{
        cr_assert_gt(n_routes, 0);
        for (size_t i = 0; i < n_routes; i++) {
                char path[512], values[REQUEST_MAX_PARAMS + 1][16];
                size_t nv = 0;
                concrete_path(routes[i].pattern, path, sizeof(path), values, &nv);
                cr_assert_leq(nv, REQUEST_MAX_PARAMS, "%s has too many params", routes[i].pattern);
                RouteMatch m;
                cr_assert_eq(match(routes[i].method, path, &m), ROUTE_FOUND, "%s %s",
                             routes[i].method, path);
                cr_assert_str_eq(m.route->method, routes[i].method);
                if (m.route != &routes[i])
                        continue; /* shadowed by an earlier, equally matching pattern */
                cr_assert_eq(m.n_params, nv, "%s", path);
                for (size_t k = 0; k < nv; k++)
                        cr_assert(m.params[k].len == strlen(values[k]) &&
                                      memcmp(m.params[k].base, values[k], m.params[k].len) == 0,
                                  "%s param %zu", path, k);
        }
}

Test(routes, every_route_has_a_summary_and_known_roles)
{
        for (size_t i = 0; i < n_routes; i++) {
                cr_assert(routes[i].summary && *routes[i].summary, "%s", routes[i].pattern);
                cr_assert(routes[i].handler, "%s", routes[i].pattern);
                cr_assert_eq(routes[i].roles & ~(unsigned)ROLE_ANY, 0, "%s", routes[i].pattern);
                cr_assert(startswith(routes[i].pattern, "/api/v1/"), "%s", routes[i].pattern);
                for (size_t j = 0; j < i; j++)
                        cr_assert(!(streq(routes[i].method, routes[j].method) &&
                                    streq(routes[i].pattern, routes[j].pattern)),
                                  "duplicate route %s %s", routes[i].method, routes[i].pattern);
        }
}

Test(routes, contract_auth_routes_exist)
{
        static const struct {
                const char *method, *path;
                bool public;
        } want[] = {
            {"GET", "/api/v1/health", true},
            {"GET", "/api/v1/ready", true},
            {"POST", "/api/v1/auth/personal/signup", true},
            {"POST", "/api/v1/auth/personal/login", true},
            {"POST", "/api/v1/auth/token/refresh", true},
            {"POST", "/api/v1/auth/logout", false},
            {"GET", "/api/v1/me", false},
        };
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                RouteMatch m;
                cr_assert_eq(match(want[i].method, want[i].path, &m), ROUTE_FOUND, "%s %s",
                             want[i].method, want[i].path);
                cr_assert_eq(m.route->roles == 0, want[i].public, "%s", want[i].path);
        }
}

Test(routes, trailing_slash_is_tolerated_once)
{
        RouteMatch m;
        cr_assert_eq(match("GET", "/api/v1/health/", &m), ROUTE_FOUND);
        cr_assert_str_eq(m.route->pattern, "/api/v1/health");
        cr_assert_eq(match("GET", "/api/v1/health//", &m), ROUTE_NO_PATH);
}

Test(routes, paths_that_match_nothing)
{
        const char *paths[] = {
            "",
            "/",
            "/api",
            "/api/v1",
            "/api/v1/",
            "/api/v1/heal",
            "/api/v1/healthz",
            "/api/v1/health/extra",
            "/api/v2/health",
            "/API/V1/HEALTH",
            "api/v1/health",
            "/api/v1/auth/personal",
            "/api/v1/auth/personal/signup/x",
        };
        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                RouteMatch m;
                cr_assert_eq(match("GET", paths[i], &m), ROUTE_NO_PATH, "\"%s\"", paths[i]);
                cr_assert_null(m.route);
        }
}

Test(routes, method_is_case_sensitive_and_exact)
{
        RouteMatch m;
        cr_assert_eq(match("get", "/api/v1/health", &m), ROUTE_NO_METHOD);
        cr_assert_eq(match("GETX", "/api/v1/health", &m), ROUTE_NO_METHOD);
        cr_assert_eq(match("GE", "/api/v1/health", &m), ROUTE_NO_METHOD);
}

/* For every path, a method it does not have is a 405 whose allow list names
 * exactly the methods the path has. */
Test(routes, wrong_method_lists_the_allowed_ones)
{
        for (size_t i = 0; i < n_routes; i++) {
                char path[512], values[REQUEST_MAX_PARAMS + 1][16];
                size_t nv = 0;
                concrete_path(routes[i].pattern, path, sizeof(path), values, &nv);
                RouteMatch m;
                cr_assert_eq(match("BREW", path, &m), ROUTE_NO_METHOD, "%s", path);
                cr_assert_null(m.route);
                cr_assert(strstr(m.allow, routes[i].method), "%s: allow \"%s\" lacks %s", path,
                          m.allow, routes[i].method);
                /* and every listed method does match */
                char allow[64];
                snprintf(allow, sizeof(allow), "%s", m.allow);
                for (char *save = NULL, *tok = strtok_r(allow, ", ", &save); tok;
                     tok = strtok_r(NULL, ", ", &save)) {
                        RouteMatch m2;
                        cr_assert_eq(match(tok, path, &m2), ROUTE_FOUND, "%s %s", tok, path);
                }
        }
        RouteMatch m;
        cr_assert_eq(match("GET", "/api/v1/auth/personal/signup", &m), ROUTE_NO_METHOD);
        cr_assert_str_eq(m.allow, "POST");
}
