/* SPDX-License-Identifier: MIT */
#include "tasks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "json-util.h"
#include "macro.h"

void task_done(Task *t)
{
        json_decref(t->steps);
        free(t->error);
        t->steps = NULL;
        t->error = NULL;
}

static json_t *usec_json(json_t *v)
{
        return json_is_integer(v) && json_integer_value(v) > 0
                   ? json_timestamp((uint64_t)json_integer_value(v))
                   : json_null();
}

json_t *task_to_json(const Task *t)
{
        json_t *steps = json_array();
        size_t i;
        json_t *s;
        json_array_foreach(t->steps, i, s)
        {
                json_t *e = json_object_get(s, "error");
                json_array_append_new(steps, json_pack("{s:O, s:O, s:o, s:o, s:O}", "name",
                                                       json_object_get(s, "name"), "state",
                                                       json_object_get(s, "state"), "started_at",
                                                       usec_json(json_object_get(s, "started_at")),
                                                       "finished_at",
                                                       usec_json(json_object_get(s, "finished_at")),
                                                       "error", e ? e : json_null()));
        }
        return json_pack("{s:s, s:s, s:s, s:o, s:s, s:s?, s:o, s:o, s:o, s:o, s:o}", "id", t->id,
                         "kind", t->kind, "state", t->state, "steps", steps, "allocation_id",
                         t->allocation_id, "error", t->error, "deadline_at",
                         json_timestamp(t->deadline_at), "created_at",
                         json_timestamp(t->created_at), "updated_at", json_timestamp(t->updated_at),
                         "finished_at", json_timestamp(t->finished_at), "command_id",
                         t->command_id[0] ? json_string(t->command_id) : json_null());
}

int task_create(Db *db, const char *allocation_id, const char *kind, const char *const *steps,
                size_t n_steps, size_t first_done, usec_t deadline_at, const char *command_id,
                char ret_id[static ID_MAX])
{
        int r = id_new("tsk", ret_id);
        if (r < 0)
                return r;
        usec_t now = now_usec();
        /* Built by hand: this runs once per launch, on the hot path. */
        char buf[1024];
        size_t len = 0;
        buf[len++] = '[';
        for (size_t i = 0; i < n_steps; i++) {
                const char *state = i < first_done    ? "succeeded"
                                    : i == first_done ? "running"
                                                      : "pending";
                int n = snprintf(buf + len, sizeof(buf) - len,
                                 "%s{\"name\":\"%s\",\"state\":\"%s\",\"started_at\":%llu,"
                                 "\"finished_at\":%llu,\"error\":null}",
                                 i ? "," : "", steps[i], state,
                                 i <= first_done ? (unsigned long long)now : 0ull,
                                 i < first_done ? (unsigned long long)now : 0ull);
                if (n < 0 || (size_t)n >= sizeof(buf) - len - 2)
                        return -ENOBUFS;
                len += (size_t)n;
        }
        buf[len++] = ']';
        buf[len] = '\0';
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "INSERT INTO tasks (id, allocation_id, kind, state, command_id, steps, "
                "deadline_at, created_at, updated_at) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, ret_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, allocation_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, kind, -1, SQLITE_STATIC);
        db_bind_text(s, 4, command_id);
        sqlite3_bind_text(s, 5, buf, (int)len, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 6, (sqlite3_int64)deadline_at);
        sqlite3_bind_int64(s, 7, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 8, (sqlite3_int64)now);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

#define TASK_COLUMNS                                                                               \
        "t.id, t.allocation_id, a.user_id, t.kind, t.state, t.command_id, t.steps, t.error, "      \
        "t.deadline_at, t.created_at, t.updated_at, t.finished_at"

static int task_from_stmt(sqlite3_stmt *s, Task *t)
{
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        *t = (Task){0};
        snprintf(t->id, sizeof(t->id), "%s", strempty(db_column_text(s, 0)));
        snprintf(t->allocation_id, sizeof(t->allocation_id), "%s", strempty(db_column_text(s, 1)));
        snprintf(t->user_id, sizeof(t->user_id), "%s", strempty(db_column_text(s, 2)));
        snprintf(t->kind, sizeof(t->kind), "%s", strempty(db_column_text(s, 3)));
        snprintf(t->state, sizeof(t->state), "%s", strempty(db_column_text(s, 4)));
        snprintf(t->command_id, sizeof(t->command_id), "%s", strempty(db_column_text(s, 5)));
        t->steps = json_loads(strempty(db_column_text(s, 6)), 0, NULL);
        if (!json_is_array(t->steps)) {
                json_decref(t->steps);
                t->steps = json_array();
        }
        const char *e = db_column_text(s, 7);
        t->error = e ? strdup(e) : NULL;
        t->deadline_at = (usec_t)sqlite3_column_int64(s, 8);
        t->created_at = (usec_t)sqlite3_column_int64(s, 9);
        t->updated_at = (usec_t)sqlite3_column_int64(s, 10);
        t->finished_at = (usec_t)sqlite3_column_int64(s, 11);
        return t->steps ? 0 : -ENOMEM;
}

int task_get(Db *db, const char *id, Task *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " TASK_COLUMNS " FROM tasks t JOIN allocations a ON a.id = "
                        "t.allocation_id WHERE t.id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        return task_from_stmt(s, ret);
}

int task_get_by_command(Db *db, const char *command_id, Task *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " TASK_COLUMNS " FROM tasks t JOIN allocations a ON a.id = "
                        "t.allocation_id WHERE t.command_id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, command_id, -1, SQLITE_TRANSIENT);
        return task_from_stmt(s, ret);
}

int task_latest_for_allocation(Db *db, const char *allocation_id, char ret_id[static ID_MAX])
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT id FROM tasks WHERE allocation_id = ? ORDER BY seq DESC LIMIT 1");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, allocation_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        ret_id[0] = '\0';
        if (rc == SQLITE_ROW)
                snprintf(ret_id, ID_MAX, "%s", strempty(db_column_text(s, 0)));
        else if (rc != SQLITE_DONE)
                return db_errno(rc);
        return 0;
}

static bool state_is_final(const char *state)
{
        return streq(state, "succeeded") || streq(state, "failed") || streq(state, "skipped");
}

int task_step_set(Task *t, const char *step, const char *state, const char *error)
{
        size_t i;
        json_t *s;
        json_array_foreach(t->steps, i, s)
        {
                if (!streq_ptr(json_string_value(json_object_get(s, "name")), step))
                        continue;
                usec_t now = now_usec();
                json_object_set_new(s, "state", json_string(state));
                json_t *started = json_object_get(s, "started_at");
                if (!json_is_integer(started) || json_integer_value(started) == 0)
                        json_object_set_new(s, "started_at", json_integer((json_int_t)now));
                if (state_is_final(state))
                        json_object_set_new(s, "finished_at", json_integer((json_int_t)now));
                json_object_set_new(s, "error", error ? json_string(error) : json_null());
                return 0;
        }
        return -ENOENT;
}

int task_step_append(Task *t, const char *name, const char *state, usec_t started_at,
                     usec_t finished_at, const char *error)
{
        json_t *s = json_pack("{s:s, s:s, s:I, s:I, s:s?}", "name", name, "state", state,
                              "started_at", (json_int_t)started_at, "finished_at",
                              (json_int_t)finished_at, "error", error);
        if (!s)
                return -ENOMEM;
        if (!json_object_get(s, "error"))
                json_object_set_new(s, "error", json_null());
        return json_array_append_new(t->steps, s) == 0 ? 0 : -ENOMEM;
}

static int write_task(Db *db, Task *t)
{
        _cleanup_free_ char *steps = json_dumps(t->steps, JSON_COMPACT);
        if (!steps)
                return -ENOMEM;
        t->updated_at = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE tasks SET state = ?, steps = ?, error = ?, updated_at = ?, "
                        "finished_at = ? WHERE id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, t->state, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, steps, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 3, t->error);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)t->updated_at);
        if (t->finished_at)
                sqlite3_bind_int64(s, 5, (sqlite3_int64)t->finished_at);
        sqlite3_bind_text(s, 6, t->id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int task_save_steps(Db *db, Task *t)
{
        return write_task(db, t);
}

int task_finish(Db *db, Task *t, bool ok, const char *error)
{
        size_t i;
        json_t *s;
        json_array_foreach(t->steps, i, s)
        {
                const char *st = json_string_value(json_object_get(s, "state"));
                const char *name = json_string_value(json_object_get(s, "name"));
                if (streq_ptr(st, "running"))
                        (void)task_step_set(t, name, ok ? "succeeded" : "failed",
                                            ok ? NULL : error);
                else if (streq_ptr(st, "pending"))
                        (void)task_step_set(t, name, ok ? "succeeded" : "skipped", NULL);
        }
        snprintf(t->state, sizeof(t->state), "%s", ok ? "succeeded" : "failed");
        free(t->error);
        t->error = !ok && error ? strdup(error) : NULL;
        t->finished_at = now_usec();
        return write_task(db, t);
}

int tasks_overdue(Db *db, usec_t now, char (*ret_ids)[ID_MAX], size_t max, size_t *ret_n)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT id FROM tasks WHERE state = 'running' AND deadline_at <= ? "
                        "ORDER BY deadline_at LIMIT ?");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)max);
        size_t n = 0;
        int rc;
        while (n < max && (rc = sqlite3_step(s)) == SQLITE_ROW)
                snprintf(ret_ids[n++], ID_MAX, "%s", strempty(db_column_text(s, 0)));
        *ret_n = n;
        return 0;
}

int tasks_defer_deadlines(Db *db, usec_t at)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "UPDATE tasks SET deadline_at = ? WHERE state = 'running' AND deadline_at < ?");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)at);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)at);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return sqlite3_changes(db_handle(db));
}
