/* SPDX-License-Identifier: MIT */
/* Single sign-on against a real OpenID Connect provider: npm oidc-provider
 * (tests/node/oidc-provider.mjs, pinned in tests/node/package-lock.json) on
 * loopback, driven without a browser: libcurl with one cookie jar per
 * "browser" follows authorize -> provider -> interaction login -> redirect
 * with code, state and iss, then posts the exchange to the real controller.
 * Every refusal is checked for its envelope, its audit row, and for leaving
 * users and sessions as they were. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define AUTHORIZE "/api/v1/auth/oidc/authorize"
#define EXCHANGE  "/api/v1/auth/oidc/exchange"
#define CLIENT_ID "gpuslice-test"
#define SECRET    "s3cret: with space+colon" /* form-encoding before Basic matters */
#define REDIRECT  "http://127.0.0.1:9/oidc/callback"

TestSuite(oidc, .timeout = 120);

/* ---- the provider process ---- */

typedef struct Op {
        pid_t pid;
        unsigned port;
        char issuer[64];
        char alg[8];
        char auth[32];
} Op;

static Op *live_ops[8];
static size_t n_live_ops;

static void op_stop(Op *op)
{
        if (op->pid <= 0)
                return;
        kill(op->pid, SIGTERM);
        long long deadline = mono_ms() + 10000;
        int status;
        while (waitpid(op->pid, &status, WNOHANG) == 0) {
                if (mono_ms() > deadline) {
                        kill(op->pid, SIGKILL);
                        waitpid(op->pid, &status, 0);
                        break;
                }
                poll(NULL, 0, 5);
        }
        op->pid = 0;
}

static void ops_cleanup(void)
{
        for (size_t i = 0; i < n_live_ops; i++)
                op_stop(live_ops[i]);
}

static void op_free(Op *op)
{
        op_stop(op);
        for (size_t i = 0; i < n_live_ops; i++)
                if (live_ops[i] == op)
                        live_ops[i] = live_ops[--n_live_ops];
        free(op);
}

static unsigned free_port(void)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
                  getsockname(fd, (struct sockaddr *)&a, &len) == 0);
        close(fd);
        return ntohs(a.sin_port);
}

/* Starts (or restarts, with new keys) the provider and waits for its READY line. */
static void op_start(Op *op)
{
        const char *src = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        cr_assert(src, "GPUSLICE_TEST_SOURCE_ROOT is not set (meson sets it)");
        char script[1024], modules[1024], port[16];
        snprintf(script, sizeof(script), "%s/tests/node/oidc-provider.mjs", src);
        snprintf(modules, sizeof(modules), "%s/tests/node/node_modules/oidc-provider", src);
        cr_assert(access(modules, F_OK) == 0,
                  "npm oidc-provider is missing: run (cd tests/node && npm ci)");
        if (op->port == 0)
                op->port = free_port();
        snprintf(port, sizeof(port), "%u", op->port);
        snprintf(op->issuer, sizeof(op->issuer), "http://127.0.0.1:%u", op->port);
        int out[2];
        cr_assert(pipe2(out, O_CLOEXEC) == 0);
        pid_t parent = getpid();
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                dup2(out[1], STDOUT_FILENO);
                execlp("node", "node", script, "--port", port, "--client-id", CLIENT_ID,
                       "--client-secret", SECRET, "--redirect-uri", REDIRECT, "--alg", op->alg,
                       "--auth", op->auth, (char *)NULL);
                _exit(127);
        }
        close(out[1]);
        op->pid = pid;
        if (n_live_ops == 0)
                atexit(ops_cleanup);
        bool known = false;
        for (size_t i = 0; i < n_live_ops; i++)
                known = known || live_ops[i] == op;
        if (!known && n_live_ops < ELEMENTSOF(live_ops))
                live_ops[n_live_ops++] = op;

        char buf[512] = "";
        size_t len = 0;
        long long deadline = mono_ms() + 30000;
        while (!strstr(buf, "READY")) {
                long long left = deadline - mono_ms();
                cr_assert(left > 0, "the OIDC provider did not print READY: %s", buf);
                struct pollfd p = {.fd = out[0], .events = POLLIN};
                if (poll(&p, 1, (int)left) <= 0)
                        continue;
                ssize_t k = read(out[0], buf + len, sizeof(buf) - 1 - len);
                cr_assert(k > 0, "the OIDC provider exited before READY: %s", buf);
                len += (size_t)k;
                buf[len] = '\0';
        }
        close(out[0]);
}

static Op *op_new(const char *alg, const char *auth)
{
        Op *op = calloc(1, sizeof(*op));
        cr_assert(op);
        snprintf(op->alg, sizeof(op->alg), "%s", alg);
        snprintf(op->auth, sizeof(op->auth), "%s", auth);
        op_start(op);
        return op;
}

/* ---- a browser: one cookie jar, no automatic redirects ---- */

typedef struct Browser {
        CURL *h;
} Browser;

static Browser *browser_new(void)
{
        Browser *b = calloc(1, sizeof(*b));
        cr_assert(b);
        b->h = curl_easy_init();
        cr_assert(b->h);
        curl_easy_setopt(b->h, CURLOPT_COOKIEFILE, ""); /* in-memory jar */
        return b;
}

static void browser_free(Browser *b)
{
        curl_easy_cleanup(b->h);
        free(b);
}

typedef struct Got {
        HttpResponse *r;
        char *location;
} Got;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
        HttpResponse *r = ud;
        size_t k = size * n;
        char *d = realloc(r->body, r->body_len + k + 1);
        if (!d)
                return 0;
        memcpy(d + r->body_len, p, k);
        r->body = d;
        r->body_len += k;
        r->body[r->body_len] = '\0';
        return k;
}

static char *header_value(const char *line, size_t len, const char *name)
{
        size_t nl = strlen(name);
        if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
                return NULL;
        const char *v = line + nl + 1, *end = line + len;
        while (v < end && *v == ' ')
                v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n'))
                end--;
        return strndup(v, (size_t)(end - v));
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
        HttpResponse *r = ud;
        size_t k = size * n;
        char *v;
        if ((v = header_value(p, k, "x-request-id"))) {
                free(r->request_id);
                r->request_id = v;
        }
        if ((v = header_value(p, k, "content-type"))) {
                free(r->content_type);
                r->content_type = v;
        }
        return k;
}

/* One request; body NULL: GET. content_type defaults to JSON. */
static Got browse(Browser *b, const char *url, const char *body, const char *content_type)
{
        HttpResponse *r = calloc(1, sizeof(*r));
        cr_assert(r);
        CURL *h = b->h;
        struct curl_slist *hdrs = NULL;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
        if (body) {
                hdrs = curl_slist_append(NULL, content_type ? content_type
                                                            : "Content-Type: application/json");
                curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        } else {
                curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
                curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        }
        r->curl_code = curl_easy_perform(h);
        curl_slist_free_all(hdrs);
        cr_assert(r->curl_code == CURLE_OK, "%s: %s", url, curl_easy_strerror(r->curl_code));
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
        char *loc = NULL;
        curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc);
        if (r->body)
                r->json = json_loads(r->body, 0, NULL);
        return (Got){.r = r, .location = loc ? strdup(loc) : NULL};
}

static void got_free(Got *g)
{
        http_response_free(g->r);
        free(g->location);
}

/* The value of a query parameter in a URL (malloc'ed, not decoded). */
static char *url_param(const char *url, const char *name)
{
        char key[64];
        snprintf(key, sizeof(key), "%s=", name);
        for (const char *p = strchr(url, '?'); p; p = strchr(p + 1, '&')) {
                if (strncmp(p + 1, key, strlen(key)) == 0) {
                        const char *v = p + 1 + strlen(key);
                        return strndup(v, strcspn(v, "&#"));
                }
        }
        return NULL;
}

/* ---- the flow ---- */

typedef struct Login {
        const char *provider;  /* NULL: default */
        const char *account;   /* subject at the provider */
        const char *email;     /* NULL: <account>@example.com */
        bool unverified;       /* email_verified false */
        const char *bad_nonce; /* replaces the nonce on the way to the provider */
} Login;

typedef struct Redirect {
        char *code, *state, *iss;
} Redirect;

static void redirect_done(Redirect *r)
{
        free(r->code);
        free(r->state);
        free(r->iss);
}

/* authorize on the controller, then log in at the provider; returns what the
 * provider sends back to the redirect URI. */
static Redirect provider_round(const Controller *c, Browser *b, const Login *l)
{
        char url[512];
        snprintf(url, sizeof(url), "%s" AUTHORIZE "?redirect_uri=%s%s%s", c->url,
                 "http%3A%2F%2F127.0.0.1%3A9%2Foidc%2Fcallback", l->provider ? "&provider=" : "",
                 l->provider ? l->provider : "");
        Got a = browse(b, url, NULL, NULL);
        cr_assert_eq(a.r->status, 302, "authorize: %ld %s", a.r->status, a.r->body);
        cr_assert(a.location, "authorize without Location");
        _cleanup_free_ char *challenge = url_param(a.location, "code_challenge");
        _cleanup_free_ char *method = url_param(a.location, "code_challenge_method");
        cr_assert(challenge && strlen(challenge) == 43, "PKCE S256 challenge: %s", a.location);
        cr_assert_str_eq(method, "S256");
        _cleanup_free_ char *auth_url = strdup(a.location);
        got_free(&a);
        if (l->bad_nonce) {
                char *n = strstr(auth_url, "&nonce=");
                cr_assert(n);
                size_t keep = (size_t)(n - auth_url) + 7;
                const char *rest = n + 7 + strcspn(n + 7, "&");
                char *u = NULL;
                cr_assert(asprintf(&u, "%.*s%s%s", (int)keep, auth_url, l->bad_nonce, rest) > 0);
                free(auth_url);
                auth_url = u;
        }

        Got p = browse(b, auth_url, NULL, NULL);
        cr_assert_eq(p.r->status, 303, "provider /auth: %ld %s", p.r->status, p.r->body);
        cr_assert(p.location && strstr(p.location, "/interaction/"), "%s", p.location);
        char login_url[512], form[512];
        snprintf(login_url, sizeof(login_url), "%s/login", p.location);
        got_free(&p);
        snprintf(form, sizeof(form), "login=%s&email=%s%s%s&email_verified=%s&name=%s", l->account,
                 l->email ? l->email : l->account, l->email ? "" : "%40example.com", "",
                 l->unverified ? "false" : "true", l->account);
        Got lg = browse(b, login_url, form, "Content-Type: application/x-www-form-urlencoded");
        cr_assert_eq(lg.r->status, 303, "interaction login: %ld %s", lg.r->status, lg.r->body);
        Got resume = browse(b, lg.location, NULL, NULL);
        got_free(&lg);
        cr_assert_eq(resume.r->status, 303, "resume: %ld %s", resume.r->status, resume.r->body);
        cr_assert(resume.location && strncmp(resume.location, REDIRECT, strlen(REDIRECT)) == 0,
                  "redirect: %s", resume.location);
        Redirect rd = {.code = url_param(resume.location, "code"),
                       .state = url_param(resume.location, "state"),
                       .iss = url_param(resume.location, "iss")};
        got_free(&resume);
        cr_assert(rd.code && rd.state && rd.iss, "redirect without code/state/iss");
        return rd;
}

static HttpResponse *exchange(const Controller *c, Browser *b, const char *code, const char *state)
{
        char url[300], body[2048];
        snprintf(url, sizeof(url), "%s" EXCHANGE, c->url);
        snprintf(body, sizeof(body), "{\"code\":\"%s\",\"state\":\"%s\"}", code, state);
        Got g = browse(b, url, body, NULL);
        free(g.location);
        return g.r;
}

/* The whole sign-in; the exchange's answer. */
static HttpResponse *sign_in(const Controller *c, Browser *b, const Login *l)
{
        Redirect rd = provider_round(c, b, l);
        HttpResponse *r = exchange(c, b, rd.code, rd.state);
        redirect_done(&rd);
        return r;
}

static Controller *controller_for(const Op *op)
{
        Controller *c = ctl_new();
        ctl_args(c, "--oidc-issuer", op->issuer, "--oidc-client-id", CLIENT_ID,
                 "--oidc-client-secret", SECRET, "--oidc-redirect-uri", REDIRECT, NULL);
        if (streq(op->auth, "client_secret_post"))
                ctl_args(c, "--oidc-token-auth-method", "client_secret_post", NULL);
        return c;
}

static long long count(const Controller *c, const char *sql)
{
        return db_scalar(c, sql);
}

static long long audit_reason(const Controller *c, const char *reason)
{
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM audit_logs WHERE action='auth.oidc_failed' AND reason='%s'",
                 reason);
        return count(c, sql);
}

static long long op_stat(const Op *op, const char *name)
{
        Browser *b = browser_new();
        char url[128];
        snprintf(url, sizeof(url), "%s/__test/stats", op->issuer);
        Got g = browse(b, url, NULL, NULL);
        long long v = json_integer_value(json_object_get(g.r->json, name));
        got_free(&g);
        browser_free(b);
        return v;
}

static void op_mode(const Op *op, const char *mode)
{
        Browser *b = browser_new();
        char url[128];
        snprintf(url, sizeof(url), "%s/__test/mode", op->issuer);
        Got g = browse(b, url, mode, "Content-Type: text/plain");
        cr_assert_eq(g.r->status, 200);
        got_free(&g);
        browser_free(b);
}

/* A refusal: the envelope, the reason, nothing created, one audit row. */
static void assert_refused(const Controller *c, HttpResponse *r, long status, const char *code,
                           const char *reason, DbCounts before)
{
        assert_error(r, status, code);
        cr_assert_str_eq(strempty(jstr(r, "error.details.reason")), reason, "%s", r->body);
        assert_counts_equal(before, db_counts(c));
        cr_assert_geq(audit_reason(c, reason), 1, "no auth.oidc_failed audit row for %s", reason);
}

/* ---- tests ---- */

Test(oidc, rs256_sign_in_creates_then_reuses_the_user)
{
        Op *op = op_new("RS256", "client_secret_basic");
        _cleanup_ctl_ Controller *c = controller_for(op);
        ctl_start_or_fail(c);

        Browser *b = browser_new();
        _cleanup_resp_ HttpResponse *r = sign_in(c, b, &(Login){.account = "alice"});
        cr_assert_eq(r->status, 200, "%s", r->body);
        cr_assert(startswith(strempty(jstr(r, "access_token")), "gsa_"));
        cr_assert(startswith(strempty(jstr(r, "refresh_token")), "gsr_"));
        cr_assert_str_eq(strempty(jstr(r, "user.email")), "alice@example.com");
        cr_assert_str_eq(strempty(jstr(r, "token_type")), "Bearer");
        const char *uid = jstr(r, "user.id");
        cr_assert(startswith(strempty(uid), "usr_"));
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM users WHERE password_hash IS NULL"), 1,
                     "an SSO user has no password");
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM user_identities WHERE issuer='%s' AND subject='alice' "
                 "AND user_id='%s'",
                 op->issuer, uid);
        cr_assert_eq(count(c, sql), 1);
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM audit_logs WHERE action='user.oidc_signup'"),
                     1);
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM audit_logs WHERE action='auth.oidc_login'"), 1);
        _cleanup_resp_ HttpResponse *me = api_get(c, "/api/v1/me", jstr(r, "access_token"));
        cr_assert_eq(me->status, 200, "%s", me->body);

        /* another browser, same subject: the same user, a new session */
        Browser *b2 = browser_new();
        _cleanup_resp_ HttpResponse *r2 = sign_in(c, b2, &(Login){.account = "alice"});
        cr_assert_eq(r2->status, 200, "%s", r2->body);
        cr_assert_str_eq(jstr(r2, "user.id"), uid);
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM users"), 1);
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM sessions"), 2);
        /* discovery and keys were fetched once and cached */
        cr_assert_eq(op_stat(op, "discovery_requests"), 1);
        cr_assert_eq(op_stat(op, "jwks_requests"), 1);

        /* no password: a password login fails like a wrong one */
        cr_assert_eq(api_login(c, "alice@example.com", "anything-at-all", NULL), 401);
        browser_free(b);
        browser_free(b2);
        ctl_stop_clean(c);
        op_free(op);
}

Test(oidc, es256_provider_from_file_with_client_secret_post)
{
        Op *rs = op_new("RS256", "client_secret_basic");
        Op *es = op_new("ES256", "client_secret_post");
        _cleanup_ctl_ Controller *c = controller_for(rs);
        char path[600], json[1024];
        snprintf(path, sizeof(path), "%s/providers.json", c->root);
        snprintf(json, sizeof(json),
                 "{\"providers\":[{\"name\":\"corp\",\"issuer\":\"%s\",\"client_id\":\"" CLIENT_ID
                 "\",\"client_secret\":\"" SECRET "\",\"redirect_uris\":[\"" REDIRECT "\"],"
                 "\"token_auth_method\":\"client_secret_post\"}]}",
                 es->issuer);
        cr_assert(write_file(path, json) == 0);
        ctl_args(c, "--oidc-providers-file", path, NULL);
        ctl_start_or_fail(c);

        Browser *b = browser_new();
        _cleanup_resp_ HttpResponse *r =
            sign_in(c, b, &(Login){.provider = "corp", .account = "erin"});
        cr_assert_eq(r->status, 200, "%s", r->body);
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT COUNT(*) FROM user_identities WHERE issuer='%s' AND subject='erin'",
                 es->issuer);
        cr_assert_eq(count(c, sql), 1, "linked under the ES256 provider's issuer");
        cr_assert_eq(op_stat(rs, "token_requests"), 0, "the default provider was not asked");

        /* the default provider still works beside it */
        Browser *b2 = browser_new();
        _cleanup_resp_ HttpResponse *r2 = sign_in(c, b2, &(Login){.account = "erin"});
        cr_assert_eq(r2->status, 200, "%s", r2->body);
        /* another issuer is another identity; the verified email links it to
         * the account the first provider created */
        cr_assert_str_eq(jstr(r2, "user.id"), jstr(r, "user.id"));
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM user_identities"), 2);
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM users"), 1);
        browser_free(b);
        browser_free(b2);
        ctl_stop_clean(c);
        op_free(rs);
        op_free(es);
}

Test(oidc, replayed_code_and_state_are_refused)
{
        Op *op = op_new("RS256", "client_secret_basic");
        _cleanup_ctl_ Controller *c = controller_for(op);
        ctl_start_or_fail(c);
        Browser *b = browser_new();
        Redirect rd = provider_round(c, b, &(Login){.account = "carol"});
        _cleanup_resp_ HttpResponse *ok = exchange(c, b, rd.code, rd.state);
        cr_assert_eq(ok->status, 200, "%s", ok->body);

        DbCounts before = db_counts(c);
        _cleanup_resp_ HttpResponse *again = exchange(c, b, rd.code, rd.state);
        assert_refused(c, again, 401, "unauthenticated", "state_used", before);

        /* a fresh state with the spent code: the provider refuses the code */
        char url[512];
        snprintf(url, sizeof(url), "%s" AUTHORIZE, c->url);
        Got a = browse(b, url, NULL, NULL);
        cr_assert_eq(a.r->status, 302);
        _cleanup_free_ char *state2 = url_param(a.location, "state");
        got_free(&a);
        _cleanup_resp_ HttpResponse *code_again = exchange(c, b, rd.code, state2);
        assert_refused(c, code_again, 401, "unauthenticated", "code_rejected", before);
        redirect_done(&rd);
        browser_free(b);
        ctl_stop_clean(c);
        op_free(op);
}

Test(oidc, wrong_state_or_foreign_browser_is_refused)
{
        Op *op = op_new("RS256", "client_secret_basic");
        _cleanup_ctl_ Controller *c = controller_for(op);
        ctl_start_or_fail(c);
        Browser *victim = browser_new(), *attacker = browser_new();
        Redirect rd = provider_round(c, victim, &(Login){.account = "dave"});
        DbCounts before = db_counts(c);

        _cleanup_resp_ HttpResponse *bogus =
            exchange(c, victim, rd.code, "not-a-state-this-controller-issued");
        assert_refused(c, bogus, 401, "unauthenticated", "state_unknown", before);

        /* the right state from another browser (no binder cookie) */
        _cleanup_resp_ HttpResponse *foreign = exchange(c, attacker, rd.code, rd.state);
        assert_refused(c, foreign, 401, "unauthenticated", "state_not_bound", before);
        cr_assert_eq(op_stat(op, "token_requests"), 0, "refused before the code was redeemed");

        /* the browser that started it can still finish */
        _cleanup_resp_ HttpResponse *ok = exchange(c, victim, rd.code, rd.state);
        cr_assert_eq(ok->status, 200, "%s", ok->body);
        redirect_done(&rd);
        browser_free(victim);
        browser_free(attacker);
        ctl_stop_clean(c);
        op_free(op);
}

Test(oidc, wrong_nonce_is_refused)
{
        Op *op = op_new("RS256", "client_secret_basic");
        _cleanup_ctl_ Controller *c = controller_for(op);
        ctl_start_or_fail(c);
        Browser *b = browser_new();
        DbCounts before = db_counts(c);
        _cleanup_resp_ HttpResponse *r =
            sign_in(c, b, &(Login){.account = "eve", .bad_nonce = "attacker-chosen-nonce"});
        assert_refused(c, r, 401, "unauthenticated", "nonce_mismatch", before);
        browser_free(b);
        ctl_stop_clean(c);
        op_free(op);
}

Test(oidc, expired_tampered_and_forged_id_tokens_are_refused)
{
        Op *op = op_new("ES256", "client_secret_basic");
        _cleanup_ctl_ Controller *c = controller_for(op);
        ctl_start_or_fail(c);
        static const struct {
                const char *mode, *reason;
        } cases[] = {
            {"expired", "id_token_expired"},       {"tamper", "bad_signature"},
            {"alg_none", "algorithm_not_allowed"}, {"hs256", "algorithm_not_allowed"},
            {"wrong_aud", "audience_mismatch"},    {"multi_aud_no_azp", "azp_mismatch"},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                op_mode(op, cases[i].mode);
                Browser *b = browser_new();
                DbCounts before = db_counts(c);
                _cleanup_resp_ HttpResponse *r = sign_in(c, b, &(Login){.account = "frank"});
                assert_refused(c, r, 401, "unauthenticated", cases[i].reason, before);
                cr_assert_eq(count(c, "SELECT COUNT(*) FROM user_identities"), 0);
                browser_free(b);
        }
        op_mode(op, "normal");
        Browser *b = browser_new();
        _cleanup_resp_ HttpResponse *ok = sign_in(c, b, &(Login){.account = "frank"});
        cr_assert_eq(ok->status, 200, "the same provider signs in when tokens are honest: %s",
                     ok->body);
        browser_free(b);
        ctl_stop_clean(c);
        op_free(op);
}

Test(oidc, key_rotation_refetches_jwks_once)
{
        Op *op = op_new("RS256", "client_secret_basic");
        _cleanup_ctl_ Controller *c = controller_for(op);
        ctl_start_or_fail(c);
        Browser *b = browser_new();
        _cleanup_resp_ HttpResponse *first = sign_in(c, b, &(Login){.account = "grace"});
        cr_assert_eq(first->status, 200, "%s", first->body);

        /* restart on the same issuer: new keys, the controller's cache is stale */
        op_stop(op);
        op_start(op);
        Browser *b2 = browser_new();
        _cleanup_resp_ HttpResponse *after = sign_in(c, b2, &(Login){.account = "grace"});
        cr_assert_eq(after->status, 200, "unknown kid must re-fetch the JWKS: %s", after->body);
        cr_assert_str_eq(jstr(after, "user.id"), jstr(first, "user.id"));
        cr_assert_eq(op_stat(op, "jwks_requests"), 1);
        cr_assert_eq(op_stat(op, "discovery_requests"), 0, "discovery stays cached");

        /* another unknown kid right away: no second fetch (rate limited), refused */
        op_mode(op, "unknown_kid");
        Browser *b3 = browser_new();
        DbCounts before = db_counts(c);
        _cleanup_resp_ HttpResponse *stray = sign_in(c, b3, &(Login){.account = "grace"});
        assert_refused(c, stray, 401, "unauthenticated", "unknown_key", before);
        cr_assert_eq(op_stat(op, "jwks_requests"), 1, "an attacker cannot make us hammer JWKS");
        browser_free(b);
        browser_free(b2);
        browser_free(b3);
        ctl_stop_clean(c);
        op_free(op);
}

Test(oidc, provider_down_is_503_and_creates_nothing)
{
        Op *op = op_new("RS256", "client_secret_basic");
        _cleanup_ctl_ Controller *c = controller_for(op);
        ctl_start_or_fail(c);
        Browser *b = browser_new();
        Redirect rd = provider_round(c, b, &(Login){.account = "heidi"});
        op_stop(op);
        DbCounts before = db_counts(c);
        _cleanup_resp_ HttpResponse *r = exchange(c, b, rd.code, rd.state);
        assert_refused(c, r, 503, "unavailable", "provider_unavailable", before);
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM user_identities"), 0);
        redirect_done(&rd);
        ctl_stop_clean(c);

        /* a cold controller cannot even start the sign-in */
        _cleanup_ctl_ Controller *cold = controller_for(op);
        ctl_start_or_fail(cold);
        char url[512];
        snprintf(url, sizeof(url), "%s" AUTHORIZE, cold->url);
        Got a = browse(b, url, NULL, NULL);
        assert_error(a.r, 503, "unavailable");
        cr_assert_eq(count(cold, "SELECT COUNT(*) FROM oidc_states"), 0);
        got_free(&a);
        browser_free(b);
        ctl_stop_clean(cold);
        op_free(op);
}

Test(oidc, existing_account_is_linked_only_on_a_verified_email)
{
        Op *op = op_new("RS256", "client_secret_basic");
        _cleanup_ctl_ Controller *c = controller_for(op);
        ctl_start_or_fail(c);
        Tokens t;
        cr_assert_eq(api_signup(c, "ivan@example.com", "correct horse", "Ivan", &t), 201);

        Browser *b = browser_new();
        DbCounts before = db_counts(c);
        _cleanup_resp_ HttpResponse *unverified =
            sign_in(c, b, &(Login){.account = "ivan", .unverified = true});
        assert_refused(c, unverified, 409, "email_taken", "email_not_verified", before);
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM user_identities"), 0);

        Browser *b2 = browser_new();
        _cleanup_resp_ HttpResponse *verified = sign_in(c, b2, &(Login){.account = "ivan"});
        cr_assert_eq(verified->status, 200, "%s", verified->body);
        cr_assert_str_eq(jstr(verified, "user.id"), t.user_id, "linked to the existing account");
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM users"), 1);
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM audit_logs WHERE action='auth.oidc_linked'"),
                     1);
        cr_assert_eq(api_login(c, "ivan@example.com", "correct horse", NULL), 200,
                     "the password still works");
        browser_free(b);
        browser_free(b2);
        ctl_stop_clean(c);
        op_free(op);
}

Test(oidc, bad_requests_and_configuration)
{
        /* not configured: 503 unavailable on both routes */
        _cleanup_ctl_ Controller *off = ctl_new();
        ctl_start_or_fail(off);
        _cleanup_resp_ HttpResponse *a0 = api_get(off, AUTHORIZE, NULL);
        assert_error(a0, 503, "unavailable");
        cr_assert_str_eq(strempty(jstr(a0, "error.details.reason")), "oidc_not_configured");
        _cleanup_resp_ HttpResponse *e0 =
            api_post(off, EXCHANGE, NULL, "{\"code\":\"x\",\"state\":\"y\"}");
        assert_error(e0, 503, "unavailable");
        ctl_stop_clean(off);

        /* half configured: refuses to start */
        _cleanup_ctl_ Controller *half = ctl_new();
        ctl_args(half, "--oidc-issuer", "http://127.0.0.1:1", NULL);
        cr_assert_eq(ctl_start(half), -ECHILD);
        cr_assert_neq(cli_exit_code(half->wait_status), 0);

        Op *op = op_new("RS256", "client_secret_basic");
        _cleanup_ctl_ Controller *c = controller_for(op);
        ctl_start_or_fail(c);
        _cleanup_resp_ HttpResponse *r1 =
            api_get(c, AUTHORIZE "?redirect_uri=https%3A%2F%2Fevil.example%2Fcb", NULL);
        assert_invalid_field(r1, "redirect_uri");
        _cleanup_resp_ HttpResponse *r2 = api_get(c, AUTHORIZE "?provider=nope", NULL);
        assert_invalid_field(r2, "provider");
        _cleanup_resp_ HttpResponse *r3 = api_post(c, EXCHANGE, NULL, "{\"state\":\"y\"}");
        assert_invalid_field(r3, "code");
        _cleanup_resp_ HttpResponse *r4 =
            api_post(c, EXCHANGE, NULL, "{\"code\":\"x\",\"state\":\"y\",\"extra\":1}");
        assert_invalid_field(r4, "extra");
        cr_assert_eq(count(c, "SELECT COUNT(*) FROM oidc_states"), 0);
        ctl_stop_clean(c);
        op_free(op);
}
