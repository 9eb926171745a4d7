/* SPDX-License-Identifier: MIT */
/* GET /api/v1/admin/events: the events outbox in the order it was written
 * (by sequence number, so a cursor survives new events), optionally of one
 * type and/or one subject. Admins only. */
#include <errno.h>

#include "api-list.h"
#include "api.h"
#include "events.h"
#include "server.h"

typedef struct ListCtx {
        json_t *items;
        long long last_seq;
} ListCtx;

static int list_one(long long seq, json_t *event, void *userdata)
{
        ListCtx *c = userdata;
        c->last_seq = seq;
        return json_array_append(c->items, event) < 0 ? -ENOMEM : 0;
}

int api_events_list(Request *r)
{
        int limit;
        long long after;
        if (api_list_params(r, API_LIST_MAX_LIMIT, &limit, &after) < 0)
                return 0;
        const char *type = http_query(r, "type"), *subject = http_query(r, "subject_id");
        if (type && (!*type || strlen(type) > 128))
                return http_reply_invalid_field(r, "type", "type must be 1 to 128 characters");
        if (subject && (!*subject || strlen(subject) > 128))
                return http_reply_invalid_field(r, "subject_id",
                                                "subject_id must be 1 to 128 characters");
        ListCtx c = {.items = json_array()};
        int ret = events_list(r->server->db, after, limit, type, subject, list_one, &c);
        if (ret < 0) {
                json_decref(c.items);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the events now");
        }
        return api_list_reply(r, c.items, c.last_seq, limit);
}
