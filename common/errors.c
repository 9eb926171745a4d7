/* SPDX-License-Identifier: MIT */
#include "errors.h"

#include <errno.h>

#include "macro.h"

static const struct {
        const char *code;
        int status;
} error_table[_ERR_MAX] = {
    [ERR_INVALID_REQUEST] = {"invalid_request", 400},
    [ERR_UNAUTHENTICATED] = {"unauthenticated", 401},
    [ERR_FORBIDDEN] = {"forbidden", 403},
    [ERR_NOT_FOUND] = {"not_found", 404},
    [ERR_METHOD_NOT_ALLOWED] = {"method_not_allowed", 405},
    [ERR_CONFLICT] = {"conflict", 409},
    [ERR_EMAIL_TAKEN] = {"email_taken", 409},
    [ERR_SOLD_OUT] = {"sold_out", 409},
    [ERR_INSUFFICIENT_BALANCE] = {"insufficient_balance", 409},
    [ERR_NODE_OFFLINE] = {"node_offline", 409},
    [ERR_INVALID_GPU_COUNT] = {"invalid_gpu_count", 409},
    [ERR_INVALID_STATE] = {"invalid_state", 409},
    [ERR_IDEMPOTENCY_CONFLICT] = {"idempotency_conflict", 409},
    [ERR_INVARIANTS_FAILED] = {"invariants_failed", 409},
    [ERR_PAYLOAD_TOO_LARGE] = {"payload_too_large", 413},
    [ERR_UNSUPPORTED_MEDIA_TYPE] = {"unsupported_media_type", 415},
    [ERR_RATE_LIMITED] = {"rate_limited", 429},
    [ERR_INTERNAL] = {"internal", 500},
    [ERR_UNAVAILABLE] = {"unavailable", 503},
    [ERR_PAYMENTS_NOT_CONFIGURED] = {"payments_not_configured", 503},
    [ERR_BOOTSTRAP_TOKEN_INVALID] = {"bootstrap_token_invalid", 401},
    [ERR_BOOTSTRAP_TOKEN_EXPIRED] = {"bootstrap_token_expired", 401},
    [ERR_BOOTSTRAP_TOKEN_USED] = {"bootstrap_token_used", 401},
    [ERR_BOOTSTRAP_TOKEN_WRONG_NODE] = {"bootstrap_token_wrong_node", 401},
    [ERR_NAME_TAKEN] = {"name_taken", 409},
    [ERR_INVALID_SSH_KEY] = {"invalid_ssh_key", 400},
    [ERR_SSH_KEY_EXISTS] = {"ssh_key_exists", 409},
    [ERR_TOO_MANY_SESSIONS] = {"too_many_sessions", 409},
};

const char *error_code_to_string(ErrorCode e)
{
        if ((unsigned)e >= _ERR_MAX)
                return "internal";
        return error_table[e].code;
}

int error_code_http_status(ErrorCode e)
{
        if ((unsigned)e >= _ERR_MAX)
                return 500;
        return error_table[e].status;
}

int error_code_from_string(const char *s, ErrorCode *ret)
{
        if (!s)
                return -EINVAL;
        for (unsigned i = 0; i < _ERR_MAX; i++)
                if (streq(s, error_table[i].code)) {
                        *ret = (ErrorCode)i;
                        return 0;
                }
        return -EINVAL;
}
