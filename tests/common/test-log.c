/* SPDX-License-Identifier: MIT */
/* Logging: one logfmt line per event on stderr, captured here through a pipe. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"
#include "timeutil.h"

/* Each criterion test runs in its own process, so redirecting fd 2 and
 * changing the log level stay local to the test. */
static int saved_stderr = -1, pipe_read = -1;

static void capture_begin(void)
{
        int p[2];
        cr_assert_eq(pipe(p), 0);
        fflush(stderr);
        saved_stderr = dup(STDERR_FILENO);
        cr_assert_geq(saved_stderr, 0);
        cr_assert_eq(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
        close(p[1]);
        pipe_read = p[0];
}

/* Returns everything written to stderr since capture_begin(); the caller frees it. */
static char *capture_end(void)
{
        fflush(stderr);
        cr_assert_eq(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
        close(saved_stderr);
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        char buf[4096];
        ssize_t n;
        while ((n = read(pipe_read, buf, sizeof(buf))) > 0)
                fwrite(buf, 1, (size_t)n, f);
        fclose(f);
        close(pipe_read);
        return out;
}

/* Checks the timestamp that starts every line and returns what follows it. */
static const char *after_timestamp(const char *line)
{
        char ts[RFC3339_MAX];
        const char *sp = strchr(line, ' ');
        cr_assert_not_null(sp, "no space in \"%s\"", line);
        size_t n = (size_t)(sp - line);
        cr_assert_eq(n, strlen("2026-11-27T14:40:00.123Z"), "timestamp in \"%s\"", line);
        memcpy(ts, line, n);
        ts[n] = '\0';
        usec_t t, now = now_usec();
        cr_assert_eq(parse_rfc3339(ts, &t), 0, "\"%s\"", ts);
        cr_assert(t <= now && now - t < 60 * USEC_PER_SEC, "timestamp %s is not now", ts);
        return sp;
}

Test(log, info_line_is_logfmt, .timeout = 30)
{
        capture_begin();
        log_info("listening | addr=%s", "127.0.0.1:8080");
        _cleanup_free_ char *out = capture_end();
        cr_assert_str_eq(after_timestamp(out),
                         " level=info msg=\"listening\" addr=127.0.0.1:8080\n");
}

Test(log, component_follows_the_level, .timeout = 30)
{
        log_set_component("agent");
        capture_begin();
        log_warning("slow disk");
        _cleanup_free_ char *out = capture_end();
        cr_assert_str_eq(after_timestamp(out),
                         " level=warning component=agent msg=\"slow disk\"\n");
}

Test(log, levels_filter, .timeout = 30)
{
        log_set_level(LOG_LEVEL_WARNING);
        cr_assert_eq(log_get_level(), LOG_LEVEL_WARNING);
        capture_begin();
        log_info("hidden");
        log_debug("hidden too");
        log_error("shown");
        _cleanup_free_ char *out = capture_end();
        cr_assert_str_eq(after_timestamp(out), " level=error msg=\"shown\"\n");
}

Test(log, debug_lines_carry_their_source, .timeout = 30)
{
        log_set_level(LOG_LEVEL_DEBUG);
        capture_begin();
        int line = __LINE__ + 1;
        log_debug("probe");
        _cleanup_free_ char *out = capture_end();
        _cleanup_free_ char *want = NULL;
        cr_assert_geq(asprintf(&want, " level=debug msg=\"probe\" src=%s:%d\n", __FILE__, line), 0);
        cr_assert_str_eq(after_timestamp(out), want);
}

Test(log, message_is_quoted_and_escaped, .timeout = 30)
{
        capture_begin();
        log_info("say \"hi\" \\ now\nthen\ttab\x7f");
        _cleanup_free_ char *out = capture_end();
        cr_assert_str_eq(after_timestamp(out),
                         " level=info msg=\"say \\\"hi\\\" \\\\ now\\nthen\\x09tab\\x7f\"\n");
}

Test(log, a_bar_inside_an_argument_stays_in_the_message, .timeout = 30)
{
        capture_begin();
        log_info("user said %s | id=%d", "a | level=error", 5);
        _cleanup_free_ char *out = capture_end();
        cr_assert_str_eq(after_timestamp(out),
                         " level=info msg=\"user said a | level=error\" id=5\n");
}

Test(log, a_bar_only_in_an_argument_makes_no_fields, .timeout = 30)
{
        capture_begin();
        log_info("got %s", "x | y=1");
        _cleanup_free_ char *out = capture_end();
        cr_assert_str_eq(after_timestamp(out), " level=info msg=\"got x | y=1\"\n");
}

Test(log, control_bytes_in_fields_cannot_forge_lines, .timeout = 30)
{
        capture_begin();
        log_info("hello | name=%s", "x\n2026-01-01T00:00:00.000Z level=error msg=\"forged\"\r");
        _cleanup_free_ char *out = capture_end();
        cr_assert_str_eq(after_timestamp(out),
                         " level=info msg=\"hello\" "
                         "name=x\\n2026-01-01T00:00:00.000Z level=error msg=\"forged\"\\x0d\n");
}

Test(log, percent_m_prints_the_given_error_not_errno, .timeout = 30)
{
        errno = EPERM;
        capture_begin();
        int r = log_error_errno(-ENOENT, "open failed: %m | path=%s", "/x");
        _cleanup_free_ char *out = capture_end();
        cr_assert_eq(r, -ENOENT);
        cr_assert_eq(errno, EPERM, "errno is preserved");
        cr_assert_str_eq(after_timestamp(out),
                         " level=error msg=\"open failed: No such file or directory\" path=/x "
                         "error=\"No such file or directory\"\n");
}

Test(log, errno_returns_are_negative_whatever_the_sign_given, .timeout = 30)
{
        capture_begin();
        cr_assert_eq(log_error_errno(EIO, "positive"), -EIO);
        cr_assert_eq(log_warning_errno(-EIO, "negative"), -EIO);
        cr_assert_eq(log_info_errno(0, "no error"), 0);
        /* Filtered out: nothing printed, same return. */
        cr_assert_eq(log_debug_errno(-EBUSY, "hidden"), -EBUSY);
        cr_assert_eq(log_oom(), -ENOMEM);
        _cleanup_free_ char *out = capture_end();

        const char *want[] = {
            " level=error msg=\"positive\" error=\"Input/output error\"\n",
            " level=warning msg=\"negative\" error=\"Input/output error\"\n",
            " level=info msg=\"no error\"\n",
            " level=error msg=\"out of memory\" error=\"Cannot allocate memory\"\n",
        };
        const char *line = out;
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                const char *end = strchr(line, '\n');
                cr_assert_not_null(end, "line %zu missing in \"%s\"", i, out);
                _cleanup_free_ char *one = strndup(line, (size_t)(end - line + 1));
                cr_assert_str_eq(after_timestamp(one), want[i]);
                line = end + 1;
        }
        cr_assert_str_eq(line, "", "unexpected extra output");
}

Test(log, level_names_parse, .timeout = 30)
{
        static const struct {
                const char *s;
                LogLevel level;
        } ok[] = {
            {"error", LOG_LEVEL_ERROR}, {"warning", LOG_LEVEL_WARNING}, {"warn", LOG_LEVEL_WARNING},
            {"info", LOG_LEVEL_INFO},   {"debug", LOG_LEVEL_DEBUG},
        };
        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                LogLevel l = (LogLevel)99;
                cr_assert_eq(log_level_from_string(ok[i].s, &l), 0, "%s", ok[i].s);
                cr_assert_eq(l, ok[i].level, "%s", ok[i].s);
        }
        static const char *const bad[] = {"", "verbose", "INFO", "info "};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                LogLevel l = LOG_LEVEL_INFO;
                cr_assert_eq(log_level_from_string(bad[i], &l), -EINVAL, "\"%s\"", bad[i]);
        }
}

Test(log, long_messages_are_cut_not_overflowed, .timeout = 30)
{
        char big[10000];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        capture_begin();
        log_info("%s | k=v", big);
        _cleanup_free_ char *out = capture_end();
        cr_assert_lt(strlen(out), 4200);
        cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "one line");
}
