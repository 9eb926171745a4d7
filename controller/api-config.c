/* SPDX-License-Identifier: MIT */
/* GET /api/v1/config: what a client needs to know about this deployment.
 * metrics_url_template is the operator's `metrics_url_template` setting
 * (null when unset); clients replace {allocation_id} and {node_id} in it. */
#include "api.h"
#include "server.h"

int api_config(Request *r)
{
        const char *metrics = config_get(r->server->config, "metrics_url_template");
        return http_reply_json(r, 200,
                               json_pack("{s:o, s:{s:[s], s:b}}", "metrics_url_template",
                                         metrics && *metrics ? json_string(metrics) : json_null(),
                                         "features", "pricing_modes", "on_demand", "idle_suspend",
                                         false));
}
