/* SPDX-License-Identifier: MIT */
/* Request rate limits against the real controller: a bucket per client
 * address for every request (health and readiness exempt), a bucket per
 * session for signed-in requests; an empty bucket answers 429 rate_limited
 * with Retry-After (whole seconds, >= 1) and details.retry_after_s, refills
 * with time, and leaves one audit row per key however long the flood. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define ME     "/api/v1/me"
#define HEALTH "/api/v1/health"
#define LOGIN  "/api/v1/auth/personal/login"

TestSuite(ratelimit_http, .timeout = 120);

static Controller *started(const char *addr_rps, const char *addr_burst, const char *sess_rps,
                           const char *sess_burst)
{
        Controller *c = ctl_new();
        ctl_args(c, "--rate-limit-address-rps", addr_rps, "--rate-limit-address-burst", addr_burst,
                 "--rate-limit-session-rps", sess_rps, "--rate-limit-session-burst", sess_burst,
                 NULL);
        ctl_start_or_fail(c);
        return c;
}

static HttpResponse *get_from(const Controller *c, const char *path, const char *bearer,
                              const char *source_ip)
{
        HttpRequest rq = {.method = "GET", .path = path, .bearer = bearer, .source_ip = source_ip};
        HttpResponse *r = http_send(c, &rq);
        cr_assert_eq(r->curl_code, CURLE_OK, "GET %s: %s", path, curl_easy_strerror(r->curl_code));
        return r;
}

static void assert_rate_limited(const HttpResponse *r, const char *scope)
{
        assert_error(r, 429, "rate_limited");
        cr_assert(r->retry_after, "429 without Retry-After");
        char *end = NULL;
        long s = strtol(r->retry_after, &end, 10);
        cr_assert(end && *end == '\0' && s >= 1, "Retry-After is not whole seconds >= 1: %s",
                  r->retry_after);
        cr_assert_eq(json_integer_value(jget(r, "error.details.retry_after_s")), s,
                     "details.retry_after_s differs from Retry-After: %s", r->body);
        cr_assert_str_eq(strempty(jstr(r, "error.details.scope")), scope);
}

static void pause_ms(long ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
}

/* Polls until path answers something other than 429 (the bucket refilled). */
static long poll_until_not_limited(const Controller *c, const char *path, const char *bearer,
                                   long long timeout_ms)
{
        long long deadline = mono_ms() + timeout_ms;
        for (;;) {
                _cleanup_resp_ HttpResponse *r = get_from(c, path, bearer, NULL);
                if (r->status != 429 || mono_ms() >= deadline)
                        return r->status;
                pause_ms(50);
        }
}

Test(ratelimit_http, an_address_over_its_burst_gets_429_with_retry_after)
{
        /* 5 at once, then one a second */
        _cleanup_ctl_ Controller *c = started("1", "5", "1000", "1000");
        for (int i = 0; i < 5; i++) {
                _cleanup_resp_ HttpResponse *r = get_from(c, ME, NULL, NULL);
                assert_error(r, 401, "unauthenticated");
        }
        _cleanup_resp_ HttpResponse *limited = get_from(c, ME, NULL, NULL);
        assert_rate_limited(limited, "address");
        /* Unknown paths are limited too: the bucket is checked before routing. */
        _cleanup_resp_ HttpResponse *nopath = get_from(c, "/api/v1/nope", NULL, NULL);
        assert_rate_limited(nopath, "address");

        /* load balancers' probes pass */
        _cleanup_resp_ HttpResponse *health = get_from(c, HEALTH, NULL, NULL);
        cr_assert_eq(health->status, 200, "%s", health->body);
        _cleanup_resp_ HttpResponse *ready = get_from(c, "/api/v1/ready", NULL, NULL);
        cr_assert_eq(ready->status, 200, "%s", ready->body);

        /* another address has its own bucket */
        _cleanup_resp_ HttpResponse *other = get_from(c, ME, NULL, "127.0.0.2");
        assert_error(other, 401, "unauthenticated");

        /* and the first one gets a token back within Retry-After */
        cr_assert_eq(poll_until_not_limited(c, ME, NULL, 5000), 401,
                     "the address bucket did not refill");
        ctl_stop_clean(c);
}

Test(ratelimit_http, a_session_over_its_burst_gets_429_other_sessions_do_not)
{
        _cleanup_ctl_ Controller *c = started("1000", "1000", "1", "3");
        Tokens a, b;
        cr_assert_eq(api_signup(c, "burst@example.com", "password-1", "Burst", &a), 201);
        for (int i = 0; i < 3; i++) {
                _cleanup_resp_ HttpResponse *r = get_from(c, ME, a.access, NULL);
                cr_assert_eq(r->status, 200, "%s", r->body);
        }
        _cleanup_resp_ HttpResponse *limited = get_from(c, ME, a.access, NULL);
        assert_rate_limited(limited, "session");

        /* the same user's other session, and anonymous callers, are not held back */
        cr_assert_eq(api_login(c, "burst@example.com", "password-1", &b), 200);
        _cleanup_resp_ HttpResponse *other = get_from(c, ME, b.access, NULL);
        cr_assert_eq(other->status, 200, "%s", other->body);
        _cleanup_resp_ HttpResponse *anon = get_from(c, ME, NULL, NULL);
        assert_error(anon, 401, "unauthenticated");

        cr_assert_eq(poll_until_not_limited(c, ME, a.access, 5000), 200,
                     "the session bucket did not refill");
        ctl_stop_clean(c);
}

Test(ratelimit_http, a_flood_leaves_one_audit_row_per_key)
{
        _cleanup_ctl_ Controller *c = started("1", "2", "1000", "1000");
        int limited = 0;
        for (int i = 0; i < 30; i++) {
                _cleanup_resp_ HttpResponse *r = get_from(c, ME, NULL, NULL);
                limited += r->status == 429;
        }
        cr_assert_geq(limited, 20, "only %d of 30 were limited", limited);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE action = "
                                  "'http.rate_limited' AND target_type = 'address' AND "
                                  "target_id = '127.0.0.1'"),
                     1);
        ctl_stop_clean(c);
}

Test(ratelimit_http, login_lockout_is_audited_once_per_window)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--login-failures-per-account", "2", NULL);
        ctl_start_or_fail(c);
        cr_assert_eq(api_signup(c, "locked@example.com", "password-1", "Locked", NULL), 201);
        for (int i = 0; i < 2; i++)
                cr_assert_eq(api_login(c, "locked@example.com", "wrong-password", NULL), 401);
        for (int i = 0; i < 5; i++) {
                HttpRequest rq = {.method = "POST",
                                  .path = LOGIN,
                                  .body = "{\"email\":\"locked@example.com\",\"password\":\"x\"}"};
                _cleanup_resp_ HttpResponse *r = http_send(c, &rq);
                assert_error(r, 429, "rate_limited");
                cr_assert(r->retry_after && atoi(r->retry_after) >= 1);
        }
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE action = "
                                  "'http.rate_limited' AND target_type = 'login' AND "
                                  "target_id = 'acct:locked@example.com'"),
                     1);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE action = "
                                  "'auth.login_failed'"),
                     2);
        ctl_stop_clean(c);
}

Test(ratelimit_http, zero_rate_turns_a_limit_off)
{
        _cleanup_ctl_ Controller *c = started("0", "1", "0", "1");
        Tokens t;
        cr_assert_eq(api_signup(c, "nolimit@example.com", "password-1", "No limit", &t), 201);
        for (int i = 0; i < 20; i++) {
                _cleanup_resp_ HttpResponse *r = get_from(c, ME, t.access, NULL);
                cr_assert_eq(r->status, 200, "request %d: %s", i, r->body);
        }
        ctl_stop_clean(c);
}

static bool have_ipv6_loopback(void)
{
        int fd = socket(AF_INET6, SOCK_STREAM, 0);
        if (fd < 0)
                return false;
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        return ok;
}

Test(ratelimit_http, an_ipv6_client_is_limited_by_its_64)
{
        if (!have_ipv6_loopback())
                cr_skip_test("no IPv6 loopback here");
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--listen", "[::1]:0", "--rate-limit-address-rps", "1",
                 "--rate-limit-address-burst", "2", NULL);
        ctl_start_or_fail(c);
        for (int i = 0; i < 2; i++) {
                _cleanup_resp_ HttpResponse *r = get_from(c, ME, NULL, NULL);
                assert_error(r, 401, "unauthenticated");
        }
        _cleanup_resp_ HttpResponse *limited = get_from(c, ME, NULL, NULL);
        assert_rate_limited(limited, "address");
        /* the bucket (and the audit row) is the /64, not the one address */
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE action = "
                                  "'http.rate_limited' AND target_id = '::/64' AND "
                                  "json_extract(details, '$.client_addr') = '::1'"),
                     1);
        ctl_stop_clean(c);
}
