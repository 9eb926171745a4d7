/* SPDX-License-Identifier: MIT */
#include "events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "id.h"
#include "json-util.h"
#include "timeutil.h"

int event_emit(Db *db, const char *type, const char *subject_id, json_t *data, char *ret_id)
{
        _cleanup_(json_decrefp) json_t *owned = data;
        char id[ID_MAX];
        int r = id_new("evt", id);
        if (r < 0)
                return r;
        _cleanup_free_ char *d = owned ? json_dumps(owned, JSON_COMPACT) : NULL;
        if (owned && !d)
                return -ENOMEM;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "INSERT INTO events (id, at, type, subject_id, data) VALUES (?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 3, type, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 4, subject_id);
        sqlite3_bind_text(s, 5, d ? d : "{}", -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        if (ret_id)
                memcpy(ret_id, id, strlen(id) + 1);
        return 0;
}

int events_list(Db *db, long long after_seq, int limit, const char *type, const char *subject_id,
                int (*fn)(long long seq, json_t *event, void *userdata), void *userdata)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT seq, id, at, type, subject_id, data FROM events WHERE seq > ?1 "
                        "AND (?2 IS NULL OR type = ?2) AND (?3 IS NULL OR subject_id = ?3) "
                        "ORDER BY seq LIMIT ?4");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, after_seq);
        db_bind_text(s, 2, type);
        db_bind_text(s, 3, subject_id);
        sqlite3_bind_int(s, 4, limit > 0 ? limit : -1);
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                json_t *data = json_loads(strempty(db_column_text(s, 5)), JSON_DECODE_ANY, NULL);
                _cleanup_(json_decrefp) json_t *e =
                    json_pack("{s:s, s:o, s:s, s:s?, s:o}", "id", strempty(db_column_text(s, 1)),
                              "at", json_timestamp((uint64_t)sqlite3_column_int64(s, 2)), "type",
                              strempty(db_column_text(s, 3)), "subject_id", db_column_text(s, 4),
                              "data", data ? data : json_object());
                if (!e)
                        return -ENOMEM;
                int r = fn(sqlite3_column_int64(s, 0), e, userdata);
                if (r != 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}
