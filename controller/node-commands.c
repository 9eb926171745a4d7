/* SPDX-License-Identifier: MIT */
#include "node-commands.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "macro.h"
#include "timeutil.h"

void node_command_done(NodeCommand *c)
{
        free(c->body);
        c->body = NULL;
}

int node_command_create(Db *db, const char *node_id, const char *type, json_t *body,
                        char ret_id[static ID_MAX])
{
        int r = id_new("cmd", ret_id);
        if (r < 0)
                return r;
        _cleanup_free_ char *text = json_dumps(body, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO node_commands (id, node_id, type, body, state, created_at) "
                        "VALUES (?, ?, ?, ?, 'pending', ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, ret_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, node_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, type, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 4, text, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static void command_from_row(sqlite3_stmt *s, NodeCommand *c)
{
        *c = (NodeCommand){0};
        snprintf(c->id, sizeof(c->id), "%s", strempty(db_column_text(s, 0)));
        snprintf(c->node_id, sizeof(c->node_id), "%s", strempty(db_column_text(s, 1)));
        snprintf(c->type, sizeof(c->type), "%s", strempty(db_column_text(s, 2)));
        c->body = strdup(db_column_text(s, 3) ? db_column_text(s, 3) : "{}");
        snprintf(c->state, sizeof(c->state), "%s", strempty(db_column_text(s, 4)));
}

int node_command_get(Db *db, const char *id, NodeCommand *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT id, node_id, type, body, state FROM node_commands WHERE id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        command_from_row(s, ret);
        return ret->body ? 0 : -ENOMEM;
}

int node_commands_open(Db *db, const char *node_id, int (*fn)(const NodeCommand *c, void *userdata),
                       void *userdata)
{
        /* Collected first: fn may write (mark sent) through the same cache. */
        NodeCommand list[64];
        size_t n = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT id, node_id, type, body, state FROM node_commands WHERE "
                                "node_id = ? AND state IN ('pending', 'sent') ORDER BY seq "
                                "LIMIT 64");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, node_id, -1, SQLITE_TRANSIENT);
                int rc;
                while ((rc = sqlite3_step(s)) == SQLITE_ROW && n < ELEMENTSOF(list))
                        command_from_row(s, &list[n++]);
                if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
                        for (size_t i = 0; i < n; i++)
                                node_command_done(&list[i]);
                        return db_errno(rc);
                }
        }
        int r = 0;
        for (size_t i = 0; i < n; i++) {
                if (r >= 0 && list[i].body)
                        r = fn(&list[i], userdata);
                node_command_done(&list[i]);
        }
        return r;
}

int node_command_mark_sent(Db *db, const char *id)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE node_commands SET state = 'sent', sent_at = ? WHERE id = ? AND "
                        "state IN ('pending', 'sent')");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 2, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int node_command_finish(Db *db, const char *id, bool ok, json_t *reply)
{
        _cleanup_free_ char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE node_commands SET state = ?, finished_at = ?, reply = ? WHERE "
                        "id = ? AND state IN ('pending', 'sent')");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, ok ? "done" : "failed", -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)now_usec());
        db_bind_text(s, 3, text);
        sqlite3_bind_text(s, 4, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        if (sqlite3_changes(db_handle(db)) == 1)
                return 0;
        NodeCommand c;
        int r = node_command_get(db, id, &c);
        if (r < 0)
                return r;
        node_command_done(&c);
        return -EALREADY;
}

/* ---- msgpack <-> JSON ---- */

int proto_value_to_json(const ProtoValue *v, json_t **ret)
{
        const msgpack_object *o = v->obj;
        json_t *j = NULL;
        switch (o->type) {
        case MSGPACK_OBJECT_NIL:
                j = json_null();
                break;
        case MSGPACK_OBJECT_BOOLEAN:
                j = json_boolean(o->via.boolean);
                break;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                if (o->via.u64 > INT64_MAX)
                        return -ERANGE;
                j = json_integer((json_int_t)o->via.u64);
                break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                j = json_integer((json_int_t)o->via.i64);
                break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                j = json_real(o->via.f64);
                break;
        case MSGPACK_OBJECT_STR:
                j = json_stringn(o->via.str.ptr, o->via.str.size);
                break;
        case MSGPACK_OBJECT_BIN: {
                size_t cap = o->via.bin.size * 4 / 3 + 4;
                _cleanup_free_ char *b = malloc(cap);
                if (!b)
                        return -ENOMEM;
                int n = base64url_encode((const unsigned char *)o->via.bin.ptr, o->via.bin.size, b,
                                         cap);
                if (n < 0)
                        return n;
                j = json_stringn(b, (size_t)n);
                break;
        }
        case MSGPACK_OBJECT_ARRAY: {
                j = json_array();
                for (size_t i = 0; j && i < o->via.array.size; i++) {
                        ProtoValue e;
                        json_t *ej = NULL;
                        int r = proto_array_at(v, i, &e);
                        if (r >= 0)
                                r = proto_value_to_json(&e, &ej);
                        if (r < 0) {
                                json_decref(j);
                                return r;
                        }
                        json_array_append_new(j, ej);
                }
                break;
        }
        case MSGPACK_OBJECT_MAP: {
                j = json_object();
                for (size_t i = 0; j && i < o->via.map.size; i++) {
                        const char *k;
                        size_t klen;
                        ProtoValue e;
                        json_t *ej = NULL;
                        int r = proto_map_at(v, i, &k, &klen, &e);
                        if (r >= 0)
                                r = proto_value_to_json(&e, &ej);
                        if (r < 0) {
                                json_decref(j);
                                return r;
                        }
                        json_object_setn_new(j, k, klen, ej);
                }
                break;
        }
        default:
                return -EPROTO;
        }
        if (!j)
                return -EPROTO; /* invalid UTF-8 in a string, or out of memory */
        *ret = j;
        return 0;
}

int proto_write_json(ProtoWriter *w, json_t *v)
{
        switch (json_typeof(v)) {
        case JSON_NULL:
                return proto_write_nil(w);
        case JSON_TRUE:
        case JSON_FALSE:
                return proto_write_bool(w, json_is_true(v));
        case JSON_INTEGER: {
                json_int_t i = json_integer_value(v);
                return i >= 0 ? proto_write_uint(w, (uint64_t)i) : proto_write_int(w, i);
        }
        case JSON_REAL:
                return proto_write_double(w, json_real_value(v));
        case JSON_STRING:
                return proto_write_strn(w, json_string_value(v), json_string_length(v));
        case JSON_ARRAY: {
                size_t i;
                json_t *e;
                proto_write_array_begin(w);
                json_array_foreach(v, i, e) proto_write_json(w, e);
                return proto_write_end(w);
        }
        case JSON_OBJECT: {
                const char *k;
                json_t *e;
                proto_write_map_begin(w);
                json_object_foreach(v, k, e)
                {
                        proto_write_key(w, k);
                        proto_write_json(w, e);
                }
                return proto_write_end(w);
        }
        }
        return -EINVAL;
}
