/* SPDX-License-Identifier: MIT */
/* Liveness and readiness. */
#include "api.h"
#include "server.h"
#include "version.h"

int api_health(Request *r)
{
        return http_reply_json(r, 200,
                               json_pack("{s:s, s:s, s:o}", "status", "ok", "version",
                                         GPUSLICE_VERSION, "started_at",
                                         json_timestamp(r->server->started_at)));
}

int api_ready(Request *r)
{
        Server *s = r->server;
        if (s->shutting_down)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "shutting down");
        /* Ready means the store answers a query, not only that the process runs. */
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st = db_stmt(s->db, "SELECT 1");
        if (!st || sqlite3_step(st) != SQLITE_ROW)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "database not answering");
        return http_reply_json(
            r, 200,
            json_pack("{s:s, s:i}", "status", "ready", "schema_version", db_schema_version(s->db)));
}
