/* SPDX-License-Identifier: MIT */
/* RFC 3339 timestamps: what the API emits reads back unchanged, offsets and
 * fractions are honoured, and dates that do not exist are refused. */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "timeutil.h"

static usec_t parse_ok(const char *s)
{
        usec_t t = 0;
        int r = parse_rfc3339(s, &t);
        cr_assert_eq(r, 0, "\"%s\": %d", s, r);
        return t;
}

static void parse_fails(const char *s, int want)
{
        usec_t t = 12345;
        int r = parse_rfc3339(s, &t);
        cr_assert_eq(r, want, "\"%s\": got %d, want %d", s, r, want);
        cr_assert_eq(t, 12345, "\"%s\": output changed on failure", s);
}

Test(timeutil, formats_known_instants, .timeout = 30)
{
        char buf[RFC3339_MAX];
        cr_assert_eq(format_rfc3339(0, buf, sizeof(buf)), 0);
        cr_assert_str_eq(buf, "1970-01-01T00:00:00Z");
        cr_assert_eq(format_rfc3339(1700000000 * USEC_PER_SEC + 999999, buf, sizeof(buf)), 0);
        cr_assert_str_eq(buf, "2023-11-14T22:13:20Z", "seconds precision truncates");
        cr_assert_eq(format_rfc3339_ms(1700000000 * USEC_PER_SEC + 123999, buf, sizeof(buf)), 0);
        cr_assert_str_eq(buf, "2023-11-14T22:13:20.123Z");
        cr_assert_eq(format_rfc3339_ms(951782400 * USEC_PER_SEC, buf, sizeof(buf)), 0);
        cr_assert_str_eq(buf, "2000-02-29T00:00:00.000Z");
}

Test(timeutil, format_refuses_a_short_buffer, .timeout = 30)
{
        char buf[RFC3339_MAX];
        cr_assert_eq(format_rfc3339(0, buf, 20), -ENOBUFS); /* needs 21 with the NUL */
        cr_assert_eq(format_rfc3339(0, buf, 21), 0);
        cr_assert_eq(format_rfc3339_ms(0, buf, 24), -ENOBUFS);
        cr_assert_eq(format_rfc3339_ms(0, buf, 25), 0);
}

Test(timeutil, round_trips_through_format_and_parse, .timeout = 30)
{
        uint64_t x = 0x2545f4914f6cdd1dULL;
        for (int i = 0; i < 5000; i++) {
                /* xorshift64 with a fixed seed: instants from 1970 to ~2100 */
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                usec_t t = (x % (4102444800ULL * USEC_PER_SEC));
                char s[RFC3339_MAX], ms[RFC3339_MAX];
                cr_assert_eq(format_rfc3339(t, s, sizeof(s)), 0);
                cr_assert_eq(parse_ok(s), t - t % USEC_PER_SEC, "%s", s);
                cr_assert_eq(format_rfc3339_ms(t, ms, sizeof(ms)), 0);
                cr_assert_eq(parse_ok(ms), t - t % USEC_PER_MSEC, "%s", ms);
        }
}

Test(timeutil, fractions, .timeout = 30)
{
        usec_t base = parse_ok("2026-11-27T14:40:00Z");
        cr_assert_eq(parse_ok("2026-11-27T14:40:00.5Z"), base + 500000);
        cr_assert_eq(parse_ok("2026-11-27T14:40:00.000001Z"), base + 1);
        cr_assert_eq(parse_ok("2026-11-27T14:40:00.123456Z"), base + 123456);
        cr_assert_eq(parse_ok("2026-11-27T14:40:00.1234569999Z"), base + 123456,
                     "digits past microseconds are dropped, not rounded");
        parse_fails("2026-11-27T14:40:00.Z", -EINVAL);
        parse_fails("2026-11-27T14:40:00,5Z", -EINVAL);
}

Test(timeutil, offsets, .timeout = 30)
{
        usec_t utc = parse_ok("2026-01-01T00:00:00Z");
        cr_assert_eq(parse_ok("2026-01-01T01:30:00+01:30"), utc);
        cr_assert_eq(parse_ok("2025-12-31T19:00:00-05:00"), utc);
        cr_assert_eq(parse_ok("2026-01-01T00:00:00+00:00"), utc);
        cr_assert_eq(parse_ok("2026-01-01T00:00:00-00:00"), utc);
        cr_assert_eq(parse_ok("2026-01-01T23:59:00+23:59"), utc);
        cr_assert_eq(parse_ok("2026-01-01T00:00:00.25+00:00"), utc + 250000);
        parse_fails("2026-01-01T00:00:00+24:00", -EINVAL);
        parse_fails("2026-01-01T00:00:00+01:60", -EINVAL);
        parse_fails("2026-01-01T00:00:00+01", -EINVAL);
        parse_fails("2026-01-01T00:00:00+0100", -EINVAL);
        parse_fails("2026-01-01T00:00:00", -EINVAL);
}

Test(timeutil, dates_that_do_not_exist_are_refused, .timeout = 30)
{
        static const char *const invalid[] = {
            "2026-02-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2100-02-29T12:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-06-31T00:00:00Z",
            "2026-09-31T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-01-32T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T23:60:00Z",
            "2026-01-01T23:59:61Z",
            /* timegm() used to carry these into March when the seconds were 60 */
            "2026-02-31T23:59:60Z",
            "2026-02-30T12:00:60Z",
        };
        for (size_t i = 0; i < ELEMENTSOF(invalid); i++)
                parse_fails(invalid[i], -EINVAL);

        cr_assert_eq(parse_ok("2024-02-29T00:00:00Z"), 1709164800 * USEC_PER_SEC);
        cr_assert_eq(parse_ok("2000-02-29T00:00:00Z"), 951782400 * USEC_PER_SEC);
        cr_assert_eq(parse_ok("2026-12-31T23:59:59Z"), 1798761599 * USEC_PER_SEC);
}

Test(timeutil, leap_seconds_only_at_the_end_of_a_utc_day, .timeout = 30)
{
        usec_t next = parse_ok("2017-01-01T00:00:00Z");
        cr_assert_eq(parse_ok("2016-12-31T23:59:60Z"), next);
        /* The same leap second seen from India. */
        cr_assert_eq(parse_ok("2017-01-01T05:29:60+05:30"), next);
        parse_fails("2016-12-31T12:00:60Z", -EINVAL);
        parse_fails("2016-12-31T23:59:60+01:00", -EINVAL);
}

Test(timeutil, before_the_epoch_is_out_of_range, .timeout = 30)
{
        parse_fails("1969-12-31T23:59:59Z", -ERANGE);
        parse_fails("1970-01-01T00:30:00+01:00", -ERANGE);
        parse_fails("0000-01-01T00:00:00Z", -ERANGE);
        cr_assert_eq(parse_ok("1969-12-31T23:00:00-01:00"), 0);
        cr_assert_eq(parse_ok("1970-01-01T00:00:00Z"), 0);
}

Test(timeutil, syntax, .timeout = 30)
{
        cr_assert_eq(parse_ok("2026-11-27t14:40:00z"), parse_ok("2026-11-27T14:40:00Z"));
        static const char *const malformed[] = {
            "",
            "2026-11-27",
            "2026-11-27 14:40:00Z",
            "2026-11-27T14:40Z",
            "2026-11-27T14:40:00Z ",
            " 2026-11-27T14:40:00Z",
            "2026-11-27T14:40:00ZZ",
            "26-11-27T14:40:00Z",
            "2026-1-27T14:40:00Z",
            "2026/11/27T14:40:00Z",
            "2026-11-27T14:4a:00Z",
            "+2026-11-27T14:40:00Z",
        };
        for (size_t i = 0; i < ELEMENTSOF(malformed); i++)
                parse_fails(malformed[i], -EINVAL);
}

Test(timeutil, clocks, .timeout = 30)
{
        usec_t wall = now_usec();
        /* 2024-01-01: a clock before that is broken, not early. */
        cr_assert_gt(wall, 1704067200 * USEC_PER_SEC);
        usec_t a = now_mono_usec(), b = now_mono_usec();
        cr_assert_geq(b, a);
        usleep(20000);
        cr_assert_geq(now_mono_usec() - a, 20000);
}
