/* SPDX-License-Identifier: MIT */
/* The API error codes: every code has its name and HTTP status, and names
 * read back into the same code. */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include "errors.h"
#include "macro.h"

/* The contract as docs and clients know it. */
static const struct {
        ErrorCode code;
        const char *name;
        int status;
} contract[] = {
    {ERR_INVALID_REQUEST, "invalid_request", 400},
    {ERR_UNAUTHENTICATED, "unauthenticated", 401},
    {ERR_FORBIDDEN, "forbidden", 403},
    {ERR_NOT_FOUND, "not_found", 404},
    {ERR_METHOD_NOT_ALLOWED, "method_not_allowed", 405},
    {ERR_CONFLICT, "conflict", 409},
    {ERR_EMAIL_TAKEN, "email_taken", 409},
    {ERR_SOLD_OUT, "sold_out", 409},
    {ERR_INSUFFICIENT_BALANCE, "insufficient_balance", 409},
    {ERR_NODE_OFFLINE, "node_offline", 409},
    {ERR_INVALID_GPU_COUNT, "invalid_gpu_count", 409},
    {ERR_INVALID_STATE, "invalid_state", 409},
    {ERR_IDEMPOTENCY_CONFLICT, "idempotency_conflict", 409},
    {ERR_INVARIANTS_FAILED, "invariants_failed", 409},
    {ERR_PAYLOAD_TOO_LARGE, "payload_too_large", 413},
    {ERR_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415},
    {ERR_RATE_LIMITED, "rate_limited", 429},
    {ERR_INTERNAL, "internal", 500},
    {ERR_UNAVAILABLE, "unavailable", 503},
    {ERR_PAYMENTS_NOT_CONFIGURED, "payments_not_configured", 503},
    {ERR_BOOTSTRAP_TOKEN_INVALID, "bootstrap_token_invalid", 401},
    {ERR_BOOTSTRAP_TOKEN_EXPIRED, "bootstrap_token_expired", 401},
    {ERR_BOOTSTRAP_TOKEN_USED, "bootstrap_token_used", 401},
    {ERR_BOOTSTRAP_TOKEN_WRONG_NODE, "bootstrap_token_wrong_node", 401},
    {ERR_NAME_TAKEN, "name_taken", 409},
    {ERR_INVALID_SSH_KEY, "invalid_ssh_key", 400},
    {ERR_SSH_KEY_EXISTS, "ssh_key_exists", 409},
    {ERR_TOO_MANY_SESSIONS, "too_many_sessions", 409},
};

Test(errors, the_contract_lists_every_code, .timeout = 30)
{
        cr_assert_eq(ELEMENTSOF(contract), (size_t)_ERR_MAX,
                     "a code was added without a contract entry here");
        for (size_t i = 0; i < ELEMENTSOF(contract); i++)
                cr_assert_eq(contract[i].code, (ErrorCode)i, "entry %zu out of order", i);
}

Test(errors, every_code_maps_to_its_name_and_status, .timeout = 30)
{
        for (size_t i = 0; i < ELEMENTSOF(contract); i++) {
                cr_assert_str_eq(error_code_to_string(contract[i].code), contract[i].name);
                cr_assert_eq(error_code_http_status(contract[i].code), contract[i].status, "%s",
                             contract[i].name);
        }
}

Test(errors, every_name_reads_back_into_its_code, .timeout = 30)
{
        for (unsigned e = 0; e < _ERR_MAX; e++) {
                ErrorCode back = _ERR_MAX;
                const char *name = error_code_to_string((ErrorCode)e);
                cr_assert_eq(error_code_from_string(name, &back), 0, "%s", name);
                cr_assert_eq(back, (ErrorCode)e, "%s", name);
        }
}

Test(errors, names_are_unique_lower_snake_case_and_statuses_are_errors, .timeout = 30)
{
        for (unsigned a = 0; a < _ERR_MAX; a++) {
                const char *name = error_code_to_string((ErrorCode)a);
                cr_assert_gt(strlen(name), 0);
                cr_assert_eq(strspn(name, "abcdefghijklmnopqrstuvwxyz_"), strlen(name), "%s", name);
                int status = error_code_http_status((ErrorCode)a);
                cr_assert(status >= 400 && status <= 599, "%s: %d", name, status);
                for (unsigned b = a + 1; b < _ERR_MAX; b++)
                        cr_assert_str_neq(name, error_code_to_string((ErrorCode)b));
        }
}

Test(errors, unknown_names_are_refused, .timeout = 30)
{
        static const char *const unknown[] = {"", "INTERNAL", "not found", "not_found ", "nope"};
        for (size_t i = 0; i < ELEMENTSOF(unknown); i++) {
                ErrorCode e = ERR_CONFLICT;
                cr_assert_eq(error_code_from_string(unknown[i], &e), -EINVAL, "\"%s\"", unknown[i]);
                cr_assert_eq(e, ERR_CONFLICT, "output untouched");
        }
        ErrorCode e;
        cr_assert_eq(error_code_from_string(NULL, &e), -EINVAL);
}

Test(errors, out_of_range_codes_read_as_internal, .timeout = 30)
{
        cr_assert_str_eq(error_code_to_string(_ERR_MAX), "internal");
        cr_assert_eq(error_code_http_status(_ERR_MAX), 500);
        cr_assert_str_eq(error_code_to_string((ErrorCode)-1), "internal");
        cr_assert_eq(error_code_http_status((ErrorCode)1000), 500);
}
