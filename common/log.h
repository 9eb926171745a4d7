/* SPDX-License-Identifier: MIT */
#pragma once

/* Logging to stderr (journald keeps it) as one line per event:
 *   2026-11-27T14:40:00.123Z level=info component=controller msg="listening" addr=127.0.0.1:8080
 * Callers pass the message and then key=value fields in the format string,
 * separated by " | ": log_info("listening | addr=%s", addr). The part before
 * the bar becomes msg="...", the rest is appended as fields (control bytes
 * escaped). Only a bar in the format string splits: one inside an argument
 * stays in the message. */

#include <stdarg.h>

#include "macro.h"

typedef enum {
        LOG_LEVEL_ERROR = 0,
        LOG_LEVEL_WARNING,
        LOG_LEVEL_INFO,
        LOG_LEVEL_DEBUG,
} LogLevel;

void log_set_level(LogLevel level);
LogLevel log_get_level(void);
int log_level_from_string(const char *s, LogLevel *ret);
void log_set_component(const char *component);

/* Returns -abs(error) (or 0 when error is 0) so callers can
 * `return log_error_errno(r, "...");`. %m in fmt prints strerror(error). */
int log_internal(LogLevel level, int error, const char *file, int line, const char *fmt, ...)
    _printf_(5, 6);

#define log_full_errno(level, error, ...)                                                          \
        ({                                                                                         \
                LogLevel _l_ = (level);                                                            \
                int _e_ = (error);                                                                 \
                (_l_ <= log_get_level()) ? log_internal(_l_, _e_, __FILE__, __LINE__, __VA_ARGS__) \
                                         : -abs(_e_);                                              \
        })

#define log_error_errno(error, ...)   log_full_errno(LOG_LEVEL_ERROR, error, __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_LEVEL_WARNING, error, __VA_ARGS__)
#define log_info_errno(error, ...)    log_full_errno(LOG_LEVEL_INFO, error, __VA_ARGS__)
#define log_debug_errno(error, ...)   log_full_errno(LOG_LEVEL_DEBUG, error, __VA_ARGS__)

#define log_error(...)   (void)log_full_errno(LOG_LEVEL_ERROR, 0, __VA_ARGS__)
#define log_warning(...) (void)log_full_errno(LOG_LEVEL_WARNING, 0, __VA_ARGS__)
#define log_info(...)    (void)log_full_errno(LOG_LEVEL_INFO, 0, __VA_ARGS__)
#define log_debug(...)   (void)log_full_errno(LOG_LEVEL_DEBUG, 0, __VA_ARGS__)

#define log_oom() log_error_errno(-ENOMEM, "out of memory")
