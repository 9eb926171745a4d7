/* SPDX-License-Identifier: MIT */
#include "events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "id.h"
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
