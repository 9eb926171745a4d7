/* SPDX-License-Identifier: MIT */
#include "http.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "server.h"
#include "timeutil.h"

static void add_header_raw(Request *r, const char *name, size_t nlen, const char *value,
                           size_t vlen)
{
        h2o_req_t *req = r->req;
        h2o_add_header_by_str(&req->pool, &req->res.headers,
                              h2o_strdup(&req->pool, name, nlen).base, nlen, 0, NULL,
                              h2o_strdup(&req->pool, value, vlen).base, vlen);
}

void http_add_header(Request *r, const char *name, const char *value)
{
        add_header_raw(r, name, strlen(name), value, strlen(value));
}

static const char *status_reason(int status)
{
        switch (status) {
        case 200:
                return "OK";
        case 201:
                return "Created";
        case 202:
                return "Accepted";
        case 204:
                return "No Content";
        case 302:
                return "Found";
        case 400:
                return "Bad Request";
        case 401:
                return "Unauthorized";
        case 403:
                return "Forbidden";
        case 404:
                return "Not Found";
        case 405:
                return "Method Not Allowed";
        case 409:
                return "Conflict";
        case 413:
                return "Payload Too Large";
        case 415:
                return "Unsupported Media Type";
        case 429:
                return "Too Many Requests";
        case 500:
                return "Internal Server Error";
        case 503:
                return "Service Unavailable";
        default:
                return "Status";
        }
}

static void send_body(Request *r, int status, const char *content_type, const char *body,
                      size_t len)
{
        h2o_req_t *req = r->req;

        if (r->responded) {
                log_error("second response to one request ignored | request_id=%s", r->request_id);
                return;
        }
        r->responded = true;
        req->res.status = status;
        req->res.reason = status_reason(status);
        add_header_raw(r, "x-request-id", STRLEN("x-request-id"), r->request_id,
                       strlen(r->request_id));
        server_add_common_headers(r);
        if (content_type)
                h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                               content_type, strlen(content_type));
        if (status >= 500)
                log_warning("request failed | request_id=%s status=%d path=%.*s", r->request_id,
                            status, (int)req->path.len, req->path.base);
        else
                log_debug("request | request_id=%s status=%d method=%.*s path=%.*s", r->request_id,
                          status, (int)req->method.len, req->method.base, (int)req->path.len,
                          req->path.base);
        req->res.content_length = len;
        if (len == 0 && (status == 204 || status == 304)) {
                h2o_send_inline(req, NULL, 0);
                return;
        }
        h2o_send_inline(req, body, len);
}

int http_reply_json(Request *r, int status, json_t *body)
{
        if (!body)
                return http_reply_error(r, ERR_INTERNAL, NULL, "out of memory");
        /* Build straight into the request's pool: no malloc per response, and
         * one serialisation for the common small body (a second only when it
         * does not fit the first guess). */
        char stack[1024], *buf = stack;
        size_t cap = sizeof(stack);
        size_t len = json_dumpb(body, stack, cap, JSON_COMPACT);
        if (len <= cap) {
                /* Small pool allocations come from the pool's chunk, not malloc. */
                buf = h2o_mem_alloc_pool(&r->req->pool, len ? len : 1);
                memcpy(buf, stack, len);
        } else {
                cap = len;
                buf = h2o_mem_alloc_pool(&r->req->pool, cap);
                len = json_dumpb(body, buf, cap, JSON_COMPACT);
        }
        json_decref(body);
        if (len == 0 || len > cap) {
                r->responded = false;
                static const char fallback[] =
                    "{\"error\":{\"code\":\"internal\",\"message\":\"cannot encode response\","
                    "\"details\":{}}}";
                send_body(r, 500, "application/json", fallback, STRLEN(fallback));
                return 0;
        }
        send_body(r, status, "application/json", buf, len);
        return 0;
}

int http_reply_empty(Request *r, int status)
{
        send_body(r, status, NULL, NULL, 0);
        return 0;
}

static int reply_error_va(Request *r, ErrorCode code, json_t *details, const char *fmt, va_list ap)
{
        char message[512];
        vsnprintf(message, sizeof(message), fmt, ap);
        json_t *body = json_pack("{s:{s:s, s:s, s:o, s:s}}", "error", "code",
                                 error_code_to_string(code), "message", message, "details",
                                 details ? details : json_object(), "request_id", r->request_id);
        return http_reply_json(r, error_code_http_status(code), body);
}

int http_reply_error(Request *r, ErrorCode code, json_t *details, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int ret = reply_error_va(r, code, details, fmt, ap);
        va_end(ap);
        return ret;
}

int http_reply_invalid_field(Request *r, const char *field, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int ret =
            reply_error_va(r, ERR_INVALID_REQUEST, json_pack("{s:s}", "field", field), fmt, ap);
        va_end(ap);
        return ret;
}

const char *http_param(Request *r, size_t i)
{
        if (i >= r->n_params)
                return NULL;
        return h2o_strdup(&r->req->pool, r->params[i].base, r->params[i].len).base;
}

static int hexval(int c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        c = tolower(c);
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* Decodes %XX and '+' into a pool string; NULL on a bad escape or NUL byte. */
static const char *url_decode(h2o_mem_pool_t *pool, const char *s, size_t n)
{
        char *out = h2o_mem_alloc_pool(pool, n + 1);
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '%') {
                        int hi, lo;
                        if (i + 2 >= n)
                                return NULL;
                        hi = hexval((unsigned char)s[i + 1]);
                        lo = hexval((unsigned char)s[i + 2]);
                        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                                return NULL;
                        out[o++] = (char)(hi * 16 + lo);
                        i += 2;
                } else if (s[i] == '+')
                        out[o++] = ' ';
                else
                        out[o++] = s[i];
        }
        out[o] = '\0';
        return out;
}

const char *http_query(Request *r, const char *name)
{
        h2o_req_t *req = r->req;
        if (req->query_at == SIZE_MAX)
                return NULL;
        const char *q = req->path.base + req->query_at + 1;
        const char *end = req->path.base + req->path.len;
        size_t nl = strlen(name);
        while (q < end) {
                const char *amp = memchr(q, '&', (size_t)(end - q));
                const char *pe = amp ? amp : end;
                const char *eq = memchr(q, '=', (size_t)(pe - q));
                const char *ke = eq ? eq : pe;
                if ((size_t)(ke - q) == nl && memcmp(q, name, nl) == 0) {
                        if (!eq)
                                return "";
                        return url_decode(&req->pool, eq + 1, (size_t)(pe - eq - 1));
                }
                q = pe + 1;
        }
        return NULL;
}

const char *http_header(Request *r, const char *name)
{
        h2o_req_t *req = r->req;
        ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
        if (i < 0)
                return NULL;
        h2o_iovec_t v = req->headers.entries[i].value;
        if (memchr(v.base, '\0', v.len))
                return NULL;
        return h2o_strdup(&req->pool, v.base, v.len).base;
}

const char *http_bearer_token(Request *r)
{
        h2o_req_t *req = r->req;
        ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
        if (i < 0)
                return NULL;
        h2o_iovec_t v = req->headers.entries[i].value;
        if (v.len < 8 || strncasecmp(v.base, "Bearer ", 7) != 0)
                return NULL;
        const char *t = v.base + 7;
        size_t n = v.len - 7;
        while (n > 0 && *t == ' ') {
                t++;
                n--;
        }
        if (n == 0 || n > 256 || memchr(t, '\0', n))
                return NULL;
        return h2o_strdup(&req->pool, t, n).base;
}

static const char *type_name(JsonFieldType t)
{
        switch (t) {
        case JSON_FIELD_STRING:
                return "a string";
        case JSON_FIELD_INTEGER:
                return "an integer";
        case JSON_FIELD_BOOLEAN:
                return "a boolean";
        case JSON_FIELD_OBJECT:
                return "an object";
        case JSON_FIELD_ARRAY:
                return "an array";
        }
        return "?";
}

static bool type_matches(json_t *v, JsonFieldType t)
{
        switch (t) {
        case JSON_FIELD_STRING:
                return json_is_string(v);
        case JSON_FIELD_INTEGER:
                return json_is_integer(v);
        case JSON_FIELD_BOOLEAN:
                return json_is_boolean(v);
        case JSON_FIELD_OBJECT:
                return json_is_object(v);
        case JSON_FIELD_ARRAY:
                return json_is_array(v);
        }
        return false;
}

int http_read_json(Request *r, const JsonField *fields, size_t n_fields, json_t **ret)
{
        h2o_req_t *req = r->req;
        json_error_t jerr;

        const char *ct = http_header(r, "content-type");
        /* application/json, optionally with parameters; not a longer type name
         * that merely starts the same (application/jsonx, application/json-seq). */
        size_t jl = STRLEN("application/json");
        if (ct && (strncasecmp(ct, "application/json", jl) != 0 ||
                   (ct[jl] != '\0' && ct[jl] != ';' && ct[jl] != ' ' && ct[jl] != '\t'))) {
                http_reply_error(r, ERR_UNSUPPORTED_MEDIA_TYPE, NULL,
                                 "request body must be application/json");
                return -EBADMSG;
        }
        if (req->entity.len == 0 || !req->entity.base) {
                http_reply_error(r, ERR_INVALID_REQUEST, NULL,
                                 "request body must be a JSON object");
                return -EBADMSG;
        }
        json_t *body = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
        if (!body) {
                http_reply_error(r, ERR_INVALID_REQUEST,
                                 json_pack("{s:i, s:i}", "line", jerr.line, "column", jerr.column),
                                 "malformed JSON: %s", jerr.text);
                return -EBADMSG;
        }
        if (!json_is_object(body)) {
                json_decref(body);
                http_reply_error(r, ERR_INVALID_REQUEST, NULL,
                                 "request body must be a JSON object");
                return -EBADMSG;
        }

        const char *key;
        json_t *value;
        json_object_foreach(body, key, value)
        {
                const JsonField *f = NULL;
                for (size_t i = 0; i < n_fields; i++)
                        if (streq(fields[i].name, key)) {
                                f = &fields[i];
                                break;
                        }
                if (!f) {
                        http_reply_invalid_field(r, key, "unknown field \"%s\"", key);
                        json_decref(body);
                        return -EBADMSG;
                }
                if (json_is_null(value) && !f->required)
                        continue;
                if (!type_matches(value, f->type)) {
                        http_reply_invalid_field(r, key, "%s must be %s", key, type_name(f->type));
                        json_decref(body);
                        return -EBADMSG;
                }
                if (f->type == JSON_FIELD_STRING) {
                        size_t len = json_string_length(value);
                        if (len < f->min_len || (f->max_len > 0 && len > f->max_len)) {
                                http_reply_invalid_field(
                                    r, key, "%s must be between %zu and %zu bytes long", key,
                                    f->min_len, f->max_len);
                                json_decref(body);
                                return -EBADMSG;
                        }
                }
        }
        for (size_t i = 0; i < n_fields; i++) {
                if (!fields[i].required)
                        continue;
                json_t *v = json_object_get(body, fields[i].name);
                if (!v || json_is_null(v)) {
                        http_reply_invalid_field(r, fields[i].name, "%s is required",
                                                 fields[i].name);
                        json_decref(body);
                        return -EBADMSG;
                }
        }
        *ret = body;
        return 0;
}

const char *json_field_string(json_t *obj, const char *name)
{
        json_t *v = json_object_get(obj, name);
        return json_is_string(v) ? json_string_value(v) : NULL;
}
