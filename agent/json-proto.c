/* SPDX-License-Identifier: MIT */
#include "json-proto.h"

int json_to_proto(ProtoWriter *w, const json_t *v)
{
        switch (json_typeof(v)) {
        case JSON_NULL:
                return proto_write_nil(w);
        case JSON_TRUE:
                return proto_write_bool(w, true);
        case JSON_FALSE:
                return proto_write_bool(w, false);
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
                const json_t *e;
                proto_write_array_begin(w);
                json_array_foreach(v, i, e) json_to_proto(w, e);
                return proto_write_end(w);
        }
        case JSON_OBJECT: {
                const char *k;
                const json_t *e;
                proto_write_map_begin(w);
                json_object_foreach((json_t *)v, k, e)
                {
                        proto_write_key(w, k);
                        json_to_proto(w, e);
                }
                return proto_write_end(w);
        }
        }
        return -EINVAL;
}
