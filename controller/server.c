/* SPDX-License-Identifier: MIT */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <h2o.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <systemd/sd-daemon.h>

#include "agent-link.h"
#include "async.h"
#include "audit.h"
#include "ca.h"
#include "console.h"
#include "http.h"
#include "log.h"
#include "metering.h"
#include "nodes.h"
#include "placement.h"
#include "provisioner.h"
#include "oidc-provider.h"
#include "routes.h"

typedef struct ServerInternal {
        h2o_globalconf_t h2o_config;
        h2o_context_t h2o_ctx;
        h2o_accept_ctx_t accept_ctx;
        SSL_CTX *ssl_ctx;
        uv_tcp_t listener;
        bool listener_open;
        uv_signal_t sigterm, sigint;
        uv_timer_t shutdown_timer;
        usec_t shutdown_deadline;
        size_t max_body_bytes;
        /* Access hardening: request rate limits, CORS, TLS-only headers. */
        RateLimiter *address_rl;     /* per client address (IPv6: per /64); NULL: off */
        RateLimiter *session_rl;     /* per signed-in session; NULL: off */
        RateLimiter *limit_audit_rl; /* one audit row per minute per limited key */
        char **cors_origins;         /* exact allowed origins */
        size_t n_cors_origins;
} ServerInternal;

typedef struct Handler {
        h2o_handler_t super;
        Server *server;
} Handler;

uv_loop_t *server_loop(Server *s)
{
        return s->loop;
}

void server_job_started(Server *s)
{
        s->inflight_jobs++;
}

void server_job_finished(Server *s)
{
        s->inflight_jobs--;
}

/* The request's Origin header when it is one of cors_allowed_origins. */
static bool cors_origin(Request *r, h2o_iovec_t *ret)
{
        ServerInternal *in = r->server->internal;
        if (in->n_cors_origins == 0)
                return false;
        h2o_req_t *req = r->req;
        ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
        if (i < 0)
                return false;
        h2o_iovec_t v = req->headers.entries[i].value;
        for (size_t k = 0; k < in->n_cors_origins; k++)
                if (h2o_memis(v.base, v.len, in->cors_origins[k], strlen(in->cors_origins[k]))) {
                        *ret = v;
                        return true;
                }
        return false;
}

void server_add_common_headers(Request *r)
{
        h2o_req_t *req = r->req;
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                       H2O_STRLIT("no-store"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"),
                              0, NULL, H2O_STRLIT("nosniff"));
        /* An API answer is never a page: nothing may frame it, load from it or
         * learn where the user came from. */
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-frame-options"), 0, NULL,
                              H2O_STRLIT("DENY"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"),
                              0, NULL, H2O_STRLIT("default-src 'none'; frame-ancestors 'none'"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL,
                              H2O_STRLIT("no-referrer"));
        if (r->server->internal->ssl_ctx)
                h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_STRICT_TRANSPORT_SECURITY,
                               NULL, H2O_STRLIT("max-age=31536000"));
        if (r->server->internal->n_cors_origins == 0)
                return;
        /* The answer depends on Origin whenever CORS is on, allowed or not. */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
        h2o_iovec_t origin;
        if (!cors_origin(r, &origin))
                return;
        /* The exact origin, never "*"; no Allow-Credentials: the API takes
         * bearer tokens, not cookies. */
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
                       origin.base, origin.len);
        h2o_add_header_by_str(&req->pool, &req->res.headers,
                              H2O_STRLIT("access-control-expose-headers"), 0, NULL,
                              H2O_STRLIT("X-Request-Id, Retry-After, Location"));
}

static void request_dispose(void *p)
{
        Request *r = p;
        async_request_gone(r);
        r->server->inflight_requests--;
}

static void set_request_id(Request *r)
{
        /* Keep a caller's id when it is sane, so traces join up across services. */
        h2o_req_t *req = r->req;
        ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
        if (i >= 0) {
                h2o_iovec_t v = req->headers.entries[i].value;
                bool ok = v.len >= 8 && v.len < sizeof(r->request_id);
                for (size_t k = 0; ok && k < v.len; k++) {
                        char c = v.base[k];
                        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                             (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
                }
                if (ok) {
                        memcpy(r->request_id, v.base, v.len);
                        r->request_id[v.len] = '\0';
                        return;
                }
        }
        /* A random per-process prefix and a counter: unique across restarts
         * without a CSPRNG call (and its getpid()) on every request. */
        static char prefix[16];
        static uint64_t counter;
        if (!prefix[0] && random_token(9, prefix, sizeof(prefix)) < 0)
                snprintf(prefix, sizeof(prefix), "%08x", (unsigned)getpid());
        snprintf(r->request_id, sizeof(r->request_id), "req_%s%08" PRIx64, prefix, ++counter);
}

static void set_client_addr(Request *r)
{
        struct sockaddr_storage ss;
        socklen_t len = r->req->conn->callbacks->get_peername(r->req->conn, (void *)&ss);
        r->client_addr[0] = '\0';
        if (len == 0)
                return;
        if (ss.ss_family == AF_INET)
                inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, r->client_addr,
                          sizeof(r->client_addr));
        else if (ss.ss_family == AF_INET6)
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, r->client_addr,
                          sizeof(r->client_addr));
}

/* ---- request rate limits ---- */

/* The address bucket's key: an IPv4 address, or an IPv6 /64 (one host
 * usually has a whole /64, so per address would be no limit at all). */
static void address_key(const char *addr, char *key, size_t size)
{
        struct in6_addr a6;
        if (strchr(addr, ':') && inet_pton(AF_INET6, addr, &a6) == 1 &&
            !IN6_IS_ADDR_V4MAPPED(&a6)) {
                char net[INET6_ADDRSTRLEN];
                memset(a6.s6_addr + 8, 0, 8);
                inet_ntop(AF_INET6, &a6, net, sizeof(net));
                snprintf(key, size, "%s/64", net);
                return;
        }
        snprintf(key, size, "%s", addr);
}

void server_audit_rate_limited(Request *r, const char *scope, const char *key,
                               unsigned retry_after_s)
{
        Server *s = r->server;
        char throttle_key[256];
        snprintf(throttle_key, sizeof(throttle_key), "%s:%s", scope, key);
        if (!ratelimit_take(s->internal->limit_audit_rl, throttle_key, now_mono_usec(), NULL))
                return;
        h2o_req_t *req = r->req;
        _cleanup_txn_ DbTxn txn = {0};
        if (db_begin(s->db, &txn) >= 0 &&
            audit_log(s->db, r->auth.authenticated ? r->auth.user_id : NULL, "http.rate_limited",
                      scope, key, "rate_limited",
                      json_pack("{s:s, s:s%, s:I}", "client_addr", r->client_addr, "path",
                                req->path_normalized.base, req->path_normalized.len,
                                "retry_after_s", (json_int_t)retry_after_s)) >= 0)
                (void)db_commit(&txn);
}

static int reply_rate_limited(Request *r, const char *scope, const char *key, unsigned retry)
{
        char v[16];
        snprintf(v, sizeof(v), "%u", retry);
        server_audit_rate_limited(r, scope, key, retry);
        http_add_header(r, "retry-after", v);
        return http_reply_error(
            r, ERR_RATE_LIMITED,
            json_pack("{s:I, s:s}", "retry_after_s", (json_int_t)retry, "scope", scope),
            "too many requests; try again in %u s", retry);
}

/* Load balancers probe these often from one address; they do no real work. */
static bool is_probe(const h2o_req_t *req)
{
        h2o_iovec_t p = req->path_normalized;
        return h2o_memis(p.base, p.len, H2O_STRLIT("/api/v1/health")) ||
               h2o_memis(p.base, p.len, H2O_STRLIT("/api/v1/ready"));
}

/* 1 when the request may go on; 0 when a 429 was sent. */
static int limit_address(Request *r)
{
        RateLimiter *rl = r->server->internal->address_rl;
        if (!rl || is_probe(r->req))
                return 1;
        char key[sizeof(r->client_addr) + 8]; /* an address, or an IPv6 /64 */
        unsigned retry = 1;
        address_key(r->client_addr, key, sizeof(key));
        if (ratelimit_take(rl, key, now_mono_usec(), &retry))
                return 1;
        reply_rate_limited(r, "address", key, retry);
        return 0;
}

static int limit_session(Request *r)
{
        RateLimiter *rl = r->server->internal->session_rl;
        unsigned retry = 1;
        if (!rl || ratelimit_take(rl, r->auth.session_id, now_mono_usec(), &retry))
                return 1;
        reply_rate_limited(r, "session", r->auth.session_id, retry);
        return 0;
}

/* ---- CORS preflight ---- */

static bool is_preflight(const h2o_req_t *req)
{
        return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")) &&
               h2o_find_header_by_str(&req->headers, H2O_STRLIT("access-control-request-method"),
                                      -1) >= 0;
}

/* Answered before routing: 204 with what the path allows for an allowed
 * origin; 403 without any CORS header for every other origin, so the browser
 * refuses and a script sees why. */
static int reply_preflight(Request *r)
{
        h2o_iovec_t origin;
        if (!cors_origin(r, &origin))
                return http_reply_error(r, ERR_FORBIDDEN,
                                        json_pack("{s:s}", "reason", "origin_not_allowed"),
                                        "cross-origin requests from this origin are not allowed");
        h2o_req_t *req = r->req;
        RouteMatch m;
        if (routes_match(req->method.base, req->method.len, req->path_normalized.base,
                         req->path_normalized.len, &m) == ROUTE_NO_PATH)
                return http_reply_error(r, ERR_NOT_FOUND, NULL, "no such endpoint");
        http_add_header(r, "access-control-allow-methods", m.allow);
        http_add_header(r, "access-control-allow-headers",
                        "authorization, content-type, idempotency-key, x-request-id");
        http_add_header(r, "access-control-max-age", "600");
        return http_reply_empty(r, 204);
}

static int authenticate(Request *r)
{
        const char *token = http_bearer_token(r);
        if (!token)
                return http_reply_error(r, ERR_UNAUTHENTICATED, NULL,
                                        "sign in first: send Authorization: Bearer <access token>");
        Server *s = r->server;
        unsigned char hash[SESSION_TOKEN_HASH_SIZE];
        usec_t now_mono = now_mono_usec();
        sessions_token_hash(token, hash);
        int ret = 0;
        if (!session_cache_lookup(s->session_cache, hash, now_usec(), now_mono, &r->auth)) {
                ret = sessions_authenticate(s->db, token, &r->auth);
                if (ret == 0)
                        session_cache_insert(s->session_cache, hash, &r->auth, now_mono);
        }
        if (ret == -ENOENT || ret == -EKEYEXPIRED || ret == -EKEYREVOKED) {
                const char *why = ret == -EKEYEXPIRED   ? "expired"
                                  : ret == -EKEYREVOKED ? "revoked"
                                                        : "unknown";
                return http_reply_error(r, ERR_UNAUTHENTICATED, json_pack("{s:s}", "token", why),
                                        "the access token is %s", why);
        }
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot check the session now");
        if (!limit_session(r))
                return 0;
        if ((r->auth.roles & r->route->roles) == 0)
                return http_reply_error(r, ERR_FORBIDDEN, NULL,
                                        "your role does not allow this request");
        return 1;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
        Server *s = ((Handler *)self)->server;
        Request *r = h2o_mem_alloc_shared(&req->pool, sizeof(Request), request_dispose);
        *r = (Request){.req = req, .server = s};
        s->inflight_requests++;
        set_request_id(r);
        set_client_addr(r);
        if (!limit_address(r))
                return 0;

        if (req->entity.base && req->entity.len > s->internal->max_body_bytes) {
                http_reply_error(
                    r, ERR_PAYLOAD_TOO_LARGE,
                    json_pack("{s:I}", "max_bytes", (json_int_t)s->internal->max_body_bytes),
                    "request body is larger than %zu bytes", s->internal->max_body_bytes);
                return 0;
        }

        if (is_preflight(req)) {
                reply_preflight(r);
                return 0;
        }

        size_t path_len = req->path_normalized.len;
        RouteMatch m;
        int found = routes_match(req->method.base, req->method.len, req->path_normalized.base,
                                 path_len, &m);
        if (found == ROUTE_NO_PATH) {
                http_reply_error(r, ERR_NOT_FOUND, NULL, "no such endpoint");
                return 0;
        }
        if (found == ROUTE_NO_METHOD) {
                http_add_header(r, "allow", m.allow);
                http_reply_error(r, ERR_METHOD_NOT_ALLOWED, NULL,
                                 "method not allowed here (allowed: %s)", m.allow);
                return 0;
        }
        r->route = m.route;
        r->n_params = m.n_params;
        memcpy(r->params, m.params, sizeof(m.params));

        if (r->route->roles != 0 && authenticate(r) <= 0)
                return 0;

        int ret = r->route->handler(r);
        if (ret < 0 && !r->responded && !r->job)
                http_reply_error(r, ERR_INTERNAL, NULL, "internal error (request %s)",
                                 r->request_id);
        return 0;
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss)
{
        char host[256];
        unsigned port;
        const char *colon = strrchr(listen, ':');
        if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof(host))
                return -EINVAL;
        if (sscanf(colon + 1, "%u", &port) != 1 || port > 65535)
                return -EINVAL;
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
        memset(ss, 0, sizeof(*ss));
        if (host[0] == '[') {
                size_t hl = strlen(host);
                if (hl < 3 || host[hl - 1] != ']')
                        return -EINVAL;
                host[hl - 1] = '\0';
                struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
                a6->sin6_family = AF_INET6;
                a6->sin6_port = htons((uint16_t)port);
                return inet_pton(AF_INET6, host + 1, &a6->sin6_addr) == 1 ? 0 : -EINVAL;
        }
        if (streq(host, "localhost"))
                snprintf(host, sizeof(host), "127.0.0.1");
        struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        return inet_pton(AF_INET, host, &a4->sin_addr) == 1 ? 0 : -EINVAL;
}

static void on_accept(uv_stream_t *listener, int status)
{
        Server *s = listener->data;
        if (status != 0)
                return;
        uv_tcp_t *conn = calloc(1, sizeof(*conn));
        if (!conn)
                return;
        uv_tcp_init(listener->loop, conn);
        if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
                uv_close((uv_handle_t *)conn, (uv_close_cb)free);
                return;
        }
        uv_tcp_nodelay(conn, 1);
        h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, (uv_close_cb)free);
        h2o_accept(&s->internal->accept_ctx, sock);
}

static int setup_tls(Server *s, const char *cert, const char *key)
{
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx)
                return -ENOMEM;
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
                SSL_CTX_free(ctx);
                return log_error_errno(-EINVAL, "cannot load TLS certificate | path=%s", cert);
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
                SSL_CTX_free(ctx);
                return log_error_errno(-EINVAL,
                                       "cannot load TLS key or it does not match | path=%s", key);
        }
        h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
        s->internal->ssl_ctx = ctx;
        return 0;
}

static int write_ready_file(const char *path, const char *url)
{
        _cleanup_free_ char *tmp = NULL;
        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        FILE *f = fopen(tmp, "we");
        if (!f)
                return -errno;
        fprintf(f, "%s\n", url);
        if (fclose(f) != 0)
                return -errno;
        return rename(tmp, path) < 0 ? -errno : 0;
}

static void close_listener(Server *s)
{
        if (s->internal->listener_open) {
                s->internal->listener_open = false;
                uv_close((uv_handle_t *)&s->internal->listener, NULL);
        }
}

static void on_shutdown_tick(uv_timer_t *t)
{
        Server *s = t->data;
        bool done = s->inflight_requests == 0 && s->inflight_jobs == 0;
        if (!done && now_mono_usec() < s->internal->shutdown_deadline)
                return;
        if (!done)
                log_warning("shutdown deadline passed | requests=%zu jobs=%zu",
                            s->inflight_requests, s->inflight_jobs);
        uv_timer_stop(t);
        uv_stop(s->loop);
}

static void on_signal(uv_signal_t *sig, int signum)
{
        Server *s = sig->data;
        if (s->shutting_down) {
                log_warning("second signal: stopping now | signal=%d", signum);
                uv_stop(s->loop);
                return;
        }
        s->shutting_down = true;
        log_info("shutting down | signal=%s in_flight=%zu", signum == SIGTERM ? "TERM" : "INT",
                 s->inflight_requests);
        sd_notify(0, "STOPPING=1");
        close_listener(s);
        metering_stop(TAKE_PTR(s->metering));
        /* Console sessions end with an error frame; the shutdown waits for them. */
        console_shutdown(s->console);
        /* HTTP/2 gets GOAWAY, HTTP/1 closes after the response in progress. */
        h2o_context_request_shutdown(&s->internal->h2o_ctx);
        s->internal->shutdown_deadline =
            now_mono_usec() +
            (usec_t)config_get_int(s->config, "shutdown_timeout_s") * USEC_PER_SEC;
        uv_timer_start(&s->internal->shutdown_timer, on_shutdown_tick, 0, 20);
}

int server_open_db(const char *state_dir, Db **ret)
{
        if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(-errno, "cannot create state directory | path=%s",
                                       state_dir);
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/gpuslice.db", state_dir) < 0)
                return log_oom();
        return db_open(path, ret);
}

/* The node CA, the controller epoch, and the agent link. */
static int start_nodes(Server *s)
{
        _cleanup_free_ char *ca_dir = NULL;
        if (asprintf(&ca_dir, "%s/ca", config_get(s->config, "state_dir")) < 0)
                return log_oom();
        int r = ca_open(ca_dir, &s->ca);
        if (r < 0)
                return r;
        r = controller_epoch_bump(s->db, &s->epoch);
        if (r >= 0)
                r = nodes_all_offline_flag(s->db);
        if (r < 0)
                return log_error_errno(r, "cannot bump the controller epoch");
        /* The placement index and the allocation tasks, before the link: the
         * replies that arrive after the first hello need both. */
        r = placement_new(&s->placement);
        if (r >= 0)
                r = placement_load(s->placement, s->db);
        if (r >= 0)
                r = provisioner_start(s, &s->provisioner);
        if (r < 0)
                return log_error_errno(r, "cannot start placement and the allocation tasks");
        r = console_new(s, &s->console);
        if (r < 0)
                return log_oom();
        r = agent_link_start(s, s->ca, &s->link);
        if (r < 0) {
                agent_link_stop(TAKE_PTR(s->link));
                return r;
        }
        log_info("controller epoch | epoch=%" PRIu64, s->epoch);
        return 0;
}

/* An origin is scheme://host[:port], nothing after it: browsers send exactly
 * that, and a comparison on anything looser would be a policy nobody wrote. */
static bool origin_valid(const char *o)
{
        const char *host = startswith(o, "https://")  ? o + 8
                           : startswith(o, "http://") ? o + 7
                                                      : NULL;
        if (!host || !*host)
                return false;
        for (const char *c = host; *c; c++)
                if (*c == '/' || *c == '*' || *c == '?' || *c == '#' || *c == '@' ||
                    (unsigned char)*c <= ' ')
                        return false;
        return true;
}

static int parse_cors_origins(ServerInternal *in, const char *list)
{
        if (!list)
                return 0;
        _cleanup_free_ char *copy = strdup(list);
        if (!copy)
                return log_oom();
        char *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                while (*tok == ' ' || *tok == '\t')
                        tok++;
                size_t n = strlen(tok);
                while (n > 0 && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
                        tok[--n] = '\0';
                if (n == 0)
                        continue;
                if (!origin_valid(tok))
                        return log_error_errno(-EINVAL,
                                               "cors_allowed_origins: not an exact origin "
                                               "(scheme://host[:port], no path, no \"*\") | "
                                               "origin=%s",
                                               tok);
                char **a = reallocarray(in->cors_origins, in->n_cors_origins + 1, sizeof(char *));
                if (!a)
                        return log_oom();
                in->cors_origins = a;
                if (!(a[in->n_cors_origins] = strdup(tok)))
                        return log_oom();
                in->n_cors_origins++;
        }
        return 0;
}

/* Request rate limits and CORS, from the settings. */
static int start_hardening(Server *s)
{
        ServerInternal *in = s->internal;
        Config *c = s->config;
        size_t max_keys = (size_t)config_get_int(c, "rate_limit_max_keys");
        double addr_rps = (double)config_get_int(c, "rate_limit_address_rps");
        double sess_rps = (double)config_get_int(c, "rate_limit_session_rps");
        int r = 0;
        if (addr_rps > 0)
                r = ratelimiter_new((double)config_get_int(c, "rate_limit_address_burst"), addr_rps,
                                    max_keys, &in->address_rl);
        if (r >= 0 && sess_rps > 0)
                r = ratelimiter_new((double)config_get_int(c, "rate_limit_session_burst"), sess_rps,
                                    max_keys, &in->session_rl);
        if (r >= 0)
                r = ratelimiter_new(1, 1.0 / 60, max_keys, &in->limit_audit_rl);
        if (r < 0)
                return log_oom();
        return parse_cors_origins(in, config_get(c, "cors_allowed_origins"));
}

static void stop_hardening(ServerInternal *in)
{
        ratelimiter_free(in->address_rl);
        ratelimiter_free(in->session_rl);
        ratelimiter_free(in->limit_audit_rl);
        for (size_t i = 0; i < in->n_cors_origins; i++)
                free(in->cors_origins[i]);
        free(in->cors_origins);
}

int server_run(Config *config)
{
        /* One server per process. Static so that connections still open at exit
         * (idle keep-alives h2o has no API to close) stay reachable, not leaked. */
        static ServerInternal internal;
        static Server s;
        static uv_loop_t loop;
        struct sockaddr_storage addr;
        int r;

        internal = (ServerInternal){0};
        s = (Server){.config = config, .internal = &internal, .started_at = now_usec()};
        const char *listen = config_get(config, "listen");
        if (parse_listen(listen, &addr) < 0)
                return log_error_errno(
                    -EINVAL, "bad listen address, expected HOST:PORT | listen=%s", listen);

        r = server_open_db(config_get(config, "state_dir"), &s.db);
        if (r < 0)
                return r;
        uv_loop_init(&loop);
        s.loop = &loop;

        s.session_policy = (SessionPolicy){
            .access_ttl_s = config_get_int(config, "access_token_ttl_s"),
            .refresh_ttl_s = config_get_int(config, "refresh_token_ttl_s"),
        };
        s.scrypt_log_n = (unsigned)config_get_int(config, "password_scrypt_log_n");
        double window = (double)config_get_int(config, "login_failure_window_s");
        double per_account = (double)config_get_int(config, "login_failures_per_account");
        double per_address = (double)config_get_int(config, "login_failures_per_address");
        r = ratelimiter_new(per_account, per_account / window, 100000, &s.login_account_rl);
        if (r >= 0)
                r = ratelimiter_new(per_address, per_address / window, 100000, &s.login_address_rl);
        if (r >= 0)
                r = session_cache_new(&s.session_cache);
        if (r < 0) {
                db_close(s.db);
                return log_oom();
        }
        r = oidc_providers_new(config, &s.oidc);
        if (r < 0) {
                ratelimiter_free(s.login_account_rl);
                ratelimiter_free(s.login_address_rl);
                db_close(s.db);
                return r;
        }
        internal.max_body_bytes = (size_t)config_get_int(config, "max_body_bytes");
        r = start_nodes(&s);
        if (r < 0) {
                provisioner_stop(s.provisioner);
                s.placement = placement_free(s.placement);
                console_free(s.console);
                ca_free(s.ca);
                ratelimiter_free(s.login_account_rl);
                ratelimiter_free(s.login_address_rl);
                session_cache_free(s.session_cache);
                oidc_providers_free(s.oidc);
                db_close(s.db);
                return r;
        }

        r = start_hardening(&s);
        if (r < 0)
                goto finish;
        r = metering_start(&s, &s.metering);
        if (r < 0)
                goto finish;

        h2o_config_init(&internal.h2o_config);
        internal.h2o_config.server_name = h2o_iovec_init(H2O_STRLIT("gpuslice"));
        /* Bodies up to the ceiling reach the handler, which answers oversize ones
         * with the contract's envelope; beyond it h2o stops reading and answers a
         * plain 413 itself, so a huge upload never sits in memory. */
        internal.h2o_config.max_request_entity_size =
            MAX(internal.max_body_bytes * 4, internal.max_body_bytes + (1u << 20));
        internal.h2o_config.http1.req_timeout =
            (uint64_t)config_get_int(config, "http_request_timeout_s") * 1000;
        internal.h2o_config.http2.idle_timeout =
            (uint64_t)config_get_int(config, "http_idle_timeout_s") * 1000;
        internal.h2o_config.http2.graceful_shutdown_timeout =
            (uint64_t)config_get_int(config, "shutdown_timeout_s") * 1000;
        h2o_hostconf_t *host = h2o_config_register_host(
            &internal.h2o_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
        h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
        Handler *handler = (Handler *)h2o_create_handler(pathconf, sizeof(Handler));
        handler->super.on_req = on_req;
        handler->server = &s;

        const char *cert = config_get(config, "tls_cert"), *key = config_get(config, "tls_key");
        if ((cert == NULL) != (key == NULL)) {
                r = log_error_errno(-EINVAL, "tls_cert and tls_key go together");
                goto finish;
        }
        if (cert) {
                r = setup_tls(&s, cert, key);
                if (r < 0)
                        goto finish;
        }

        h2o_context_init(&internal.h2o_ctx, &loop, &internal.h2o_config);
        internal.accept_ctx.ctx = &internal.h2o_ctx;
        internal.accept_ctx.hosts = internal.h2o_config.hosts;
        internal.accept_ctx.ssl_ctx = internal.ssl_ctx;

        uv_tcp_init(&loop, &internal.listener);
        internal.listener.data = &s;
        internal.listener_open = true;
        r = uv_tcp_bind(&internal.listener, (struct sockaddr *)&addr, 0);
        if (r == 0)
                r = uv_listen((uv_stream_t *)&internal.listener, 1024, on_accept);
        if (r != 0) {
                r = log_error_errno(r, "cannot listen | listen=%s", listen);
                goto finish;
        }

        struct sockaddr_storage bound;
        int blen = sizeof(bound);
        uv_tcp_getsockname(&internal.listener, (struct sockaddr *)&bound, &blen);
        char host_str[INET6_ADDRSTRLEN];
        unsigned port;
        if (bound.ss_family == AF_INET6) {
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&bound)->sin6_addr, host_str,
                          sizeof(host_str));
                port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
        } else {
                inet_ntop(AF_INET, &((struct sockaddr_in *)&bound)->sin_addr, host_str,
                          sizeof(host_str));
                port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        }
        char url[320];
        snprintf(url, sizeof(url), "%s://%s%s%s:%u", cert ? "https" : "http",
                 bound.ss_family == AF_INET6 ? "[" : "", host_str,
                 bound.ss_family == AF_INET6 ? "]" : "", port);
        const char *pub = config_get(config, "public_url");
        s.public_url = strdup(pub ? pub : url);

        uv_signal_init(&loop, &internal.sigterm);
        uv_signal_init(&loop, &internal.sigint);
        internal.sigterm.data = internal.sigint.data = &s;
        uv_signal_start(&internal.sigterm, on_signal, SIGTERM);
        uv_signal_start(&internal.sigint, on_signal, SIGINT);
        uv_timer_init(&loop, &internal.shutdown_timer);
        internal.shutdown_timer.data = &s;
        signal(SIGPIPE, SIG_IGN);

        const char *ready_file = config_get(config, "ready_file");
        if (ready_file && write_ready_file(ready_file, url) < 0)
                log_warning("cannot write ready file | path=%s", ready_file);
        log_info("listening | url=%s schema=%d", url, db_schema_version(s.db));
        sd_notify(0, "READY=1");

        uv_run(&loop, UV_RUN_DEFAULT);
        r = 0;

finish:
        close_listener(&s);
        metering_stop(TAKE_PTR(s.metering));
        stop_hardening(&internal);
        provisioner_stop(s.provisioner);
        console_free(s.console);
        agent_link_stop(s.link);
        s.placement = placement_free(s.placement);
        ca_free(s.ca);
        /* The h2o context, remaining idle connections and the loop are left to
         * process exit: h2o 2.2 cannot close idle keep-alive connections on
         * demand, and every request that was answered is already complete. */
        ratelimiter_free(s.login_account_rl);
        ratelimiter_free(s.login_address_rl);
        session_cache_free(s.session_cache);
        free(s.public_url);
        oidc_providers_free(s.oidc);
        db_close(s.db);
        log_info("stopped");
        return r;
}
