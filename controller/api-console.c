/* SPDX-License-Identifier: MIT */
/* The console's two routes: a signed-in owner of an active allocation gets a
 * single-use terminal token; GET /api/v1/terminal?token= spends it and
 * upgrades to the WebSocket the relay (console.c) serves. Every refusal is an
 * ordinary HTTP error before the upgrade. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <h2o/websocket.h>

#include "agent-link.h"
#include "api.h"
#include "audit.h"
#include "console-tokens.h"
#include "console.h"
#include "db.h"
#include "log.h"
#include "server.h"
#include "sessions.h"

#define TERMINAL_PATH   "/api/v1/terminal"
#define TOKEN_PRUNE_AGE (3600 * USEC_PER_SEC) /* expired tokens are kept this long */
#define SIZE_MAX_CELLS  1000

/* The three facts the console needs of an allocation (allocations.c owns the
 * table; this is a read of it). */
typedef struct ConsoleAllocation {
        char user_id[ID_MAX];
        char state[32];
        char node_id[ID_MAX];
} ConsoleAllocation;

static int allocation_lookup(Db *db, const char *id, ConsoleAllocation *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT user_id, state, node_id FROM allocations WHERE id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        snprintf(ret->user_id, sizeof(ret->user_id), "%s", strempty(db_column_text(s, 0)));
        snprintf(ret->state, sizeof(ret->state), "%s", strempty(db_column_text(s, 1)));
        snprintf(ret->node_id, sizeof(ret->node_id), "%s", strempty(db_column_text(s, 2)));
        return 0;
}

/* 1 when a console may open on the allocation now; else the 409 is sent. */
static int check_openable(Request *r, const char *allocation_id, const ConsoleAllocation *a,
                          const char *user_id)
{
        Server *s = r->server;
        if (!streq(a->state, "active"))
                return http_reply_error(r, ERR_INVALID_STATE, json_pack("{s:s}", "state", a->state),
                                        "the console needs an active allocation (it is %s)",
                                        a->state);
        if (!a->node_id[0] || !agent_link_node_online(s->link, a->node_id, NULL))
                return http_reply_error(r, ERR_NODE_OFFLINE, NULL,
                                        "the allocation's node is not connected right now");
        long long per_alloc = config_get_int(s->config, "console_max_sessions_per_allocation");
        long long per_user = config_get_int(s->config, "console_max_sessions_per_user");
        if ((long long)console_count_allocation(s->console, allocation_id) >= per_alloc)
                return http_reply_error(
                    r, ERR_TOO_MANY_SESSIONS,
                    json_pack("{s:s, s:I}", "scope", "allocation", "limit", (json_int_t)per_alloc),
                    "this allocation already has %lld console sessions open", per_alloc);
        if ((long long)console_count_user(s->console, user_id) >= per_user)
                return http_reply_error(
                    r, ERR_TOO_MANY_SESSIONS,
                    json_pack("{s:s, s:I}", "scope", "user", "limit", (json_int_t)per_user),
                    "you already have %lld console sessions open", per_user);
        return 1;
}

/* ws:// or wss:// for the advertised base URL (its path kept). */
static char *websocket_url(const char *public_url, const char *token)
{
        const char *rest = startswith(public_url, "https://")  ? public_url + 8
                           : startswith(public_url, "http://") ? public_url + 7
                                                               : public_url;
        const char *scheme = startswith(public_url, "https://") ? "wss" : "ws";
        size_t n = strlen(rest);
        while (n > 0 && rest[n - 1] == '/')
                n--;
        char *url = NULL;
        if (asprintf(&url, "%s://%.*s" TERMINAL_PATH "?token=%s", scheme, (int)n, rest, token) < 0)
                return NULL;
        return url;
}

int api_terminal_token(Request *r)
{
        Server *s = r->server;
        const char *id = http_param(r, 0);
        ConsoleAllocation a;
        int ret = id_valid("alc", id) ? allocation_lookup(s->db, id, &a) : -ENOENT;
        if (ret == -ENOENT || (ret >= 0 && !streq(a.user_id, r->auth.user_id)))
                return http_reply_error(r, ERR_NOT_FOUND, NULL, "no such allocation");
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the allocation now");
        if (check_openable(r, id, &a, r->auth.user_id) <= 0)
                return 0;

        char token[TERMINAL_TOKEN_MAX];
        usec_t expires_at;
        _cleanup_txn_ DbTxn txn = {0};
        ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = terminal_tokens_prune(s->db, now_usec() - TOKEN_PRUNE_AGE);
        if (ret >= 0)
                ret = terminal_token_create(
                    s->db, r->auth.user_id, id,
                    (unsigned)config_get_int(s->config, "console_token_ttl_s"), token, &expires_at);
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot issue a token now");
        _cleanup_free_ char *url = websocket_url(s->public_url, token);
        json_t *body = url ? json_pack("{s:s, s:s, s:o}", "token", token, "websocket_url", url,
                                       "expires_at", json_timestamp(expires_at))
                           : NULL;
        explicit_bzero(token, sizeof(token));
        log_info("terminal token issued | allocation=%s user=%s", id, r->auth.user_id);
        return http_reply_json(r, 200, body);
}

/* Optional ?cols= / ?rows=: the terminal's first size. */
static int read_cells(Request *r, const char *name, unsigned *ret)
{
        const char *v = http_query(r, name);
        *ret = 0;
        if (!v)
                return 0;
        char *end;
        long n = strtol(v, &end, 10);
        if (!*v || *end || n < 1 || n > SIZE_MAX_CELLS) {
                http_reply_invalid_field(r, name, "%s must be 1 to %d", name, SIZE_MAX_CELLS);
                return -EINVAL;
        }
        *ret = (unsigned)n;
        return 0;
}

static int reply_token_refused(Request *r, int why)
{
        const char *what = why == -EALREADY      ? "used"
                           : why == -EKEYEXPIRED ? "expired"
                           : why == -ENODATA     ? "missing"
                                                 : "unknown";
        log_info("terminal refused | token=%s client=%s", what, r->client_addr);
        return http_reply_error(r, ERR_UNAUTHENTICATED, json_pack("{s:s}", "token", what),
                                "the terminal token is %s; ask for a new one", what);
}

int api_terminal(Request *r)
{
        Server *s = r->server;
        h2o_req_t *req = r->req;
        const char *client_key = NULL;
        if (req->version >= 0x200)
                return http_reply_error(r, ERR_INVALID_REQUEST,
                                        json_pack("{s:s}", "field", "upgrade"),
                                        "the terminal is a WebSocket over HTTP/1.1");
        if (h2o_is_websocket_handshake(req, &client_key) != 0 || !client_key)
                return http_reply_error(r, ERR_INVALID_REQUEST,
                                        json_pack("{s:s}", "field", "upgrade"),
                                        "expected a WebSocket upgrade (Connection: Upgrade, "
                                        "Upgrade: websocket, a 24-character Sec-WebSocket-Key)");
        const char *version = http_header(r, "sec-websocket-version");
        if (!version || !streq(version, "13")) {
                http_add_header(r, "sec-websocket-version", "13");
                return http_reply_error(r, ERR_INVALID_REQUEST,
                                        json_pack("{s:s}", "field", "sec-websocket-version"),
                                        "only WebSocket version 13 is spoken here");
        }
        unsigned cols, rows;
        if (read_cells(r, "cols", &cols) < 0 || read_cells(r, "rows", &rows) < 0)
                return 0;
        const char *token = http_query(r, "token");
        if (!token || !*token)
                return reply_token_refused(r, -ENODATA);

        /* The token is spent whatever the answer: it was presented once. The
         * audit row of an opened console goes in the same transaction. */
        char user_id[ID_MAX], allocation_id[ID_MAX], session_id[ID_MAX];
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = terminal_token_redeem(s->db, token, now_usec(), user_id, allocation_id);
        if (ret == -ENOENT || ret == -EALREADY || ret == -EKEYEXPIRED)
                return reply_token_refused(r, ret);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot check the token now");

        /* A caller that also signs in must be the token's user. */
        const char *bearer = http_bearer_token(r);
        Auth auth = {0};
        ConsoleAllocation a;
        bool refused = true;
        if (bearer && sessions_authenticate(s->db, bearer, &auth) == 0 &&
            !streq(auth.user_id, user_id))
                http_reply_error(r, ERR_FORBIDDEN, NULL,
                                 "this terminal token belongs to another user");
        else if ((ret = allocation_lookup(s->db, allocation_id, &a)) == -ENOENT ||
                 (ret >= 0 && !streq(a.user_id, user_id)))
                http_reply_error(r, ERR_NOT_FOUND, NULL, "no such allocation");
        else if (ret < 0)
                http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the allocation now");
        else if (check_openable(r, allocation_id, &a, user_id) > 0)
                refused = false;
        if (!refused &&
            (id_new("cns", session_id) < 0 ||
             audit_log(s->db, user_id, "console.open", "allocation", allocation_id, NULL,
                       json_pack("{s:s, s:s, s:s}", "session_id", session_id, "node_id", a.node_id,
                                 "client_addr", r->client_addr)) < 0))
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot open a console now");
        if (db_commit(&txn) < 0) {
                if (!refused)
                        http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot open a console now");
                return 0;
        }
        if (refused)
                return 0;

        const ConsoleTarget t = {.user_id = user_id,
                                 .allocation_id = allocation_id,
                                 .node_id = a.node_id,
                                 .cols = cols,
                                 .rows = rows};
        ret = console_attach(s->console, r, client_key, &t, session_id);
        if (ret == -ESHUTDOWN)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "the controller is stopping");
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot open a console now");
        return 0;
}
