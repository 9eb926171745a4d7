/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <stdio.h>
#include <string.h>

#include "timeutil.h"

static LogLevel max_level = LOG_LEVEL_INFO;
static const char *component = NULL;

static const char *const level_names[] = {
    [LOG_LEVEL_ERROR] = "error",
    [LOG_LEVEL_WARNING] = "warning",
    [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_DEBUG] = "debug",
};

void log_set_level(LogLevel level)
{
        max_level = level;
}

LogLevel log_get_level(void)
{
        return max_level;
}

void log_set_component(const char *c)
{
        component = c;
}

int log_level_from_string(const char *s, LogLevel *ret)
{
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (streq(s, level_names[i])) {
                        *ret = (LogLevel)i;
                        return 0;
                }
        if (streq(s, "warn")) {
                *ret = LOG_LEVEL_WARNING;
                return 0;
        }
        return -EINVAL;
}

/* Writes s quoted for a logfmt value: backslash, quote and control bytes escaped. */
static void put_quoted(FILE *f, const char *s, size_t n)
{
        fputc('"', f);
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c == '"' || c == '\\')
                        fprintf(f, "\\%c", c);
                else if (c == '\n')
                        fputs("\\n", f);
                else if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\x%02x", c);
                else
                        fputc(c, f);
        }
        fputc('"', f);
}

/* Writes the fields part as it is, except control bytes: a value with a
 * newline must not start a forged log line. */
static void put_fields(FILE *f, const char *s)
{
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c == '\n')
                        fputs("\\n", f);
                else if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\x%02x", c);
                else
                        fputc(c, f);
        }
}

int log_internal(LogLevel level, int error, const char *file, int line, const char *fmt, ...)
{
        int saved_errno = errno;
        char text[4096];
        char ts[RFC3339_MAX];
        va_list ap;

        if ((unsigned)level >= ELEMENTSOF(level_names))
                level = LOG_LEVEL_ERROR;

        /* %m refers to the error we were given, not whatever errno holds now. */
        errno = abs(error);
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);

        format_rfc3339_ms(now_usec(), ts, sizeof(ts));

        /* The message ends where the format string has " | ", not where the
         * formatted text first does: an argument containing " | " stays in the
         * message instead of turning into fields. Formatting the part of fmt
         * before the bar on its own gives the message's length. */
        size_t msg_len = strlen(text);
        const char *bar = NULL;
        const char *fmt_bar = strstr(fmt, " | ");
        if (fmt_bar) {
                _cleanup_free_ char *msg_fmt = strndup(fmt, (size_t)(fmt_bar - fmt));
                if (msg_fmt) {
                        errno = abs(error);
                        va_start(ap, fmt);
                        int n = vsnprintf(NULL, 0, msg_fmt, ap);
                        va_end(ap);
                        if (n >= 0 && (size_t)n < msg_len && strncmp(text + n, " | ", 3) == 0) {
                                msg_len = (size_t)n;
                                bar = text + n;
                        }
                }
        }

        /* One fputs-free line built in a buffer so concurrent writers do not interleave. */
        char *buf = NULL;
        size_t buflen = 0;
        FILE *f = open_memstream(&buf, &buflen);
        if (!f) {
                errno = saved_errno;
                return error == 0 ? 0 : -abs(error);
        }
        fprintf(f, "%s level=%s", ts, level_names[level]);
        if (component)
                fprintf(f, " component=%s", component);
        fputs(" msg=", f);
        put_quoted(f, text, msg_len);
        if (bar) {
                fputc(' ', f);
                put_fields(f, bar + 3);
        }
        if (error != 0) {
                fputs(" error=", f);
                const char *e = strerror(abs(error));
                put_quoted(f, e, strlen(e));
        }
        if (max_level >= LOG_LEVEL_DEBUG)
                fprintf(f, " src=%s:%d", file, line);
        fputc('\n', f);
        fclose(f);
        fwrite(buf, 1, buflen, stderr);
        free(buf);

        errno = saved_errno;
        return error == 0 ? 0 : -abs(error);
}
