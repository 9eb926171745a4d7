/* SPDX-License-Identifier: MIT */
#pragma once

/* The agent protocol envelope (docs/protocol.md). Every message between
 * gpuslice-agent and gpuslice-controller is one msgpack map
 *   {v, type, id, node, epoch, body}
 * built with proto_encode() and checked completely by proto_decode() before a
 * handler sees it, so handlers never touch unvalidated bytes. Bodies are
 * written with ProtoWriter and read with the typed accessors below, whose
 * reasons name the offending field ("body.fingerprint: expected string, got uint").
 *
 * Errors. Every decoding function returns 0 (or 1, see the accessors) or one of
 *   -EMSGSIZE         the message is longer than PROTO_MAX_MESSAGE (checked first)
 *   -EBADMSG          the bytes are not exactly one well-formed msgpack object
 *                     (truncated, trailing bytes, reserved byte 0xc1)
 *   -EPROTO           well-formed msgpack that breaks a protocol rule
 *   -EPROTONOSUPPORT  an envelope of another protocol version
 *   -ENOMEM
 * and, when reason is not NULL, replaces *reason with a malloc'ed sentence the
 * caller frees. Peer bytes inside a reason are escaped, so it is safe to log. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "macro.h"

#define PROTO_VERSION     1
#define PROTO_MAX_MESSAGE (1024 * 1024) /* bytes, the whole encoded envelope */
#define PROTO_MAX_DEPTH   16            /* containers, the envelope map being the first */
#define PROTO_TYPE_MAX    48
#define PROTO_ID_MAX      64
#define PROTO_NODE_MAX    64
#define PROTO_PATH_MAX    128 /* "body.gpus[3].uuid", truncated with "..." */

typedef enum ProtoType {
        PROTO_TYPE_NIL,
        PROTO_TYPE_BOOL,
        PROTO_TYPE_UINT, /* a non-negative integer */
        PROTO_TYPE_INT,  /* any integer that fits int64_t */
        PROTO_TYPE_FLOAT,
        PROTO_TYPE_STR, /* as an accessor or field type: no NUL bytes */
        PROTO_TYPE_BIN,
        PROTO_TYPE_ARRAY,
        PROTO_TYPE_MAP,
        PROTO_TYPE_ANY, /* field specs only: any type */
} ProtoType;

typedef enum ProtoNeed {
        PROTO_OPTIONAL,
        PROTO_REQUIRED,
} ProtoNeed;

/* A value inside a decoded envelope, with the path that reasons name. Valid
 * as long as the envelope it came from. */
typedef struct ProtoValue {
        const msgpack_object *obj;
        char path[PROTO_PATH_MAX];
} ProtoValue;

typedef struct ProtoEnvelope {
        uint64_t version; /* always PROTO_VERSION after proto_decode() */
        uint64_t epoch;
        char type[PROTO_TYPE_MAX + 1];
        char id[PROTO_ID_MAX + 1];
        char node[PROTO_NODE_MAX + 1]; /* "" before enrollment */
        ProtoValue body;               /* a map, path "body" */

        /* Private: the object tree and the copy of the message it points into,
         * so the caller may free its receive buffer right after decoding. */
        msgpack_unpacked unpacked;
        size_t size;
        char data[];
} ProtoEnvelope;

/* ---- Decoding ---- */

int proto_decode(const void *buf, size_t len, ProtoEnvelope **ret, char **reason);
void proto_envelope_free(ProtoEnvelope *env);
DEFINE_TRIVIAL_CLEANUP_FUNC(ProtoEnvelope *, proto_envelope_free);
#define _cleanup_proto_envelope_ _cleanup_(proto_envelope_freep)

/* The version a well-framed message claims, whichever it is: lets a handler
 * refusing a mismatch say which version the peer spoke. */
int proto_peek_version(const void *buf, size_t len, uint64_t *ret, char **reason);

/* ---- Reading bodies ----
 * The proto_value_*() functions check one value's type and return 0; the
 * proto_get_*() functions look a key up in a map first and return 1 when it
 * was present, 0 when it was absent and PROTO_OPTIONAL (leaving *ret alone),
 * -EPROTO when it was absent and PROTO_REQUIRED. max_len counts bytes for
 * strings and bins, elements for arrays and maps; 0 means no limit beyond the
 * message's own. */

const char *proto_type_to_string(ProtoType t);
ProtoType proto_value_type(const ProtoValue *v);
bool proto_value_is_nil(const ProtoValue *v);

int proto_lookup(const ProtoValue *map, const char *key, ProtoNeed need, ProtoValue *ret,
                 char **reason);

/* Copies the string into buf, NUL-terminated; longer than size-1 is an error. */
int proto_value_str(const ProtoValue *v, char *buf, size_t size, char **reason);
int proto_value_strdup(const ProtoValue *v, size_t max_len, char **ret, char **reason);
int proto_value_uint(const ProtoValue *v, uint64_t *ret, char **reason);
int proto_value_int(const ProtoValue *v, int64_t *ret, char **reason);
int proto_value_bool(const ProtoValue *v, bool *ret, char **reason);
int proto_value_double(const ProtoValue *v, double *ret, char **reason);
/* *ret points into the envelope. */
int proto_value_bin(const ProtoValue *v, size_t max_len, const void **ret, size_t *ret_len,
                    char **reason);
int proto_value_array(const ProtoValue *v, size_t max_len, size_t *ret_n, char **reason);
int proto_value_map(const ProtoValue *v, size_t max_len, size_t *ret_n, char **reason);

/* Element i of an array, entry i of a map (the key is not NUL-terminated).
 * -ERANGE when i is out of bounds, -EINVAL when v is no array/map. */
int proto_array_at(const ProtoValue *array, size_t i, ProtoValue *ret);
int proto_map_at(const ProtoValue *map, size_t i, const char **ret_key, size_t *ret_key_len,
                 ProtoValue *ret_value);

int proto_get_str(const ProtoValue *map, const char *key, ProtoNeed need, char *buf, size_t size,
                  char **reason);
int proto_get_strdup(const ProtoValue *map, const char *key, ProtoNeed need, size_t max_len,
                     char **ret, char **reason);
int proto_get_uint(const ProtoValue *map, const char *key, ProtoNeed need, uint64_t *ret,
                   char **reason);
int proto_get_int(const ProtoValue *map, const char *key, ProtoNeed need, int64_t *ret,
                  char **reason);
int proto_get_bool(const ProtoValue *map, const char *key, ProtoNeed need, bool *ret,
                   char **reason);
int proto_get_double(const ProtoValue *map, const char *key, ProtoNeed need, double *ret,
                     char **reason);
int proto_get_bin(const ProtoValue *map, const char *key, ProtoNeed need, size_t max_len,
                  const void **ret, size_t *ret_len, char **reason);
int proto_get_array(const ProtoValue *map, const char *key, ProtoNeed need, size_t max_len,
                    ProtoValue *ret, size_t *ret_n, char **reason);
int proto_get_map(const ProtoValue *map, const char *key, ProtoNeed need, size_t max_len,
                  ProtoValue *ret, char **reason);

/* A message handler's declaration of its body: every key must be listed,
 * every listed key has the given type (and max_len as above), every
 * PROTO_REQUIRED key is present. A nullable field may also hold nil, for
 * bodies like reply's `result: map|nil`. Returns 0 or -EPROTO. */
typedef struct ProtoField {
        const char *name;
        ProtoType type;
        ProtoNeed need;
        size_t max_len;
        bool nullable;
} ProtoField;

int proto_check_fields(const ProtoValue *map, const ProtoField *fields, size_t n_fields,
                       char **reason);

/* ---- Writing bodies ----
 * ProtoWriter builds one msgpack value, normally the body map, counting the
 * entries of each container itself so callers never state sizes:
 *
 *     _cleanup_(proto_writer_done) ProtoWriter w;
 *     proto_writer_init(&w);
 *     proto_write_map_begin(&w);
 *     proto_write_kv_str(&w, "fingerprint", fp);
 *     proto_write_key(&w, "gpus");
 *     proto_write_array_begin(&w);
 *     ...
 *     proto_write_end(&w);
 *     proto_write_end(&w);
 *     r = proto_encode_writer(&header, &w, &msg, &len);
 *
 * The first failure sticks: later calls do nothing and return it, and so do
 * proto_writer_data() and proto_encode_writer(), so a sequence of writes may
 * be checked once at the end. Failures: -EINVAL (a non-string map key, a key
 * without a value, a second top-level value, an unbalanced end), -E2BIG
 * (nesting deeper than a body may be), -EMSGSIZE (larger than a message may
 * be), -ENOMEM. */

typedef struct ProtoWriterFrame {
        size_t offset;  /* of the container header, patched by proto_write_end() */
        uint32_t items; /* values written into it, keys included */
        bool is_map;
} ProtoWriterFrame;

typedef struct ProtoWriter {
        msgpack_sbuffer buf;
        msgpack_packer pk;
        int error;
        bool complete;
        unsigned depth;
        ProtoWriterFrame frames[PROTO_MAX_DEPTH];
} ProtoWriter;

void proto_writer_init(ProtoWriter *w);
void proto_writer_done(ProtoWriter *w);

int proto_write_map_begin(ProtoWriter *w);
int proto_write_array_begin(ProtoWriter *w);
int proto_write_end(ProtoWriter *w);
/* Like proto_write_str(), but only valid where a map key is expected. */
int proto_write_key(ProtoWriter *w, const char *key);
int proto_write_str(ProtoWriter *w, const char *s);
int proto_write_strn(ProtoWriter *w, const char *s, size_t n);
int proto_write_uint(ProtoWriter *w, uint64_t v);
int proto_write_int(ProtoWriter *w, int64_t v);
int proto_write_bool(ProtoWriter *w, bool v);
int proto_write_double(ProtoWriter *w, double v);
int proto_write_nil(ProtoWriter *w);
int proto_write_bin(ProtoWriter *w, const void *p, size_t n);

int proto_write_kv_str(ProtoWriter *w, const char *key, const char *s);
int proto_write_kv_uint(ProtoWriter *w, const char *key, uint64_t v);
int proto_write_kv_int(ProtoWriter *w, const char *key, int64_t v);
int proto_write_kv_bool(ProtoWriter *w, const char *key, bool v);

/* The bytes written so far, once exactly one complete value has been written. */
int proto_writer_data(const ProtoWriter *w, const void **ret, size_t *ret_len);

/* ---- Encoding ---- */

typedef struct ProtoHeader {
        const char *type;
        const char *id;
        const char *node; /* NULL or "" before enrollment */
        uint64_t epoch;
} ProtoHeader;

/* Builds the envelope (version PROTO_VERSION) around body, the bytes of one
 * msgpack map (NULL with body_len 0: an empty map). *ret is malloc'ed. Whatever
 * this returns proto_decode() accepts: -EINVAL for a header or body that it
 * would reject, -EMSGSIZE for a message over PROTO_MAX_MESSAGE, -ENOMEM. */
int proto_encode(const ProtoHeader *h, const void *body, size_t body_len, void **ret,
                 size_t *ret_len);
int proto_encode_writer(const ProtoHeader *h, const ProtoWriter *body, void **ret, size_t *ret_len);
