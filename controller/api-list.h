/* SPDX-License-Identifier: MIT */
#pragma once

/* The contract's list shape, shared by the list handlers: ?limit=&cursor=
 * in, {"items":[...], "next_cursor":null|"..."} out. A cursor is "c" and the
 * last row's sequence number, so it survives rows inserted after it. */

#include <jansson.h>
#include <stddef.h>

#include "http.h"

#define API_LIST_DEFAULT_LIMIT 50
#define API_LIST_MAX_LIMIT     500

/* Reads ?limit= (1..max_limit, default API_LIST_DEFAULT_LIMIT) and ?cursor=.
 * On bad input answers 400 invalid_request (details.field) itself and
 * returns -EINVAL. */
int api_list_params(Request *r, int max_limit, int *ret_limit, long long *ret_after_seq);
/* null when fewer than limit rows came back, else the cursor after last_seq. */
json_t *api_list_next_cursor(long long last_seq, size_t got, int limit);
/* Replies 200 {"items": items, "next_cursor": ...}; items is stolen. */
int api_list_reply(Request *r, json_t *items, long long last_seq, int limit);
