/* SPDX-License-Identifier: MIT */
#include "oidc-provider.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "macro.h"

#define OIDC_MAX_RESPONSE (512 * 1024)
#define DEFAULT_PROVIDER  "default"

/* ---- configuration ---- */

static void provider_done(OidcProvider *p)
{
        free(p->name);
        free(p->issuer);
        free(p->client_id);
        if (p->client_secret) {
                explicit_bzero(p->client_secret, strlen(p->client_secret));
                free(p->client_secret);
        }
        for (size_t i = 0; i < p->n_redirect_uris; i++)
                free(p->redirect_uris[i]);
        free(p->redirect_uris);
        json_decref(p->discovery);
        json_decref(p->jwks);
}

void oidc_providers_free(OidcProviders *ps)
{
        if (!ps)
                return;
        for (size_t i = 0; i < ps->n; i++)
                provider_done(&ps->items[i]);
        free(ps->items);
        free(ps);
}

/* https, or http to a loopback host (tests, a provider on the same machine). */
static bool url_acceptable(const char *url)
{
        if (strncmp(url, "https://", 8) == 0)
                return strlen(url) > 8;
        if (strncmp(url, "http://", 7) != 0)
                return false;
        const char *host = url + 7;
        static const char *const loopback[] = {"127.0.0.1", "localhost", "[::1]"};
        for (size_t i = 0; i < ELEMENTSOF(loopback); i++) {
                size_t n = strlen(loopback[i]);
                if (strncmp(host, loopback[i], n) != 0)
                        continue;
                /* Only a port may follow: in http://localhost:80@evil.example
                 * "localhost:80" is a user name and password. */
                const char *rest = host + n;
                if (*rest == ':')
                        rest += 1 + strspn(rest + 1, "0123456789");
                return *rest == '\0' || *rest == '/';
        }
        return false;
}

static bool name_ok(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 32)
                return false;
        for (const char *c = s; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
                      *c == '_'))
                        return false;
        return true;
}

static int provider_add(OidcProviders *ps, const char *origin, const char *name, const char *issuer,
                        const char *client_id, const char *client_secret,
                        const char *const *redirect_uris, size_t n_redirect_uris,
                        const char *auth_method)
{
        if (!name_ok(name))
                return log_error_errno(-EINVAL,
                                       "OIDC provider name must be 1-32 of [a-z0-9_-] | %s name=%s",
                                       origin, name);
        if (oidc_providers_find(ps, name))
                return log_error_errno(-EINVAL, "OIDC provider defined twice | %s name=%s", origin,
                                       name);
        if (!url_acceptable(issuer))
                return log_error_errno(-EINVAL,
                                       "OIDC issuer must be an https URL (http only on loopback) "
                                       "| %s issuer=%s",
                                       origin, issuer);
        if (n_redirect_uris == 0)
                return log_error_errno(-EINVAL, "OIDC provider needs a redirect URI | %s", origin);
        bool post = false;
        if (auth_method && streq(auth_method, "client_secret_post"))
                post = true;
        else if (auth_method && !streq(auth_method, "client_secret_basic"))
                return log_error_errno(-EINVAL,
                                       "OIDC token auth method must be client_secret_basic or "
                                       "client_secret_post | %s value=%s",
                                       origin, auth_method);

        OidcProvider *items = realloc(ps->items, (ps->n + 1) * sizeof(*items));
        if (!items)
                return log_oom();
        ps->items = items;
        OidcProvider *p = &items[ps->n];
        *p = (OidcProvider){.auth_post = post};
        p->name = strdup(name);
        p->issuer = strdup(issuer);
        /* Kept byte for byte: ID tokens' iss must equal it exactly, and some
         * providers' issuers end with a slash (Auth0's do). */
        p->client_id = strdup(client_id);
        p->client_secret = strdup(client_secret);
        p->redirect_uris = calloc(n_redirect_uris, sizeof(char *));
        ps->n++;
        if (!p->name || !p->issuer || !p->client_id || !p->client_secret || !p->redirect_uris)
                return log_oom();
        for (size_t i = 0; i < n_redirect_uris; i++) {
                p->redirect_uris[i] = strdup(redirect_uris[i]);
                if (!p->redirect_uris[i])
                        return log_oom();
                p->n_redirect_uris++;
        }
        return 0;
}

static const char *obj_str(json_t *o, const char *k)
{
        return json_string_value(json_object_get(o, k));
}

/* {"providers":[{"name","issuer","client_id","client_secret",
 *   "redirect_uris":[...] or "redirect_uri", "token_auth_method"}]} */
static int load_providers_file(OidcProviders *ps, const char *path)
{
        json_error_t jerr;
        _cleanup_(json_decrefp) json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
                return log_error_errno(-EINVAL,
                                       "cannot read oidc_providers_file | path=%s line=%d %s", path,
                                       jerr.line, jerr.text);
        json_t *list = json_object_get(root, "providers");
        if (!json_is_array(list))
                return log_error_errno(
                    -EINVAL, "oidc_providers_file needs a \"providers\" array | path=%s", path);
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e)
        {
                char origin[600];
                snprintf(origin, sizeof(origin), "file=%s entry=%zu", path, i);
                const char *name = obj_str(e, "name"), *issuer = obj_str(e, "issuer"),
                           *id = obj_str(e, "client_id"), *secret = obj_str(e, "client_secret");
                if (!name || !issuer || !id || !secret)
                        return log_error_errno(-EINVAL,
                                               "OIDC provider needs name, issuer, client_id and "
                                               "client_secret | %s",
                                               origin);
                const char *uris[16];
                size_t n_uris = 0;
                json_t *ru = json_object_get(e, "redirect_uris");
                if (obj_str(e, "redirect_uri"))
                        uris[n_uris++] = obj_str(e, "redirect_uri");
                if (json_is_array(ru)) {
                        size_t k;
                        json_t *u;
                        json_array_foreach(ru, k, u)
                        {
                                if (!json_is_string(u) || n_uris >= ELEMENTSOF(uris))
                                        return log_error_errno(
                                            -EINVAL, "redirect_uris: at most 16 strings | %s",
                                            origin);
                                uris[n_uris++] = json_string_value(u);
                        }
                }
                int r = provider_add(ps, origin, name, issuer, id, secret, uris, n_uris,
                                     obj_str(e, "token_auth_method"));
                if (r < 0)
                        return r;
        }
        return 0;
}

int oidc_providers_new(const Config *c, OidcProviders **ret)
{
        OidcProviders *ps = calloc(1, sizeof(*ps));
        if (!ps)
                return log_oom();
        ps->limits.connect_ms = (long)config_get_int(c, "oidc_connect_timeout_ms");
        ps->limits.total_ms = (long)config_get_int(c, "oidc_http_timeout_ms");
        ps->clock_skew_s = config_get_int(c, "oidc_clock_skew_s");
        ps->cache_ttl = (usec_t)config_get_int(c, "oidc_cache_ttl_s") * USEC_PER_SEC;
        ps->jwks_kid_refresh_min =
            (usec_t)config_get_int(c, "oidc_jwks_refresh_min_interval_s") * USEC_PER_SEC;
        ps->state_ttl = (usec_t)config_get_int(c, "oidc_state_ttl_s") * USEC_PER_SEC;

        static const char *const keys[] = {"oidc_issuer", "oidc_client_id", "oidc_client_secret",
                                           "oidc_redirect_uri"};
        size_t set = 0;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (config_get(c, keys[i]) && *config_get(c, keys[i]))
                        set++;
        int r = 0;
        if (set > 0 && set < ELEMENTSOF(keys)) {
                for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                        if (!config_get(c, keys[i]) || !*config_get(c, keys[i]))
                                log_error("OIDC is half configured: %s is missing", keys[i]);
                r = -EINVAL;
        } else if (set == ELEMENTSOF(keys)) {
                const char *uri = config_get(c, "oidc_redirect_uri");
                r = provider_add(ps, "config", DEFAULT_PROVIDER, config_get(c, "oidc_issuer"),
                                 config_get(c, "oidc_client_id"),
                                 config_get(c, "oidc_client_secret"), &uri, 1,
                                 config_get(c, "oidc_token_auth_method"));
        }
        const char *file = config_get(c, "oidc_providers_file");
        if (r >= 0 && file && *file)
                r = load_providers_file(ps, file);
        if (r >= 0 && ps->n > 0) {
                /* Before any thread runs: curl's global init is not thread safe. */
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        r = log_error_errno(-EIO, "cannot initialise libcurl");
                else
                        log_info("single sign-on enabled | providers=%zu first=%s", ps->n,
                                 ps->items[0].issuer);
        }
        if (r < 0) {
                oidc_providers_free(ps);
                return r;
        }
        *ret = ps;
        return 0;
}

OidcProvider *oidc_providers_find(OidcProviders *ps, const char *name)
{
        if (!ps || ps->n == 0)
                return NULL;
        if (!name)
                return &ps->items[0];
        for (size_t i = 0; i < ps->n; i++)
                if (streq(ps->items[i].name, name))
                        return &ps->items[i];
        return NULL;
}

bool oidc_provider_redirect_allowed(const OidcProvider *p, const char *uri)
{
        for (size_t i = 0; i < p->n_redirect_uris; i++)
                if (streq(p->redirect_uris[i], uri))
                        return true;
        return false;
}

json_t *oidc_provider_fresh_discovery(const OidcProviders *ps, const OidcProvider *p)
{
        if (p->discovery && now_mono_usec() - p->discovery_at < ps->cache_ttl)
                return p->discovery;
        return NULL;
}

json_t *oidc_provider_fresh_jwks(const OidcProviders *ps, const OidcProvider *p)
{
        if (p->jwks && now_mono_usec() - p->jwks_at < ps->cache_ttl)
                return p->jwks;
        return NULL;
}

/* ---- blocking client ---- */

typedef struct Body {
        char *data;
        size_t len;
        bool too_big;
} Body;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        Body *b = userdata;
        size_t n = size * nmemb;
        if (b->len + n > OIDC_MAX_RESPONSE) {
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

/* One request; *ret_json is the parsed JSON object body (any status). */
static int http_json(const char *url, const char *form, struct curl_slist *headers,
                     const OidcHttpLimits *l, long *ret_status, json_t **ret_json)
{
        _cleanup_(curl_easy_cleanupp) CURL *h = curl_easy_init();
        if (!h)
                return -ENOMEM;
        Body b = {0};
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, l->connect_ms);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, l->total_ms);
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE, (long)OIDC_MAX_RESPONSE);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "gpuslice-controller");
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
        if (headers)
                curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        if (form)
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
        CURLcode cc = curl_easy_perform(h);
        _cleanup_free_ char *data = b.data;
        if (cc != CURLE_OK) {
                log_warning("OIDC provider unreachable | url=%s error=%s", url,
                            curl_easy_strerror(cc));
                /* Too big is an answer, not an outage, whether the body said
                 * so in Content-Length (curl refuses it up front) or not. */
                return b.too_big || cc == CURLE_FILESIZE_EXCEEDED ? -EBADMSG : -EHOSTUNREACH;
        }
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        *ret_status = status;
        if (status >= 500) {
                log_warning("OIDC provider failed | url=%s status=%ld", url, status);
                return -EHOSTUNREACH;
        }
        json_t *j = data ? json_loadb(data, b.len, 0, NULL) : NULL;
        if (!json_is_object(j)) {
                json_decref(j);
                log_warning("OIDC provider answered no JSON object | url=%s status=%ld", url,
                            status);
                return -EBADMSG;
        }
        *ret_json = j;
        return 0;
}

int oidc_fetch_discovery(const char *issuer, const OidcHttpLimits *l, json_t **ret)
{
        _cleanup_free_ char *url = NULL;
        /* OpenID Connect Discovery 1.0, section 4: a terminating "/" of the
         * issuer is removed before the well-known path is appended. */
        size_t n = strlen(issuer);
        if (n > 0 && issuer[n - 1] == '/')
                n--;
        if (asprintf(&url, "%.*s/.well-known/openid-configuration", (int)n, issuer) < 0)
                return -ENOMEM;
        long status = 0;
        json_t *j = NULL;
        int r = http_json(url, NULL, NULL, l, &status, &j);
        if (r < 0)
                return r;
        _cleanup_(json_decrefp) json_t *doc = j;
        if (status != 200)
                return -EBADMSG;
        const char *iss = obj_str(doc, "issuer");
        if (!iss || !streq(iss, issuer)) {
                log_warning("OIDC discovery names another issuer | expected=%s got=%s", issuer,
                            iss ? iss : "(none)");
                return -EBADMSG;
        }
        static const char *const needed[] = {"authorization_endpoint", "token_endpoint",
                                             "jwks_uri"};
        for (size_t i = 0; i < ELEMENTSOF(needed); i++) {
                const char *v = obj_str(doc, needed[i]);
                if (!v || !url_acceptable(v)) {
                        log_warning("OIDC discovery lacks a usable %s | issuer=%s", needed[i],
                                    issuer);
                        return -EBADMSG;
                }
        }
        *ret = TAKE_PTR(doc);
        return 0;
}

int oidc_fetch_jwks(const char *jwks_uri, const OidcHttpLimits *l, json_t **ret)
{
        long status = 0;
        json_t *j = NULL;
        int r = http_json(jwks_uri, NULL, NULL, l, &status, &j);
        if (r < 0)
                return r;
        if (status != 200 || !json_is_array(json_object_get(j, "keys"))) {
                json_decref(j);
                return -EBADMSG;
        }
        *ret = j;
        return 0;
}

/* application/x-www-form-urlencoded values (RFC 6749 2.3.1 asks the same of
 * the client id and secret before HTTP Basic). */
typedef struct Escaped {
        char *code, *uri, *verifier, *id, *secret;
} Escaped;

static void escaped_done(Escaped *e)
{
        curl_free(e->code);
        curl_free(e->uri);
        curl_free(e->verifier);
        curl_free(e->id);
        if (e->secret) {
                explicit_bzero(e->secret, strlen(e->secret));
                curl_free(e->secret);
        }
}

static void bzero_freep(char **s)
{
        if (*s) {
                explicit_bzero(*s, strlen(*s));
                free(*s);
        }
}

int oidc_redeem_code(const char *token_endpoint, const char *client_id, const char *client_secret,
                     bool auth_post, const char *code, const char *redirect_uri,
                     const char *code_verifier, const OidcHttpLimits *l, char **ret_id_token,
                     char **ret_error)
{
        _cleanup_(curl_easy_cleanupp) CURL *h = curl_easy_init();
        if (!h)
                return -ENOMEM;
        _cleanup_(escaped_done) Escaped e = {
            .code = curl_easy_escape(h, code, 0),
            .uri = curl_easy_escape(h, redirect_uri, 0),
            .verifier = curl_easy_escape(h, code_verifier, 0),
            .id = curl_easy_escape(h, client_id, 0),
            .secret = curl_easy_escape(h, client_secret, 0),
        };
        if (!e.code || !e.uri || !e.verifier || !e.id || !e.secret)
                return -ENOMEM;
        _cleanup_(bzero_freep) char *form = NULL;
        _cleanup_(bzero_freep) char *cred = NULL;
        _cleanup_(bzero_freep) char *basic = NULL;
        int n = asprintf(&form,
                         "grant_type=authorization_code&code=%s&redirect_uri=%s&code_verifier=%s"
                         "%s%s%s%s",
                         e.code, e.uri, e.verifier, auth_post ? "&client_id=" : "",
                         auth_post ? e.id : "", auth_post ? "&client_secret=" : "",
                         auth_post ? e.secret : "");
        if (n < 0) {
                form = NULL;
                return -ENOMEM;
        }
        if (!auth_post) {
                if (asprintf(&cred, "%s:%s", e.id, e.secret) < 0) {
                        cred = NULL;
                        return -ENOMEM;
                }
                size_t len = strlen(cred);
                static const char prefix[] = "Authorization: Basic ";
                basic = malloc(sizeof(prefix) + 4 * ((len + 2) / 3) + 1);
                if (!basic)
                        return -ENOMEM;
                memcpy(basic, prefix, sizeof(prefix));
                EVP_EncodeBlock((unsigned char *)basic + STRLEN(prefix), (unsigned char *)cred,
                                (int)len);
        }

        _cleanup_(curl_slist_free_allp) struct curl_slist *headers =
            curl_slist_append(NULL, "Accept: application/json");
        if (headers && basic) {
                struct curl_slist *more = curl_slist_append(headers, basic);
                if (!more)
                        return -ENOMEM;
                headers = more;
        }
        if (!headers)
                return -ENOMEM;
        long status = 0;
        json_t *j = NULL;
        int r = http_json(token_endpoint, form, headers, l, &status, &j);
        if (r < 0)
                return r;
        _cleanup_(json_decrefp) json_t *resp = j;
        if (status != 200) {
                const char *err = obj_str(resp, "error");
                *ret_error = strdup(err ? err : "token_request_refused");
                return status >= 400 && status < 500 ? -EACCES : -EBADMSG;
        }
        /* token_type is "Bearer" per RFC 6749, but some providers say "bearer". */
        const char *tt = obj_str(resp, "token_type");
        const char *idt = obj_str(resp, "id_token");
        if ((tt && strcasecmp(tt, "bearer") != 0 && strcasecmp(tt, "dpop") != 0) || !idt)
                return -EBADMSG;
        *ret_id_token = strdup(idt);
        return *ret_id_token ? 0 : -ENOMEM;
}
