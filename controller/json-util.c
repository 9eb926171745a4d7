/* SPDX-License-Identifier: MIT */
#include "json-util.h"

#include "timeutil.h"

json_t *json_timestamp(uint64_t usec)
{
        char buf[RFC3339_MAX];
        if (usec == 0 || format_rfc3339(usec, buf, sizeof(buf)) < 0)
                return json_null();
        return json_string(buf);
}
