/* SPDX-License-Identifier: MIT */
/* The HTTP surface of the real controller: error envelopes for unknown paths
 * and methods, X-Request-Id, body limits, content types, HTTP/2 (cleartext
 * prior knowledge and TLS with ALPN), request timeouts against trickled
 * requests, health and readiness. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(http, .timeout = 120);

static Controller *started(void)
{
        Controller *c = ctl_new();
        ctl_start_or_fail(c);
        return c;
}

Test(http, unknown_path_is_a_404_envelope)
{
        _cleanup_ctl_ Controller *c = started();
        const char *paths[] = {"/api/v1/nope", "/", "/api/v2/health", "/api/v1/health/x",
                               "/api/v1/me/extra"};
        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                _cleanup_resp_ HttpResponse *r = api_get(c, paths[i], NULL);
                assert_error(r, 404, "not_found");
        }
        /* a body does not change that, and creates nothing */
        DbCounts before = db_counts(c);
        _cleanup_resp_ HttpResponse *r =
            api_post(c, "/api/v1/auth/personal/signupx", NULL,
                     "{\"email\":\"a@example.com\",\"password\":\"password1\",\"name\":\"A\"}");
        assert_error(r, 404, "not_found");
        assert_counts_equal(before, db_counts(c));
        ctl_stop_clean(c);
}

Test(http, wrong_method_is_a_405_envelope_with_allow)
{
        _cleanup_ctl_ Controller *c = started();
        _cleanup_resp_ HttpResponse *r = api_get(c, "/api/v1/auth/personal/signup", NULL);
        assert_error(r, 405, "method_not_allowed");
        cr_assert_str_eq(strempty(r->allow), "POST");

        HttpRequest rq = {.method = "DELETE", .path = "/api/v1/me"};
        _cleanup_resp_ HttpResponse *d = http_send(c, &rq);
        assert_error(d, 405, "method_not_allowed");
        cr_assert_str_eq(strempty(d->allow), "GET");

        HttpRequest put = {.method = "PUT", .path = "/api/v1/health", .body = "{}"};
        _cleanup_resp_ HttpResponse *p = http_send(c, &put);
        assert_error(p, 405, "method_not_allowed");
        cr_assert_str_eq(strempty(p->allow), "GET");

        /* a whole signup sent with the wrong method creates nothing */
        DbCounts before = db_counts(c);
        HttpRequest s = {.method = "PUT",
                         .path = "/api/v1/auth/personal/signup",
                         .body = "{\"email\":\"m@example.com\",\"password\":\"password1\","
                                 "\"name\":\"M\"}"};
        _cleanup_resp_ HttpResponse *sp = http_send(c, &s);
        assert_error(sp, 405, "method_not_allowed");
        cr_assert_str_eq(strempty(sp->allow), "POST");
        assert_counts_equal(before, db_counts(c));
        ctl_stop_clean(c);
}

Test(http, request_id_on_every_response)
{
        _cleanup_ctl_ Controller *c = started();
        _cleanup_resp_ HttpResponse *h = api_get(c, "/api/v1/health", NULL);
        cr_assert_eq(h->status, 200);
        cr_assert(h->request_id && startswith(h->request_id, "req_"), "%s",
                  strempty(h->request_id));
        _cleanup_resp_ HttpResponse *h2 = api_get(c, "/api/v1/health", NULL);
        cr_assert_str_neq(h2->request_id, h->request_id, "request ids must differ");

        /* a sane id from the caller is kept, so traces join up */
        HttpRequest rq = {.path = "/api/v1/health", .request_id = "trace-Abc_123.xyz"};
        _cleanup_resp_ HttpResponse *e = http_send(c, &rq);
        cr_assert_str_eq(strempty(e->request_id), "trace-Abc_123.xyz");
        rq.path = "/api/v1/nowhere";
        _cleanup_resp_ HttpResponse *e404 = http_send(c, &rq);
        assert_error(e404, 404, "not_found");
        cr_assert_str_eq(e404->request_id, "trace-Abc_123.xyz");

        /* an insane one is replaced, never reflected */
        const char *insane[] = {
            "short",
            "has spaces in it",
            "semi;colon;injection",
            "<script>alert(1)</script>",
            "0123456789012345678901234567890123456789", /* 40: too long */
        };
        for (size_t i = 0; i < ELEMENTSOF(insane); i++) {
                HttpRequest b = {.path = "/api/v1/health", .request_id = insane[i]};
                _cleanup_resp_ HttpResponse *x = http_send(c, &b);
                cr_assert_eq(x->status, 200);
                cr_assert(x->request_id && startswith(x->request_id, "req_"),
                          "\"%s\" was reflected as \"%s\"", insane[i], strempty(x->request_id));
        }

        /* on 201, 204 and 401 as well */
        Tokens t;
        HttpRequest s = {.path = "/api/v1/auth/personal/signup",
                         .body = "{\"email\":\"rid@example.com\",\"password\":\"password1\","
                                 "\"name\":\"R\"}"};
        _cleanup_resp_ HttpResponse *created = http_send(c, &s);
        cr_assert_eq(created->status, 201, "%s", created->body);
        cr_assert(created->request_id);
        snprintf(t.access, sizeof(t.access), "%s", jstr(created, "access_token"));
        _cleanup_resp_ HttpResponse *out = api_post(c, "/api/v1/auth/logout", t.access, NULL);
        cr_assert_eq(out->status, 204);
        cr_assert(out->request_id && *out->request_id);
        cr_assert_eq(out->body_len, 0);
        _cleanup_resp_ HttpResponse *unauth = api_get(c, "/api/v1/me", NULL);
        assert_error(unauth, 401, "unauthenticated");
        ctl_stop_clean(c);
}

Test(http, common_headers)
{
        _cleanup_ctl_ Controller *c = started();
        _cleanup_resp_ HttpResponse *r = api_get(c, "/api/v1/health", NULL);
        cr_assert(r->content_type && startswith(r->content_type, "application/json"));
        ctl_stop_clean(c);
}

Test(http, health_and_ready)
{
        _cleanup_ctl_ Controller *c = started();
        _cleanup_resp_ HttpResponse *h = api_get(c, "/api/v1/health", NULL);
        cr_assert_eq(h->status, 200);
        cr_assert_str_eq(strempty(jstr(h, "status")), "ok");
        cr_assert(jstr(h, "version"));
        cr_assert(jstr(h, "started_at"));
        _cleanup_resp_ HttpResponse *r = api_get(c, "/api/v1/ready", NULL);
        cr_assert_eq(r->status, 200, "%s", r->body);
        cr_assert_str_eq(strempty(jstr(r, "status")), "ready");
        cr_assert_geq(json_integer_value(jget(r, "schema_version")), 1);
        /* a trailing slash is tolerated */
        _cleanup_resp_ HttpResponse *s = api_get(c, "/api/v1/health/", NULL);
        cr_assert_eq(s->status, 200);
        ctl_stop_clean(c);
}

static char *body_of(size_t n)
{
        /* a JSON object of exactly n bytes: {"email":"aaaa..."} */
        char *b = malloc(n + 1);
        cr_assert(b);
        size_t head = strlen("{\"email\":\""), tail = strlen("\"}");
        cr_assert_gt(n, head + tail);
        memcpy(b, "{\"email\":\"", head);
        memset(b + head, 'a', n - head - tail);
        memcpy(b + n - tail, "\"}", tail);
        b[n] = '\0';
        return b;
}

Test(http, body_above_max_body_bytes_is_413)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--max-body-bytes", "1024", NULL);
        ctl_start_or_fail(c);
        DbCounts before = db_counts(c);

        _cleanup_free_ char *over = body_of(1025);
        _cleanup_resp_ HttpResponse *r = api_post(c, "/api/v1/auth/personal/signup", NULL, over);
        assert_error(r, 413, "payload_too_large");
        cr_assert_eq(json_integer_value(jget(r, "error.details.max_bytes")), 1024);

        /* the limit holds on every route, public or not, and before auth */
        _cleanup_resp_ HttpResponse *l = api_post(c, "/api/v1/auth/logout", NULL, over);
        assert_error(l, 413, "payload_too_large");

        /* over HTTP/2 too */
        HttpRequest rq = {.path = "/api/v1/auth/personal/login",
                          .body = over,
                          .http_version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
        _cleanup_resp_ HttpResponse *h2 = http_send(c, &rq);
        cr_assert_eq(h2->http_version, CURL_HTTP_VERSION_2_0);
        assert_error(h2, 413, "payload_too_large");

        /* exactly the limit is read (and refused for what it says, not its size) */
        _cleanup_free_ char *exact = body_of(1024);
        _cleanup_resp_ HttpResponse *e = api_post(c, "/api/v1/auth/personal/signup", NULL, exact);
        assert_error(e, 400, "invalid_request");

        /* far beyond: still refused, quickly, and the server stays up */
        _cleanup_free_ char *huge = body_of(8 << 20);
        HttpRequest hr = {.path = "/api/v1/auth/personal/signup", .body = huge};
        _cleanup_resp_ HttpResponse *h = http_send(c, &hr);
        if (h->curl_code == CURLE_OK)
                cr_assert_eq(h->status, 413, "%s", h->body);
        else
                cr_assert(h->curl_code == CURLE_SEND_ERROR || h->curl_code == CURLE_RECV_ERROR,
                          "%s", curl_easy_strerror(h->curl_code));
        _cleanup_resp_ HttpResponse *alive = api_get(c, "/api/v1/health", NULL);
        cr_assert_eq(alive->status, 200);

        assert_counts_equal(before, db_counts(c));
        ctl_stop_clean(c);
}

Test(http, non_json_content_type_is_415)
{
        _cleanup_ctl_ Controller *c = started();
        DbCounts before = db_counts(c);
        const char *types[] = {"text/plain", "application/x-www-form-urlencoded",
                               "multipart/form-data; boundary=x", "application/jsonx",
                               "application/json-seq"};
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                HttpRequest rq = {.path = "/api/v1/auth/personal/signup",
                                  .content_type = types[i],
                                  .body = "{\"email\":\"ct@example.com\",\"password\":"
                                          "\"password1\",\"name\":\"C\"}"};
                _cleanup_resp_ HttpResponse *r = http_send(c, &rq);
                assert_error(r, 415, "unsupported_media_type");
        }
        assert_counts_equal(before, db_counts(c));

        /* parameters on the JSON type are fine */
        HttpRequest ok = {.path = "/api/v1/auth/personal/signup",
                          .content_type = "application/json; charset=utf-8",
                          .body = "{\"email\":\"ct@example.com\",\"password\":\"password1\","
                                  "\"name\":\"C\"}"};
        _cleanup_resp_ HttpResponse *r = http_send(c, &ok);
        cr_assert_eq(r->status, 201, "%s", r->body);
        ctl_stop_clean(c);
}

Test(http, http2_prior_knowledge_on_cleartext)
{
        _cleanup_ctl_ Controller *c = started();
        HttpRequest rq = {.path = "/api/v1/health",
                          .http_version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
        _cleanup_resp_ HttpResponse *r = http_send(c, &rq);
        cr_assert_eq(r->curl_code, CURLE_OK, "%s", curl_easy_strerror(r->curl_code));
        cr_assert_eq(r->http_version, CURL_HTTP_VERSION_2_0);
        cr_assert_eq(r->status, 200);
        cr_assert(r->request_id);

        HttpRequest s = {.path = "/api/v1/auth/personal/signup",
                         .http_version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE,
                         .body = "{\"email\":\"h2@example.com\",\"password\":\"password1\","
                                 "\"name\":\"H\"}"};
        _cleanup_resp_ HttpResponse *created = http_send(c, &s);
        cr_assert_eq(created->http_version, CURL_HTTP_VERSION_2_0);
        cr_assert_eq(created->status, 201, "%s", created->body);

        HttpRequest me = {.path = "/api/v1/me",
                          .bearer = jstr(created, "access_token"),
                          .http_version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
        _cleanup_resp_ HttpResponse *m = http_send(c, &me);
        cr_assert_eq(m->status, 200, "%s", m->body);
        cr_assert_str_eq(strempty(jstr(m, "user.email")), "h2@example.com");

        HttpRequest nf = {.path = "/api/v1/nope",
                          .http_version = CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE};
        _cleanup_resp_ HttpResponse *n = http_send(c, &nf);
        assert_error(n, 404, "not_found");
        ctl_stop_clean(c);
}

Test(http, tls_with_http2_by_alpn)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        char *cert = NULL, *key = NULL;
        tls_self_signed_cert(c->root, &cert, &key);
        ctl_args(c, "--tls-cert", cert, "--tls-key", key, NULL);
        c->cainfo = strdup(cert);
        ctl_start_or_fail(c);
        cr_assert(startswith(c->url, "https://"), "ready file says %s", c->url);

        HttpRequest rq = {.path = "/api/v1/health", .http_version = CURL_HTTP_VERSION_2TLS};
        _cleanup_resp_ HttpResponse *r = http_send(c, &rq);
        cr_assert_eq(r->curl_code, CURLE_OK, "%s", curl_easy_strerror(r->curl_code));
        cr_assert_eq(r->http_version, CURL_HTTP_VERSION_2_0, "ALPN did not pick h2");
        cr_assert_eq(r->status, 200);

        HttpRequest s = {.path = "/api/v1/auth/personal/signup",
                         .http_version = CURL_HTTP_VERSION_2TLS,
                         .body = "{\"email\":\"tls@example.com\",\"password\":\"password1\","
                                 "\"name\":\"T\"}"};
        _cleanup_resp_ HttpResponse *created = http_send(c, &s);
        cr_assert_eq(created->status, 201, "%s", created->body);

        /* HTTP/1.1 over TLS still works */
        HttpRequest h1 = {.path = "/api/v1/ready", .http_version = CURL_HTTP_VERSION_1_1};
        _cleanup_resp_ HttpResponse *r1 = http_send(c, &h1);
        cr_assert_eq(r1->curl_code, CURLE_OK);
        cr_assert_eq(r1->http_version, CURL_HTTP_VERSION_1_1);
        cr_assert_eq(r1->status, 200);

        /* and a client that does not trust the certificate is refused by TLS */
        free(c->cainfo);
        c->cainfo = NULL;
        _cleanup_resp_ HttpResponse *untrusted = http_send(c, &rq);
        cr_assert_neq(untrusted->curl_code, CURLE_OK);
        ctl_stop_clean(c);
        free(cert);
        free(key);
}

Test(http, tls_cert_without_key_refuses_to_start)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        char *cert = NULL, *key = NULL;
        tls_self_signed_cert(c->root, &cert, &key);
        ctl_args(c, "--tls-cert", cert, NULL);
        cr_assert_eq(ctl_start(c), -ECHILD);
        cr_assert_neq(cli_exit_code(c->wait_status), 0);
        _cleanup_free_ char *err = ctl_stderr(c);
        cr_assert(strstr(err, "tls_cert and tls_key"), "%s", err);
        free(cert);
        free(key);
}

/* Sends bytes one at a time, reading in between, until the server closes.
 * Returns the milliseconds it took, or -1 when it stayed open past the deadline. */
static long long trickle_until_closed(int fd, const char *preamble, long long deadline_ms,
                                      char *reply, size_t reply_size)
{
        long long t0 = mono_ms();
        reply[0] = '\0';
        if (send(fd, preamble, strlen(preamble), MSG_NOSIGNAL) < 0)
                return mono_ms() - t0;
        for (;;) {
                /* wait up to 100 ms for the server to close, then send another byte */
                if (tcp_read_until_closed(fd, reply, reply_size, mono_ms() + 100) == 1)
                        return mono_ms() - t0;
                if (mono_ms() > deadline_ms)
                        return -1;
                if (send(fd, "x", 1, MSG_NOSIGNAL) < 0)
                        return mono_ms() - t0; /* reset: closed */
        }
}

Test(http, trickled_request_is_closed_after_the_request_timeout)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--http-request-timeout-s", "1", NULL);
        ctl_start_or_fail(c);
        char reply[4096];

        /* headers that never end */
        long long t0 = mono_ms();
        int fd = tcp_connect(c);
        cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
        long long took = trickle_until_closed(
            fd, "POST /api/v1/auth/personal/login HTTP/1.1\r\nHost: x\r\nX-Slow: ", t0 + 20000,
            reply, sizeof(reply));
        close(fd);
        cr_assert_geq(took, 0, "a trickled header was still open after 20 s");
        cr_assert_geq(mono_ms() - t0, 900, "closed before the timeout (%lld ms)", took);

        /* a body that never completes */
        t0 = mono_ms();
        fd = tcp_connect(c);
        cr_assert_geq(fd, 0);
        took = trickle_until_closed(fd,
                                    "POST /api/v1/auth/personal/login HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Type: application/json\r\n"
                                    "Content-Length: 100000\r\n\r\n{",
                                    t0 + 20000, reply, sizeof(reply));
        close(fd);
        cr_assert_geq(took, 0, "a trickled body was still open after 20 s");

        /* the server was never blocked by them */
        _cleanup_resp_ HttpResponse *h = api_get(c, "/api/v1/health", NULL);
        cr_assert_eq(h->status, 200);
        ctl_stop_clean(c);
}
