/* SPDX-License-Identifier: MIT */
#pragma once

/* The machine-readable error codes of the API contract, with the HTTP status
 * each one answers with. The controller renders them into the error envelope;
 * the agent protocol reuses the same names for its refusals. */

typedef enum {
        ERR_INVALID_REQUEST,
        ERR_UNAUTHENTICATED,
        ERR_FORBIDDEN,
        ERR_NOT_FOUND,
        ERR_METHOD_NOT_ALLOWED,
        ERR_CONFLICT,
        ERR_EMAIL_TAKEN,
        ERR_SOLD_OUT,
        ERR_INSUFFICIENT_BALANCE,
        ERR_NODE_OFFLINE,
        ERR_INVALID_GPU_COUNT,
        ERR_INVALID_STATE,
        ERR_IDEMPOTENCY_CONFLICT,
        ERR_INVARIANTS_FAILED,
        ERR_PAYLOAD_TOO_LARGE,
        ERR_UNSUPPORTED_MEDIA_TYPE,
        ERR_RATE_LIMITED,
        ERR_INTERNAL,
        ERR_UNAVAILABLE,
        ERR_PAYMENTS_NOT_CONFIGURED,
        /* Enrollment: which way a bootstrap token failed (all 401). */
        ERR_BOOTSTRAP_TOKEN_INVALID,
        ERR_BOOTSTRAP_TOKEN_EXPIRED,
        ERR_BOOTSTRAP_TOKEN_USED,
        ERR_BOOTSTRAP_TOKEN_WRONG_NODE,
        /* Catalog and SSH keys. */
        ERR_NAME_TAKEN,      /* 409: a live catalog entry has the name */
        ERR_INVALID_SSH_KEY, /* 400: details.reason says why */
        ERR_SSH_KEY_EXISTS,  /* 409: the user already has this key */
        /* Console. */
        ERR_TOO_MANY_SESSIONS, /* 409: the console session limit (details.scope, details.limit) */
        _ERR_MAX,
} ErrorCode;

const char *error_code_to_string(ErrorCode e);
int error_code_http_status(ErrorCode e);
/* Returns 0 and sets *ret, or -EINVAL for an unknown code. */
int error_code_from_string(const char *s, ErrorCode *ret);
