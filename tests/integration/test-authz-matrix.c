/* SPDX-License-Identifier: MIT */
/* The authorization matrix: every route of the live route table (read from
 * `gpuslice-controller routes`) called as anonymous, a user, another tenant's
 * user, an admin and a billing operator, each answer checked against the
 * contract: 401 unauthenticated without a session, 403 forbidden for a role
 * the route does not take, 404 not_found for another tenant's object (never
 * 403), and for everyone else an answer that got past authorization.
 *
 * A route without an entry below fails the coverage test with its name, and
 * so does an entry whose route is gone: adding a route means deciding here
 * who may call it. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

TestSuite(authz_matrix, .timeout = 240);

static char *xstrdup(const char *s)
{
        char *d = strdup(s);
        cr_assert(d);
        return d;
}

typedef enum { ANON, USER, OTHER, ADMIN, BILLING, N_CALLERS } Caller;

static const char *const caller_names[N_CALLERS] = {"anonymous", "user", "other_tenant", "admin",
                                                    "billing_operator"};

/* Expected answers. OK: the request got past authorization, so the answer is
 * anything but the dispatcher's refusals (401 unauthenticated, 403
 * forbidden, 404 not_found): a 200, a 409 because no agent is online, a 401
 * bootstrap_token_invalid from enrollment's own check, ... */
enum { OK = 1, E401 = 401, E403 = 403, E404 = 404 };

typedef struct Fixture Fixture;
typedef struct Entry Entry;

typedef struct Account {
        char email[96];
        char password[64];
        Tokens t;
} Account;

struct Fixture {
        Controller *c;
        Account acct[N_CALLERS]; /* ANON unused */
        char node_id[64];        /* a node the admin made in setup */
        unsigned seq;
};

struct Entry {
        const char *route; /* "METHOD /pattern" exactly as the route table has it */
        int want[N_CALLERS];
        const char *body; /* a minimal valid-looking body, or NULL */
        /* Builds the body per call (fresh emails, fresh refresh tokens); malloc'ed. */
        char *(*make_body)(Fixture *f, Caller who);
        /* Fills the {params} in order (up to 4), per call; values are copied.
         * For a tenant's object: one owned by USER, for every caller, so
         * OTHER asks for USER's object and must get 404. */
        void (*params)(Fixture *f, Caller who, char vals[][96]);
        /* The call ends the caller's session (logout): sign in again for it. */
        bool spends_session;
};

/* ---- bodies and parameters ---- */

static char *signup_body(Fixture *f, Caller who)
{
        (void)who;
        unsigned n = ++f->seq;
        return xasprintf("{\"email\":\"matrix-%u@example.com\",\"password\":\"password-%u\","
                         "\"name\":\"Matrix\"}",
                         n, n);
}

static char *login_body(Fixture *f, Caller who)
{
        Caller as = who == ANON ? USER : who;
        return xasprintf("{\"email\":\"%s\",\"password\":\"%s\"}", f->acct[as].email,
                         f->acct[as].password);
}

static char *refresh_body(Fixture *f, Caller who)
{
        /* A refresh token of its own per call: a spent one would be reuse. */
        Caller as = who == ANON ? USER : who;
        Tokens t;
        cr_assert_eq(api_login(f->c, f->acct[as].email, f->acct[as].password, &t), 200);
        return xasprintf("{\"refresh_token\":\"%s\"}", t.refresh);
}

static char *new_node(Fixture *f)
{
        _cleanup_free_ char *body = xasprintf("{\"name\":\"matrix-node-%u\"}", ++f->seq);
        _cleanup_resp_ HttpResponse *r =
            api_post(f->c, "/api/v1/admin/nodes", f->acct[ADMIN].t.access, body);
        cr_assert_eq(r->status, 201, "creating a node: %ld %s", r->status, r->body);
        const char *id = jstr(r, "node.id");
        cr_assert(id, "no node.id in %s", r->body);
        return xstrdup(id);
}

/* Admins may act on any node; a fresh one per admin call, so that a DELETE
 * before it in the table changes nothing for the next route. */
static void node_param(Fixture *f, Caller who, char vals[][96])
{
        if (who == ADMIN) {
                _cleanup_free_ char *id = new_node(f);
                snprintf(vals[0], 96, "%s", id);
        } else
                snprintf(vals[0], 96, "%s", f->node_id);
}

/* No discovery can exist without a live agent: the admin's answer is the
 * handler's 404, after authorization (the others never get that far). */
static void node_and_discovery_params(Fixture *f, Caller who, char vals[][96])
{
        node_param(f, who, vals);
        snprintf(vals[1], 96, "dsc_matrixnone");
}

/* ---- catalog and SSH keys ---- */

static char *sku_body(Fixture *f, Caller who)
{
        (void)who;
        return xasprintf("{\"name\":\"matrix-sku-%u\",\"gpu_model\":\"NVIDIA H100\","
                         "\"gpu_memory_gb\":80,\"pci_ids\":[\"10de:2330\"],"
                         "\"gpu_counts\":[1,2],\"price_per_gpu_hour_micros\":1000000,"
                         "\"topology\":\"node\"}",
                         ++f->seq);
}

static char *image_body(Fixture *f, Caller who)
{
        (void)who;
        return xasprintf("{\"name\":\"matrix-image-%u\"}", ++f->seq);
}

static char *network_body(Fixture *f, Caller who)
{
        (void)who;
        unsigned n = ++f->seq;
        return xasprintf("{\"name\":\"matrix-network-%u\",\"vlan\":%u}", n, n % 4000 + 1);
}

/* POSTs body (from make) as the admin to path and returns the new id. */
static char *admin_create(Fixture *f, const char *path, char *(*make)(Fixture *, Caller))
{
        _cleanup_free_ char *body = make(f, ADMIN);
        _cleanup_resp_ HttpResponse *r = api_post(f->c, path, f->acct[ADMIN].t.access, body);
        cr_assert_eq(r->status, 201, "POST %s: %ld %s", path, r->status, r->body);
        const char *id = jstr(r, "id");
        cr_assert(id, "no id in %s", r->body);
        return xstrdup(id);
}

/* Admin routes on one catalog object: a fresh one per admin call (a DELETE
 * must find it); the others are refused before the id matters. */
static void catalog_param(Fixture *f, Caller who, char vals[][96], const char *path,
                          char *(*make)(Fixture *, Caller))
{
        if (who == ADMIN) {
                _cleanup_free_ char *id = admin_create(f, path, make);
                snprintf(vals[0], 96, "%s", id);
        } else
                snprintf(vals[0], 96, "sku_matrixnotlookedupxxx");
}

static void sku_param(Fixture *f, Caller who, char vals[][96])
{
        catalog_param(f, who, vals, "/api/v1/admin/skus", sku_body);
}

static void image_param(Fixture *f, Caller who, char vals[][96])
{
        catalog_param(f, who, vals, "/api/v1/admin/images", image_body);
}

static void network_param(Fixture *f, Caller who, char vals[][96])
{
        catalog_param(f, who, vals, "/api/v1/admin/networks", network_body);
}

static char *ssh_key_body(Fixture *f, Caller who)
{
        (void)who;
        _cleanup_free_ char *line = ssh_test_public_key(++f->seq, "matrix");
        return xasprintf("{\"public_key\":\"%s\"}", line);
}

/* A key of USER's, fresh per call, whoever asks: USER may delete it, every
 * other caller must be told it does not exist. */
static void ssh_key_param(Fixture *f, Caller who, char vals[][96])
{
        (void)who;
        _cleanup_free_ char *body = ssh_key_body(f, USER);
        _cleanup_resp_ HttpResponse *r =
            api_post(f->c, "/api/v1/access/ssh-keys", f->acct[USER].t.access, body);
        cr_assert_eq(r->status, 201, "adding a key: %ld %s", r->status, r->body);
        snprintf(vals[0], 96, "%s", jstr(r, "id"));
}

/* ---- the console ---- */

/* An allocation of USER's, fresh per call, whoever asks (written straight
 * into the database: the matrix is about who may ask, not about launching).
 * Its node has no agent, so USER's answer is the handler's 409. */
static void terminal_alloc_param(Fixture *f, Caller who, char vals[][96])
{
        (void)who;
        snprintf(vals[0], 96, "alc_matrixterminal%03utokeA", ++f->seq % 1000);
        _cleanup_free_ char *sql = xasprintf(
            "INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, node_id, image_id, "
            "network_id, hourly_cost_micros, created_at, updated_at) VALUES ('%s', '%s', "
            "'active', 'sku_matrix', 1, '%s', 'img_matrix', 'net_matrix', 0, 1, 1)",
            vals[0], f->acct[USER].t.user_id, f->node_id);
        db_exec_rw(f->c, sql);
}

/* ---- billing ---- */

/* A completed payment of USER's, fresh per call, whoever asks (written
 * straight into the database: no Stripe here). USER's refund request gets
 * past authorization (503 payments_not_configured for a provider refund);
 * everyone else is told the payment does not exist. */
static char *refund_body(Fixture *f, Caller who)
{
        (void)who;
        char id[40];
        /* 22 characters; the last one carries 4 zero bits (id_valid). */
        snprintf(id, sizeof(id), "pay_matrixrefundpaymen%03uA", ++f->seq % 1000);
        _cleanup_free_ char *sql = xasprintf(
            "INSERT INTO payment_sessions (id, user_id, amount_micros, state, payment_intent, "
            "created_at, updated_at, completed_at) VALUES ('%s', '%s', 5000000, 'completed', "
            "'pi_matrix', 1, 1, strftime('%%s', 'now') * 1000000)",
            id, f->acct[USER].t.user_id);
        db_exec_rw(f->c, sql);
        return xasprintf("{\"payment_id\":\"%s\",\"amount_micros\":10000,"
                         "\"reason\":\"matrix\"}",
                         id);
}

static void user_param(Fixture *f, Caller who, char vals[][96])
{
        (void)who;
        snprintf(vals[0], 96, "%s", f->acct[USER].t.user_id);
}

/* ---- allocations ---- */

/* An active allocation of USER's with a finished task, fresh per call,
 * whoever asks (written straight into the database). USER's release and an
 * admin's force release get past authorization; anyone else is told the
 * allocation (or task) does not exist. */
static void user_alloc(Fixture *f, char alloc[96], char task[96])
{
        /* 22 id characters, the last one 'A' (it carries two bits only). */
        unsigned n = ++f->seq % 100000;
        snprintf(alloc, 96, "alc_matrixallocation%05uA", n);
        snprintf(task, 96, "tsk_matrixtaskxxxxxx%05uA", n);
        _cleanup_free_ char *sql = xasprintf(
            "INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, node_id, image_id, "
            "network_id, hourly_cost_micros, created_at, updated_at) VALUES ('%s', '%s', "
            "'active', 'sku_matrix', 1, '%s', 'img_matrix', 'net_matrix', 0, 1, 1);"
            "INSERT INTO tasks (id, allocation_id, kind, state, created_at, updated_at) VALUES "
            "('%s', '%s', 'provision', 'succeeded', 1, 1)",
            alloc, f->acct[USER].t.user_id, f->node_id, task, alloc);
        db_exec_rw(f->c, sql);
}

static void alloc_param(Fixture *f, Caller who, char vals[][96])
{
        (void)who;
        char task[96];
        user_alloc(f, vals[0], task);
}

static void task_param(Fixture *f, Caller who, char vals[][96])
{
        (void)who;
        char alloc[96];
        user_alloc(f, alloc, vals[0]);
}

/* No slot exists on a fresh node: the admin gets the handler's 404. */
static void node_and_slot_params(Fixture *f, Caller who, char vals[][96])
{
        node_param(f, who, vals);
        snprintf(vals[1], 96, "slt_matrixnoslotxxxxxxxxxA");
}

/* ---- the expectations, one per route ---- */

#define PUBLIC_ROUTE                                                                               \
        {                                                                                          \
                OK, OK, OK, OK, OK                                                                 \
        }
#define SIGNED_IN                                                                                  \
        {                                                                                          \
                E401, OK, OK, OK, OK                                                               \
        }
#define ADMIN_ONLY                                                                                 \
        {                                                                                          \
                E401, E403, E403, OK, E403                                                         \
        }
#define ADMIN_OR_BILLING                                                                           \
        {                                                                                          \
                E401, E403, E403, OK, OK                                                           \
        }

static const Entry entries[] = {
    {"GET /api/v1/health", PUBLIC_ROUTE},
    {"GET /api/v1/ready", PUBLIC_ROUTE},
    {"POST /api/v1/auth/personal/signup", PUBLIC_ROUTE, .make_body = signup_body},
    {"POST /api/v1/auth/personal/login", PUBLIC_ROUTE, .make_body = login_body},
    {"POST /api/v1/auth/token/refresh", PUBLIC_ROUTE, .make_body = refresh_body},
    /* No provider configured here: 503 oidc_not_configured, after authorization. */
    {"GET /api/v1/auth/oidc/authorize", PUBLIC_ROUTE},
    {"POST /api/v1/auth/oidc/exchange", PUBLIC_ROUTE,
     .body = "{\"code\":\"matrix-code\",\"state\":\"matrix-state\"}"},
    {"POST /api/v1/auth/logout", SIGNED_IN, .spends_session = true},
    {"GET /api/v1/me", SIGNED_IN},
    /* nodes: admin only */
    {"GET /api/v1/admin/nodes", ADMIN_ONLY},
    {"POST /api/v1/admin/nodes", ADMIN_ONLY, .body = "{\"name\":\"matrix-created\"}"},
    {"GET /api/v1/admin/nodes/{id}", ADMIN_ONLY, .params = node_param},
    {"DELETE /api/v1/admin/nodes/{id}", ADMIN_ONLY, .params = node_param},
    {"GET /api/v1/admin/nodes/{id}/slots", ADMIN_ONLY, .params = node_param},
    /* No agent is online: 409 node_offline for the admin. */
    {"POST /api/v1/admin/nodes/{id}/slice-topology/discovery", ADMIN_ONLY, .body = "{}",
     .params = node_param},
    {"GET /api/v1/admin/nodes/{id}/slice-topology/candidates/{discovery_id}",
     {E401, E403, E403, E404, E403},
     .params = node_and_discovery_params},
    {"POST /api/v1/admin/nodes/{id}/slice-topology/candidates/{discovery_id}/approve",
     {E401, E403, E403, E404, E403},
     .body = "{}",
     .params = node_and_discovery_params},
    {"GET /api/v1/admin/audit-logs", ADMIN_OR_BILLING},
    /* catalog: signed-in users list it, admins manage it */
    {"GET /api/v1/catalog/skus", SIGNED_IN},
    {"GET /api/v1/catalog/images", SIGNED_IN},
    {"GET /api/v1/catalog/networks", SIGNED_IN},
    {"GET /api/v1/admin/skus", ADMIN_ONLY},
    {"POST /api/v1/admin/skus", ADMIN_ONLY, .make_body = sku_body},
    {"GET /api/v1/admin/skus/{id}", ADMIN_ONLY, .params = sku_param},
    {"PATCH /api/v1/admin/skus/{id}", ADMIN_ONLY, .body = "{\"gpu_memory_gb\":81}",
     .params = sku_param},
    {"DELETE /api/v1/admin/skus/{id}", ADMIN_ONLY, .params = sku_param},
    {"GET /api/v1/admin/images", ADMIN_ONLY},
    {"POST /api/v1/admin/images", ADMIN_ONLY, .make_body = image_body},
    {"GET /api/v1/admin/images/{id}", ADMIN_ONLY, .params = image_param},
    {"PATCH /api/v1/admin/images/{id}", ADMIN_ONLY, .body = "{\"description\":\"m\"}",
     .params = image_param},
    {"DELETE /api/v1/admin/images/{id}", ADMIN_ONLY, .params = image_param},
    {"GET /api/v1/admin/networks", ADMIN_ONLY},
    {"POST /api/v1/admin/networks", ADMIN_ONLY, .make_body = network_body},
    {"GET /api/v1/admin/networks/{id}", ADMIN_ONLY, .params = network_param},
    {"PATCH /api/v1/admin/networks/{id}", ADMIN_ONLY, .body = "{\"trust\":false}",
     .params = network_param},
    {"DELETE /api/v1/admin/networks/{id}", ADMIN_ONLY, .params = network_param},
    /* SSH keys: each user's own; anyone else's key does not exist for them */
    {"GET /api/v1/access/ssh-keys", SIGNED_IN},
    {"POST /api/v1/access/ssh-keys", SIGNED_IN, .make_body = ssh_key_body},
    {"DELETE /api/v1/access/ssh-keys/{id}",
     {E401, OK, E404, E404, E404},
     .params = ssh_key_param},
    {"GET /api/v1/config", SIGNED_IN},
    {"GET /api/v1/admin/events", ADMIN_ONLY},
    /* The console: only the owner gets a token (409 node_offline here: no
     * agent); the terminal's token is its credential, and a request that is
     * no WebSocket handshake is the handler's 400 for everyone. */
    {"POST /api/v1/allocations/{id}/terminal-token",
     {E401, OK, E404, E404, E404},
     .params = terminal_alloc_param},
    {"GET /api/v1/terminal", PUBLIC_ROUTE},
    /* Billing: each user's own; no Stripe configured here, so checkout and
     * the webhook answer 503 payments_not_configured after authorization. */
    {"GET /api/v1/billing/balance", SIGNED_IN},
    {"POST /api/v1/billing/checkout", SIGNED_IN, .body = "{\"amount_micros\":5000000}"},
    {"POST /api/v1/billing/webhooks/stripe", PUBLIC_ROUTE, .body = "{}"},
    {"GET /api/v1/billing/usage", SIGNED_IN},
    {"GET /api/v1/billing/payments", SIGNED_IN},
    {"GET /api/v1/billing/refunds", SIGNED_IN},
    {"POST /api/v1/billing/refunds",
     {E401, OK, E404, E404, E404},
     .make_body = refund_body},
    {"POST /api/v1/admin/users/{id}/credits", ADMIN_ONLY,
     .body = "{\"amount_micros\":1000000,\"reason\":\"matrix\"}",
     .params = user_param},
    {"GET /api/v1/admin/users", ADMIN_OR_BILLING},
    {"GET /api/v1/admin/payment-sessions", ADMIN_OR_BILLING},
    /* Allocations: each tenant's own (an admin is another tenant here: 404);
     * a launch without an Idempotency-Key and a quote of an unknown SKU are
     * the handler's 400s, after authorization. */
    {"POST /api/v1/allocations/quote", SIGNED_IN, .body = "{}"},
    {"POST /api/v1/allocations", SIGNED_IN, .body = "{}"},
    {"GET /api/v1/allocations", SIGNED_IN},
    {"GET /api/v1/allocations/{id}", {E401, OK, E404, E404, E404}, .params = alloc_param},
    {"POST /api/v1/allocations/{id}/release",
     {E401, OK, E404, E404, E404},
     .params = alloc_param},
    {"GET /api/v1/tasks/{id}", {E401, OK, E404, OK, E404}, .params = task_param},
    {"GET /api/v1/admin/allocations", ADMIN_ONLY},
    {"POST /api/v1/admin/allocations/{id}/force-release", ADMIN_ONLY,
     .body = "{\"reason\":\"matrix\"}",
     .params = alloc_param},
    {"POST /api/v1/admin/nodes/{id}/slots/{slot_id}/verify",
     {E401, E403, E403, E404, E403},
     .body = "{}",
     .params = node_and_slot_params},
    /* The bootstrap token is the credential: the handler's own
     * bootstrap_token_invalid, never the dispatcher's 401. */
    {"POST /api/v1/agent/enroll", PUBLIC_ROUTE,
     .body = "{\"bootstrap_token\":\"gsb_matrixbogus\",\"csr_pem\":\"-----BEGIN CERTIFICATE "
             "REQUEST-----\\nAA==\\n-----END CERTIFICATE REQUEST-----\\n\"}"},
};

/* ---- the live route table ---- */

typedef struct LiveRoute {
        char key[256]; /* "METHOD /pattern" */
        bool public;
} LiveRoute;

static size_t live_routes(LiveRoute **ret)
{
        const char *argv[] = {"gpuslice-controller", "routes", NULL};
        CliResult res;
        int status = cli_run(argv, NULL, 60000, &res);
        cr_assert_eq(cli_exit_code(status), 0, "routes: exit %d: %s", status, res.err);
        json_error_t err;
        json_t *a = json_loads(res.out, 0, &err);
        cr_assert(json_is_array(a), "routes printed no JSON array: %s (%s)", err.text, res.out);
        size_t n = json_array_size(a);
        LiveRoute *lr = calloc(n, sizeof(*lr));
        cr_assert(lr);
        for (size_t i = 0; i < n; i++) {
                json_t *o = json_array_get(a, i);
                const char *m = json_string_value(json_object_get(o, "method"));
                const char *p = json_string_value(json_object_get(o, "path"));
                cr_assert(m && p, "route %zu lacks method or path", i);
                snprintf(lr[i].key, sizeof(lr[i].key), "%s %s", m, p);
                lr[i].public = json_is_true(json_object_get(o, "public"));
        }
        json_decref(a);
        cli_result_done(&res);
        *ret = lr;
        return n;
}

static const Entry *entry_for(const char *key)
{
        for (size_t i = 0; i < ELEMENTSOF(entries); i++)
                if (streq(entries[i].route, key))
                        return &entries[i];
        return NULL;
}

Test(authz_matrix, every_route_has_an_entry_and_every_entry_a_route)
{
        LiveRoute *lr = NULL;
        size_t n = live_routes(&lr);
        char missing[4096] = "", stale[4096] = "";
        for (size_t i = 0; i < n; i++)
                if (!entry_for(lr[i].key)) {
                        strncat(missing, "\n  ", sizeof(missing) - strlen(missing) - 1);
                        strncat(missing, lr[i].key, sizeof(missing) - strlen(missing) - 1);
                }
        for (size_t k = 0; k < ELEMENTSOF(entries); k++) {
                bool found = false;
                for (size_t i = 0; i < n && !found; i++)
                        found = streq(lr[i].key, entries[k].route);
                if (!found) {
                        strncat(stale, "\n  ", sizeof(stale) - strlen(stale) - 1);
                        strncat(stale, entries[k].route, sizeof(stale) - strlen(stale) - 1);
                }
        }
        /* The table's own public flag and the entry agree on anonymous access. */
        char disagree[4096] = "";
        for (size_t i = 0; i < n; i++) {
                const Entry *e = entry_for(lr[i].key);
                if (e && (e->want[ANON] == OK) != lr[i].public) {
                        strncat(disagree, "\n  ", sizeof(disagree) - strlen(disagree) - 1);
                        strncat(disagree, lr[i].key, sizeof(disagree) - strlen(disagree) - 1);
                }
        }
        /* A tenant route naming an object (a path parameter, open to users)
         * must hide it from another tenant: 404, never 403 or success. */
        char leaky[4096] = "";
        for (size_t k = 0; k < ELEMENTSOF(entries); k++) {
                const Entry *e = &entries[k];
                if (strchr(e->route, '{') && e->want[USER] == OK && e->want[OTHER] != E404) {
                        strncat(leaky, "\n  ", sizeof(leaky) - strlen(leaky) - 1);
                        strncat(leaky, e->route, sizeof(leaky) - strlen(leaky) - 1);
                }
        }
        free(lr);
        cr_expect(!leaky[0],
                  "tenant routes with an object id whose other_tenant expectation is not 404:%s",
                  leaky);
        cr_expect(!missing[0],
                  "routes with no entry in tests/integration/test-authz-matrix.c (decide who "
                  "may call them):%s",
                  missing);
        cr_expect(!stale[0], "entries for routes that no longer exist:%s", stale);
        cr_expect(!disagree[0],
                  "entries whose anonymous expectation contradicts the route's public flag:%s",
                  disagree);
}

/* ---- calling every route as everyone ---- */

static void create_admin(Fixture *f, Caller who, const char *email, const char *role)
{
        const char *argv[] = {"gpuslice-controller",
                              "create-admin",
                              "--state-dir",
                              f->c->state_dir,
                              "--email",
                              email,
                              "--role",
                              role,
                              "--password-scrypt-log-n",
                              "10",
                              NULL};
        CliResult res;
        int status = cli_run(argv, NULL, 60000, &res);
        cr_assert_eq(cli_exit_code(status), 0, "create-admin %s: %d %s", role, status, res.err);
        Account *a = &f->acct[who];
        snprintf(a->email, sizeof(a->email), "%s", email);
        snprintf(a->password, sizeof(a->password), "%.*s", (int)strcspn(res.out, "\n"), res.out);
        cli_result_done(&res);
        cr_assert_eq(api_login(f->c, a->email, a->password, &a->t), 200, "login as %s", role);
}

static void signup(Fixture *f, Caller who, const char *email)
{
        Account *a = &f->acct[who];
        snprintf(a->email, sizeof(a->email), "%s", email);
        snprintf(a->password, sizeof(a->password), "matrix password %d", (int)who);
        cr_assert_eq(api_signup(f->c, a->email, a->password, "Matrix", &a->t), 201);
}

/* "/a/{id}/b/{x}" with vals filled in, in order. */
static char *fill_path(const char *pattern, char vals[][96])
{
        char out[1024];
        size_t o = 0, k = 0;
        for (const char *p = pattern; *p && o < sizeof(out) - 100;) {
                if (*p == '{') {
                        o += (size_t)snprintf(out + o, sizeof(out) - o, "%s", vals[k++]);
                        p = strchr(p, '}') + 1;
                } else
                        out[o++] = *p++;
        }
        out[o] = '\0';
        return xstrdup(out);
}

/* The dispatcher's refusals, recognised by status and code together. */
static int refusal(const HttpResponse *r)
{
        const char *code = jstr(r, "error.code");
        if (r->status == 401 && code && streq(code, "unauthenticated"))
                return E401;
        if (r->status == 403 && code && streq(code, "forbidden"))
                return E403;
        if (r->status == 404 && code && streq(code, "not_found"))
                return E404;
        return OK;
}

static void call(Fixture *f, const Entry *e, Caller who, char *report, size_t report_size)
{
        char method[16], vals[4][96] = {{0}};
        const char *sp = strchr(e->route, ' ');
        snprintf(method, sizeof(method), "%.*s", (int)(sp - e->route), e->route);
        if (e->params)
                e->params(f, who, vals);
        _cleanup_free_ char *path = fill_path(sp + 1, vals);
        _cleanup_free_ char *body = e->make_body ? e->make_body(f, who) : NULL;
        const char *send_body = body ? body : e->body;
        if (!send_body && (streq(method, "POST") || streq(method, "PATCH")))
                send_body = "{}";

        Tokens spare;
        const char *bearer = who == ANON ? NULL : f->acct[who].t.access;
        if (e->spends_session && who != ANON) {
                cr_assert_eq(api_login(f->c, f->acct[who].email, f->acct[who].password, &spare),
                             200);
                bearer = spare.access;
        }
        HttpRequest rq = {.method = method, .path = path, .body = send_body, .bearer = bearer};
        _cleanup_resp_ HttpResponse *r = http_send(f->c, &rq);
        cr_assert_eq(r->curl_code, CURLE_OK, "%s %s: %s", method, path,
                     curl_easy_strerror(r->curl_code));
        cr_assert_neq(r->status, 429, "rate limited during the matrix: %s", r->body);
        cr_assert_neq(r->status, 405, "%s: the method is not routed: %s", e->route, r->body);
        int got = refusal(r);
        int want = e->want[who];
        bool ok = want == OK ? got == OK : (int)r->status == want && got == want;
        if (!ok) {
                size_t used = strlen(report);
                snprintf(report + used, report_size - used, "\n  %s as %s: want %s, got %ld %.200s",
                         e->route, caller_names[who],
                         want == OK     ? "allowed"
                         : want == E401 ? "401"
                         : want == E403 ? "403"
                                        : "404",
                         r->status, r->body);
        }
}

Test(authz_matrix, every_route_as_every_caller)
{
        Fixture f = {0};
        _cleanup_ctl_ Controller *c = ctl_new();
        /* This test is about who may call what, not about how often. */
        ctl_args(c, "--rate-limit-address-rps", "1000000", "--rate-limit-address-burst", "1000000",
                 "--rate-limit-session-rps", "1000000", "--rate-limit-session-burst", "1000000",
                 NULL);
        ctl_start_or_fail(c);
        f.c = c;
        signup(&f, USER, "tenant-a@example.com");
        signup(&f, OTHER, "tenant-b@example.com");
        create_admin(&f, ADMIN, "matrix-admin@example.com", "admin");
        create_admin(&f, BILLING, "matrix-billing@example.com", "billing_operator");
        _cleanup_free_ char *node = new_node(&f);
        snprintf(f.node_id, sizeof(f.node_id), "%s", node);

        LiveRoute *lr = NULL;
        size_t n = live_routes(&lr);
        char report[16384] = "";
        size_t calls = 0;
        for (size_t i = 0; i < n; i++) {
                const Entry *e = entry_for(lr[i].key);
                if (!e)
                        continue; /* the coverage test names it */
                for (Caller who = ANON; who < N_CALLERS; who++, calls++)
                        call(&f, e, who, report, sizeof(report));
        }
        free(lr);
        cr_assert_gt(calls, 0);
        cr_assert(!report[0], "answers that break the authorization contract:%s", report);
}
