/* SPDX-License-Identifier: MIT */
#pragma once

/* One HTTP request as the API handlers see it, and the helpers every handler
 * answers with: JSON bodies, the contract's error envelope, X-Request-Id on
 * every response, strict JSON input with errors naming the field. */

#include <h2o.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "errors.h"
#include "id.h"
#include "json-util.h"
#include "macro.h"
#include "users.h"

typedef struct Server Server;
typedef struct Route Route;
typedef struct AsyncJob AsyncJob;

#define REQUEST_MAX_PARAMS 4

/* Who is calling, filled by the dispatcher for routes that need a session. */
typedef struct Auth {
        bool authenticated;
        char user_id[ID_MAX];
        char session_id[ID_MAX];
        unsigned roles;      /* ROLE_* bits */
        uint64_t expires_at; /* wall clock, usec: when the access token expires */
} Auth;

typedef struct Request {
        h2o_req_t *req;
        Server *server;
        const Route *route;
        char request_id[40];
        char client_addr[64];
        h2o_iovec_t params[REQUEST_MAX_PARAMS];
        size_t n_params;
        Auth auth;
        bool responded;
        AsyncJob *job; /* pending background work, told when the request goes away */
} Request;

/* Replies. Each sends the response (status, JSON body, X-Request-Id) and
 * returns 0; the json_t reference is stolen. */
int http_reply_json(Request *r, int status, json_t *body);
int http_reply_empty(Request *r, int status);
/* The error envelope {"error":{code,message,details,request_id}}. details may
 * be NULL (sent as {}); it is stolen. */
int http_reply_error(Request *r, ErrorCode code, json_t *details, const char *fmt, ...)
    _printf_(4, 5);
/* 400 invalid_request with details.field. */
int http_reply_invalid_field(Request *r, const char *field, const char *fmt, ...) _printf_(3, 4);

/* Adds a response header before the reply (name must be lower case). */
void http_add_header(Request *r, const char *name, const char *value);

/* Request accessors. Strings live in the request's pool. */
const char *http_param(Request *r, size_t i);
/* Percent-decoded query parameter, NULL when absent. */
const char *http_query(Request *r, const char *name);
/* Header value as a NUL-terminated copy, NULL when absent. */
const char *http_header(Request *r, const char *name);
/* The bearer token of the Authorization header, NULL when absent or another scheme. */
const char *http_bearer_token(Request *r);

/* Strict JSON input. A spec lists the fields a body may carry; a body with a
 * field not in the spec, a field of the wrong type, a missing required field,
 * or a string outside its length bounds is answered 400 invalid_request with
 * details.field, and the function returns -EBADMSG (the reply is sent). */
typedef enum {
        JSON_FIELD_STRING,
        JSON_FIELD_INTEGER,
        JSON_FIELD_BOOLEAN,
        JSON_FIELD_OBJECT,
        JSON_FIELD_ARRAY,
} JsonFieldType;

typedef struct JsonField {
        const char *name;
        JsonFieldType type;
        bool required;
        size_t min_len, max_len; /* strings, in bytes (max 0: no bound) */
} JsonField;

int http_read_json(Request *r, const JsonField *fields, size_t n_fields, json_t **ret);
/* Borrowed string of an optional field (NULL when absent). */
const char *json_field_string(json_t *obj, const char *name);
