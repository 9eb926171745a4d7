/* SPDX-License-Identifier: MIT */
/* GET /api/v1/admin/audit-logs: the audit log, oldest first, by its sequence
 * number so a cursor survives new rows; filters action, target_id (or
 * target), target_type, actor_id, from and to. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "api.h"
#include "db.h"
#include "server.h"

#define AUDIT_DEFAULT_LIMIT 50
#define AUDIT_MAX_LIMIT     500

int api_audit_list(Request *r)
{
        const char *lim = http_query(r, "limit"), *cur = http_query(r, "cursor");
        long limit = AUDIT_DEFAULT_LIMIT;
        long long after = 0;
        char *end;
        if (lim) {
                limit = strtol(lim, &end, 10);
                if (!*lim || *end || limit < 1 || limit > AUDIT_MAX_LIMIT)
                        return http_reply_invalid_field(r, "limit", "limit must be 1 to %d",
                                                        AUDIT_MAX_LIMIT);
        }
        if (cur && *cur) {
                after = cur[0] == 'c' && cur[1] ? strtoll(cur + 1, &end, 10) : -1;
                if (after < 0 || *end)
                        return http_reply_invalid_field(r, "cursor",
                                                        "cursor is not one this API handed out");
        }
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            r->server->db,
            "SELECT seq, id, at, actor_id, action, target_type, target_id, reason, details FROM "
            "audit_logs WHERE seq > ?1 AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR "
            "target_id = ?3) AND (?4 IS NULL OR actor_id = ?4) AND (?6 IS NULL OR "
            "target_type = ?6) AND (?7 = 0 OR at >= ?7) AND (?8 = 0 OR at < ?8) "
            "ORDER BY seq LIMIT ?5");
        if (!s)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the audit log now");
        /* from/to: RFC 3339, from inclusive, to exclusive. */
        usec_t range[2] = {0, 0};
        static const char *const range_names[] = {"from", "to"};
        for (size_t i = 0; i < 2; i++) {
                const char *v = http_query(r, range_names[i]);
                if (v && parse_rfc3339(v, &range[i]) < 0)
                        return http_reply_invalid_field(r, range_names[i],
                                                        "%s must be an RFC 3339 timestamp",
                                                        range_names[i]);
        }
        const char *target = http_query(r, "target_id");
        if (!target)
                target = http_query(r, "target"); /* the short name */
        sqlite3_bind_int64(s, 1, after);
        db_bind_text(s, 2, http_query(r, "action"));
        db_bind_text(s, 3, target);
        db_bind_text(s, 6, http_query(r, "target_type"));
        sqlite3_bind_int64(s, 7, (sqlite3_int64)range[0]);
        sqlite3_bind_int64(s, 8, (sqlite3_int64)range[1]);
        db_bind_text(s, 4, http_query(r, "actor_id"));
        sqlite3_bind_int64(s, 5, limit);
        json_t *items = json_array();
        long long last = 0;
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                last = sqlite3_column_int64(s, 0);
                json_t *details = json_loads(strempty(db_column_text(s, 8)), 0, NULL);
                json_array_append_new(
                    items,
                    json_pack("{s:s, s:o, s:s?, s:s, s:s?, s:s?, s:s?, s:o}", "id",
                              db_column_text(s, 1), "at",
                              json_timestamp((uint64_t)sqlite3_column_int64(s, 2)), "actor_id",
                              db_column_text(s, 3), "action", db_column_text(s, 4), "target_type",
                              db_column_text(s, 5), "target_id", db_column_text(s, 6), "reason",
                              db_column_text(s, 7), "details", details ? details : json_object()));
        }
        if (rc != SQLITE_DONE) {
                json_decref(items);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the audit log now");
        }
        json_t *next = json_null();
        if ((long)json_array_size(items) == limit) {
                char buf[32];
                snprintf(buf, sizeof(buf), "c%lld", last);
                next = json_string(buf);
        }
        return http_reply_json(r, 200,
                               json_pack("{s:o, s:o}", "items", items, "next_cursor", next));
}
