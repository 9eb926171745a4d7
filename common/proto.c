/* SPDX-License-Identifier: MIT */
#include "proto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Reasons ---- */

static int fail(char **reason, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(char **reason, int r, const char *fmt, ...)
{
        if (reason) {
                va_list ap;
                va_start(ap, fmt);
                free(*reason);
                if (vasprintf(reason, fmt, ap) < 0)
                        *reason = NULL;
                va_end(ap);
        }
        return r;
}

/* A bounded string builder: reasons and paths never grow with hostile input;
 * what does not fit ends in "...". */
typedef struct TextBuf {
        char *s;
        size_t size, len;
        bool truncated;
} TextBuf;

static void text_init(TextBuf *t, char *s, size_t size)
{
        *t = (TextBuf){.s = s, .size = size};
        s[0] = '\0';
}

static void text_putc(TextBuf *t, char c)
{
        if (t->len + 1 >= t->size) {
                t->truncated = true;
                return;
        }
        t->s[t->len++] = c;
        t->s[t->len] = '\0';
}

static void text_puts(TextBuf *t, const char *s)
{
        for (; *s; s++)
                text_putc(t, *s);
}

/* Peer bytes are printed with quotes, backslashes and anything outside
 * printable ASCII escaped, so a reason can go into a log line as it is. */
static void text_put_escaped(TextBuf *t, const char *s, size_t n)
{
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c == '"' || c == '\\') {
                        text_putc(t, '\\');
                        text_putc(t, (char)c);
                } else if (c < 0x20 || c >= 0x7f) {
                        text_putc(t, '\\');
                        text_putc(t, 'x');
                        text_putc(t, hex[c >> 4]);
                        text_putc(t, hex[c & 15]);
                } else
                        text_putc(t, (char)c);
        }
}

static void text_finish(TextBuf *t)
{
        if (t->truncated && t->size >= 4)
                memcpy(t->s + t->size - 4, "...", 4);
}

/* Escaped and cut to a readable length, for reasons quoting peer data. */
#define QUOTE_MAX 64
static const char *quote(char buf[static QUOTE_MAX], const char *s, size_t n)
{
        TextBuf t;
        text_init(&t, buf, QUOTE_MAX);
        text_put_escaped(&t, s, n);
        text_finish(&t);
        return buf;
}

static void path_append_key(TextBuf *t, const char *key, size_t n)
{
        if (t->len > 0)
                text_putc(t, '.');
        text_put_escaped(t, key, n);
}

static void path_append_index(TextBuf *t, size_t i)
{
        char b[32];
        snprintf(b, sizeof(b), "[%zu]", i);
        text_puts(t, b);
}

/* ---- Types ---- */

static const char *const type_names[] = {
    [PROTO_TYPE_NIL] = "nil",       [PROTO_TYPE_BOOL] = "bool",   [PROTO_TYPE_UINT] = "uint",
    [PROTO_TYPE_INT] = "int",       [PROTO_TYPE_FLOAT] = "float", [PROTO_TYPE_STR] = "string",
    [PROTO_TYPE_BIN] = "bin",       [PROTO_TYPE_ARRAY] = "array", [PROTO_TYPE_MAP] = "map",
    [PROTO_TYPE_ANY] = "any value",
};

const char *proto_type_to_string(ProtoType t)
{
        if ((unsigned)t >= ELEMENTSOF(type_names))
                return "?";
        return type_names[t];
}

static const char *object_type_name(const msgpack_object *o)
{
        switch (o->type) {
        case MSGPACK_OBJECT_NIL:
                return "nil";
        case MSGPACK_OBJECT_BOOLEAN:
                return "bool";
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                return "uint";
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                return "int";
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                return "float";
        case MSGPACK_OBJECT_STR:
                return "string";
        case MSGPACK_OBJECT_BIN:
                return "bin";
        case MSGPACK_OBJECT_ARRAY:
                return "array";
        case MSGPACK_OBJECT_MAP:
                return "map";
        case MSGPACK_OBJECT_EXT:
                return "ext";
        }
        return "?";
}

ProtoType proto_value_type(const ProtoValue *v)
{
        switch (v->obj->type) {
        case MSGPACK_OBJECT_NIL:
                return PROTO_TYPE_NIL;
        case MSGPACK_OBJECT_BOOLEAN:
                return PROTO_TYPE_BOOL;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                return PROTO_TYPE_UINT;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                return PROTO_TYPE_INT;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                return PROTO_TYPE_FLOAT;
        case MSGPACK_OBJECT_STR:
                return PROTO_TYPE_STR;
        case MSGPACK_OBJECT_BIN:
                return PROTO_TYPE_BIN;
        case MSGPACK_OBJECT_ARRAY:
                return PROTO_TYPE_ARRAY;
        case MSGPACK_OBJECT_MAP:
                return PROTO_TYPE_MAP;
        case MSGPACK_OBJECT_EXT:
                break;
        }
        /* Decoding rejects ext, so no ProtoValue holds one. */
        return PROTO_TYPE_ANY;
}

bool proto_value_is_nil(const ProtoValue *v)
{
        return v->obj->type == MSGPACK_OBJECT_NIL;
}

static const char *display_path(const ProtoValue *v)
{
        return v->path[0] ? v->path : "message";
}

/* The one place that decides whether a value has a type; every accessor and
 * the field-spec checker go through it so their reasons read alike. */
static int check_value(const ProtoValue *v, ProtoType type, size_t max_len, char **reason)
{
        const msgpack_object *o = v->obj;
        bool ok;

        switch (type) {
        case PROTO_TYPE_ANY:
                return 0;
        case PROTO_TYPE_NIL:
                ok = o->type == MSGPACK_OBJECT_NIL;
                break;
        case PROTO_TYPE_BOOL:
                ok = o->type == MSGPACK_OBJECT_BOOLEAN;
                break;
        case PROTO_TYPE_UINT:
                ok = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
                break;
        case PROTO_TYPE_INT:
                ok = o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
                     o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
                if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 > INT64_MAX)
                        return fail(reason, -EPROTO,
                                    "%s: integer %" PRIu64 " out of range for int64",
                                    display_path(v), o->via.u64);
                break;
        case PROTO_TYPE_FLOAT:
                ok = o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64;
                break;
        case PROTO_TYPE_STR:
                ok = o->type == MSGPACK_OBJECT_STR;
                if (ok && max_len > 0 && o->via.str.size > max_len)
                        return fail(reason, -EPROTO, "%s: string longer than %zu bytes",
                                    display_path(v), max_len);
                if (ok && memchr(o->via.str.ptr, '\0', o->via.str.size))
                        return fail(reason, -EPROTO, "%s: string contains a NUL byte",
                                    display_path(v));
                break;
        case PROTO_TYPE_BIN:
                ok = o->type == MSGPACK_OBJECT_BIN;
                if (ok && max_len > 0 && o->via.bin.size > max_len)
                        return fail(reason, -EPROTO, "%s: bin longer than %zu bytes",
                                    display_path(v), max_len);
                break;
        case PROTO_TYPE_ARRAY:
                ok = o->type == MSGPACK_OBJECT_ARRAY;
                if (ok && max_len > 0 && o->via.array.size > max_len)
                        return fail(reason, -EPROTO, "%s: array has more than %zu elements",
                                    display_path(v), max_len);
                break;
        case PROTO_TYPE_MAP:
                ok = o->type == MSGPACK_OBJECT_MAP;
                if (ok && max_len > 0 && o->via.map.size > max_len)
                        return fail(reason, -EPROTO, "%s: map has more than %zu entries",
                                    display_path(v), max_len);
                break;
        default:
                return -EINVAL;
        }
        if (!ok)
                return fail(reason, -EPROTO, "%s: expected %s, got %s", display_path(v),
                            proto_type_to_string(type), object_type_name(o));
        return 0;
}

/* ---- Values ---- */

static void child_of_key(const ProtoValue *parent, const msgpack_object_str *key,
                         const msgpack_object *obj, ProtoValue *ret)
{
        TextBuf t;
        text_init(&t, ret->path, sizeof(ret->path));
        text_puts(&t, parent->path);
        path_append_key(&t, key->ptr, key->size);
        text_finish(&t);
        ret->obj = obj;
}

static void child_of_index(const ProtoValue *parent, size_t i, const msgpack_object *obj,
                           ProtoValue *ret)
{
        TextBuf t;
        text_init(&t, ret->path, sizeof(ret->path));
        text_puts(&t, parent->path);
        path_append_index(&t, i);
        text_finish(&t);
        ret->obj = obj;
}

static bool key_equal(const msgpack_object *key, const char *s, size_t n)
{
        return key->type == MSGPACK_OBJECT_STR && key->via.str.size == n &&
               memcmp(key->via.str.ptr, s, n) == 0;
}

int proto_lookup(const ProtoValue *map, const char *key, ProtoNeed need, ProtoValue *ret,
                 char **reason)
{
        int r = check_value(map, PROTO_TYPE_MAP, 0, reason);
        if (r < 0)
                return r;
        size_t n = strlen(key);
        const msgpack_object_map *m = &map->obj->via.map;
        for (uint32_t i = 0; i < m->size; i++)
                if (key_equal(&m->ptr[i].key, key, n)) {
                        child_of_key(map, &m->ptr[i].key.via.str, &m->ptr[i].val, ret);
                        return 1;
                }
        if (need == PROTO_REQUIRED) {
                ProtoValue missing;
                msgpack_object_str k = {.size = (uint32_t)n, .ptr = key};
                child_of_key(map, &k, NULL, &missing);
                return fail(reason, -EPROTO, "%s: missing required field", missing.path);
        }
        return 0;
}

int proto_value_str(const ProtoValue *v, char *buf, size_t size, char **reason)
{
        if (size == 0)
                return -EINVAL;
        int r = check_value(v, PROTO_TYPE_STR, size - 1, reason);
        if (r < 0)
                return r;
        /* check_value() treats max_len 0 as "no limit": size 1 fits only "". */
        if (v->obj->via.str.size > size - 1)
                return fail(reason, -EPROTO, "%s: string longer than %zu bytes", display_path(v),
                            size - 1);
        memcpy(buf, v->obj->via.str.ptr, v->obj->via.str.size);
        buf[v->obj->via.str.size] = '\0';
        return 0;
}

int proto_value_strdup(const ProtoValue *v, size_t max_len, char **ret, char **reason)
{
        int r = check_value(v, PROTO_TYPE_STR, max_len, reason);
        if (r < 0)
                return r;
        /* Not strndup: msgpack strings are not NUL-terminated, and a string
         * ending at the buffer's edge must not be scanned past its size. */
        size_t n = v->obj->via.str.size;
        char *s = malloc(n + 1);
        if (!s)
                return fail(reason, -ENOMEM, "out of memory");
        memcpy(s, v->obj->via.str.ptr, n);
        s[n] = '\0';
        *ret = s;
        return 0;
}

int proto_value_uint(const ProtoValue *v, uint64_t *ret, char **reason)
{
        int r = check_value(v, PROTO_TYPE_UINT, 0, reason);
        if (r < 0)
                return r;
        *ret = v->obj->via.u64;
        return 0;
}

int proto_value_int(const ProtoValue *v, int64_t *ret, char **reason)
{
        int r = check_value(v, PROTO_TYPE_INT, 0, reason);
        if (r < 0)
                return r;
        *ret = v->obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)v->obj->via.u64
                                                               : v->obj->via.i64;
        return 0;
}

int proto_value_bool(const ProtoValue *v, bool *ret, char **reason)
{
        int r = check_value(v, PROTO_TYPE_BOOL, 0, reason);
        if (r < 0)
                return r;
        *ret = v->obj->via.boolean;
        return 0;
}

int proto_value_double(const ProtoValue *v, double *ret, char **reason)
{
        int r = check_value(v, PROTO_TYPE_FLOAT, 0, reason);
        if (r < 0)
                return r;
        *ret = v->obj->via.f64;
        return 0;
}

int proto_value_bin(const ProtoValue *v, size_t max_len, const void **ret, size_t *ret_len,
                    char **reason)
{
        int r = check_value(v, PROTO_TYPE_BIN, max_len, reason);
        if (r < 0)
                return r;
        *ret = v->obj->via.bin.ptr;
        *ret_len = v->obj->via.bin.size;
        return 0;
}

int proto_value_array(const ProtoValue *v, size_t max_len, size_t *ret_n, char **reason)
{
        int r = check_value(v, PROTO_TYPE_ARRAY, max_len, reason);
        if (r < 0)
                return r;
        if (ret_n)
                *ret_n = v->obj->via.array.size;
        return 0;
}

int proto_value_map(const ProtoValue *v, size_t max_len, size_t *ret_n, char **reason)
{
        int r = check_value(v, PROTO_TYPE_MAP, max_len, reason);
        if (r < 0)
                return r;
        if (ret_n)
                *ret_n = v->obj->via.map.size;
        return 0;
}

int proto_array_at(const ProtoValue *array, size_t i, ProtoValue *ret)
{
        if (array->obj->type != MSGPACK_OBJECT_ARRAY)
                return -EINVAL;
        if (i >= array->obj->via.array.size)
                return -ERANGE;
        child_of_index(array, i, &array->obj->via.array.ptr[i], ret);
        return 0;
}

int proto_map_at(const ProtoValue *map, size_t i, const char **ret_key, size_t *ret_key_len,
                 ProtoValue *ret_value)
{
        if (map->obj->type != MSGPACK_OBJECT_MAP)
                return -EINVAL;
        if (i >= map->obj->via.map.size)
                return -ERANGE;
        const msgpack_object_kv *kv = &map->obj->via.map.ptr[i];
        /* Decoding guarantees string keys. */
        if (kv->key.type != MSGPACK_OBJECT_STR)
                return -EINVAL;
        *ret_key = kv->key.via.str.ptr;
        *ret_key_len = kv->key.via.str.size;
        child_of_key(map, &kv->key.via.str, &kv->val, ret_value);
        return 0;
}

/* Each getter: look up, then the value accessor; 1 when present. */
#define GET_VIA(map, key, need, reason, call)                                                      \
        ({                                                                                         \
                ProtoValue _v_;                                                                    \
                int _r_ = proto_lookup(map, key, need, &_v_, reason);                              \
                if (_r_ > 0) {                                                                     \
                        _r_ = call;                                                                \
                        if (_r_ >= 0)                                                              \
                                _r_ = 1;                                                           \
                }                                                                                  \
                _r_;                                                                               \
        })

int proto_get_str(const ProtoValue *map, const char *key, ProtoNeed need, char *buf, size_t size,
                  char **reason)
{
        return GET_VIA(map, key, need, reason, proto_value_str(&_v_, buf, size, reason));
}

int proto_get_strdup(const ProtoValue *map, const char *key, ProtoNeed need, size_t max_len,
                     char **ret, char **reason)
{
        return GET_VIA(map, key, need, reason, proto_value_strdup(&_v_, max_len, ret, reason));
}

int proto_get_uint(const ProtoValue *map, const char *key, ProtoNeed need, uint64_t *ret,
                   char **reason)
{
        return GET_VIA(map, key, need, reason, proto_value_uint(&_v_, ret, reason));
}

int proto_get_int(const ProtoValue *map, const char *key, ProtoNeed need, int64_t *ret,
                  char **reason)
{
        return GET_VIA(map, key, need, reason, proto_value_int(&_v_, ret, reason));
}

int proto_get_bool(const ProtoValue *map, const char *key, ProtoNeed need, bool *ret, char **reason)
{
        return GET_VIA(map, key, need, reason, proto_value_bool(&_v_, ret, reason));
}

int proto_get_double(const ProtoValue *map, const char *key, ProtoNeed need, double *ret,
                     char **reason)
{
        return GET_VIA(map, key, need, reason, proto_value_double(&_v_, ret, reason));
}

int proto_get_bin(const ProtoValue *map, const char *key, ProtoNeed need, size_t max_len,
                  const void **ret, size_t *ret_len, char **reason)
{
        return GET_VIA(map, key, need, reason,
                       proto_value_bin(&_v_, max_len, ret, ret_len, reason));
}

int proto_get_array(const ProtoValue *map, const char *key, ProtoNeed need, size_t max_len,
                    ProtoValue *ret, size_t *ret_n, char **reason)
{
        return GET_VIA(map, key, need, reason, ({
                               int _a_ = proto_value_array(&_v_, max_len, ret_n, reason);
                               if (_a_ >= 0)
                                       *ret = _v_;
                               _a_;
                       }));
}

int proto_get_map(const ProtoValue *map, const char *key, ProtoNeed need, size_t max_len,
                  ProtoValue *ret, char **reason)
{
        return GET_VIA(map, key, need, reason, ({
                               int _a_ = proto_value_map(&_v_, max_len, NULL, reason);
                               if (_a_ >= 0)
                                       *ret = _v_;
                               _a_;
                       }));
}

int proto_check_fields(const ProtoValue *map, const ProtoField *fields, size_t n_fields,
                       char **reason)
{
        int r = check_value(map, PROTO_TYPE_MAP, 0, reason);
        if (r < 0)
                return r;

        const msgpack_object_map *m = &map->obj->via.map;
        for (uint32_t i = 0; i < m->size; i++) {
                const msgpack_object *key = &m->ptr[i].key;
                if (key->type != MSGPACK_OBJECT_STR)
                        return fail(reason, -EPROTO, "%s: map key is not a string (got %s)",
                                    display_path(map), object_type_name(key));

                const ProtoField *f = NULL;
                for (size_t j = 0; j < n_fields && !f; j++)
                        if (key_equal(key, fields[j].name, strlen(fields[j].name)))
                                f = &fields[j];

                ProtoValue child;
                child_of_key(map, &key->via.str, &m->ptr[i].val, &child);
                if (!f)
                        return fail(reason, -EPROTO, "%s: unknown field", child.path);
                if (f->nullable && proto_value_is_nil(&child))
                        continue;
                r = check_value(&child, f->type, f->max_len, reason);
                if (r < 0)
                        return r;
        }

        for (size_t j = 0; j < n_fields; j++) {
                if (fields[j].need != PROTO_REQUIRED)
                        continue;
                ProtoValue unused;
                r = proto_lookup(map, fields[j].name, PROTO_REQUIRED, &unused, reason);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- Framing ---- */

static uint64_t read_be(const uint8_t *p, size_t n)
{
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++)
                v = (v << 8) | p[i];
        return v;
}

/* Walks the whole value over the raw bytes before msgpack-c sees them.
 * msgpack-c allocates an array or map for its declared count up front, so
 * five bytes claiming 2^32 elements would ask it for ~100 GiB; after this walk
 * every count it meets is backed by real elements, which bounds what unpacking
 * allocates by the message size. A count that cannot fit in the bytes left
 * (each element takes at least one) is refused at once. The walk also bounds
 * nesting, so the recursive checks after unpacking stay shallow, and refuses
 * ext types and trailing bytes. */
static int scan_framing(const uint8_t *p, size_t len, char **reason)
{
        uint64_t left[PROTO_MAX_DEPTH]; /* items still expected in each open container */
        unsigned depth = 0;
        size_t off = 0;

        for (;;) {
                if (off >= len)
                        return fail(reason, -EBADMSG, "truncated: message ends after %zu bytes",
                                    len);
                size_t at = off;
                uint8_t b = p[off++];
                size_t lenbytes = 0;  /* bytes of a length/count field */
                uint64_t payload = 0; /* bytes of data that follow */
                bool container = false, is_map = false;
                uint64_t count = 0;

                if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
                        ; /* fixint, nil, false, true */
                else if (b <= 0x8f) {
                        container = is_map = true;
                        count = b & 0x0f;
                } else if (b <= 0x9f) {
                        container = true;
                        count = b & 0x0f;
                } else if (b <= 0xbf)
                        payload = b & 0x1f;
                else
                        switch (b) {
                        case 0xc1:
                                return fail(reason, -EBADMSG, "reserved byte 0xc1 at offset %zu",
                                            at);
                        case 0xc7 ... 0xc9:
                        case 0xd4 ... 0xd8:
                                return fail(reason, -EPROTO,
                                            "msgpack ext type at offset %zu is not allowed", at);
                        case 0xc4: /* bin 8/16/32 */
                        case 0xd9: /* str 8/16/32 */
                                lenbytes = 1;
                                break;
                        case 0xc5:
                        case 0xda:
                                lenbytes = 2;
                                break;
                        case 0xc6:
                        case 0xdb:
                                lenbytes = 4;
                                break;
                        case 0xca: /* float 32/64 */
                                payload = 4;
                                break;
                        case 0xcb:
                                payload = 8;
                                break;
                        case 0xcc: /* uint and int 8/16/32/64 */
                        case 0xd0:
                                payload = 1;
                                break;
                        case 0xcd:
                        case 0xd1:
                                payload = 2;
                                break;
                        case 0xce:
                        case 0xd2:
                                payload = 4;
                                break;
                        case 0xcf:
                        case 0xd3:
                                payload = 8;
                                break;
                        case 0xdc: /* array 16/32 */
                                container = true;
                                lenbytes = 2;
                                break;
                        case 0xdd:
                                container = true;
                                lenbytes = 4;
                                break;
                        case 0xde: /* map 16/32 */
                                container = is_map = true;
                                lenbytes = 2;
                                break;
                        case 0xdf:
                                container = is_map = true;
                                lenbytes = 4;
                                break;
                        }

                if (lenbytes > 0) {
                        if (len - off < lenbytes)
                                return fail(
                                    reason, -EBADMSG,
                                    "truncated: message ends inside the header at offset %zu", at);
                        uint64_t n = read_be(p + off, lenbytes);
                        off += lenbytes;
                        if (container)
                                count = n;
                        else
                                payload = n;
                }
                if (payload > len - off)
                        return fail(reason, -EBADMSG,
                                    "truncated: value at offset %zu needs %" PRIu64
                                    " bytes, %zu remain",
                                    at, payload, len - off);
                off += payload;

                if (container) {
                        if (depth >= PROTO_MAX_DEPTH)
                                return fail(reason, -EPROTO, "nesting deeper than %d levels",
                                            PROTO_MAX_DEPTH);
                        uint64_t items = is_map ? 2 * count : count;
                        if (items > len - off)
                                return fail(reason, -EBADMSG,
                                            "truncated: container at offset %zu declares %" PRIu64
                                            " entries, only %zu bytes remain",
                                            at, count, len - off);
                        if (items > 0) {
                                left[depth++] = items;
                                continue;
                        }
                }

                /* A value is complete: count it against its container, and
                 * close every container it completes in turn. */
                while (depth > 0 && --left[depth - 1] == 0)
                        depth--;
                if (depth == 0)
                        break;
        }

        if (off != len)
                return fail(reason, -EBADMSG, "%zu trailing bytes after the message", len - off);
        return 0;
}

/* Where a value sits, kept as a chain on the stack and only formatted when a
 * reason needs it. */
typedef struct PathNode {
        const struct PathNode *parent;
        const msgpack_object_str *key; /* NULL: array element */
        size_t index;
} PathNode;

static void path_format(const PathNode *n, TextBuf *t)
{
        if (!n)
                return;
        path_format(n->parent, t);
        if (n->key)
                path_append_key(t, n->key->ptr, n->key->size);
        else
                path_append_index(t, n->index);
}

static const char *path_string(const PathNode *n, char buf[static PROTO_PATH_MAX])
{
        TextBuf t;
        text_init(&t, buf, PROTO_PATH_MAX);
        path_format(n, &t);
        text_finish(&t);
        return buf[0] ? buf : "message";
}

static bool str_equal(const msgpack_object_str *x, const msgpack_object_str *y)
{
        return x->size == y->size && memcmp(x->ptr, y->ptr, x->size) == 0;
}

/* qsort() order for an array of key pointers: by length, then bytes. */
static int str_compare(const void *a, const void *b)
{
        const msgpack_object_str *x = *(const msgpack_object_str *const *)a;
        const msgpack_object_str *y = *(const msgpack_object_str *const *)b;
        if (x->size != y->size)
                return x->size < y->size ? -1 : 1;
        return memcmp(x->ptr, y->ptr, x->size);
}

/* Two entries with one key would let the two daemons read different values
 * (first wins here, last wins there), so no map may have them. Small maps are
 * compared pairwise; larger ones sorted, so a hostile map costs n log n. */
static int check_duplicate_keys(const msgpack_object_map *m, const PathNode *where, char **reason)
{
        const msgpack_object_str *dup = NULL;

        if (m->size <= 16) {
                for (uint32_t i = 0; i < m->size && !dup; i++)
                        for (uint32_t j = i + 1; j < m->size && !dup; j++)
                                if (str_equal(&m->ptr[i].key.via.str, &m->ptr[j].key.via.str))
                                        dup = &m->ptr[i].key.via.str;
        } else {
                _cleanup_free_ const msgpack_object_str **keys = malloc(m->size * sizeof(*keys));
                if (!keys)
                        return fail(reason, -ENOMEM, "out of memory");
                for (uint32_t i = 0; i < m->size; i++)
                        keys[i] = &m->ptr[i].key.via.str;
                qsort(keys, m->size, sizeof(*keys), str_compare);
                for (uint32_t i = 1; i < m->size && !dup; i++)
                        if (str_equal(keys[i - 1], keys[i]))
                                dup = keys[i];
        }
        if (dup) {
                char p[PROTO_PATH_MAX], q[QUOTE_MAX];
                return fail(reason, -EPROTO, "%s: duplicate key \"%s\"", path_string(where, p),
                            quote(q, dup->ptr, dup->size));
        }
        return 0;
}

/* Rules that hold at every depth: map keys are strings without NUL, and
 * unique. Recursion is bounded by scan_framing()'s depth check. */
static int check_tree(const msgpack_object *o, const PathNode *where, char **reason)
{
        char p[PROTO_PATH_MAX];
        int r;

        if (o->type == MSGPACK_OBJECT_MAP) {
                const msgpack_object_map *m = &o->via.map;
                for (uint32_t i = 0; i < m->size; i++) {
                        const msgpack_object *key = &m->ptr[i].key;
                        if (key->type != MSGPACK_OBJECT_STR)
                                return fail(reason, -EPROTO, "%s: map key is not a string (got %s)",
                                            path_string(where, p), object_type_name(key));
                        if (memchr(key->via.str.ptr, '\0', key->via.str.size))
                                return fail(reason, -EPROTO, "%s: map key contains a NUL byte",
                                            path_string(where, p));
                }
                r = check_duplicate_keys(m, where, reason);
                if (r < 0)
                        return r;
                for (uint32_t i = 0; i < m->size; i++) {
                        PathNode child = {.parent = where, .key = &m->ptr[i].key.via.str};
                        r = check_tree(&m->ptr[i].val, &child, reason);
                        if (r < 0)
                                return r;
                }
        } else if (o->type == MSGPACK_OBJECT_ARRAY) {
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        PathNode child = {.parent = where, .index = i};
                        r = check_tree(&o->via.array.ptr[i], &child, reason);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int check_size(size_t len, char **reason)
{
        if (len > PROTO_MAX_MESSAGE)
                return fail(reason, -EMSGSIZE, "message of %zu bytes exceeds the limit of %d bytes",
                            len, PROTO_MAX_MESSAGE);
        if (len == 0)
                return fail(reason, -EBADMSG, "empty message");
        return 0;
}

/* Unpacks a message that passed scan_framing() and checks the rules every
 * version shares: a map with string keys, unique at every depth, and "v" a
 * positive integer. Stores that version, whichever it is. */
static int unpack_message(const char *data, size_t len, msgpack_unpacked *u, uint64_t *ret_version,
                          char **reason)
{
        size_t off = 0;
        msgpack_unpack_return ur = msgpack_unpack_next(u, data, len, &off);
        if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
                return fail(reason, -ENOMEM, "out of memory");
        if (ur != MSGPACK_UNPACK_SUCCESS || off != len)
                return fail(reason, -EBADMSG, "malformed msgpack");

        const msgpack_object *top = &u->data;
        if (top->type != MSGPACK_OBJECT_MAP)
                return fail(reason, -EPROTO, "message is not a map (got %s)",
                            object_type_name(top));
        int r = check_tree(top, NULL, reason);
        if (r < 0)
                return r;

        ProtoValue root = {.obj = top}, v;
        r = proto_lookup(&root, "v", PROTO_REQUIRED, &v, reason);
        if (r < 0)
                return r;
        r = proto_value_uint(&v, ret_version, reason);
        if (r < 0)
                return r;
        if (*ret_version == 0)
                return fail(reason, -EPROTO, "v: protocol version 0 is invalid");
        return 0;
}

int proto_peek_version(const void *buf, size_t len, uint64_t *ret, char **reason)
{
        _cleanup_(msgpack_unpacked_destroy) msgpack_unpacked u;
        int r;

        msgpack_unpacked_init(&u);
        if (!buf && len > 0)
                return -EINVAL;
        r = check_size(len, reason);
        if (r < 0)
                return r;
        r = scan_framing(buf, len, reason);
        if (r < 0)
                return r;
        return unpack_message(buf, len, &u, ret, reason);
}

/* ---- The envelope ---- */

static const ProtoField envelope_fields[] = {
    {"v", PROTO_TYPE_UINT, PROTO_REQUIRED, 0},
    {"type", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_TYPE_MAX},
    {"id", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_ID_MAX},
    {"node", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_NODE_MAX},
    {"epoch", PROTO_TYPE_UINT, PROTO_REQUIRED, 0},
    {"body", PROTO_TYPE_MAP, PROTO_REQUIRED, 0},
};

static bool type_char_ok(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

/* Ids are printable ASCII without spaces, so they can go into logs and paths
 * unquoted. */
static bool id_char_ok(char c)
{
        return c > 0x20 && c < 0x7f;
}

static int check_chars(const char *field, const char *s, bool (*ok)(char), const char *allowed,
                       char **reason)
{
        for (const char *c = s; *c; c++)
                if (!ok(*c))
                        return fail(reason, -EPROTO,
                                    "%s: invalid character 0x%02x at position %zu (allowed: %s)",
                                    field, (unsigned char)*c, (size_t)(c - s), allowed);
        return 0;
}

static int decode_header(const msgpack_object *top, ProtoEnvelope *env, char **reason)
{
        ProtoValue root = {.obj = top};
        int r;

        r = proto_check_fields(&root, envelope_fields, ELEMENTSOF(envelope_fields), reason);
        if (r < 0)
                return r;

        /* The field checks above make these lookups succeed. */
        if (proto_get_str(&root, "type", PROTO_REQUIRED, env->type, sizeof(env->type), reason) <
                0 ||
            proto_get_str(&root, "id", PROTO_REQUIRED, env->id, sizeof(env->id), reason) < 0 ||
            proto_get_str(&root, "node", PROTO_REQUIRED, env->node, sizeof(env->node), reason) <
                0 ||
            proto_get_uint(&root, "epoch", PROTO_REQUIRED, &env->epoch, reason) < 0 ||
            proto_get_map(&root, "body", PROTO_REQUIRED, 0, &env->body, reason) < 0)
                return -EPROTO;

        if (env->type[0] == '\0')
                return fail(reason, -EPROTO, "type: must not be empty");
        r = check_chars("type", env->type, type_char_ok, "a-z 0-9 _ .", reason);
        if (r < 0)
                return r;
        if (env->id[0] == '\0')
                return fail(reason, -EPROTO, "id: must not be empty");
        r = check_chars("id", env->id, id_char_ok, "printable ASCII except space", reason);
        if (r < 0)
                return r;
        return check_chars("node", env->node, id_char_ok, "printable ASCII except space", reason);
}

void proto_envelope_free(ProtoEnvelope *env)
{
        if (!env)
                return;
        msgpack_unpacked_destroy(&env->unpacked);
        free(env);
}

int proto_decode(const void *buf, size_t len, ProtoEnvelope **ret, char **reason)
{
        _cleanup_proto_envelope_ ProtoEnvelope *env = NULL;
        int r;

        if (!ret || (!buf && len > 0))
                return -EINVAL;
        r = check_size(len, reason);
        if (r < 0)
                return r;
        r = scan_framing(buf, len, reason);
        if (r < 0)
                return r;

        env = calloc(1, sizeof(*env) + len);
        if (!env)
                return fail(reason, -ENOMEM, "out of memory");
        msgpack_unpacked_init(&env->unpacked);
        memcpy(env->data, buf, len);
        env->size = len;

        r = unpack_message(env->data, len, &env->unpacked, &env->version, reason);
        if (r < 0)
                return r;
        if (env->version != PROTO_VERSION)
                return fail(reason, -EPROTONOSUPPORT,
                            "version mismatch: peer speaks %" PRIu64 ", we speak %d", env->version,
                            PROTO_VERSION);
        r = decode_header(&env->unpacked.data, env, reason);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(env);
        return 0;
}

/* ---- Writing ---- */

void proto_writer_init(ProtoWriter *w)
{
        *w = (ProtoWriter){};
        msgpack_sbuffer_init(&w->buf);
        msgpack_packer_init(&w->pk, &w->buf, msgpack_sbuffer_write);
}

void proto_writer_done(ProtoWriter *w)
{
        msgpack_sbuffer_destroy(&w->buf);
        msgpack_sbuffer_init(&w->buf);
}

static int writer_fail(ProtoWriter *w, int r)
{
        if (w->error == 0)
                w->error = r;
        return w->error;
}

/* Before a value: is one allowed here? Map keys must be strings. */
static int writer_pre(ProtoWriter *w, bool is_str)
{
        if (w->error < 0)
                return w->error;
        if (w->complete)
                return writer_fail(w, -EINVAL);
        if (w->depth > 0) {
                const ProtoWriterFrame *f = &w->frames[w->depth - 1];
                if (f->is_map && f->items % 2 == 0 && !is_str)
                        return writer_fail(w, -EINVAL);
        }
        return 0;
}

/* After a value: count it, and notice a message that has grown too large. */
static int writer_post(ProtoWriter *w, int packer_result)
{
        if (packer_result < 0)
                return writer_fail(w, -ENOMEM);
        if (w->buf.size > PROTO_MAX_MESSAGE)
                return writer_fail(w, -EMSGSIZE);
        if (w->depth == 0)
                w->complete = true;
        else
                w->frames[w->depth - 1].items++;
        return 0;
}

/* Containers are written with 32-bit counts and patched on end, so nobody
 * counts entries by hand; decoders accept the non-minimal form. */
static int writer_begin(ProtoWriter *w, bool is_map)
{
        int r = writer_pre(w, false);
        if (r < 0)
                return r;
        /* The body is the envelope's second level. */
        if (w->depth >= PROTO_MAX_DEPTH - 1)
                return writer_fail(w, -E2BIG);
        const char header[5] = {(char)(is_map ? 0xdf : 0xdd)};
        size_t offset = w->buf.size;
        if (msgpack_sbuffer_write(&w->buf, header, sizeof(header)) < 0)
                return writer_fail(w, -ENOMEM);
        w->frames[w->depth++] = (ProtoWriterFrame){.offset = offset, .is_map = is_map};
        return 0;
}

int proto_write_map_begin(ProtoWriter *w)
{
        return writer_begin(w, true);
}

int proto_write_array_begin(ProtoWriter *w)
{
        return writer_begin(w, false);
}

int proto_write_end(ProtoWriter *w)
{
        if (w->error < 0)
                return w->error;
        if (w->depth == 0)
                return writer_fail(w, -EINVAL);
        const ProtoWriterFrame *f = &w->frames[w->depth - 1];
        if (f->is_map && f->items % 2 != 0)
                return writer_fail(w, -EINVAL); /* a key without its value */
        uint32_t n = f->is_map ? f->items / 2 : f->items;
        unsigned char *p = (unsigned char *)w->buf.data + f->offset + 1;
        p[0] = (unsigned char)(n >> 24);
        p[1] = (unsigned char)(n >> 16);
        p[2] = (unsigned char)(n >> 8);
        p[3] = (unsigned char)n;
        w->depth--;
        return writer_post(w, 0);
}

int proto_write_strn(ProtoWriter *w, const char *s, size_t n)
{
        int r = writer_pre(w, true);
        if (r < 0)
                return r;
        /* msgpack_pack_str() would silently truncate lengths over 32 bits. */
        if (n > PROTO_MAX_MESSAGE)
                return writer_fail(w, -EMSGSIZE);
        r = msgpack_pack_str(&w->pk, n);
        if (r >= 0)
                r = msgpack_pack_str_body(&w->pk, s, n);
        return writer_post(w, r);
}

int proto_write_str(ProtoWriter *w, const char *s)
{
        return proto_write_strn(w, s, strlen(s));
}

int proto_write_key(ProtoWriter *w, const char *key)
{
        if (w->error < 0)
                return w->error;
        const ProtoWriterFrame *f = w->depth > 0 ? &w->frames[w->depth - 1] : NULL;
        if (!f || !f->is_map || f->items % 2 != 0)
                return writer_fail(w, -EINVAL);
        return proto_write_str(w, key);
}

int proto_write_uint(ProtoWriter *w, uint64_t v)
{
        int r = writer_pre(w, false);
        return r < 0 ? r : writer_post(w, msgpack_pack_uint64(&w->pk, v));
}

int proto_write_int(ProtoWriter *w, int64_t v)
{
        int r = writer_pre(w, false);
        return r < 0 ? r : writer_post(w, msgpack_pack_int64(&w->pk, v));
}

int proto_write_bool(ProtoWriter *w, bool v)
{
        int r = writer_pre(w, false);
        return r < 0 ? r
                     : writer_post(w, v ? msgpack_pack_true(&w->pk) : msgpack_pack_false(&w->pk));
}

int proto_write_double(ProtoWriter *w, double v)
{
        int r = writer_pre(w, false);
        return r < 0 ? r : writer_post(w, msgpack_pack_double(&w->pk, v));
}

int proto_write_nil(ProtoWriter *w)
{
        int r = writer_pre(w, false);
        return r < 0 ? r : writer_post(w, msgpack_pack_nil(&w->pk));
}

int proto_write_bin(ProtoWriter *w, const void *p, size_t n)
{
        int r = writer_pre(w, false);
        if (r < 0)
                return r;
        if (n > PROTO_MAX_MESSAGE)
                return writer_fail(w, -EMSGSIZE);
        r = msgpack_pack_bin(&w->pk, n);
        if (r >= 0)
                r = msgpack_pack_bin_body(&w->pk, p, n);
        return writer_post(w, r);
}

int proto_write_kv_str(ProtoWriter *w, const char *key, const char *s)
{
        int r = proto_write_key(w, key);
        return r < 0 ? r : proto_write_str(w, s);
}

int proto_write_kv_uint(ProtoWriter *w, const char *key, uint64_t v)
{
        int r = proto_write_key(w, key);
        return r < 0 ? r : proto_write_uint(w, v);
}

int proto_write_kv_int(ProtoWriter *w, const char *key, int64_t v)
{
        int r = proto_write_key(w, key);
        return r < 0 ? r : proto_write_int(w, v);
}

int proto_write_kv_bool(ProtoWriter *w, const char *key, bool v)
{
        int r = proto_write_key(w, key);
        return r < 0 ? r : proto_write_bool(w, v);
}

int proto_writer_data(const ProtoWriter *w, const void **ret, size_t *ret_len)
{
        if (w->error < 0)
                return w->error;
        if (!w->complete)
                return -EINVAL;
        *ret = w->buf.data;
        *ret_len = w->buf.size;
        return 0;
}

/* ---- Encoding ---- */

static void sbuffer_destroyp(msgpack_sbuffer *sb)
{
        msgpack_sbuffer_destroy(sb);
}

int proto_encode(const ProtoHeader *h, const void *body, size_t body_len, void **ret,
                 size_t *ret_len)
{
        _cleanup_(sbuffer_destroyp) msgpack_sbuffer sb;
        msgpack_packer pk;
        int r = 0;

        msgpack_sbuffer_init(&sb);
        if (!h || !h->type || !h->id || !ret || !ret_len || (!body && body_len > 0))
                return -EINVAL;
        if (!body) {
                body = "\x80"; /* {} */
                body_len = 1;
        }
        const char *node = h->node ? h->node : "";
        /* Reject oversized header strings before copying them anywhere. */
        if (strnlen(h->type, PROTO_TYPE_MAX + 1) > PROTO_TYPE_MAX ||
            strnlen(h->id, PROTO_ID_MAX + 1) > PROTO_ID_MAX ||
            strnlen(node, PROTO_NODE_MAX + 1) > PROTO_NODE_MAX)
                return -EINVAL;
        if (body_len > PROTO_MAX_MESSAGE)
                return -EMSGSIZE;

        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        const struct {
                const char *key, *value;
        } strs[] = {{"type", h->type}, {"id", h->id}, {"node", node}};
        r |= msgpack_pack_map(&pk, 6);
        r |= msgpack_pack_str_with_body(&pk, "v", 1);
        r |= msgpack_pack_uint64(&pk, PROTO_VERSION);
        for (size_t i = 0; i < ELEMENTSOF(strs); i++) {
                r |= msgpack_pack_str_with_body(&pk, strs[i].key, strlen(strs[i].key));
                r |= msgpack_pack_str_with_body(&pk, strs[i].value, strlen(strs[i].value));
        }
        r |= msgpack_pack_str_with_body(&pk, "epoch", 5);
        r |= msgpack_pack_uint64(&pk, h->epoch);
        r |= msgpack_pack_str_with_body(&pk, "body", 4);
        r |= msgpack_sbuffer_write(&sb, body, body_len);
        if (r != 0)
                return -ENOMEM;
        if (sb.size > PROTO_MAX_MESSAGE)
                return -EMSGSIZE;

        /* Send nothing the peer would refuse: the same checks it will run. */
        _cleanup_proto_envelope_ ProtoEnvelope *check = NULL;
        r = proto_decode(sb.data, sb.size, &check, NULL);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;

        *ret_len = sb.size;
        *ret = msgpack_sbuffer_release(&sb);
        return 0;
}

int proto_encode_writer(const ProtoHeader *h, const ProtoWriter *body, void **ret, size_t *ret_len)
{
        const void *data;
        size_t len;
        int r = proto_writer_data(body, &data, &len);
        if (r < 0)
                return r;
        return proto_encode(h, data, len, ret, ret_len);
}
