/* SPDX-License-Identifier: MIT */
#include "audit.h"

#include <errno.h>
#include <stdlib.h>

#include "db.h"
#include "id.h"
#include "timeutil.h"

int audit_log(Db *db, const char *actor_id, const char *action, const char *target_type,
              const char *target_id, const char *reason, json_t *details)
{
        _cleanup_(json_decrefp) json_t *owned = details;
        char id[ID_MAX];
        int r = id_new("aud", id);
        if (r < 0)
                return r;
        _cleanup_free_ char *d = owned ? json_dumps(owned, JSON_COMPACT) : NULL;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO audit_logs (id, at, actor_id, action, target_type, "
                        "target_id, reason, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)now_usec());
        db_bind_text(s, 3, actor_id);
        sqlite3_bind_text(s, 4, action, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 5, target_type);
        db_bind_text(s, 6, target_id);
        db_bind_text(s, 7, reason);
        sqlite3_bind_text(s, 8, d ? d : "{}", -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}
