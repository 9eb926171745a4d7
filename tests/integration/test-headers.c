/* SPDX-License-Identifier: MIT */
/* Response headers an API deserves, on every answer (success, error, 429,
 * preflight): no caching, no sniffing, no framing, no referrer, HSTS only
 * over TLS; and the CORS policy from cors_allowed_origins: the exact origin
 * echoed for an allowed one (never "*", never credentials), nothing for the
 * rest, preflights answered before routing. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(headers, .timeout = 120);

#define APP   "https://app.example.com"
#define LOCAL "http://localhost:3000"

typedef struct Raw {
        long status;
        char headers[8192]; /* "name: value\n" lines, names lower-cased */
        char body[4096];
} Raw;

static size_t on_header(char *p, size_t size, size_t n, void *u)
{
        Raw *r = u;
        size_t len = size * n, used = strlen(r->headers);
        if (!memchr(p, ':', len) || used + len + 1 >= sizeof(r->headers))
                return len;
        size_t k = 0;
        for (; k < len && p[k] != ':'; k++)
                r->headers[used + k] = (char)tolower((unsigned char)p[k]);
        size_t rest = len - k;
        while (rest > 0 && (p[k + rest - 1] == '\r' || p[k + rest - 1] == '\n'))
                rest--;
        memcpy(r->headers + used + k, p + k, rest);
        r->headers[used + k + rest] = '\n';
        r->headers[used + k + rest + 1] = '\0';
        return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *u)
{
        Raw *r = u;
        size_t len = size * n, used = strlen(r->body);
        size_t take = MIN(len, sizeof(r->body) - used - 1);
        memcpy(r->body + used, p, take);
        r->body[used + take] = '\0';
        return len;
}

/* One request with up to three extra header lines (NULL-terminated). */
static Raw *fetch(const Controller *c, const char *method, const char *path, const char *body,
                  const char *const *hdrs)
{
        Raw *r = calloc(1, sizeof(*r));
        cr_assert(r);
        char url[512];
        snprintf(url, sizeof(url), "%s%s", c->url, path);
        CURL *h = curl_easy_init();
        cr_assert(h);
        struct curl_slist *list = curl_slist_append(NULL, "Expect:");
        for (size_t i = 0; hdrs && hdrs[i]; i++)
                list = curl_slist_append(list, hdrs[i]);
        if (body)
                list = curl_slist_append(list, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
        if (c->cainfo)
                curl_easy_setopt(h, CURLOPT_CAINFO, c->cainfo);
        if (body)
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        CURLcode rc = curl_easy_perform(h);
        cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
        curl_easy_cleanup(h);
        curl_slist_free_all(list);
        return r;
}

/* The value of a response header (first occurrence), or NULL. */
static const char *hdr(const Raw *r, const char *name, char *buf, size_t size)
{
        size_t nl = strlen(name);
        for (const char *line = r->headers; *line;) {
                const char *eol = strchr(line, '\n');
                if (!eol)
                        break;
                if ((size_t)(eol - line) > nl && strncmp(line, name, nl) == 0 && line[nl] == ':') {
                        const char *v = line + nl + 1;
                        while (*v == ' ')
                                v++;
                        snprintf(buf, size, "%.*s", (int)(eol - v), v);
                        return buf;
                }
                line = eol + 1;
        }
        return NULL;
}

#define assert_hdr(r, name, want)                                                                  \
        do {                                                                                       \
                char _b[512];                                                                      \
                const char *_v = hdr((r), (name), _b, sizeof(_b));                                 \
                cr_assert(_v, "no %s header; headers:\n%s", (name), (r)->headers);                 \
                cr_assert_str_eq(_v, (want), "%s", (name));                                        \
        } while (0)

#define assert_no_hdr(r, name)                                                                     \
        do {                                                                                       \
                char _b[512];                                                                      \
                cr_assert_null(hdr((r), (name), _b, sizeof(_b)), "unexpected %s; headers:\n%s",    \
                               (name), (r)->headers);                                              \
        } while (0)

static void assert_api_headers(const Raw *r)
{
        char b[128];
        cr_assert(hdr(r, "x-request-id", b, sizeof(b)), "no x-request-id:\n%s", r->headers);
        assert_hdr(r, "cache-control", "no-store");
        assert_hdr(r, "x-content-type-options", "nosniff");
        assert_hdr(r, "x-frame-options", "DENY");
        assert_hdr(r, "content-security-policy", "default-src 'none'; frame-ancestors 'none'");
        assert_hdr(r, "referrer-policy", "no-referrer");
        assert_no_hdr(r, "access-control-allow-credentials");
}

static Controller *started(const char *origins)
{
        Controller *c = ctl_new();
        if (origins)
                ctl_args(c, "--cors-allowed-origins", origins, NULL);
        ctl_start_or_fail(c);
        return c;
}

Test(headers, every_answer_carries_the_api_headers_and_no_cors_by_default)
{
        _cleanup_ctl_ Controller *c = started(NULL);
        const char *origin[] = {"Origin: " APP, NULL};
        struct {
                const char *method, *path, *body;
                long status;
        } cases[] = {
            {"GET", "/api/v1/health", NULL, 200},
            {"GET", "/api/v1/me", NULL, 401},
            {"GET", "/api/v1/nope", NULL, 404},
            {"DELETE", "/api/v1/me", NULL, 405},
            {"POST", "/api/v1/auth/personal/login", "{", 400},
            {"POST", "/api/v1/auth/personal/signup",
             "{\"email\":\"hdr@example.com\",\"password\":\"password-1\",\"name\":\"H\"}", 201},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Raw *r = fetch(c, cases[i].method, cases[i].path, cases[i].body, origin);
                cr_assert_eq(r->status, cases[i].status, "%s %s: %s", cases[i].method,
                             cases[i].path, r->body);
                assert_api_headers(r);
                assert_no_hdr(r, "strict-transport-security"); /* plain HTTP */
                assert_no_hdr(r, "access-control-allow-origin");
                assert_no_hdr(r, "vary");
                free(r);
        }
        /* without a CORS policy a preflight is refused */
        const char *pre[] = {"Origin: " APP, "Access-Control-Request-Method: GET", NULL};
        Raw *p = fetch(c, "OPTIONS", "/api/v1/me", NULL, pre);
        cr_assert_eq(p->status, 403, "%s", p->body);
        assert_no_hdr(p, "access-control-allow-origin");
        free(p);
        ctl_stop_clean(c);
}

Test(headers, an_allowed_origin_is_echoed_others_get_nothing)
{
        _cleanup_ctl_ Controller *c = started(APP ", " LOCAL);
        const char *allowed[] = {"Origin: " APP, NULL};
        const char *local[] = {"Origin: " LOCAL, NULL};
        const char *evil[] = {"Origin: https://evil.example.com", NULL};
        const char *prefix[] = {"Origin: https://app.example.com.evil.example", NULL};

        Raw *a = fetch(c, "GET", "/api/v1/me", NULL, allowed);
        cr_assert_eq(a->status, 401);
        assert_api_headers(a);
        assert_hdr(a, "access-control-allow-origin", APP);
        assert_hdr(a, "vary", "Origin");
        assert_hdr(a, "access-control-expose-headers", "X-Request-Id, Retry-After, Location");
        free(a);

        Raw *l = fetch(c, "GET", "/api/v1/health", NULL, local);
        assert_hdr(l, "access-control-allow-origin", LOCAL);
        free(l);

        const char *const *refused[] = {evil, prefix};
        for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
                Raw *e = fetch(c, "GET", "/api/v1/health", NULL, refused[i]);
                cr_assert_eq(e->status, 200);
                assert_no_hdr(e, "access-control-allow-origin");
                assert_no_hdr(e, "access-control-expose-headers");
                assert_hdr(e, "vary", "Origin");
                free(e);
        }
        /* no Origin at all: a same-origin or non-browser caller */
        Raw *n = fetch(c, "GET", "/api/v1/health", NULL, NULL);
        assert_no_hdr(n, "access-control-allow-origin");
        free(n);
        ctl_stop_clean(c);
}

Test(headers, preflight_is_answered_before_routing)
{
        _cleanup_ctl_ Controller *c = started(APP);
        const char *ok[] = {"Origin: " APP, "Access-Control-Request-Method: POST",
                            "Access-Control-Request-Headers: authorization, content-type", NULL};
        Raw *p = fetch(c, "OPTIONS", "/api/v1/auth/personal/login", NULL, ok);
        cr_assert_eq(p->status, 204, "%s", p->body);
        assert_api_headers(p);
        assert_hdr(p, "access-control-allow-origin", APP);
        assert_hdr(p, "access-control-allow-methods", "POST");
        assert_hdr(p, "access-control-allow-headers",
                   "authorization, content-type, idempotency-key, x-request-id");
        assert_hdr(p, "access-control-max-age", "600");
        free(p);

        /* a path with a parameter: the methods it has */
        Raw *m = fetch(c, "OPTIONS", "/api/v1/me", NULL, ok);
        cr_assert_eq(m->status, 204);
        assert_hdr(m, "access-control-allow-methods", "GET");
        free(m);

        /* a path that does not exist */
        Raw *nf = fetch(c, "OPTIONS", "/api/v1/nope", NULL, ok);
        cr_assert_eq(nf->status, 404, "%s", nf->body);
        cr_assert(strstr(nf->body, "\"not_found\""), "%s", nf->body);
        free(nf);

        /* another origin: 403 forbidden, no CORS header, so the browser refuses */
        const char *bad[] = {"Origin: https://evil.example.com",
                             "Access-Control-Request-Method: GET", NULL};
        Raw *b = fetch(c, "OPTIONS", "/api/v1/me", NULL, bad);
        cr_assert_eq(b->status, 403, "%s", b->body);
        cr_assert(strstr(b->body, "\"forbidden\"") && strstr(b->body, "origin_not_allowed"), "%s",
                  b->body);
        assert_no_hdr(b, "access-control-allow-origin");
        assert_no_hdr(b, "access-control-allow-methods");
        free(b);

        /* OPTIONS without Access-Control-Request-Method is no preflight: 405 */
        const char *plain[] = {"Origin: " APP, NULL};
        Raw *o = fetch(c, "OPTIONS", "/api/v1/me", NULL, plain);
        cr_assert_eq(o->status, 405, "%s", o->body);
        free(o);
        ctl_stop_clean(c);
}

Test(headers, a_429_carries_cors_headers_so_browsers_can_read_retry_after)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--cors-allowed-origins", APP, "--rate-limit-address-rps", "1",
                 "--rate-limit-address-burst", "1", NULL);
        ctl_start_or_fail(c);
        const char *origin[] = {"Origin: " APP, NULL};
        Raw *first = fetch(c, "GET", "/api/v1/me", NULL, origin);
        cr_assert_eq(first->status, 401);
        free(first);
        Raw *r = fetch(c, "GET", "/api/v1/me", NULL, origin);
        cr_assert_eq(r->status, 429, "%s", r->body);
        assert_api_headers(r);
        assert_hdr(r, "access-control-allow-origin", APP);
        char b[32];
        cr_assert(hdr(r, "retry-after", b, sizeof(b)) && atoi(b) >= 1);
        free(r);
        ctl_stop_clean(c);
}

Test(headers, a_wildcard_or_a_path_in_the_origins_refuses_to_start)
{
        const char *bad[] = {"*", "https://app.example.com/", "app.example.com",
                             "https://*.example.com"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_ctl_ Controller *c = ctl_new();
                ctl_args(c, "--cors-allowed-origins", bad[i], NULL);
                cr_assert_eq(ctl_start(c), -ECHILD, "started with origins \"%s\"", bad[i]);
                _cleanup_free_ char *err = ctl_stderr(c);
                cr_assert(strstr(err, "cors_allowed_origins"), "%s", err);
        }
}

Test(headers, hsts_only_over_tls)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        char *cert = NULL, *key = NULL;
        tls_self_signed_cert(c->root, &cert, &key);
        ctl_args(c, "--tls-cert", cert, "--tls-key", key, NULL);
        c->cainfo = strdup(cert);
        ctl_start_or_fail(c);
        cr_assert(startswith(c->url, "https://"), "%s", c->url);
        Raw *r = fetch(c, "GET", "/api/v1/me", NULL, NULL);
        cr_assert_eq(r->status, 401);
        assert_api_headers(r);
        assert_hdr(r, "strict-transport-security", "max-age=31536000");
        free(r);
        free(cert);
        free(key);
        ctl_stop_clean(c);
}
