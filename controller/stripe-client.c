/* SPDX-License-Identifier: MIT */
#include "stripe-client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "macro.h"

#define STRIPE_MAX_RESPONSE (1u << 20)

int stripe_client_from_config(const Config *c, StripeClient *ret)
{
        *ret = (StripeClient){0};
        const char *key = config_get(c, "stripe_secret_key");
        if (!key || !*key)
                return -ENOKEY;
        ret->api_base = strdup(config_get(c, "stripe_api_base"));
        ret->secret_key = strdup(key);
        ret->api_version = strdup(config_get(c, "stripe_api_version"));
        ret->connect_ms = config_get_int(c, "stripe_connect_timeout_ms");
        ret->total_ms = config_get_int(c, "stripe_http_timeout_ms");
        if (!ret->api_base || !ret->secret_key || !ret->api_version) {
                stripe_client_done(ret);
                return -ENOMEM;
        }
        /* No trailing slash: paths start with one. */
        size_t n = strlen(ret->api_base);
        while (n > 0 && ret->api_base[n - 1] == '/')
                ret->api_base[--n] = '\0';
        return 0;
}

void stripe_client_done(StripeClient *c)
{
        free(c->api_base);
        if (c->secret_key) {
                explicit_bzero(c->secret_key, strlen(c->secret_key));
                free(c->secret_key);
        }
        free(c->api_version);
        *c = (StripeClient){0};
}

static void form_append(StripeForm *f, const char *s, size_t n)
{
        if (f->error)
                return;
        if (f->len + n + 1 > f->cap) {
                size_t cap = MAX(f->cap * 2, f->len + n + 64);
                char *b = realloc(f->buf, cap);
                if (!b) {
                        f->error = -ENOMEM;
                        return;
                }
                f->buf = b;
                f->cap = cap;
        }
        memcpy(f->buf + f->len, s, n);
        f->len += n;
        f->buf[f->len] = '\0';
}

/* application/x-www-form-urlencoded as Stripe's libraries send it: RFC 3986
 * unreserved characters as they are, everything else %XX; brackets in keys
 * stay literal. */
static void form_escape(StripeForm *f, const char *s, bool keep_brackets)
{
        static const char hex[] = "0123456789ABCDEF";
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                unsigned char ch = *p;
                if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '~' ||
                    (keep_brackets && (ch == '[' || ch == ']'))) {
                        char c = (char)ch;
                        form_append(f, &c, 1);
                } else {
                        char e[3] = {'%', hex[ch >> 4], hex[ch & 0xf]};
                        form_append(f, e, 3);
                }
        }
}

void stripe_form_add(StripeForm *f, const char *key, const char *value)
{
        if (f->len > 0)
                form_append(f, "&", 1);
        form_escape(f, key, true);
        form_append(f, "=", 1);
        form_escape(f, value, false);
}

void stripe_form_addf(StripeForm *f, const char *key, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        char *v = NULL;
        int n = vasprintf(&v, fmt, ap);
        va_end(ap);
        if (n < 0) {
                f->error = -ENOMEM;
                return;
        }
        stripe_form_add(f, key, v);
        free(v);
}

void stripe_form_done(StripeForm *f)
{
        free(f->buf);
        *f = (StripeForm){0};
}

void stripe_result_done(StripeResult *r)
{
        json_decref(r->body);
        *r = (StripeResult){0};
}

typedef struct Body {
        char *data;
        size_t len;
        bool too_big;
} Body;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        Body *b = userdata;
        size_t n = size * nmemb;
        if (b->len + n > STRIPE_MAX_RESPONSE) {
                b->too_big = true;
                return 0;
        }
        char *d = realloc(b->data, b->len + n + 1);
        if (!d)
                return 0;
        b->data = d;
        memcpy(b->data + b->len, ptr, n);
        b->len += n;
        b->data[b->len] = '\0';
        return n;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(CURL *, curl_easy_cleanup);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct curl_slist *, curl_slist_free_all);

static struct curl_slist *add_header(struct curl_slist *l, const char *fmt, const char *v, int *err)
{
        _cleanup_free_ char *line = NULL;
        if (asprintf(&line, fmt, v) < 0) {
                *err = -ENOMEM;
                return l;
        }
        struct curl_slist *n = curl_slist_append(l, line);
        if (!n)
                *err = -ENOMEM;
        explicit_bzero(line, strlen(line));
        return n ? n : l;
}

int stripe_post(const StripeClient *c, const char *path, const StripeForm *form,
                const char *idempotency_key, StripeResult *ret)
{
        *ret = (StripeResult){0};
        if (form->error)
                return form->error;
        _cleanup_free_ char *url = NULL;
        if (asprintf(&url, "%s%s", c->api_base, path) < 0)
                return -ENOMEM;
        _cleanup_(curl_easy_cleanupp) CURL *h = curl_easy_init();
        if (!h)
                return -ENOMEM;
        int err = 0;
        _cleanup_(curl_slist_free_allp) struct curl_slist *hdrs = NULL;
        hdrs = add_header(hdrs, "Authorization: Bearer %s", c->secret_key, &err);
        hdrs = add_header(hdrs, "Stripe-Version: %s", c->api_version, &err);
        if (idempotency_key)
                hdrs = add_header(hdrs, "Idempotency-Key: %s", idempotency_key, &err);
        hdrs = add_header(hdrs, "Content-Type: %s", "application/x-www-form-urlencoded", &err);
        hdrs = add_header(hdrs, "Expect:%s", "", &err); /* no 100-continue round trip */
        if (err < 0)
                return err;

        Body b = {0};
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_ms);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->total_ms);
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE, (long)STRIPE_MAX_RESPONSE);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "gpuslice-controller");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, form->buf ? form->buf : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)form->len);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
        CURLcode cc = curl_easy_perform(h);
        _cleanup_free_ char *data = b.data;
        if (cc != CURLE_OK) {
                log_warning("Stripe unreachable | path=%s error=%s", path, curl_easy_strerror(cc));
                return b.too_big || cc == CURLE_FILESIZE_EXCEEDED ? -EBADMSG : -EHOSTUNREACH;
        }
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ret->status);
        json_t *j = data ? json_loadb(data, b.len, 0, NULL) : NULL;
        if (json_is_object(j))
                ret->body = j;
        else
                json_decref(j);
        if (ret->status >= 500 || ret->status == 429) {
                log_warning("Stripe failed | path=%s status=%ld", path, ret->status);
                return -EHOSTUNREACH;
        }
        if (!ret->body) {
                log_warning("Stripe answered no JSON object | path=%s status=%ld", path,
                            ret->status);
                return -EBADMSG;
        }
        if (ret->status >= 200 && ret->status < 300)
                return 0;
        json_t *e = json_object_get(ret->body, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *type = json_string_value(json_object_get(e, "type"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        snprintf(ret->error_code, sizeof(ret->error_code), "%s",
                 code ? code : (type ? type : "unknown"));
        snprintf(ret->error_message, sizeof(ret->error_message), "%s", msg ? msg : "");
        log_warning("Stripe refused | path=%s status=%ld code=%s message=\"%s\"", path, ret->status,
                    ret->error_code, ret->error_message);
        return -EPROTO;
}
