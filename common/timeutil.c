/* SPDX-License-Identifier: MIT */
#include "timeutil.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static usec_t clock_usec(clockid_t id)
{
        struct timespec ts;
        clock_gettime(id, &ts);
        return (usec_t)ts.tv_sec * USEC_PER_SEC + (usec_t)ts.tv_nsec / 1000;
}

usec_t now_usec(void)
{
        return clock_usec(CLOCK_REALTIME);
}

usec_t now_mono_usec(void)
{
        return clock_usec(CLOCK_MONOTONIC);
}

static int format_common(usec_t t, char *buf, size_t size, int with_ms)
{
        time_t sec = (time_t)(t / USEC_PER_SEC);
        struct tm tm;
        int n;

        if (!gmtime_r(&sec, &tm))
                return -EINVAL;
        if (with_ms)
                n = snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
                             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                             (unsigned)((t % USEC_PER_SEC) / 1000));
        else
                n = snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        if (n < 0 || (size_t)n >= size)
                return -ENOBUFS;
        return 0;
}

int format_rfc3339(usec_t t, char *buf, size_t size)
{
        return format_common(t, buf, size, 0);
}

int format_rfc3339_ms(usec_t t, char *buf, size_t size)
{
        return format_common(t, buf, size, 1);
}

static int digits(const char **p, int n, int *ret)
{
        int v = 0;
        for (int i = 0; i < n; i++) {
                if (!isdigit((unsigned char)**p))
                        return -EINVAL;
                v = v * 10 + (**p - '0');
                (*p)++;
        }
        *ret = v;
        return 0;
}

static int expect(const char **p, char c)
{
        if (**p != c)
                return -EINVAL;
        (*p)++;
        return 0;
}

static bool is_leap_year(int y)
{
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int mo)
{
        static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        return mo == 2 && is_leap_year(y) ? 29 : days[mo - 1];
}

int parse_rfc3339(const char *s, usec_t *ret)
{
        struct tm tm = {0};
        const char *p = s;
        int y, mo, d, h, mi, se, frac_us = 0, off = 0;

        if (digits(&p, 4, &y) < 0 || expect(&p, '-') < 0 || digits(&p, 2, &mo) < 0 ||
            expect(&p, '-') < 0 || digits(&p, 2, &d) < 0)
                return -EINVAL;
        if (*p != 'T' && *p != 't')
                return -EINVAL;
        p++;
        if (digits(&p, 2, &h) < 0 || expect(&p, ':') < 0 || digits(&p, 2, &mi) < 0 ||
            expect(&p, ':') < 0 || digits(&p, 2, &se) < 0)
                return -EINVAL;
        if (*p == '.') {
                int scale = 100000, n = 0;
                p++;
                while (isdigit((unsigned char)*p)) {
                        if (scale > 0) {
                                frac_us += (*p - '0') * scale;
                                scale /= 10;
                        }
                        p++;
                        n++;
                }
                if (n == 0)
                        return -EINVAL;
        }
        if (*p == 'Z' || *p == 'z') {
                p++;
        } else if (*p == '+' || *p == '-') {
                int sign = *p == '-' ? -1 : 1, oh, om;
                p++;
                if (digits(&p, 2, &oh) < 0 || expect(&p, ':') < 0 || digits(&p, 2, &om) < 0)
                        return -EINVAL;
                if (oh > 23 || om > 59)
                        return -EINVAL;
                off = sign * (oh * 3600 + om * 60);
        } else
                return -EINVAL;
        if (*p != '\0')
                return -EINVAL;
        /* Checked here rather than after timegm(), which would quietly turn
         * 31 February into 3 March. */
        if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60)
                return -EINVAL;

        tm.tm_year = y - 1900;
        tm.tm_mon = mo - 1;
        tm.tm_mday = d;
        tm.tm_hour = h;
        tm.tm_min = mi;
        tm.tm_sec = se;
        /* -1 is also 1969-12-31T23:59:59: only errno tells failure apart. */
        errno = 0;
        time_t t = timegm(&tm);
        if (t == (time_t)-1 && errno != 0)
                return -EINVAL;
        t -= off;
        /* A leap second exists only as 23:59:60 UTC (whatever the offset makes
         * of it locally); timegm() has carried it into the next day's first
         * second, which is what we return for it. */
        if (se == 60 && t % 86400 != 0)
                return -EINVAL;
        if (t < 0)
                return -ERANGE;
        *ret = (usec_t)t * USEC_PER_SEC + (usec_t)frac_us;
        return 0;
}
