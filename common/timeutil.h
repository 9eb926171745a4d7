/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef uint64_t usec_t;

#define USEC_PER_SEC  1000000ULL
#define USEC_PER_MSEC 1000ULL
#define RFC3339_MAX   32

/* Wall clock (CLOCK_REALTIME) in microseconds since the epoch. */
usec_t now_usec(void);
/* Monotonic clock in microseconds, for deadlines and rate limits. */
usec_t now_mono_usec(void);

/* 2026-11-27T14:40:00Z (seconds precision), as the API emits timestamps. */
int format_rfc3339(usec_t t, char *buf, size_t size);
/* 2026-11-27T14:40:00.123Z, for logs. */
int format_rfc3339_ms(usec_t t, char *buf, size_t size);
/* Accepts RFC 3339 with 'Z' or a numeric offset and an optional fraction
 * (digits past microseconds are dropped). Dates that do not exist
 * (2026-02-31) are -EINVAL; a leap second, 23:59:60 UTC, reads as the second
 * after it; a time before the epoch is -ERANGE. */
int parse_rfc3339(const char *s, usec_t *ret);
