/* SPDX-License-Identifier: MIT */
/* oidc-provider.c: the contract's oidc_* keys make provider "default" and
 * oidc_providers_file adds more, with every half or bad configuration refused
 * naming what is wrong; redirect URIs are allowed only when byte-identical to a
 * registered one; and the HTTP client, run here against a tiny loopback server
 * with canned answers, refuses a discovery document for another issuer, an
 * oversized answer, a non-200 status, a body that is not a JSON object and a
 * redirect, and gives up on a slow server after the total timeout. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "oidc-provider.h"
#include "settings.h"

static char *dir;

static void setup(void)
{
        dir = tmpdir_new("oidc-provider");
        cr_assert_eq(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
}

static void teardown(void)
{
        tmpdir_remove(dir);
        free(dir);
        curl_global_cleanup();
}

TestSuite(oidc_provider, .init = setup, .fini = teardown, .timeout = 30);

/* ---- configuration helpers ---- */

/* A controller Config with the given key/value pairs (NULL-terminated). */
static Config *config_with(const char *const *kv)
{
        Config *c = NULL;
        cr_assert_eq(controller_config_new(&c), 0);
        for (size_t i = 0; kv && kv[i]; i += 2) {
                char *err = NULL;
                int r = config_set(c, kv[i], kv[i + 1], CONFIG_SOURCE_FLAG, &err);
                cr_assert_eq(r, 0, "config_set %s: %s", kv[i], err ? err : "");
        }
        return c;
}

/* oidc_providers_new on kv, with what it logs captured into *ret_log. */
static int providers_from(const char *const *kv, OidcProviders **ret, char **ret_log)
{
        Config *c = config_with(kv);
        _cleanup_free_ char *log_path = NULL;
        cr_assert(asprintf(&log_path, "%s/log", dir) > 0);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        fflush(stderr);
        int saved = dup(STDERR_FILENO);
        cr_assert_geq(saved, 0);
        cr_assert_geq(dup2(fd, STDERR_FILENO), 0);
        close(fd);

        *ret = NULL;
        int r = oidc_providers_new(c, ret);

        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        config_free(c);
        char *log = read_file(log_path);
        cr_assert_not_null(log);
        /* Show it, so a failing test explains itself. */
        fputs(log, stderr);
        if (ret_log)
                *ret_log = log;
        else
                free(log);
        return r;
}

static OidcProviders *providers_ok(const char *const *kv)
{
        OidcProviders *ps = NULL;
        int r = providers_from(kv, &ps, NULL);
        cr_assert_eq(r, 0, "configuration refused: %d", r);
        cr_assert_not_null(ps);
        return ps;
}

/* Refused with -EINVAL, and the log says `names`. */
static void expect_config_refused(const char *const *kv, const char *names)
{
        OidcProviders *ps = NULL;
        _cleanup_free_ char *log = NULL;
        int r = providers_from(kv, &ps, &log);
        cr_assert_eq(r, -EINVAL, "accepted (%d), expected a refusal naming \"%s\"", r, names);
        cr_assert_null(ps);
        cr_assert_not_null(strstr(log, names), "the log does not name \"%s\":\n%s", names, log);
}

#define KV(...) ((const char *const[]){__VA_ARGS__, NULL})

#define CONTRACT_KEYS                                                                              \
        "oidc_issuer", "https://idp.example", "oidc_client_id", "client-1", "oidc_client_secret",  \
            "s3cret", "oidc_redirect_uri", "https://a.example/cb"

static char *providers_file(const char *content)
{
        char *path = NULL;
        static int n;
        cr_assert(asprintf(&path, "%s/providers-%d.json", dir, n++) > 0);
        cr_assert_eq(write_file(path, content), 0);
        return path;
}

/* ---- configuration ---- */

Test(oidc_provider, no_oidc_keys_means_sign_on_is_off)
{
        OidcProviders *ps = providers_ok(NULL);
        cr_assert_eq(ps->n, 0);
        cr_assert_null(oidc_providers_find(ps, NULL));
        cr_assert_null(oidc_providers_find(ps, "default"));
        oidc_providers_free(ps);
        cr_assert_null(oidc_providers_find(NULL, NULL));
}

Test(oidc_provider, contract_keys_define_the_default_provider)
{
        OidcProviders *ps = providers_ok(KV(CONTRACT_KEYS));
        cr_assert_eq(ps->n, 1);
        OidcProvider *p = oidc_providers_find(ps, NULL);
        cr_assert_not_null(p);
        cr_assert_eq(p, oidc_providers_find(ps, "default"));
        cr_assert_null(oidc_providers_find(ps, "other"));
        cr_assert_str_eq(p->name, "default");
        cr_assert_str_eq(p->issuer, "https://idp.example");
        cr_assert_str_eq(p->client_id, "client-1");
        cr_assert_str_eq(p->client_secret, "s3cret");
        cr_assert_eq(p->n_redirect_uris, 1);
        cr_assert_str_eq(p->redirect_uris[0], "https://a.example/cb");
        cr_assert_not(p->auth_post, "client_secret_basic is the default");
        cr_assert_null(p->discovery);
        cr_assert_null(p->jwks);

        /* The defaults of the limits, from settings.c. */
        cr_assert_eq(ps->limits.connect_ms, 3000);
        cr_assert_eq(ps->limits.total_ms, 10000);
        cr_assert_eq(ps->clock_skew_s, 60);
        cr_assert_eq(ps->cache_ttl, 3600 * USEC_PER_SEC);
        cr_assert_eq(ps->jwks_kid_refresh_min, 10 * USEC_PER_SEC);
        cr_assert_eq(ps->state_ttl, 600 * USEC_PER_SEC);
        oidc_providers_free(ps);
}

Test(oidc_provider, limits_and_times_come_from_their_keys)
{
        OidcProviders *ps =
            providers_ok(KV(CONTRACT_KEYS, "oidc_connect_timeout_ms", "250", "oidc_http_timeout_ms",
                            "1500", "oidc_clock_skew_s", "5", "oidc_cache_ttl_s", "30",
                            "oidc_jwks_refresh_min_interval_s", "0", "oidc_state_ttl_s", "45"));
        cr_assert_eq(ps->limits.connect_ms, 250);
        cr_assert_eq(ps->limits.total_ms, 1500);
        cr_assert_eq(ps->clock_skew_s, 5);
        cr_assert_eq(ps->cache_ttl, 30 * USEC_PER_SEC);
        cr_assert_eq(ps->jwks_kid_refresh_min, 0);
        cr_assert_eq(ps->state_ttl, 45 * USEC_PER_SEC);
        oidc_providers_free(ps);
}

Test(oidc_provider, half_configured_is_refused_naming_the_missing_key)
{
        static const char *const all[] = {CONTRACT_KEYS};
        for (size_t drop = 0; drop < 4; drop++) {
                const char *kv[9] = {0};
                size_t n = 0;
                for (size_t i = 0; i < 4; i++)
                        if (i != drop) {
                                kv[n++] = all[2 * i];
                                kv[n++] = all[2 * i + 1];
                        }
                char want[80];
                snprintf(want, sizeof(want), "%s is missing", all[2 * drop]);
                expect_config_refused(kv, want);
        }

        /* An empty value is no value. */
        expect_config_refused(KV("oidc_issuer", "https://idp.example", "oidc_client_id", "",
                                 "oidc_client_secret", "s", "oidc_redirect_uri",
                                 "https://a.example/cb"),
                              "oidc_client_id is missing");

        /* One key alone names the three others. */
        _cleanup_free_ char *log = NULL;
        OidcProviders *ps = NULL;
        cr_assert_eq(providers_from(KV("oidc_client_secret", "s"), &ps, &log), -EINVAL);
        cr_assert_not_null(strstr(log, "oidc_issuer is missing"));
        cr_assert_not_null(strstr(log, "oidc_client_id is missing"));
        cr_assert_not_null(strstr(log, "oidc_redirect_uri is missing"));
        cr_assert_null(strstr(log, "oidc_client_secret is missing"), "it is not missing");
}

Test(oidc_provider, token_auth_method_is_basic_or_post)
{
        OidcProviders *ps =
            providers_ok(KV(CONTRACT_KEYS, "oidc_token_auth_method", "client_secret_post"));
        cr_assert(oidc_providers_find(ps, NULL)->auth_post);
        oidc_providers_free(ps);

        ps = providers_ok(KV(CONTRACT_KEYS, "oidc_token_auth_method", "client_secret_basic"));
        cr_assert_not(oidc_providers_find(ps, NULL)->auth_post);
        oidc_providers_free(ps);

        const char *bad[] = {"private_key_jwt", "client_secret_jwt", "none", "CLIENT_SECRET_POST",
                             "client_secret_post "};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                expect_config_refused(KV(CONTRACT_KEYS, "oidc_token_auth_method", bad[i]),
                                      "client_secret_basic or client_secret_post");
}

Test(oidc_provider, issuer_must_be_https_unless_on_loopback)
{
        const char *good[] = {"https://idp.example",    "https://idp.example/realms/x",
                              "http://127.0.0.1",       "http://127.0.0.1:8080",
                              "http://localhost/realm", "http://localhost:9000/realms/x",
                              "http://[::1]:9000"};
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                OidcProviders *ps = providers_ok(KV("oidc_issuer", good[i], "oidc_client_id", "c",
                                                    "oidc_client_secret", "s", "oidc_redirect_uri",
                                                    "https://a.example/cb"));
                cr_assert_str_eq(oidc_providers_find(ps, NULL)->issuer, good[i]);
                oidc_providers_free(ps);
        }
        const char *bad[] = {
            "http://idp.example",
            "http://127.0.0.1.evil.example",
            "http://localhost.evil.example/",
            "http://localhost@evil.example/",
            "http://localhost:80@evil.example/", /* user "localhost", host evil.example */
            "http://127.0.0.1:@evil.example",
            "http://[::1]:1@evil.example",
            "http://localhost:8080x/",
            "ftp://idp.example",
            "https://",
            "idp.example",
            "//idp.example",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                expect_config_refused(KV("oidc_issuer", bad[i], "oidc_client_id", "c",
                                         "oidc_client_secret", "s", "oidc_redirect_uri",
                                         "https://a.example/cb"),
                                      "must be an https URL");
}

/* ID tokens' iss must equal the issuer byte for byte, and some providers'
 * issuers end with a slash: the configured value is kept as it is. */
Test(oidc_provider, issuer_is_kept_byte_for_byte)
{
        OidcProviders *ps =
            providers_ok(KV("oidc_issuer", "https://idp.example/realms/x/", "oidc_client_id", "c",
                            "oidc_client_secret", "s", "oidc_redirect_uri", "https://a/cb"));
        cr_assert_str_eq(oidc_providers_find(ps, NULL)->issuer, "https://idp.example/realms/x/");
        oidc_providers_free(ps);
}

Test(oidc_provider, providers_file_adds_several_providers_after_the_default)
{
        _cleanup_free_ char *path = providers_file(
            "{\"providers\":["
            " {\"name\":\"corp\",\"issuer\":\"https://corp.example\",\"client_id\":\"cc\","
            "  \"client_secret\":\"cs\",\"redirect_uri\":\"https://a.example/corp\"},"
            " {\"name\":\"git-hub_2\",\"issuer\":\"https://gh.example/\",\"client_id\":\"gc\","
            "  \"client_secret\":\"gs\",\"token_auth_method\":\"client_secret_post\","
            "  \"redirect_uris\":[\"https://a.example/gh\",\"https://b.example/gh\"]}]}");
        OidcProviders *ps = providers_ok(KV(CONTRACT_KEYS, "oidc_providers_file", path));
        cr_assert_eq(ps->n, 3);
        cr_assert_str_eq(oidc_providers_find(ps, NULL)->name, "default");

        OidcProvider *corp = oidc_providers_find(ps, "corp");
        cr_assert_not_null(corp);
        cr_assert_str_eq(corp->issuer, "https://corp.example");
        cr_assert_str_eq(corp->client_id, "cc");
        cr_assert_str_eq(corp->client_secret, "cs");
        cr_assert_eq(corp->n_redirect_uris, 1);
        cr_assert_not(corp->auth_post);

        OidcProvider *gh = oidc_providers_find(ps, "git-hub_2");
        cr_assert_not_null(gh);
        cr_assert_str_eq(gh->issuer, "https://gh.example/");
        cr_assert(gh->auth_post);
        cr_assert_eq(gh->n_redirect_uris, 2);
        cr_assert(oidc_provider_redirect_allowed(gh, "https://b.example/gh"));
        cr_assert_not(oidc_provider_redirect_allowed(gh, "https://a.example/corp"),
                      "each provider has its own allow-list");
        oidc_providers_free(ps);
}

Test(oidc_provider, providers_file_alone_makes_its_first_entry_the_default)
{
        _cleanup_free_ char *path = providers_file(
            "{\"providers\":["
            " {\"name\":\"corp\",\"issuer\":\"https://corp.example\",\"client_id\":\"cc\","
            "  \"client_secret\":\"cs\",\"redirect_uri\":\"https://a.example/corp\","
            "  \"redirect_uris\":[\"https://a.example/corp2\"]},"
            " {\"name\":\"lab\",\"issuer\":\"http://127.0.0.1:5556/dex\",\"client_id\":\"lc\","
            "  \"client_secret\":\"ls\",\"redirect_uris\":[\"http://127.0.0.1/cb\"]}]}");
        OidcProviders *ps = providers_ok(KV("oidc_providers_file", path));
        cr_assert_eq(ps->n, 2);
        OidcProvider *first = oidc_providers_find(ps, NULL);
        cr_assert_str_eq(first->name, "corp");
        cr_assert_null(oidc_providers_find(ps, "default"));
        cr_assert_eq(first->n_redirect_uris, 2, "redirect_uri and redirect_uris together");
        cr_assert(oidc_provider_redirect_allowed(first, "https://a.example/corp"));
        cr_assert(oidc_provider_redirect_allowed(first, "https://a.example/corp2"));
        oidc_providers_free(ps);
}

#define ENTRY(name, issuer, extra)                                                                 \
        "{\"name\":\"" name "\",\"issuer\":\"" issuer "\",\"client_id\":\"c\","                    \
        "\"client_secret\":\"s\",\"redirect_uri\":\"https://a.example/cb\"" extra "}"

static void expect_file_refused(const char *content, const char *names)
{
        _cleanup_free_ char *path = providers_file(content);
        expect_config_refused(KV("oidc_providers_file", path), names);
}

Test(oidc_provider, providers_file_that_cannot_be_used_is_refused)
{
        _cleanup_free_ char *missing = NULL;
        cr_assert(asprintf(&missing, "%s/no-such-file.json", dir) > 0);
        expect_config_refused(KV("oidc_providers_file", missing),
                              "cannot read oidc_providers_file");

        expect_file_refused("{\"providers\":[", "cannot read oidc_providers_file");
        expect_file_refused("not json at all", "cannot read oidc_providers_file");
        expect_file_refused("{\"providers\":[],\"providers\":[]}",
                            "cannot read oidc_providers_file");
        expect_file_refused("{}", "needs a \\\"providers\\\" array");
        expect_file_refused("{\"providers\":{}}", "needs a \\\"providers\\\" array");
        expect_file_refused("[]", "needs a \\\"providers\\\" array");
}

Test(oidc_provider, providers_file_entries_with_missing_or_bad_fields_are_refused)
{
        static const char *const need = "needs name, issuer, client_id and client_secret";
        expect_file_refused("{\"providers\":[{\"issuer\":\"https://i\",\"client_id\":\"c\","
                            "\"client_secret\":\"s\",\"redirect_uri\":\"https://a/cb\"}]}",
                            need);
        expect_file_refused("{\"providers\":[{\"name\":\"x\",\"client_id\":\"c\","
                            "\"client_secret\":\"s\",\"redirect_uri\":\"https://a/cb\"}]}",
                            need);
        expect_file_refused("{\"providers\":[{\"name\":\"x\",\"issuer\":\"https://i\","
                            "\"client_secret\":\"s\",\"redirect_uri\":\"https://a/cb\"}]}",
                            need);
        expect_file_refused("{\"providers\":[{\"name\":\"x\",\"issuer\":\"https://i\","
                            "\"client_id\":\"c\",\"redirect_uri\":\"https://a/cb\"}]}",
                            need);
        expect_file_refused("{\"providers\":[{\"name\":\"x\",\"issuer\":\"https://i\","
                            "\"client_id\":7,\"client_secret\":\"s\","
                            "\"redirect_uri\":\"https://a/cb\"}]}",
                            need);
        /* The second entry is named in the message. */
        expect_file_refused("{\"providers\":[" ENTRY("a", "https://i", "") ",{\"name\":\"b\"}]}",
                            "entry=1");

        expect_file_refused("{\"providers\":[{\"name\":\"x\",\"issuer\":\"https://i\","
                            "\"client_id\":\"c\",\"client_secret\":\"s\"}]}",
                            "needs a redirect URI");
        expect_file_refused("{\"providers\":[{\"name\":\"x\",\"issuer\":\"https://i\","
                            "\"client_id\":\"c\",\"client_secret\":\"s\",\"redirect_uris\":[]}]}",
                            "needs a redirect URI");
        expect_file_refused("{\"providers\":[{\"name\":\"x\",\"issuer\":\"https://i\","
                            "\"client_id\":\"c\",\"client_secret\":\"s\","
                            "\"redirect_uris\":[\"https://a/cb\",3]}]}",
                            "redirect_uris: at most 16 strings");
        expect_file_refused(
            "{\"providers\":[{\"name\":\"x\",\"issuer\":\"https://i\",\"client_id\":\"c\","
            "\"client_secret\":\"s\",\"redirect_uris\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\","
            "\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}]}",
            "redirect_uris: at most 16 strings");

        expect_file_refused("{\"providers\":[" ENTRY("Corp", "https://i", "") "]}",
                            "name must be 1-32 of [a-z0-9_-]");
        expect_file_refused("{\"providers\":[" ENTRY("", "https://i", "") "]}",
                            "name must be 1-32 of [a-z0-9_-]");
        expect_file_refused("{\"providers\":[" ENTRY("a.b", "https://i", "") "]}",
                            "name must be 1-32 of [a-z0-9_-]");
        expect_file_refused(
            "{\"providers\":[" ENTRY("abcdefghijklmnopqrstuvwxyz0123456", "https://i", "") "]}",
            "name must be 1-32 of [a-z0-9_-]");
        expect_file_refused(
            "{\"providers\":[" ENTRY("a", "https://i", "") "," ENTRY("a", "https://j", "") "]}",
            "defined twice");
        expect_file_refused("{\"providers\":[" ENTRY("x", "http://idp.example", "") "]}",
                            "must be an https URL");
        expect_file_refused(
            "{\"providers\":[" ENTRY("x", "https://i",
                                     ",\"token_auth_method\":\"private_key_jwt\"") "]}",
            "client_secret_basic or client_secret_post");

        /* A file entry may not take the name of the contract's provider. */
        _cleanup_free_ char *path =
            providers_file("{\"providers\":[" ENTRY("default", "https://j", "") "]}");
        expect_config_refused(KV(CONTRACT_KEYS, "oidc_providers_file", path), "defined twice");
}

Test(oidc_provider, the_longest_name_is_32_characters)
{
        _cleanup_free_ char *path = providers_file(
            "{\"providers\":[" ENTRY("abcdefghijklmnopqrstuvwxyz012345", "https://i", "") "]}");
        OidcProviders *ps = providers_ok(KV("oidc_providers_file", path));
        cr_assert_not_null(oidc_providers_find(ps, "abcdefghijklmnopqrstuvwxyz012345"));
        oidc_providers_free(ps);
}

/* ---- redirect allow-list ---- */

Test(oidc_provider, redirect_uri_must_match_a_registered_one_exactly)
{
        OidcProviders *ps = providers_ok(KV(CONTRACT_KEYS));
        OidcProvider *p = oidc_providers_find(ps, NULL);
        cr_assert(oidc_provider_redirect_allowed(p, "https://a.example/cb"));
        const char *bad[] = {
            "https://a.example/cb.evil",
            "https://a.example/cb/",
            "https://a.example/cb/../evil",
            "https://a.example/cb?next=https://evil.example",
            "https://a.example/cb#frag",
            "https://a.example/c",
            "https://a.example",
            "https://a.example/CB",
            "https://A.example/cb",
            "HTTPS://a.example/cb",
            "https://a.example.evil/cb",
            "https://a.example:443/cb",
            "http://a.example/cb",
            "https://a.example/cb%2F",
            "https://a.example/cb ",
            " https://a.example/cb",
            "",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                cr_assert_not(oidc_provider_redirect_allowed(p, bad[i]), "\"%s\" allowed", bad[i]);
        oidc_providers_free(ps);
}

Test(oidc_provider, registered_query_string_is_part_of_the_uri)
{
        OidcProviders *ps = providers_ok(KV("oidc_issuer", "https://idp.example", "oidc_client_id",
                                            "c", "oidc_client_secret", "s", "oidc_redirect_uri",
                                            "https://a.example/cb?tenant=1"));
        OidcProvider *p = oidc_providers_find(ps, NULL);
        cr_assert(oidc_provider_redirect_allowed(p, "https://a.example/cb?tenant=1"));
        cr_assert_not(oidc_provider_redirect_allowed(p, "https://a.example/cb"));
        cr_assert_not(oidc_provider_redirect_allowed(p, "https://a.example/cb?tenant=2"));
        cr_assert_not(oidc_provider_redirect_allowed(p, "https://a.example/cb?tenant=1&x=2"));
        cr_assert_not(oidc_provider_redirect_allowed(p, "https://a.example/cb?tenant=10"));
        oidc_providers_free(ps);
}

/* ---- cache freshness ---- */

Test(oidc_provider, cached_documents_are_fresh_only_within_the_ttl)
{
        OidcProviders *ps = providers_ok(KV(CONTRACT_KEYS));
        OidcProvider *p = oidc_providers_find(ps, NULL);
        cr_assert_null(oidc_provider_fresh_discovery(ps, p), "nothing cached yet");
        cr_assert_null(oidc_provider_fresh_jwks(ps, p));

        usec_t now = now_mono_usec();
        p->discovery = json_object();
        p->discovery_at = now;
        p->jwks = json_object();
        p->jwks_at = now;
        cr_assert_eq(oidc_provider_fresh_discovery(ps, p), p->discovery);
        cr_assert_eq(oidc_provider_fresh_jwks(ps, p), p->jwks);

        ps->cache_ttl = 10 * USEC_PER_SEC;
        cr_assert_gt(now, 11 * USEC_PER_SEC, "the monotonic clock runs since boot");
        p->discovery_at = now - 11 * USEC_PER_SEC;
        cr_assert_null(oidc_provider_fresh_discovery(ps, p), "stale discovery");
        cr_assert_eq(oidc_provider_fresh_jwks(ps, p), p->jwks, "the JWKS has its own age");
        p->jwks_at = now - 11 * USEC_PER_SEC;
        cr_assert_null(oidc_provider_fresh_jwks(ps, p), "stale JWKS");
        p->discovery_at = now - 9 * USEC_PER_SEC;
        cr_assert_eq(oidc_provider_fresh_discovery(ps, p), p->discovery);
        oidc_providers_free(ps); /* frees the cached documents too (LeakSanitizer checks) */
}

/* ---- a canned loopback HTTP server ---- */

typedef enum {
        SERVE,        /* answer every request with the canned response */
        STALL,        /* read the request, answer nothing */
        STALL_MIDWAY, /* send the first half of the response, then nothing */
} ServeMode;

typedef struct Server {
        int fd;
        int stop[2];
        unsigned port;
        pthread_t thread;
        ServeMode mode;
        char *response;
        size_t response_len;

        pthread_mutex_t lock;
        int n_requests;
        char *first_request; /* head and body as received */
        bool running;
} Server;

static bool wait_readable(int fd, int stop)
{
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = stop, .events = POLLIN}};
        while (poll(p, 2, -1) < 0)
                ;
        return !(p[1].revents & POLLIN) && (p[0].revents & (POLLIN | POLLHUP | POLLERR));
}

/* Reads one request: the head, then Content-Length bytes of body. */
static char *read_request(int c, int stop)
{
        size_t cap = 64 * 1024, len = 0;
        char *buf = calloc(1, cap + 1);
        cr_assert_not_null(buf);
        size_t want = 0;
        while (len < cap) {
                if (!wait_readable(c, stop))
                        break;
                ssize_t n = recv(c, buf + len, cap - len, 0);
                if (n <= 0)
                        break;
                len += (size_t)n;
                buf[len] = '\0';
                char *end = strstr(buf, "\r\n\r\n");
                if (!end)
                        continue;
                if (want == 0) {
                        want = (size_t)(end + 4 - buf);
                        for (char *h = strstr(buf, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n"))
                                if (strncasecmp(h + 2, "Content-Length:", 15) == 0)
                                        want += strtoul(h + 17, NULL, 10);
                }
                if (len >= want)
                        break;
        }
        return buf;
}

static void send_all(int c, const char *p, size_t n)
{
        while (n > 0) {
                ssize_t w = send(c, p, n, MSG_NOSIGNAL);
                if (w <= 0)
                        return; /* the client gave up (an oversized answer) */
                p += w;
                n -= (size_t)w;
        }
}

/* Until the client closes or the test stops the server. */
static void hold(int c, int stop)
{
        char b[512];
        while (wait_readable(c, stop))
                if (recv(c, b, sizeof(b), 0) <= 0)
                        return;
}

static void *serve(void *userdata)
{
        Server *s = userdata;
        for (;;) {
                if (!wait_readable(s->fd, s->stop[0]))
                        return NULL;
                int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                char *req = read_request(c, s->stop[0]);
                pthread_mutex_lock(&s->lock);
                s->n_requests++;
                if (!s->first_request)
                        s->first_request = req;
                else
                        free(req);
                pthread_mutex_unlock(&s->lock);
                if (s->mode == SERVE)
                        send_all(c, s->response, s->response_len);
                else if (s->mode == STALL_MIDWAY)
                        send_all(c, s->response, s->response_len / 2);
                if (s->mode != SERVE)
                        hold(c, s->stop[0]);
                shutdown(c, SHUT_WR);
                close(c);
        }
}

/* Listens on 127.0.0.1:0; serves nothing until server_run(). */
static Server *server_new(void)
{
        Server *s = calloc(1, sizeof(*s));
        cr_assert_not_null(s);
        pthread_mutex_init(&s->lock, NULL);
        cr_assert_eq(pipe2(s->stop, O_CLOEXEC), 0);
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(s->fd, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        cr_assert_eq(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
        cr_assert_eq(listen(s->fd, 16), 0);
        socklen_t alen = sizeof(a);
        cr_assert_eq(getsockname(s->fd, (struct sockaddr *)&a, &alen), 0);
        s->port = ntohs(a.sin_port);
        return s;
}

/* Starts answering with response (taken over). */
static void server_run(Server *s, ServeMode mode, char *response)
{
        s->mode = mode;
        s->response = response;
        s->response_len = strlen(response);
        cr_assert_eq(pthread_create(&s->thread, NULL, serve, s), 0);
        s->running = true;
}

static Server *server_start_raw(ServeMode mode, char *response)
{
        Server *s = server_new();
        server_run(s, mode, response);
        return s;
}

static char *http_answer(const char *status, const char *headers, const char *body)
{
        char *out = NULL;
        cr_assert(asprintf(&out,
                           "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                           "Content-Length: %zu\r\nConnection: close\r\n%s\r\n%s",
                           status, strlen(body), headers ? headers : "", body) > 0);
        return out;
}

static Server *server_start(const char *status, const char *headers, const char *body)
{
        return server_start_raw(SERVE, http_answer(status, headers, body));
}

static void server_stop(Server *s)
{
        if (s->running) {
                cr_assert_eq(write(s->stop[1], "x", 1), 1);
                pthread_join(s->thread, NULL);
        }
        close(s->fd);
        close(s->stop[0]);
        close(s->stop[1]);
        pthread_mutex_destroy(&s->lock);
        free(s->first_request);
        free(s->response);
        free(s);
}

static int requests(Server *s)
{
        pthread_mutex_lock(&s->lock);
        int n = s->n_requests;
        pthread_mutex_unlock(&s->lock);
        return n;
}

static char *base_url(const Server *s)
{
        char *u = NULL;
        cr_assert(asprintf(&u, "http://127.0.0.1:%u", s->port) > 0);
        return u;
}

/* A discovery document for issuer with loopback endpoints. */
static char *discovery_doc(const char *issuer, const char *endpoint_base)
{
        char *d = NULL;
        cr_assert(asprintf(&d,
                           "{\"issuer\":\"%s\",\"authorization_endpoint\":\"%s/authorize\","
                           "\"token_endpoint\":\"%s/token\",\"jwks_uri\":\"%s/jwks\"}",
                           issuer, endpoint_base, endpoint_base, endpoint_base) > 0);
        return d;
}

static const OidcHttpLimits limits = {.connect_ms = 2000, .total_ms = 5000};

/* ---- the HTTP client ---- */

Test(oidc_provider, discovery_naming_this_issuer_is_accepted)
{
        /* The port is only known once the server listens: serve a document
         * naming the issuer by its real address. */
        Server *s = server_new();
        _cleanup_free_ char *base = base_url(s);
        _cleanup_free_ char *issuer = NULL;
        cr_assert(asprintf(&issuer, "%s/realms/x", base) > 0);
        _cleanup_free_ char *doc = discovery_doc(issuer, base);
        server_run(s, SERVE, http_answer("200 OK", NULL, doc));

        json_t *got = NULL;
        cr_assert_eq(oidc_fetch_discovery(issuer, &limits, &got), 0);
        cr_assert_str_eq(json_string_value(json_object_get(got, "issuer")), issuer);
        json_decref(got);
        cr_assert_eq(requests(s), 1);
        cr_assert_eq(strncmp(s->first_request,
                             "GET /realms/x/.well-known/openid-configuration HTTP/1.1\r\n", 56),
                     0, "%s", s->first_request);
        server_stop(s);
}

/* Discovery 1.0 section 4: a terminating slash of the issuer is dropped before
 * the well-known path is appended; the document still names the issuer as is. */
Test(oidc_provider, discovery_of_an_issuer_ending_in_a_slash)
{
        Server *s = server_new();
        _cleanup_free_ char *base = base_url(s);
        _cleanup_free_ char *issuer = NULL;
        cr_assert(asprintf(&issuer, "%s/realms/x/", base) > 0);
        _cleanup_free_ char *doc = discovery_doc(issuer, base);
        server_run(s, SERVE, http_answer("200 OK", NULL, doc));

        json_t *got = NULL;
        cr_assert_eq(oidc_fetch_discovery(issuer, &limits, &got), 0);
        cr_assert_str_eq(json_string_value(json_object_get(got, "issuer")), issuer);
        json_decref(got);
        cr_assert_eq(strncmp(s->first_request,
                             "GET /realms/x/.well-known/openid-configuration HTTP/1.1\r\n", 56),
                     0, "%s", s->first_request);
        server_stop(s);
}

Test(oidc_provider, discovery_naming_another_issuer_is_refused)
{
        const char *others[] = {"https://evil.example", "%s/", "%s/other", "HTTP://127.0.0.1"};
        for (size_t i = 0; i < ELEMENTSOF(others); i++) {
                Server *s = server_new();
                _cleanup_free_ char *base = base_url(s);
                _cleanup_free_ char *claimed = NULL;
                cr_assert(asprintf(&claimed, others[i], base) > 0);
                _cleanup_free_ char *doc = discovery_doc(claimed, base);
                server_run(s, SERVE, http_answer("200 OK", NULL, doc));
                json_t *got = NULL;
                cr_assert_eq(oidc_fetch_discovery(base, &limits, &got), -EBADMSG,
                             "issuer \"%s\" accepted for %s", claimed, base);
                cr_assert_null(got);
                server_stop(s);
        }

        Server *s = server_start("200 OK", NULL, "{\"token_endpoint\":\"https://t\"}");
        _cleanup_free_ char *base = base_url(s);
        json_t *got = NULL;
        cr_assert_eq(oidc_fetch_discovery(base, &limits, &got), -EBADMSG, "no issuer at all");
        server_stop(s);
}

Test(oidc_provider, discovery_without_usable_endpoints_is_refused)
{
        static const char *const fields[] = {"authorization_endpoint", "token_endpoint",
                                             "jwks_uri"};
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                for (int variant = 0; variant < 2; variant++) {
                        Server *s = server_new();
                        _cleanup_free_ char *base = base_url(s);
                        _cleanup_free_ char *doc = discovery_doc(base, base);
                        json_t *d = json_loads(doc, 0, NULL);
                        if (variant == 0)
                                json_object_del(d, fields[i]);
                        else /* plain http to a host that is not loopback */
                                json_object_set_new(d, fields[i],
                                                    json_string("http://idp.example/x"));
                        _cleanup_free_ char *body = json_dumps(d, JSON_COMPACT);
                        json_decref(d);
                        server_run(s, SERVE, http_answer("200 OK", NULL, body));
                        json_t *got = NULL;
                        cr_assert_eq(oidc_fetch_discovery(base, &limits, &got), -EBADMSG,
                                     "%s %s accepted", fields[i],
                                     variant ? "over http" : "missing");
                        server_stop(s);
                }
}

static char *oversized_body(void)
{
        size_t n = 600 * 1024;
        char *b = malloc(n + 32);
        cr_assert_not_null(b);
        strcpy(b, "{\"issuer\":\"");
        memset(b + strlen(b), 'x', n);
        strcpy(b + 11 + n, "\"}");
        return b;
}

Test(oidc_provider, oversized_answer_is_refused)
{
        /* Announced with Content-Length: curl stops before reading it. */
        _cleanup_free_ char *body = oversized_body();
        Server *s = server_start_raw(SERVE, http_answer("200 OK", NULL, body));
        _cleanup_free_ char *base = base_url(s);
        json_t *got = NULL;
        cr_assert_eq(oidc_fetch_discovery(base, &limits, &got), -EBADMSG);
        cr_assert_eq(oidc_fetch_jwks(base, &limits, &got), -EBADMSG);
        server_stop(s);

        /* Unannounced (read until the connection closes): cut off at the cap. */
        char *unannounced = NULL;
        cr_assert(asprintf(&unannounced,
                           "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           "Connection: close\r\n\r\n%s",
                           body) > 0);
        s = server_start_raw(SERVE, unannounced);
        _cleanup_free_ char *base2 = base_url(s);
        cr_assert_eq(oidc_fetch_discovery(base2, &limits, &got), -EBADMSG);
        cr_assert_eq(oidc_fetch_jwks(base2, &limits, &got), -EBADMSG);
        server_stop(s);
        cr_assert_null(got);
}

static long long elapsed_ms_of(int (*fetch)(const char *, const OidcHttpLimits *, json_t **),
                               ServeMode mode, int *ret)
{
        Server *s = server_start_raw(mode, http_answer("200 OK", NULL, "{\"keys\":[]}"));
        _cleanup_free_ char *base = base_url(s);
        const OidcHttpLimits quick = {.connect_ms = 1000, .total_ms = 1000};
        json_t *got = NULL;
        long long t0 = mono_ms();
        *ret = fetch(base, &quick, &got);
        long long t = mono_ms() - t0;
        cr_assert_null(got);
        cr_assert_eq(requests(s), 1, "the request reached the server");
        server_stop(s);
        return t;
}

Test(oidc_provider, slow_server_hits_the_total_timeout)
{
        int r;
        long long t = elapsed_ms_of(oidc_fetch_discovery, STALL, &r);
        cr_assert_eq(r, -EHOSTUNREACH);
        cr_assert(t >= 900 && t < 5000, "gave up after %lld ms with a 1000 ms limit", t);

        /* An answer that starts and then stalls is bounded by the same limit. */
        t = elapsed_ms_of(oidc_fetch_jwks, STALL_MIDWAY, &r);
        cr_assert_eq(r, -EHOSTUNREACH);
        cr_assert(t >= 900 && t < 5000, "gave up after %lld ms with a 1000 ms limit", t);
}

Test(oidc_provider, unreachable_provider_is_ehostunreach)
{
        /* A port nothing listens on: bound, then closed. */
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        socklen_t alen = sizeof(a);
        cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
        close(fd);
        char url[64];
        snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(a.sin_port));
        json_t *got = NULL;
        cr_assert_eq(oidc_fetch_discovery(url, &limits, &got), -EHOSTUNREACH);
        cr_assert_eq(oidc_fetch_jwks(url, &limits, &got), -EHOSTUNREACH);
        cr_assert_null(got);
}

Test(oidc_provider, non_200_statuses_are_refused)
{
        struct {
                const char *status;
                int want;
        } cases[] = {
            {"201 Created", -EBADMSG},
            {"204 No Content", -EBADMSG},
            {"400 Bad Request", -EBADMSG},
            {"404 Not Found", -EBADMSG},
            {"500 Internal Server Error", -EHOSTUNREACH},
            {"502 Bad Gateway", -EHOSTUNREACH},
            {"503 Service Unavailable", -EHOSTUNREACH},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                /* Each carries a body that would pass with 200. */
                Server *s = server_new();
                _cleanup_free_ char *base = base_url(s);
                _cleanup_free_ char *doc = discovery_doc(base, base);
                json_t *d = json_loads(doc, 0, NULL);
                json_object_set_new(d, "keys", json_array());
                _cleanup_free_ char *body = json_dumps(d, JSON_COMPACT);
                json_decref(d);
                server_run(s, SERVE, http_answer(cases[i].status, NULL, body));
                json_t *got = NULL;
                cr_assert_eq(oidc_fetch_discovery(base, &limits, &got), cases[i].want,
                             "discovery answered %s", cases[i].status);
                cr_assert_eq(oidc_fetch_jwks(base, &limits, &got), cases[i].want,
                             "JWKS answered %s", cases[i].status);
                cr_assert_null(got);
                server_stop(s);
        }
}

Test(oidc_provider, bodies_that_are_not_a_json_object_are_refused)
{
        const char *bodies[] = {"",         "<html>Sign in</html>", "[{\"keys\":[]}]",
                                "\"keys\"", "{\"keys\":[]",         "{\"keys\":[]} trailing"};
        for (size_t i = 0; i < ELEMENTSOF(bodies); i++) {
                Server *s = server_start("200 OK", NULL, bodies[i]);
                _cleanup_free_ char *base = base_url(s);
                json_t *got = NULL;
                cr_assert_eq(oidc_fetch_discovery(base, &limits, &got), -EBADMSG, "body %s",
                             bodies[i]);
                cr_assert_eq(oidc_fetch_jwks(base, &limits, &got), -EBADMSG, "body %s", bodies[i]);
                cr_assert_null(got);
                server_stop(s);
        }
}

Test(oidc_provider, redirect_is_not_followed)
{
        const char *statuses[] = {"301 Moved Permanently", "302 Found", "307 Temporary Redirect",
                                  "308 Permanent Redirect"};
        for (size_t i = 0; i < ELEMENTSOF(statuses); i++) {
                /* The redirect's own body is a valid document, and its target on
                 * the same server would answer it too: neither may be used. */
                Server *s = server_new();
                _cleanup_free_ char *base = base_url(s);
                _cleanup_free_ char *doc = discovery_doc(base, base);
                json_t *d = json_loads(doc, 0, NULL);
                json_object_set_new(d, "keys", json_array());
                _cleanup_free_ char *body = json_dumps(d, JSON_COMPACT);
                json_decref(d);
                _cleanup_free_ char *location = NULL;
                cr_assert(asprintf(&location, "Location: %s/elsewhere\r\n", base) > 0);
                server_run(s, SERVE, http_answer(statuses[i], location, body));
                json_t *got = NULL;
                cr_assert_eq(oidc_fetch_discovery(base, &limits, &got), -EBADMSG, "%s followed",
                             statuses[i]);
                cr_assert_eq(oidc_fetch_jwks(base, &limits, &got), -EBADMSG);
                cr_assert_null(got);
                cr_assert_eq(requests(s), 2, "one request per fetch, none to the Location");
                server_stop(s);
        }
}

Test(oidc_provider, jwks_needs_a_keys_array)
{
        json_t *got = NULL;
        Server *s = server_start("200 OK", NULL, "{\"keys\":[{\"kty\":\"RSA\"}]}");
        _cleanup_free_ char *base = base_url(s);
        _cleanup_free_ char *uri = NULL;
        cr_assert(asprintf(&uri, "%s/jwks", base) > 0);
        cr_assert_eq(oidc_fetch_jwks(uri, &limits, &got), 0);
        cr_assert_eq(json_array_size(json_object_get(got, "keys")), 1);
        json_decref(got);
        cr_assert_eq(strncmp(s->first_request, "GET /jwks HTTP/1.1\r\n", 20), 0);
        server_stop(s);

        const char *bad[] = {"{}", "{\"keys\":{}}", "{\"keys\":\"k\"}"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                s = server_start("200 OK", NULL, bad[i]);
                _cleanup_free_ char *b = base_url(s);
                got = NULL;
                cr_assert_eq(oidc_fetch_jwks(b, &limits, &got), -EBADMSG, "%s", bad[i]);
                cr_assert_null(got);
                server_stop(s);
        }
}

/* ---- the token endpoint ---- */

typedef struct Redeemed {
        int r;
        char *id_token;
        char *error;
        char *request;
} Redeemed;

static Redeemed redeem(const char *status, const char *body, bool post)
{
        Server *s = server_start(status, NULL, body);
        _cleanup_free_ char *base = base_url(s);
        _cleanup_free_ char *endpoint = NULL;
        cr_assert(asprintf(&endpoint, "%s/token", base) > 0);
        Redeemed out = {0};
        out.r = oidc_redeem_code(endpoint, "client 1", "s&cr:t=+", post, "the/code+1",
                                 "https://a.example/cb?x=1", "verifier-abc", &limits, &out.id_token,
                                 &out.error);
        cr_assert_eq(requests(s), 1);
        out.request = strdup(s->first_request);
        server_stop(s);
        return out;
}

static void redeemed_done(Redeemed *d)
{
        free(d->id_token);
        free(d->error);
        free(d->request);
}

static const char *header_of(const char *request, const char *name)
{
        size_t n = strlen(name);
        for (const char *h = strstr(request, "\r\n"); h; h = strstr(h + 2, "\r\n")) {
                if (h[2] == '\r')
                        return NULL; /* end of the head */
                if (strncasecmp(h + 2, name, n) == 0 && h[2 + n] == ':')
                        return h + 2 + n + 2;
        }
        return NULL;
}

static const char *body_of(const char *request)
{
        const char *b = strstr(request, "\r\n\r\n");
        cr_assert_not_null(b);
        return b + 4;
}

#define FORM                                                                                       \
        "grant_type=authorization_code&code=the%2Fcode%2B1"                                        \
        "&redirect_uri=https%3A%2F%2Fa.example%2Fcb%3Fx%3D1&code_verifier=verifier-abc"

Test(oidc_provider, code_is_redeemed_with_client_secret_basic)
{
        _cleanup_(redeemed_done) Redeemed d =
            redeem("200 OK", "{\"token_type\":\"Bearer\",\"id_token\":\"h.p.s\"}", false);
        cr_assert_eq(d.r, 0);
        cr_assert_str_eq(d.id_token, "h.p.s");
        cr_assert_eq(strncmp(d.request, "POST /token HTTP/1.1\r\n", 22), 0);
        cr_assert_str_eq(body_of(d.request), FORM, "the secret stays out of the form");

        /* RFC 6749 2.3.1: id and secret form-encoded, then Basic. */
        const char *auth = header_of(d.request, "Authorization");
        cr_assert_not_null(auth);
        cr_assert_eq(strncmp(auth, "Basic ", 6), 0);
        unsigned char decoded[128] = {0};
        size_t b64_len = strcspn(auth + 6, "\r");
        int n = EVP_DecodeBlock(decoded, (const unsigned char *)auth + 6, (int)b64_len);
        cr_assert_gt(n, 0);
        while (n > 0 && decoded[n - 1] == '\0') /* EVP_DecodeBlock counts the padding */
                n--;
        cr_assert_eq(n, (int)strlen("client%201:s%26cr%3At%3D%2B"));
        cr_assert_arr_eq(decoded, "client%201:s%26cr%3At%3D%2B", (size_t)n);
        cr_assert_not_null(strstr(header_of(d.request, "Accept"), "application/json"));
}

Test(oidc_provider, code_is_redeemed_with_client_secret_post)
{
        _cleanup_(redeemed_done) Redeemed d =
            redeem("200 OK", "{\"token_type\":\"bearer\",\"id_token\":\"h.p.s\"}", true);
        cr_assert_eq(d.r, 0, "lower-case bearer is accepted");
        cr_assert_str_eq(d.id_token, "h.p.s");
        cr_assert_null(header_of(d.request, "Authorization"));
        cr_assert_str_eq(body_of(d.request),
                         FORM "&client_id=client%201&client_secret=s%26cr%3At%3D%2B");
}

Test(oidc_provider, refused_code_reports_the_providers_error)
{
        _cleanup_(redeemed_done) Redeemed d =
            redeem("400 Bad Request", "{\"error\":\"invalid_grant\"}", false);
        cr_assert_eq(d.r, -EACCES);
        cr_assert_str_eq(d.error, "invalid_grant");
        cr_assert_null(d.id_token);

        _cleanup_(redeemed_done) Redeemed no_error = redeem("401 Unauthorized", "{}", false);
        cr_assert_eq(no_error.r, -EACCES);
        cr_assert_str_eq(no_error.error, "token_request_refused");

        _cleanup_(redeemed_done) Redeemed odd = redeem("302 Found", "{}", false);
        cr_assert_eq(odd.r, -EBADMSG, "not a refusal of the code, not followed either");

        _cleanup_(redeemed_done) Redeemed down = redeem("503 Service Unavailable", "{}", false);
        cr_assert_eq(down.r, -EHOSTUNREACH);
        cr_assert_null(down.error);
}

Test(oidc_provider, token_answer_without_an_id_token_is_refused)
{
        const char *bodies[] = {
            "{\"token_type\":\"Bearer\",\"access_token\":\"a\"}",
            "{\"token_type\":\"Bearer\",\"id_token\":7}",
            "{\"token_type\":\"mac\",\"id_token\":\"h.p.s\"}",
            "not json",
        };
        for (size_t i = 0; i < ELEMENTSOF(bodies); i++) {
                _cleanup_(redeemed_done) Redeemed d = redeem("200 OK", bodies[i], false);
                cr_assert_eq(d.r, -EBADMSG, "%s", bodies[i]);
                cr_assert_null(d.id_token);
        }
        /* token_type may be left out; DPoP is a known type. */
        _cleanup_(redeemed_done) Redeemed bare = redeem("200 OK", "{\"id_token\":\"x\"}", false);
        cr_assert_eq(bare.r, 0);
        _cleanup_(redeemed_done) Redeemed dpop =
            redeem("200 OK", "{\"token_type\":\"DPoP\",\"id_token\":\"x\"}", false);
        cr_assert_eq(dpop.r, 0);
}
