/* SPDX-License-Identifier: MIT */
#include "api-list.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int api_list_params(Request *r, int max_limit, int *ret_limit, long long *ret_after_seq)
{
        const char *lim = http_query(r, "limit"), *cur = http_query(r, "cursor");
        char *end;
        *ret_limit = API_LIST_DEFAULT_LIMIT < max_limit ? API_LIST_DEFAULT_LIMIT : max_limit;
        *ret_after_seq = 0;
        if (lim) {
                long n = strtol(lim, &end, 10);
                if (!*lim || *end || n < 1 || n > max_limit) {
                        http_reply_invalid_field(r, "limit", "limit must be 1 to %d", max_limit);
                        return -EINVAL;
                }
                *ret_limit = (int)n;
        }
        if (cur && *cur) {
                long long n = -1;
                errno = 0;
                if (cur[0] == 'c' && cur[1] >= '0' && cur[1] <= '9')
                        n = strtoll(cur + 1, &end, 10);
                if (n < 0 || errno != 0 || *end) {
                        http_reply_invalid_field(r, "cursor",
                                                 "cursor is not one this API handed out");
                        return -EINVAL;
                }
                *ret_after_seq = n;
        }
        return 0;
}

json_t *api_list_next_cursor(long long last_seq, size_t got, int limit)
{
        if (limit <= 0 || got < (size_t)limit)
                return json_null();
        char buf[32];
        snprintf(buf, sizeof(buf), "c%lld", last_seq);
        return json_string(buf);
}

int api_list_reply(Request *r, json_t *items, long long last_seq, int limit)
{
        size_t got = json_array_size(items);
        return http_reply_json(r, 200,
                               json_pack("{s:o, s:o}", "items", items, "next_cursor",
                                         api_list_next_cursor(last_seq, got, limit)));
}
