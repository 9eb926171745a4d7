/* SPDX-License-Identifier: MIT */
/* The agent protocol envelope: what proto_encode() writes, everything
 * proto_decode() refuses and why, the body accessors and ProtoWriter. */
#include <criterion/criterion.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "macro.h"
#include "proto.h"

/* Asserts without reporting success: criterion sends every passing assertion
 * to its runner, which would dominate loops of thousands of checks. */
#define check(cond, ...)                                                                           \
        do {                                                                                       \
                if (!(cond))                                                                       \
                        cr_assert_fail(__VA_ARGS__);                                               \
        } while (0)

static const ProtoHeader hello = {
    .type = "node.hello", .id = "msg_1", .node = "nod_abc", .epoch = 42};

enum {
        F_V = 1 << 0,
        F_TYPE = 1 << 1,
        F_ID = 1 << 2,
        F_NODE = 1 << 3,
        F_EPOCH = 1 << 4,
        F_BODY = 1 << 5,
        F_ALL = 0x3f,
};

static const struct {
        unsigned flag;
        const char *name;
} header_fields[] = {
    {F_V, "v"},       {F_TYPE, "type"},   {F_ID, "id"},
    {F_NODE, "node"}, {F_EPOCH, "epoch"}, {F_BODY, "body"},
};

/* Writes the selected envelope fields with valid values into an open map. */
static void write_fields(ProtoWriter *w, unsigned fields)
{
        if (fields & F_V)
                proto_write_kv_uint(w, "v", PROTO_VERSION);
        if (fields & F_TYPE)
                proto_write_kv_str(w, "type", "node.hello");
        if (fields & F_ID)
                proto_write_kv_str(w, "id", "msg_1");
        if (fields & F_NODE)
                proto_write_kv_str(w, "node", "nod_abc");
        if (fields & F_EPOCH)
                proto_write_kv_uint(w, "epoch", 42);
        if (fields & F_BODY) {
                proto_write_key(w, "body");
                proto_write_map_begin(w);
                proto_write_end(w);
        }
}

static void expect_reject(const void *buf, size_t len, int want, const char *want_reason)
{
        _cleanup_free_ char *reason = NULL;
        ProtoEnvelope *env = NULL;
        int r = proto_decode(buf, len, &env, &reason);
        cr_assert_eq(r, want, "expected %d (%s), got %d (%s); reason: %s", want, strerror(-want), r,
                     strerror(-r < 0 ? 0 : -r), strempty(reason));
        cr_assert_null(env);
        cr_assert_not_null(reason);
        cr_assert(strstr(reason, want_reason), "reason \"%s\" does not contain \"%s\"", reason,
                  want_reason);
}

static void expect_reject_writer(ProtoWriter *w, int want, const char *want_reason)
{
        const void *data;
        size_t len;
        cr_assert_eq(proto_writer_data(w, &data, &len), 0, "test message could not be written");
        expect_reject(data, len, want, want_reason);
}

/* An envelope whose body is the given raw bytes, for what ProtoWriter refuses to write. */
static void pack_envelope_raw_body(msgpack_sbuffer *sb, uint64_t version, const void *body,
                                   size_t n)
{
        msgpack_packer pk;
        msgpack_sbuffer_init(sb);
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 6);
        msgpack_pack_str_with_body(&pk, "v", 1);
        msgpack_pack_uint64(&pk, version);
        msgpack_pack_str_with_body(&pk, "type", 4);
        msgpack_pack_str_with_body(&pk, "ping", 4);
        msgpack_pack_str_with_body(&pk, "id", 2);
        msgpack_pack_str_with_body(&pk, "m1", 2);
        msgpack_pack_str_with_body(&pk, "node", 4);
        msgpack_pack_str_with_body(&pk, "", 0);
        msgpack_pack_str_with_body(&pk, "epoch", 5);
        msgpack_pack_uint64(&pk, 1);
        msgpack_pack_str_with_body(&pk, "body", 4);
        msgpack_sbuffer_write(sb, body, n);
}

static void expect_reject_body(const void *body, size_t n, int want, const char *want_reason)
{
        msgpack_sbuffer sb;
        pack_envelope_raw_body(&sb, PROTO_VERSION, body, n);
        expect_reject(sb.data, sb.size, want, want_reason);
        msgpack_sbuffer_destroy(&sb);
}

static ProtoEnvelope *decode_ok(const void *buf, size_t len)
{
        _cleanup_free_ char *reason = NULL;
        ProtoEnvelope *env = NULL;
        int r = proto_decode(buf, len, &env, &reason);
        cr_assert_eq(r, 0, "decode failed: %d: %s", r, strempty(reason));
        cr_assert_not_null(env);
        return env;
}

/* A body that uses every type and every length class the writer produces. */
static void write_rich_body(ProtoWriter *w)
{
        char long_str[300];
        unsigned char blob[70];
        memset(long_str, 'x', sizeof(long_str));
        for (size_t i = 0; i < sizeof(blob); i++)
                blob[i] = (unsigned char)i;

        proto_write_map_begin(w);
        proto_write_kv_str(w, "fingerprint", "SHA256:abc");
        proto_write_kv_uint(w, "gpus", 8);
        proto_write_kv_uint(w, "big", UINT64_MAX);
        proto_write_kv_int(w, "delta", -123456789012LL);
        proto_write_kv_bool(w, "ready", true);
        proto_write_key(w, "load");
        proto_write_double(w, 0.75);
        proto_write_key(w, "nothing");
        proto_write_nil(w);
        proto_write_key(w, "long");
        proto_write_strn(w, long_str, sizeof(long_str));
        proto_write_key(w, "blob");
        proto_write_bin(w, blob, sizeof(blob));
        proto_write_key(w, "devices");
        proto_write_array_begin(w);
        for (int i = 0; i < 3; i++) {
                char uuid[32];
                snprintf(uuid, sizeof(uuid), "GPU-%d", i);
                proto_write_map_begin(w);
                proto_write_kv_str(w, "uuid", uuid);
                proto_write_kv_uint(w, "index", (uint64_t)i);
                proto_write_end(w);
        }
        proto_write_end(w);
        proto_write_end(w);
}

static void encode_rich(void **ret, size_t *ret_len)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        write_rich_body(&w);
        cr_assert_eq(proto_encode_writer(&hello, &w, ret, ret_len), 0);
}

/* ---- Round trips and the wire format ---- */

Test(proto, round_trip_header_and_body, .timeout = 30)
{
        _cleanup_free_ void *msg = NULL;
        size_t len;
        encode_rich(&msg, &len);

        _cleanup_proto_envelope_ ProtoEnvelope *env = decode_ok(msg, len);
        cr_assert_eq(env->version, PROTO_VERSION);
        cr_assert_str_eq(env->type, "node.hello");
        cr_assert_str_eq(env->id, "msg_1");
        cr_assert_str_eq(env->node, "nod_abc");
        cr_assert_eq(env->epoch, 42);
        cr_assert_str_eq(env->body.path, "body");

        char fp[64];
        uint64_t u;
        int64_t i;
        bool b;
        double d;
        const void *bin;
        size_t n;
        cr_assert_eq(proto_get_str(&env->body, "fingerprint", PROTO_REQUIRED, fp, sizeof(fp), NULL),
                     1);
        cr_assert_str_eq(fp, "SHA256:abc");
        cr_assert_eq(proto_get_uint(&env->body, "gpus", PROTO_REQUIRED, &u, NULL), 1);
        cr_assert_eq(u, 8);
        cr_assert_eq(proto_get_uint(&env->body, "big", PROTO_REQUIRED, &u, NULL), 1);
        cr_assert_eq(u, UINT64_MAX);
        cr_assert_eq(proto_get_int(&env->body, "delta", PROTO_REQUIRED, &i, NULL), 1);
        cr_assert_eq(i, -123456789012LL);
        cr_assert_eq(proto_get_bool(&env->body, "ready", PROTO_REQUIRED, &b, NULL), 1);
        cr_assert(b);
        cr_assert_eq(proto_get_double(&env->body, "load", PROTO_REQUIRED, &d, NULL), 1);
        cr_assert_float_eq(d, 0.75, 1e-12);
        cr_assert_eq(proto_get_bin(&env->body, "blob", PROTO_REQUIRED, 0, &bin, &n, NULL), 1);
        cr_assert_eq(n, 70);
        cr_assert_eq(((const unsigned char *)bin)[69], 69);
        _cleanup_free_ char *long_str = NULL;
        cr_assert_eq(proto_get_strdup(&env->body, "long", PROTO_REQUIRED, 300, &long_str, NULL), 1);
        cr_assert_eq(strlen(long_str), 300);

        ProtoValue devices, dev, nothing;
        cr_assert_eq(proto_lookup(&env->body, "nothing", PROTO_REQUIRED, &nothing, NULL), 1);
        cr_assert_eq(proto_value_type(&nothing), PROTO_TYPE_NIL);
        cr_assert_eq(proto_get_array(&env->body, "devices", PROTO_REQUIRED, 8, &devices, &n, NULL),
                     1);
        cr_assert_eq(n, 3);
        cr_assert_eq(proto_array_at(&devices, 2, &dev), 0);
        cr_assert_str_eq(dev.path, "body.devices[2]");
        cr_assert_eq(proto_get_str(&dev, "uuid", PROTO_REQUIRED, fp, sizeof(fp), NULL), 1);
        cr_assert_str_eq(fp, "GPU-2");
        cr_assert_eq(proto_get_uint(&dev, "index", PROTO_REQUIRED, &u, NULL), 1);
        cr_assert_eq(u, 2);
}

Test(proto, envelope_outlives_the_receive_buffer, .timeout = 30)
{
        void *msg;
        size_t len;
        encode_rich(&msg, &len);
        _cleanup_proto_envelope_ ProtoEnvelope *env = decode_ok(msg, len);
        /* nng frees its message right after the handler decodes it. */
        memset(msg, 0xc1, len);
        free(msg);

        char fp[64];
        cr_assert_eq(proto_get_str(&env->body, "fingerprint", PROTO_REQUIRED, fp, sizeof(fp), NULL),
                     1);
        cr_assert_str_eq(fp, "SHA256:abc");
}

Test(proto, golden_bytes_of_a_small_message, .timeout = 30)
{
        /* The exact bytes docs/protocol.md shows to implementers of the other side. */
        static const unsigned char want[] = {
            0x86, 0xa1, 'v', 0x01, 0xa4, 't', 'y',  'p',  'e', 0xa4, 'p', 'i', 'n',
            'g',  0xa2, 'i', 'd',  0xa2, 'm', '1',  0xa4, 'n', 'o',  'd', 'e', 0xa0,
            0xa5, 'e',  'p', 'o',  'c',  'h', 0x07, 0xa4, 'b', 'o',  'd', 'y', 0x80,
        };
        const ProtoHeader h = {.type = "ping", .id = "m1", .node = NULL, .epoch = 7};
        _cleanup_free_ void *msg = NULL;
        size_t len;
        cr_assert_eq(proto_encode(&h, NULL, 0, &msg, &len), 0);
        cr_assert_eq(len, sizeof(want));
        cr_assert_arr_eq(msg, want, sizeof(want));

        _cleanup_proto_envelope_ ProtoEnvelope *env = decode_ok(want, sizeof(want));
        cr_assert_str_eq(env->node, "");
        cr_assert_eq(env->epoch, 7);
        size_t n = 99;
        cr_assert_eq(proto_value_map(&env->body, 0, &n, NULL), 0);
        cr_assert_eq(n, 0);
}

Test(proto, non_minimal_encodings_are_accepted, .timeout = 30)
{
        /* Other encoders may pick wider formats than needed; the envelope
         * rules are about values, not encodings. */
        static const unsigned char msg[] = {
            0xdf, 0,   0,    0,    6,                                          /* map 32 */
            0xd9, 1,   'v',  0xcf, 0,    0,    0,    0,    0,    0,   0,    1, /* str 8, uint 64 */
            0xda, 0,   4,    't',  'y',  'p',  'e',  0xdb, 0,    0,   0,    4,   'p',
            'i',  'n', 'g',  0xa2, 'i',  'd',  0xd9, 2,    'm',  '1', 0xa4, 'n', 'o',
            'd',  'e', 0xd9, 0,    0xa5, 'e',  'p',  'o',  'c',  'h', 0xd0, 7, /* int 8 holding 7 */
            0xa4, 'b', 'o',  'd',  'y',  0xde, 0,    1,    0xa1, 'n', 0xd1, 0,   5,
        };
        _cleanup_proto_envelope_ ProtoEnvelope *env = decode_ok(msg, sizeof(msg));
        cr_assert_eq(env->version, 1);
        cr_assert_str_eq(env->type, "ping");
        cr_assert_str_eq(env->id, "m1");
        cr_assert_eq(env->epoch, 7);
        uint64_t n;
        cr_assert_eq(proto_get_uint(&env->body, "n", PROTO_REQUIRED, &n, NULL), 1);
        cr_assert_eq(n, 5);
}

Test(proto, encode_refuses_what_decode_would_reject, .timeout = 30)
{
        static const char *const bad_types[] = {"",           "Node.hello", "node hello",
                                                "node-hello", "node/hello", "ping\n"};
        static const char *const bad_ids[] = {"", "has space", "tab\there", "del\x7f",
                                              "caf\xc3\xa9"};
        char type49[50], id65[66], node65[66];
        void *msg = NULL;
        size_t len;

        for (size_t i = 0; i < ELEMENTSOF(bad_types); i++) {
                ProtoHeader h = hello;
                h.type = bad_types[i];
                cr_assert_eq(proto_encode(&h, NULL, 0, &msg, &len), -EINVAL, "type \"%s\"",
                             bad_types[i]);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad_ids); i++) {
                ProtoHeader h = hello;
                h.id = bad_ids[i];
                cr_assert_eq(proto_encode(&h, NULL, 0, &msg, &len), -EINVAL, "id \"%s\"",
                             bad_ids[i]);
                if (bad_ids[i][0] == '\0')
                        continue; /* "" is a valid node */
                h = hello;
                h.node = bad_ids[i];
                cr_assert_eq(proto_encode(&h, NULL, 0, &msg, &len), -EINVAL, "node \"%s\"",
                             bad_ids[i]);
        }

        memset(type49, 'a', 49);
        type49[49] = '\0';
        memset(id65, 'i', 65);
        id65[65] = '\0';
        memset(node65, 'n', 65);
        node65[65] = '\0';
        ProtoHeader h = hello;
        h.type = type49;
        cr_assert_eq(proto_encode(&h, NULL, 0, &msg, &len), -EINVAL);
        h = hello;
        h.id = id65;
        cr_assert_eq(proto_encode(&h, NULL, 0, &msg, &len), -EINVAL);
        h = hello;
        h.node = node65;
        cr_assert_eq(proto_encode(&h, NULL, 0, &msg, &len), -EINVAL);
        h = hello;
        h.type = NULL;
        cr_assert_eq(proto_encode(&h, NULL, 0, &msg, &len), -EINVAL);

        /* The longest allowed values go through. */
        type49[48] = '\0';
        id65[64] = '\0';
        node65[64] = '\0';
        h = (ProtoHeader){.type = type49, .id = id65, .node = node65, .epoch = UINT64_MAX};
        cr_assert_eq(proto_encode(&h, NULL, 0, &msg, &len), 0);
        _cleanup_proto_envelope_ ProtoEnvelope *env = decode_ok(msg, len);
        free(msg);
        cr_assert_str_eq(env->type, type49);
        cr_assert_str_eq(env->id, id65);
        cr_assert_str_eq(env->node, node65);
        cr_assert_eq(env->epoch, UINT64_MAX);

        /* Bodies: not a map, two values, a broken map, a duplicate key. */
        static const struct {
                const char *bytes;
                size_t n;
        } bad_bodies[] = {
            {"\x90", 1},
            {"\x80\x80", 2},
            {"\x81\xa1x", 3},
            {"\x82\xa1x\x01\xa1x\x02", 7},
            {"\xa3"
             "abc",
             4},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad_bodies); i++)
                cr_assert_eq(proto_encode(&hello, bad_bodies[i].bytes, bad_bodies[i].n, &msg, &len),
                             -EINVAL, "bad body %zu", i);
        cr_assert_eq(proto_encode(&hello, NULL, 3, &msg, &len), -EINVAL);
}

/* ---- Size ---- */

/* An envelope of exactly `total` bytes: the body carries one bin of filler. */
static void encode_of_size(size_t total, void **ret, size_t *ret_len, int want)
{
        /* Measure the envelope around an empty bin, then grow the bin; every
         * filler length used here takes a bin32 header. */
        size_t fixed;
        {
                _cleanup_(proto_writer_done) ProtoWriter w;
                _cleanup_free_ void *probe = NULL;
                size_t probe_len;
                proto_writer_init(&w);
                proto_write_map_begin(&w);
                proto_write_key(&w, "pad");
                proto_write_bin(&w, "", 0);
                proto_write_end(&w);
                cr_assert_eq(proto_encode_writer(&hello, &w, &probe, &probe_len), 0);
                fixed = probe_len - 2; /* bin8 header of the empty bin */
        }
        size_t fill = total - fixed - 5; /* bin32 header */
        _cleanup_free_ unsigned char *pad = calloc(1, fill);
        cr_assert_not_null(pad);
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_key(&w, "pad");
        proto_write_bin(&w, pad, fill);
        proto_write_end(&w);
        cr_assert_eq(proto_encode_writer(&hello, &w, ret, ret_len), want);
        if (want == 0)
                cr_assert_eq(*ret_len, total);
}

Test(proto, message_of_exactly_the_limit_is_accepted, .timeout = 30)
{
        _cleanup_free_ void *msg = NULL;
        size_t len;
        encode_of_size(PROTO_MAX_MESSAGE, &msg, &len, 0);
        _cleanup_proto_envelope_ ProtoEnvelope *env = decode_ok(msg, len);
        const void *pad;
        size_t n;
        cr_assert_eq(proto_get_bin(&env->body, "pad", PROTO_REQUIRED, 0, &pad, &n, NULL), 1);
        cr_assert_gt(n, PROTO_MAX_MESSAGE - 100);
}

Test(proto, one_byte_over_the_limit_is_refused, .timeout = 30)
{
        void *msg = NULL;
        size_t len;
        encode_of_size(PROTO_MAX_MESSAGE + 1, &msg, &len, -EMSGSIZE);
        cr_assert_null(msg);
}

Test(proto, oversize_is_refused_before_parsing, .timeout = 30)
{
        /* Garbage that would fail parsing at byte 0: the size must be reported instead. */
        size_t len = PROTO_MAX_MESSAGE + 1;
        _cleanup_free_ unsigned char *buf = malloc(len);
        memset(buf, 0xc1, len);
        expect_reject(buf, len, -EMSGSIZE, "exceeds the limit of 1048576 bytes");

        uint64_t v;
        _cleanup_free_ char *reason = NULL;
        cr_assert_eq(proto_peek_version(buf, len, &v, &reason), -EMSGSIZE);
}

Test(proto, empty_message_is_refused, .timeout = 30)
{
        expect_reject("", 0, -EBADMSG, "empty message");
        expect_reject(NULL, 0, -EBADMSG, "empty message");
}

/* ---- Framing ---- */

Test(proto, top_level_must_be_a_map, .timeout = 30)
{
        expect_reject("\x90", 1, -EPROTO, "message is not a map (got array)");
        expect_reject("\x01", 1, -EPROTO, "message is not a map (got uint)");
        expect_reject("\xa2hi", 3, -EPROTO, "message is not a map (got string)");
        expect_reject("\xc0", 1, -EPROTO, "message is not a map (got nil)");
}

Test(proto, trailing_bytes_are_refused, .timeout = 30)
{
        _cleanup_free_ void *msg = NULL;
        size_t len;
        cr_assert_eq(proto_encode(&hello, NULL, 0, &msg, &len), 0);

        _cleanup_free_ unsigned char *two = malloc(2 * len);
        memcpy(two, msg, len);
        memcpy(two + len, msg, len);
        expect_reject(two, len + 1, -EBADMSG, "1 trailing bytes after the message");
        /* Two complete messages in one frame are not two messages. */
        expect_reject(two, 2 * len, -EBADMSG, "trailing bytes");
}

Test(proto, truncation_at_every_offset_is_refused, .timeout = 30)
{
        _cleanup_free_ void *msg = NULL;
        size_t len;
        encode_rich(&msg, &len);
        cr_assert_gt(len, 400);

        for (size_t cut = 0; cut < len; cut++) {
                /* A fresh allocation of exactly `cut` bytes, so ASan sees any over-read. */
                _cleanup_free_ unsigned char *prefix = malloc(cut ? cut : 1);
                memcpy(prefix, msg, cut);
                _cleanup_free_ char *reason = NULL;
                ProtoEnvelope *env = NULL;
                int r = proto_decode(prefix, cut, &env, &reason);
                check(r == -EBADMSG && !env && reason, "prefix of %zu bytes: %d %s", cut, r,
                      strempty(reason));
        }
}

Test(proto, reserved_byte_is_refused, .timeout = 30)
{
        expect_reject("\xc1", 1, -EBADMSG, "reserved byte 0xc1 at offset 0");
        expect_reject_body("\x81\xa1x\xc1", 4, -EBADMSG, "reserved byte 0xc1");
}

Test(proto, ext_types_are_refused, .timeout = 30)
{
        expect_reject_body("\x81\xa1x\xd4\x01\x00", 6, -EPROTO, "ext type");
        /* The msgpack timestamp extension, -1, is an ext like any other. */
        expect_reject_body("\x81\xa1t\xd6\xff\x00\x00\x00\x01", 9, -EPROTO, "ext type");
        expect_reject_body("\x81\xa1x\xc7\x01\x05\x00", 7, -EPROTO, "ext type");
}

Test(proto, huge_declared_counts_do_not_allocate, .timeout = 30)
{
        /* msgpack-c would allocate the declared count up front (~100 GiB);
         * under ASan that aborts, so passing here shows it never got that far. */
        expect_reject("\xdd\xff\xff\xff\xff", 5, -EBADMSG, "declares 4294967295 entries");
        expect_reject("\xdf\xff\xff\xff\xff", 5, -EBADMSG, "truncated");
        expect_reject("\x81\xa1x\xdf\xff\xff\xff\xff\xc0", 10, -EBADMSG, "truncated");
        expect_reject_body("\x81\xa1x\xdd\x00\x01\x00\x00\xc0\xc0", 10, -EBADMSG, "truncated");
        expect_reject_body("\x81\xa1x\xdb\xff\xff\xff\xff", 8, -EBADMSG, "truncated");
        expect_reject_body("\x81\xa1x\xc6\x7f\xff\xff\xff", 8, -EBADMSG, "truncated");
}

static void body_nested(msgpack_sbuffer *sb, unsigned levels)
{
        /* body = {"x": [[[...nil...]]]} with `levels` arrays */
        unsigned char raw[512];
        size_t n = 0;
        raw[n++] = 0x81;
        raw[n++] = 0xa1;
        raw[n++] = 'x';
        for (unsigned i = 0; i < levels; i++)
                raw[n++] = 0x91;
        raw[n++] = 0xc0;
        pack_envelope_raw_body(sb, PROTO_VERSION, raw, n);
}

Test(proto, nesting_limit, .timeout = 30)
{
        msgpack_sbuffer sb;
        /* Envelope (1) + body (2) + 14 arrays = 16 levels: the deepest allowed. */
        body_nested(&sb, PROTO_MAX_DEPTH - 2);
        ProtoEnvelope *env = decode_ok(sb.data, sb.size);
        proto_envelope_free(env);
        msgpack_sbuffer_destroy(&sb);

        body_nested(&sb, PROTO_MAX_DEPTH - 1);
        expect_reject(sb.data, sb.size, -EPROTO, "nesting deeper than 16 levels");
        msgpack_sbuffer_destroy(&sb);

        /* An empty container one level too deep counts as a level too. */
        expect_reject_body("\x81\xa1x\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x90",
                           18, -EPROTO, "nesting deeper");

        /* Thousands of levels: refused without recursing through them. */
        size_t deep = 100000;
        _cleanup_free_ unsigned char *bomb = malloc(deep + 1);
        memset(bomb, 0x91, deep);
        bomb[deep] = 0xc0;
        bomb[0] = 0x81; /* any map start will do: the depth check comes first */
        expect_reject(bomb, deep + 1, -EPROTO, "nesting deeper");
}

/* ---- Map keys ---- */

Test(proto, duplicate_top_level_keys_are_refused, .timeout = 30)
{
        for (size_t i = 0; i < ELEMENTSOF(header_fields); i++) {
                _cleanup_(proto_writer_done) ProtoWriter w;
                proto_writer_init(&w);
                proto_write_map_begin(&w);
                write_fields(&w, F_ALL);
                write_fields(&w, header_fields[i].flag);
                proto_write_end(&w);
                char want[64];
                snprintf(want, sizeof(want), "message: duplicate key \"%s\"",
                         header_fields[i].name);
                expect_reject_writer(&w, -EPROTO, want);
        }
}

Test(proto, duplicate_keys_in_the_body_are_refused_at_any_depth, .timeout = 30)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        write_fields(&w, F_ALL & ~F_BODY);
        proto_write_key(&w, "body");
        proto_write_map_begin(&w);
        proto_write_key(&w, "gpus");
        proto_write_array_begin(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "uuid", "a");
        proto_write_kv_str(&w, "uuid", "b");
        proto_write_end(&w);
        proto_write_end(&w);
        proto_write_end(&w);
        proto_write_end(&w);
        expect_reject_writer(&w, -EPROTO, "body.gpus[0]: duplicate key \"uuid\"");
}

static void write_big_map_body(ProtoWriter *w, unsigned n, unsigned dup_of)
{
        proto_write_map_begin(w);
        write_fields(w, F_ALL & ~F_BODY);
        proto_write_key(w, "body");
        proto_write_map_begin(w);
        for (unsigned i = 0; i < n; i++) {
                char key[32];
                snprintf(key, sizeof(key), "k%u", i == n - 1 && dup_of < n ? dup_of : i);
                proto_write_kv_uint(w, key, i);
        }
        proto_write_end(w);
        proto_write_end(w);
}

Test(proto, duplicate_keys_in_large_maps_are_found, .timeout = 30)
{
        /* Past the pairwise threshold the keys are sorted: the first and last
         * entries collide. */
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        write_big_map_body(&w, 5000, 0);
        expect_reject_writer(&w, -EPROTO, "body: duplicate key \"k0\"");

        /* The same size without the collision is fine. */
        _cleanup_(proto_writer_done) ProtoWriter ok;
        proto_writer_init(&ok);
        write_big_map_body(&ok, 5000, UINT32_MAX);
        const void *data;
        size_t len;
        cr_assert_eq(proto_writer_data(&ok, &data, &len), 0);
        _cleanup_proto_envelope_ ProtoEnvelope *env = decode_ok(data, len);
        uint64_t u;
        cr_assert_eq(proto_get_uint(&env->body, "k4999", PROTO_REQUIRED, &u, NULL), 1);
        cr_assert_eq(u, 4999);
}

Test(proto, map_keys_must_be_strings, .timeout = 30)
{
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        msgpack_pack_uint64(&pk, 1);
        msgpack_pack_uint64(&pk, 1);
        expect_reject(sb.data, sb.size, -EPROTO, "message: map key is not a string (got uint)");
        msgpack_sbuffer_destroy(&sb);

        expect_reject_body("\x81\xa1x\x91\x81\x01\x02", 7, -EPROTO,
                           "body.x[0]: map key is not a string (got uint)");
        expect_reject_body("\x81\xc4\x01x\x01", 5, -EPROTO,
                           "body: map key is not a string (got bin)");
}

Test(proto, map_keys_must_not_contain_nul, .timeout = 30)
{
        expect_reject_body("\x81\xa3x\0y\x01", 6, -EPROTO, "body: map key contains a NUL byte");
}

/* ---- Header fields ---- */

Test(proto, every_missing_field_is_named, .timeout = 30)
{
        for (size_t i = 0; i < ELEMENTSOF(header_fields); i++) {
                _cleanup_(proto_writer_done) ProtoWriter w;
                proto_writer_init(&w);
                proto_write_map_begin(&w);
                write_fields(&w, F_ALL & ~header_fields[i].flag);
                proto_write_end(&w);
                char want[64];
                snprintf(want, sizeof(want), "%s: missing required field", header_fields[i].name);
                expect_reject_writer(&w, -EPROTO, want);
        }
}

Test(proto, every_mistyped_field_is_named, .timeout = 30)
{
        static const struct {
                unsigned flag;
                const char *want;
        } cases[] = {
            {F_V, "v: expected uint, got string"},      {F_TYPE, "type: expected string, got uint"},
            {F_ID, "id: expected string, got uint"},    {F_NODE, "node: expected string, got nil"},
            {F_EPOCH, "epoch: expected uint, got int"}, {F_BODY, "body: expected map, got array"},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(proto_writer_done) ProtoWriter w;
                proto_writer_init(&w);
                proto_write_map_begin(&w);
                write_fields(&w, F_ALL & ~cases[i].flag);
                switch (cases[i].flag) {
                case F_V:
                        proto_write_kv_str(&w, "v", "1");
                        break;
                case F_TYPE:
                        proto_write_kv_uint(&w, "type", 3);
                        break;
                case F_ID:
                        proto_write_kv_uint(&w, "id", 3);
                        break;
                case F_NODE:
                        proto_write_key(&w, "node");
                        proto_write_nil(&w);
                        break;
                case F_EPOCH:
                        proto_write_kv_int(&w, "epoch", -1);
                        break;
                case F_BODY:
                        proto_write_key(&w, "body");
                        proto_write_array_begin(&w);
                        proto_write_end(&w);
                        break;
                }
                proto_write_end(&w);
                expect_reject_writer(&w, -EPROTO, cases[i].want);
        }
}

Test(proto, body_must_be_a_map, .timeout = 30)
{
        expect_reject_body("\xc0", 1, -EPROTO, "body: expected map, got nil");
        expect_reject_body("\x91\x80", 2, -EPROTO, "body: expected map, got array");
        expect_reject_body("\xc4\x00", 2, -EPROTO, "body: expected map, got bin");
}

Test(proto, unknown_top_level_keys_are_refused, .timeout = 30)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        write_fields(&w, F_ALL);
        proto_write_kv_str(&w, "trace", "abc");
        proto_write_end(&w);
        expect_reject_writer(&w, -EPROTO, "trace: unknown field");
}

static void expect_header_string_rejected(const char *field, const char *value, size_t n,
                                          const char *want)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        unsigned flag = 0;
        for (size_t i = 0; i < ELEMENTSOF(header_fields); i++)
                if (streq(header_fields[i].name, field))
                        flag = header_fields[i].flag;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        write_fields(&w, F_ALL & ~flag);
        proto_write_key(&w, field);
        proto_write_strn(&w, value, n);
        proto_write_end(&w);
        expect_reject_writer(&w, -EPROTO, want);
}

static void expect_header_string_accepted(const char *field, const char *value)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        unsigned flag = 0;
        for (size_t i = 0; i < ELEMENTSOF(header_fields); i++)
                if (streq(header_fields[i].name, field))
                        flag = header_fields[i].flag;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        write_fields(&w, F_ALL & ~flag);
        proto_write_kv_str(&w, field, value);
        proto_write_end(&w);
        const void *data;
        size_t len;
        cr_assert_eq(proto_writer_data(&w, &data, &len), 0);
        ProtoEnvelope *env = decode_ok(data, len);
        const char *got = streq(field, "type") ? env->type
                          : streq(field, "id") ? env->id
                                               : env->node;
        cr_assert_str_eq(got, value);
        proto_envelope_free(env);
}

Test(proto, header_strings_with_nul_are_refused, .timeout = 30)
{
        expect_header_string_rejected("type", "pi\0ng", 5, "type: string contains a NUL byte");
        expect_header_string_rejected("id", "m\0", 2, "id: string contains a NUL byte");
        expect_header_string_rejected("node", "\0", 1, "node: string contains a NUL byte");
}

Test(proto, type_charset_and_length, .timeout = 30)
{
        char t48[49], t49[50];
        memset(t48, 'a', 48);
        t48[48] = '\0';
        memset(t49, 'a', 49);
        t49[49] = '\0';

        expect_header_string_accepted("type", "node.hello_2");
        expect_header_string_accepted("type", t48);
        expect_header_string_rejected("type", t49, 49, "type: string longer than 48 bytes");
        expect_header_string_rejected("type", "", 0, "type: must not be empty");
        expect_header_string_rejected("type", "Ping", 4,
                                      "type: invalid character 0x50 at position 0");
        expect_header_string_rejected("type", "a-b", 3, "type: invalid character 0x2d");
        expect_header_string_rejected("type", "a b", 3, "type: invalid character 0x20");
}

Test(proto, id_charset_and_length, .timeout = 30)
{
        char i64[65], i65[66];
        memset(i64, 'z', 64);
        i64[64] = '\0';
        memset(i65, 'z', 65);
        i65[65] = '\0';

        expect_header_string_accepted("id", "msg_AZaz09-_~!{}");
        expect_header_string_accepted("id", i64);
        expect_header_string_rejected("id", i65, 65, "id: string longer than 64 bytes");
        expect_header_string_rejected("id", "", 0, "id: must not be empty");
        expect_header_string_rejected("id", "a b", 3, "id: invalid character 0x20 at position 1");
        expect_header_string_rejected("id", "a\tb", 3, "id: invalid character 0x09");
        expect_header_string_rejected("id", "\x7f", 1, "id: invalid character 0x7f");
        expect_header_string_rejected("id", "caf\xc3\xa9", 5, "id: invalid character 0xc3");
}

Test(proto, node_may_be_empty_but_not_long_or_spaced, .timeout = 30)
{
        char n64[65], n65[66];
        memset(n64, 'n', 64);
        n64[64] = '\0';
        memset(n65, 'n', 65);
        n65[65] = '\0';

        expect_header_string_accepted("node", "");
        expect_header_string_accepted("node", n64);
        expect_header_string_rejected("node", n65, 65, "node: string longer than 64 bytes");
        expect_header_string_rejected("node", "a b", 3, "node: invalid character 0x20");
}

/* ---- Versions ---- */

static void write_version(ProtoWriter *w, uint64_t v, bool future_shape)
{
        proto_write_map_begin(w);
        proto_write_kv_uint(w, "v", v);
        write_fields(w, future_shape ? F_TYPE : F_ALL & ~F_V);
        if (future_shape)
                proto_write_kv_str(w, "trace", "t-1");
        proto_write_end(w);
}

Test(proto, version_zero_is_refused, .timeout = 30)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        write_version(&w, 0, false);
        expect_reject_writer(&w, -EPROTO, "v: protocol version 0 is invalid");
}

Test(proto, negative_version_is_a_type_error, .timeout = 30)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_int(&w, "v", -1);
        write_fields(&w, F_ALL & ~F_V);
        proto_write_end(&w);
        expect_reject_writer(&w, -EPROTO, "v: expected uint, got int");
}

Test(proto, other_versions_are_reported_distinctly, .timeout = 30)
{
        static const uint64_t versions[] = {PROTO_VERSION + 1, 7, UINT64_MAX};
        for (size_t i = 0; i < ELEMENTSOF(versions); i++)
                for (int future_shape = 0; future_shape <= 1; future_shape++) {
                        _cleanup_(proto_writer_done) ProtoWriter w;
                        proto_writer_init(&w);
                        /* A later version may add and drop envelope keys: the
                         * mismatch is still what gets reported. */
                        write_version(&w, versions[i], future_shape);
                        char want[128];
                        snprintf(want, sizeof(want),
                                 "version mismatch: peer speaks %" PRIu64 ", we speak %d",
                                 versions[i], PROTO_VERSION);
                        expect_reject_writer(&w, -EPROTONOSUPPORT, want);

                        const void *data;
                        size_t len;
                        uint64_t v = 0;
                        cr_assert_eq(proto_writer_data(&w, &data, &len), 0);
                        cr_assert_eq(proto_peek_version(data, len, &v, NULL), 0);
                        cr_assert_eq(v, versions[i]);
                }
}

Test(proto, peek_version_of_our_own_messages, .timeout = 30)
{
        _cleanup_free_ void *msg = NULL;
        size_t len;
        uint64_t v = 0;
        cr_assert_eq(proto_encode(&hello, NULL, 0, &msg, &len), 0);
        cr_assert_eq(proto_peek_version(msg, len, &v, NULL), 0);
        cr_assert_eq(v, PROTO_VERSION);

        _cleanup_free_ char *reason = NULL;
        cr_assert_eq(proto_peek_version("\x80", 1, &v, &reason), -EPROTO);
        cr_assert_str_eq(reason, "v: missing required field");
        cr_assert_eq(proto_peek_version("\x81", 1, &v, &reason), -EBADMSG);
}

/* ---- Reasons are safe to log ---- */

static void assert_printable(const char *s)
{
        for (const char *c = s; *c; c++)
                check(*c >= 0x20 && *c < 0x7f, "unprintable 0x%02x in reason \"%s\"",
                      (unsigned char)*c, s);
}

Test(proto, reasons_escape_peer_bytes, .timeout = 30)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        write_fields(&w, F_ALL);
        proto_write_kv_uint(&w, "a\"b\n\x1b[31m\xff", 1);
        proto_write_end(&w);
        expect_reject_writer(&w, -EPROTO, "a\\\"b\\x0a\\x1b[31m\\xff: unknown field");

        _cleanup_free_ char *reason = NULL;
        const void *data;
        size_t len;
        ProtoEnvelope *env = NULL;
        proto_writer_data(&w, &data, &len);
        proto_decode(data, len, &env, &reason);
        assert_printable(reason);
}

Test(proto, reasons_stay_short_for_long_keys, .timeout = 30)
{
        char key[2000];
        memset(key, 'k', sizeof(key) - 1);
        key[sizeof(key) - 1] = '\0';
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        write_fields(&w, F_ALL);
        proto_write_kv_uint(&w, key, 1);
        proto_write_end(&w);

        _cleanup_free_ char *reason = NULL;
        const void *data;
        size_t len;
        ProtoEnvelope *env = NULL;
        proto_writer_data(&w, &data, &len);
        cr_assert_eq(proto_decode(data, len, &env, &reason), -EPROTO);
        cr_assert_lt(strlen(reason), 200, "reason of %zu bytes", strlen(reason));
        cr_assert(strstr(reason, "...: unknown field"), "%s", reason);
}

/* ---- Hostile input ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
        /* xorshift64: a fixed seed keeps every run identical. */
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

Test(proto, random_mutations_never_crash_and_accepted_ones_re_encode, .timeout = 30)
{
        static const unsigned char interesting[] = {0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f,
                                                    0xa0, 0xbf, 0xc0, 0xc1, 0xc4, 0xd4, 0xd9,
                                                    0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};
        _cleanup_free_ void *msg = NULL;
        size_t len;
        encode_rich(&msg, &len);
        unsigned accepted = 0, rejected = 0;

        for (unsigned iter = 0; iter < 10000; iter++) {
                size_t n = len;
                if (rng() % 8 == 0)
                        n = (size_t)(rng() % (len + 16)); /* truncate or extend */
                _cleanup_free_ unsigned char *buf = malloc(n ? n : 1);
                for (size_t i = 0; i < n; i++)
                        buf[i] = i < len ? ((const unsigned char *)msg)[i] : (unsigned char)rng();
                unsigned edits = 1 + (unsigned)(rng() % 4);
                for (unsigned e = 0; e < edits && n > 0; e++) {
                        size_t at = (size_t)(rng() % n);
                        switch (rng() % 3) {
                        case 0:
                                buf[at] ^= (unsigned char)(1u << (rng() % 8));
                                break;
                        case 1:
                                buf[at] = interesting[rng() % sizeof(interesting)];
                                break;
                        default:
                                buf[at] = (unsigned char)rng();
                        }
                }

                _cleanup_free_ char *reason = NULL;
                ProtoEnvelope *env = NULL;
                int r = proto_decode(buf, n, &env, &reason);
                if (r < 0) {
                        rejected++;
                        check(r == -EBADMSG || r == -EPROTO || r == -EPROTONOSUPPORT,
                              "iteration %u: unexpected error %d", iter, r);
                        check(!env && reason, "iteration %u: env or reason wrong", iter);
                        assert_printable(reason);
                        continue;
                }
                accepted++;

                /* Whatever decode accepts, encode accepts again, and the copy
                 * decodes to the same header. */
                msgpack_sbuffer sb;
                msgpack_packer pk;
                msgpack_sbuffer_init(&sb);
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                check(msgpack_pack_object(&pk, *env->body.obj) == 0, "iteration %u", iter);
                const ProtoHeader h = {
                    .type = env->type, .id = env->id, .node = env->node, .epoch = env->epoch};
                _cleanup_free_ void *again = NULL;
                size_t again_len;
                check(proto_encode(&h, sb.data, sb.size, &again, &again_len) == 0,
                      "iteration %u: accepted message does not re-encode", iter);
                ProtoEnvelope *env2 = NULL;
                check(proto_decode(again, again_len, &env2, NULL) == 0,
                      "iteration %u: re-encoded message does not decode", iter);
                check(streq(env2->type, env->type) && streq(env2->id, env->id) &&
                          streq(env2->node, env->node) && env2->epoch == env->epoch,
                      "iteration %u: header changed in the round trip", iter);
                proto_envelope_free(env2);
                msgpack_sbuffer_destroy(&sb);
                proto_envelope_free(env);
        }
        /* Both outcomes must occur, or the loop tests nothing. */
        cr_assert_gt(accepted, 50, "accepted %u", accepted);
        cr_assert_gt(rejected, 500, "rejected %u", rejected);
}

/* ---- Body accessors ---- */

/* Decodes an envelope around a body written by fn. */
static ProtoEnvelope *with_body(void (*fn)(ProtoWriter *w))
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        _cleanup_free_ void *msg = NULL;
        size_t len;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        fn(&w);
        proto_write_end(&w);
        cr_assert_eq(proto_encode_writer(&hello, &w, &msg, &len), 0);
        return decode_ok(msg, len);
}

static void body_mixed(ProtoWriter *w)
{
        proto_write_kv_uint(w, "fingerprint", 7);
        proto_write_kv_str(w, "name", "hello");
        proto_write_kv_int(w, "neg", -5);
        proto_write_kv_uint(w, "huge", (uint64_t)INT64_MAX + 1);
        proto_write_kv_uint(w, "small", 12);
        proto_write_key(w, "nul");
        proto_write_strn(w, "a\0b", 3);
        proto_write_key(w, "list");
        proto_write_array_begin(w);
        proto_write_str(w, "x");
        proto_write_map_begin(w);
        proto_write_kv_bool(w, "uuid", false);
        proto_write_end(w);
        proto_write_end(w);
        proto_write_key(w, "blob");
        proto_write_bin(w, "\x01\x02\x03", 3);
}

Test(proto, accessor_reasons_name_the_field, .timeout = 30)
{
        _cleanup_proto_envelope_ ProtoEnvelope *env = with_body(body_mixed);
        _cleanup_free_ char *reason = NULL;
        char buf[64];
        uint64_t u;
        bool b;

        cr_assert_eq(
            proto_get_str(&env->body, "fingerprint", PROTO_REQUIRED, buf, sizeof(buf), &reason),
            -EPROTO);
        cr_assert_str_eq(reason, "body.fingerprint: expected string, got uint");

        cr_assert_eq(proto_get_uint(&env->body, "name", PROTO_REQUIRED, &u, &reason), -EPROTO);
        cr_assert_str_eq(reason, "body.name: expected uint, got string");

        cr_assert_eq(proto_get_uint(&env->body, "neg", PROTO_REQUIRED, &u, &reason), -EPROTO);
        cr_assert_str_eq(reason, "body.neg: expected uint, got int");

        cr_assert_eq(proto_get_uint(&env->body, "absent", PROTO_REQUIRED, &u, &reason), -EPROTO);
        cr_assert_str_eq(reason, "body.absent: missing required field");

        ProtoValue list, elem;
        size_t n;
        cr_assert_eq(proto_get_array(&env->body, "list", PROTO_REQUIRED, 0, &list, &n, &reason), 1);
        cr_assert_eq(proto_array_at(&list, 1, &elem), 0);
        cr_assert_eq(proto_get_str(&elem, "uuid", PROTO_REQUIRED, buf, sizeof(buf), &reason),
                     -EPROTO);
        cr_assert_str_eq(reason, "body.list[1].uuid: expected string, got bool");
        cr_assert_eq(proto_get_bool(&elem, "uuid", PROTO_REQUIRED, &b, &reason), 1);
        cr_assert_not(b);

        cr_assert_eq(proto_array_at(&list, 0, &elem), 0);
        cr_assert_eq(proto_get_bool(&elem, "uuid", PROTO_REQUIRED, &b, &reason), -EPROTO);
        cr_assert_str_eq(reason, "body.list[0]: expected map, got string");
}

Test(proto, optional_absent_fields_leave_the_output_alone, .timeout = 30)
{
        _cleanup_proto_envelope_ ProtoEnvelope *env = with_body(body_mixed);
        char buf[8] = "keep";
        uint64_t u = 77;
        int64_t i = -77;
        bool b = true;
        double d = 1.5;
        char *s = (char *)"keep";
        const void *bin = &u;
        size_t n = 77;
        ProtoValue v = {.obj = NULL};

        cr_assert_eq(proto_get_str(&env->body, "x", PROTO_OPTIONAL, buf, sizeof(buf), NULL), 0);
        cr_assert_str_eq(buf, "keep");
        cr_assert_eq(proto_get_strdup(&env->body, "x", PROTO_OPTIONAL, 0, &s, NULL), 0);
        cr_assert_str_eq(s, "keep");
        cr_assert_eq(proto_get_uint(&env->body, "x", PROTO_OPTIONAL, &u, NULL), 0);
        cr_assert_eq(u, 77);
        cr_assert_eq(proto_get_int(&env->body, "x", PROTO_OPTIONAL, &i, NULL), 0);
        cr_assert_eq(i, -77);
        cr_assert_eq(proto_get_bool(&env->body, "x", PROTO_OPTIONAL, &b, NULL), 0);
        cr_assert(b);
        cr_assert_eq(proto_get_double(&env->body, "x", PROTO_OPTIONAL, &d, NULL), 0);
        cr_assert_float_eq(d, 1.5, 0);
        cr_assert_eq(proto_get_bin(&env->body, "x", PROTO_OPTIONAL, 0, &bin, &n, NULL), 0);
        cr_assert_eq(bin, &u);
        cr_assert_eq(proto_get_array(&env->body, "x", PROTO_OPTIONAL, 0, &v, &n, NULL), 0);
        cr_assert_eq(proto_get_map(&env->body, "x", PROTO_OPTIONAL, 0, &v, NULL), 0);
        cr_assert_null(v.obj);
        cr_assert_eq(n, 77);

        /* Present but mistyped is an error even when optional. */
        cr_assert_eq(proto_get_uint(&env->body, "name", PROTO_OPTIONAL, &u, NULL), -EPROTO);
}

Test(proto, string_limits, .timeout = 30)
{
        _cleanup_proto_envelope_ ProtoEnvelope *env = with_body(body_mixed);
        _cleanup_free_ char *reason = NULL;
        char buf[6];

        /* "hello" needs 6 bytes with its NUL. */
        cr_assert_eq(proto_get_str(&env->body, "name", PROTO_REQUIRED, buf, 6, &reason), 1);
        cr_assert_str_eq(buf, "hello");
        cr_assert_eq(proto_get_str(&env->body, "name", PROTO_REQUIRED, buf, 5, &reason), -EPROTO);
        cr_assert_str_eq(reason, "body.name: string longer than 4 bytes");
        cr_assert_eq(proto_get_str(&env->body, "name", PROTO_REQUIRED, buf, 1, &reason), -EPROTO);
        cr_assert_str_eq(reason, "body.name: string longer than 0 bytes");

        _cleanup_free_ char *s = NULL;
        cr_assert_eq(proto_get_strdup(&env->body, "name", PROTO_REQUIRED, 4, &s, &reason), -EPROTO);
        cr_assert_null(s);
        cr_assert_eq(proto_get_strdup(&env->body, "name", PROTO_REQUIRED, 5, &s, &reason), 1);
        cr_assert_str_eq(s, "hello");

        cr_assert_eq(proto_get_str(&env->body, "nul", PROTO_REQUIRED, buf, sizeof(buf), &reason),
                     -EPROTO);
        cr_assert_str_eq(reason, "body.nul: string contains a NUL byte");
        /* A string is not a bin and a bin is not a string. */
        const void *bin;
        size_t n;
        cr_assert_eq(proto_get_bin(&env->body, "name", PROTO_REQUIRED, 0, &bin, &n, &reason),
                     -EPROTO);
        cr_assert_str_eq(reason, "body.name: expected bin, got string");
        cr_assert_eq(proto_get_bin(&env->body, "blob", PROTO_REQUIRED, 2, &bin, &n, &reason),
                     -EPROTO);
        cr_assert_str_eq(reason, "body.blob: bin longer than 2 bytes");
        cr_assert_eq(proto_get_bin(&env->body, "blob", PROTO_REQUIRED, 3, &bin, &n, &reason), 1);
        cr_assert_eq(n, 3);
        cr_assert_arr_eq(bin, "\x01\x02\x03", 3);
}

Test(proto, integer_ranges, .timeout = 30)
{
        _cleanup_proto_envelope_ ProtoEnvelope *env = with_body(body_mixed);
        _cleanup_free_ char *reason = NULL;
        int64_t i;
        double d;

        cr_assert_eq(proto_get_int(&env->body, "neg", PROTO_REQUIRED, &i, &reason), 1);
        cr_assert_eq(i, -5);
        cr_assert_eq(proto_get_int(&env->body, "small", PROTO_REQUIRED, &i, &reason), 1);
        cr_assert_eq(i, 12);
        cr_assert_eq(proto_get_int(&env->body, "huge", PROTO_REQUIRED, &i, &reason), -EPROTO);
        cr_assert_str_eq(reason, "body.huge: integer 9223372036854775808 out of range for int64");
        /* No silent conversions between numbers. */
        cr_assert_eq(proto_get_double(&env->body, "small", PROTO_REQUIRED, &d, &reason), -EPROTO);
        cr_assert_str_eq(reason, "body.small: expected float, got uint");
}

Test(proto, array_and_map_iteration, .timeout = 30)
{
        _cleanup_proto_envelope_ ProtoEnvelope *env = with_body(body_mixed);
        ProtoValue list, v;
        size_t n;
        _cleanup_free_ char *reason = NULL;

        cr_assert_eq(proto_get_array(&env->body, "list", PROTO_REQUIRED, 1, &list, &n, &reason),
                     -EPROTO);
        cr_assert_str_eq(reason, "body.list: array has more than 1 elements");
        cr_assert_eq(proto_get_array(&env->body, "list", PROTO_REQUIRED, 2, &list, &n, &reason), 1);
        cr_assert_eq(proto_array_at(&list, 2, &v), -ERANGE);
        cr_assert_eq(proto_array_at(&env->body, 0, &v), -EINVAL);

        size_t entries;
        cr_assert_eq(proto_value_map(&env->body, 0, &entries, NULL), 0);
        cr_assert_eq(entries, 8);
        const char *key;
        size_t key_len;
        cr_assert_eq(proto_map_at(&env->body, 1, &key, &key_len, &v), 0);
        cr_assert_eq(key_len, 4);
        cr_assert(memcmp(key, "name", 4) == 0);
        cr_assert_str_eq(v.path, "body.name");
        cr_assert_eq(proto_value_type(&v), PROTO_TYPE_STR);
        cr_assert_eq(proto_map_at(&env->body, entries, &key, &key_len, &v), -ERANGE);
        cr_assert_eq(proto_map_at(&list, 0, &key, &key_len, &v), -EINVAL);
        cr_assert_eq(proto_value_map(&env->body, 7, &entries, &reason), -EPROTO);
        cr_assert_str_eq(reason, "body: map has more than 7 entries");
}

static void body_hello(ProtoWriter *w)
{
        proto_write_kv_str(w, "fingerprint", "SHA256:abc");
        proto_write_kv_uint(w, "gpus", 8);
        proto_write_key(w, "labels");
        proto_write_array_begin(w);
        proto_write_str(w, "a");
        proto_write_end(w);
}

static const ProtoField hello_fields[] = {
    {"fingerprint", PROTO_TYPE_STR, PROTO_REQUIRED, 16},
    {"gpus", PROTO_TYPE_UINT, PROTO_REQUIRED, 0},
    {"labels", PROTO_TYPE_ARRAY, PROTO_OPTIONAL, 4},
    {"hostname", PROTO_TYPE_STR, PROTO_OPTIONAL, 0},
};

static void body_reply(ProtoWriter *w)
{
        proto_write_kv_str(w, "command_id", "cmd_1");
        proto_write_kv_bool(w, "ok", true);
        proto_write_key(w, "result");
        proto_write_map_begin(w);
        proto_write_end(w);
        proto_write_key(w, "error");
        proto_write_nil(w);
}

Test(proto, nullable_fields_take_nil_and_their_type_only, .timeout = 30)
{
        _cleanup_proto_envelope_ ProtoEnvelope *env = with_body(body_reply);
        _cleanup_free_ char *reason = NULL;
        ProtoField reply_fields[] = {
            {"command_id", PROTO_TYPE_STR, PROTO_REQUIRED, 64, false},
            {"ok", PROTO_TYPE_BOOL, PROTO_REQUIRED, 0, false},
            {"result", PROTO_TYPE_MAP, PROTO_REQUIRED, 0, true},
            {"error", PROTO_TYPE_MAP, PROTO_REQUIRED, 0, true},
        };
        cr_assert_eq(
            proto_check_fields(&env->body, reply_fields, ELEMENTSOF(reply_fields), &reason), 0,
            "%s", strempty(reason));

        ProtoValue error;
        cr_assert_eq(proto_lookup(&env->body, "error", PROTO_REQUIRED, &error, NULL), 1);
        cr_assert(proto_value_is_nil(&error));

        /* Without nullable, nil is a type like any other. */
        reply_fields[3].nullable = false;
        cr_assert_eq(
            proto_check_fields(&env->body, reply_fields, ELEMENTSOF(reply_fields), &reason),
            -EPROTO);
        cr_assert_str_eq(reason, "body.error: expected map, got nil");
        /* Nullable does not widen the type beyond nil. */
        reply_fields[3].nullable = true;
        reply_fields[2].type = PROTO_TYPE_ARRAY;
        cr_assert_eq(
            proto_check_fields(&env->body, reply_fields, ELEMENTSOF(reply_fields), &reason),
            -EPROTO);
        cr_assert_str_eq(reason, "body.result: expected array, got map");
}

Test(proto, field_specs_accept_a_conforming_body, .timeout = 30)
{
        _cleanup_proto_envelope_ ProtoEnvelope *env = with_body(body_hello);
        _cleanup_free_ char *reason = NULL;
        cr_assert_eq(
            proto_check_fields(&env->body, hello_fields, ELEMENTSOF(hello_fields), &reason), 0,
            "%s", strempty(reason));
        cr_assert_null(reason);
}

Test(proto, field_specs_reject_unknown_missing_mistyped_and_long, .timeout = 30)
{
        _cleanup_proto_envelope_ ProtoEnvelope *env = with_body(body_hello);
        _cleanup_free_ char *reason = NULL;

        /* Without "labels" in the spec, the body has an unknown key. */
        cr_assert_eq(proto_check_fields(&env->body, hello_fields, 2, &reason), -EPROTO);
        cr_assert_str_eq(reason, "body.labels: unknown field");

        const ProtoField need_host[] = {
            {"fingerprint", PROTO_TYPE_STR, PROTO_REQUIRED, 0},
            {"gpus", PROTO_TYPE_ANY, PROTO_REQUIRED, 0},
            {"labels", PROTO_TYPE_ANY, PROTO_OPTIONAL, 0},
            {"hostname", PROTO_TYPE_STR, PROTO_REQUIRED, 0},
        };
        cr_assert_eq(proto_check_fields(&env->body, need_host, ELEMENTSOF(need_host), &reason),
                     -EPROTO);
        cr_assert_str_eq(reason, "body.hostname: missing required field");

        const ProtoField gpus_int[] = {
            {"fingerprint", PROTO_TYPE_STR, PROTO_REQUIRED, 0},
            {"gpus", PROTO_TYPE_STR, PROTO_REQUIRED, 0},
            {"labels", PROTO_TYPE_ARRAY, PROTO_OPTIONAL, 0},
        };
        cr_assert_eq(proto_check_fields(&env->body, gpus_int, ELEMENTSOF(gpus_int), &reason),
                     -EPROTO);
        cr_assert_str_eq(reason, "body.gpus: expected string, got uint");

        const ProtoField short_fp[] = {
            {"fingerprint", PROTO_TYPE_STR, PROTO_REQUIRED, 5},
            {"gpus", PROTO_TYPE_UINT, PROTO_REQUIRED, 0},
            {"labels", PROTO_TYPE_ARRAY, PROTO_OPTIONAL, 0},
        };
        cr_assert_eq(proto_check_fields(&env->body, short_fp, ELEMENTSOF(short_fp), &reason),
                     -EPROTO);
        cr_assert_str_eq(reason, "body.fingerprint: string longer than 5 bytes");

        const ProtoField no_labels[] = {
            {"fingerprint", PROTO_TYPE_STR, PROTO_REQUIRED, 0},
            {"gpus", PROTO_TYPE_UINT, PROTO_REQUIRED, 0},
            {"labels", PROTO_TYPE_ARRAY, PROTO_OPTIONAL, 0},
        };
        ProtoValue labels;
        cr_assert_eq(proto_lookup(&env->body, "labels", PROTO_REQUIRED, &labels, NULL), 1);
        cr_assert_eq(proto_check_fields(&labels, no_labels, ELEMENTSOF(no_labels), &reason),
                     -EPROTO);
        cr_assert_str_eq(reason, "body.labels: expected map, got array");
}

/* ---- ProtoWriter ---- */

Test(proto, writer_patches_container_counts, .timeout = 30)
{
        /* 70000 elements: past map16/array16, so the 32-bit count matters. */
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_key(&w, "many");
        proto_write_array_begin(&w);
        for (unsigned i = 0; i < 70000; i++)
                proto_write_uint(&w, i % 100);
        proto_write_end(&w);
        proto_write_kv_str(&w, "after", "yes");
        proto_write_end(&w);

        const void *data;
        size_t len;
        cr_assert_eq(proto_writer_data(&w, &data, &len), 0);
        /* Any msgpack implementation reads it: check with msgpack-c directly. */
        msgpack_unpacked u;
        size_t off = 0;
        msgpack_unpacked_init(&u);
        cr_assert_eq(msgpack_unpack_next(&u, data, len, &off), MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(off, len);
        cr_assert_eq(u.data.type, MSGPACK_OBJECT_MAP);
        cr_assert_eq(u.data.via.map.size, 2);
        cr_assert_eq(u.data.via.map.ptr[0].val.via.array.size, 70000);
        cr_assert_eq(u.data.via.map.ptr[1].val.type, MSGPACK_OBJECT_STR);
        msgpack_unpacked_destroy(&u);
}

Test(proto, writer_misuse_is_sticky, .timeout = 30)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        const void *data;
        size_t len;
        proto_writer_init(&w);
        cr_assert_eq(proto_write_map_begin(&w), 0);
        /* A map key that is not a string. */
        cr_assert_eq(proto_write_uint(&w, 1), -EINVAL);
        /* Everything after fails the same way, even what would be valid. */
        cr_assert_eq(proto_write_kv_str(&w, "k", "v"), -EINVAL);
        cr_assert_eq(proto_write_end(&w), -EINVAL);
        cr_assert_eq(proto_writer_data(&w, &data, &len), -EINVAL);
        void *msg = NULL;
        cr_assert_eq(proto_encode_writer(&hello, &w, &msg, &len), -EINVAL);
        cr_assert_null(msg);
}

Test(proto, writer_refuses_unbalanced_and_extra_values, .timeout = 30)
{
        const void *data;
        size_t len;
        {
                _cleanup_(proto_writer_done) ProtoWriter w;
                proto_writer_init(&w);
                cr_assert_eq(proto_writer_data(&w, &data, &len), -EINVAL); /* nothing yet */
                proto_write_map_begin(&w);
                cr_assert_eq(proto_writer_data(&w, &data, &len), -EINVAL); /* still open */
                proto_write_key(&w, "dangling");
                cr_assert_eq(proto_write_end(&w), -EINVAL); /* key without value */
        }
        {
                _cleanup_(proto_writer_done) ProtoWriter w;
                proto_writer_init(&w);
                cr_assert_eq(proto_write_end(&w), -EINVAL); /* nothing open */
        }
        {
                _cleanup_(proto_writer_done) ProtoWriter w;
                proto_writer_init(&w);
                proto_write_map_begin(&w);
                proto_write_end(&w);
                cr_assert_eq(proto_write_map_begin(&w), -EINVAL); /* second top-level value */
        }
        {
                _cleanup_(proto_writer_done) ProtoWriter w;
                proto_writer_init(&w);
                proto_write_array_begin(&w);
                cr_assert_eq(proto_write_key(&w, "k"), -EINVAL); /* keys belong in maps */
        }
        {
                _cleanup_(proto_writer_done) ProtoWriter w;
                proto_writer_init(&w);
                proto_write_map_begin(&w);
                proto_write_key(&w, "k");
                cr_assert_eq(proto_write_key(&w, "k2"), -EINVAL); /* a value is due */
        }
}

Test(proto, writer_depth_matches_the_decoder, .timeout = 30)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w); /* the body: level 2 of the envelope */
        proto_write_key(&w, "x");
        for (int i = 0; i < PROTO_MAX_DEPTH - 2; i++)
                cr_assert_eq(proto_write_array_begin(&w), 0, "level %d", i + 3);
        cr_assert_eq(proto_write_array_begin(&w), -E2BIG);

        /* The deepest body the writer allows is one the decoder accepts. */
        _cleanup_(proto_writer_done) ProtoWriter ok;
        proto_writer_init(&ok);
        proto_write_map_begin(&ok);
        proto_write_key(&ok, "x");
        for (int i = 0; i < PROTO_MAX_DEPTH - 2; i++)
                proto_write_array_begin(&ok);
        for (int i = 0; i < PROTO_MAX_DEPTH - 1; i++)
                proto_write_end(&ok);
        _cleanup_free_ void *msg = NULL;
        size_t len;
        cr_assert_eq(proto_encode_writer(&hello, &ok, &msg, &len), 0);
        proto_envelope_free(decode_ok(msg, len));
}

Test(proto, writer_refuses_oversized_values, .timeout = 30)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        _cleanup_free_ char *big = malloc(PROTO_MAX_MESSAGE + 1);
        memset(big, 'a', PROTO_MAX_MESSAGE + 1);
        proto_writer_init(&w);
        proto_write_array_begin(&w);
        cr_assert_eq(proto_write_strn(&w, big, PROTO_MAX_MESSAGE + 1), -EMSGSIZE);
        cr_assert_lt(w.buf.size, 16, "nothing of the oversized string was written");

        _cleanup_(proto_writer_done) ProtoWriter w2;
        proto_writer_init(&w2);
        proto_write_array_begin(&w2);
        cr_assert_eq(proto_write_bin(&w2, big, PROTO_MAX_MESSAGE / 2), 0);
        cr_assert_eq(proto_write_bin(&w2, big, PROTO_MAX_MESSAGE / 2), -EMSGSIZE);
}
