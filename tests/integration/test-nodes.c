/* SPDX-License-Identifier: MIT */
/* Adding nodes and enrolling them, against the real controller: the one-time
 * bootstrap token (stored hashed, expiring, spent once, bound to its node),
 * the CA-signed certificate with the node id inside, deletion revoking it,
 * the audit log and its listing, and admin-only access. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ca.h"
#include "harness.h"
#include "test-peer.h"

#define NODES  "/api/v1/admin/nodes"
#define ENROLL "/api/v1/agent/enroll"
#define AUDIT  "/api/v1/admin/audit-logs"

TestSuite(nodes, .timeout = 120);

static Controller *started(void)
{
        Controller *c = ctl_new();
        ctl_start_or_fail(c);
        return c;
}

static char *csr_for_new_key(void)
{
        _cleanup_free_ char *key = NULL;
        char *csr = NULL;
        cr_assert(ca_new_key_pem(&key) == 0);
        cr_assert(ca_make_csr(key, "host.example", &csr) == 0);
        return csr;
}

static HttpResponse *enroll(Controller *c, const char *token, const char *csr, json_t *facts)
{
        json_t *b = json_pack("{s:s, s:s}", "bootstrap_token", token, "csr_pem", csr);
        if (facts)
                json_object_set_new(b, "facts", facts);
        _cleanup_free_ char *text = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        return api_post(c, ENROLL, NULL, text);
}

static long long audit_count(Controller *c, const char *action)
{
        char sql[200];
        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM audit_logs WHERE action = '%s'", action);
        return db_scalar(c, sql);
}

static char *cert_cn(const char *pem)
{
        BIO *b = BIO_new_mem_buf(pem, -1);
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        BIO_free(b);
        cr_assert(x, "not a certificate: %s", pem);
        char cn[128] = "";
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
        X509_free(x);
        return strdup(cn);
}

Test(nodes, add_node_returns_a_one_time_token_stored_hashed)
{
        _cleanup_ctl_ Controller *c = started();
        Tokens admin;
        admin_sign_in(c, "root@example.com", NULL, &admin);
        _cleanup_resp_ HttpResponse *r =
            api_post(c, NODES, admin.access, "{\"name\":\"gpu-host-1\"}");
        cr_assert_eq(r->status, 201, "%s", r->body);
        const char *id = jstr(r, "node.id"), *token = jstr(r, "bootstrap_token");
        cr_assert(id && startswith(id, "nod_"), "%s", r->body);
        cr_assert_str_eq(jstr(r, "node.state"), "pending_enrollment");
        cr_assert(json_is_false(jget(r, "node.online")));
        cr_assert(json_is_false(jget(r, "node.simulated")));
        cr_assert(json_is_null(jget(r, "node.last_seen_at")));
        cr_assert(json_is_null(jget(r, "node.fingerprint")));
        cr_assert_eq(json_integer_value(jget(r, "node.slots")), 0);
        cr_assert(token && startswith(token, "gsb_"));
        char want[512];
        snprintf(want, sizeof(want), "scripts/bootstrap.sh --controller %s --token %s", c->url,
                 token);
        cr_assert_str_eq(jstr(r, "bootstrap_command"), want);
        cr_assert(jstr(r, "bootstrap_token_expires_at"));

        /* only a hash is stored */
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM bootstrap_tokens"), 1);
        cr_assert_eq(db_scalar(c, "SELECT length(token_hash) FROM bootstrap_tokens"), 32);
        cr_assert_eq(audit_count(c, "node.create"), 1);

        /* a simulated node's command says so */
        _cleanup_resp_ HttpResponse *sim =
            api_post(c, NODES, admin.access, "{\"name\":\"sim-1\",\"simulated\":true}");
        cr_assert_eq(sim->status, 201, "%s", sim->body);
        cr_assert(json_is_true(jget(sim, "node.simulated")));
        cr_assert(strstr(jstr(sim, "bootstrap_command"), " --simulate"));

        /* read back one and the list */
        char path[128];
        snprintf(path, sizeof(path), NODES "/%s", id);
        _cleanup_resp_ HttpResponse *g = api_get(c, path, admin.access);
        cr_assert_eq(g->status, 200, "%s", g->body);
        cr_assert_str_eq(jstr(g, "name"), "gpu-host-1");
        _cleanup_resp_ HttpResponse *l = api_get(c, NODES "?limit=1", admin.access);
        cr_assert_eq(l->status, 200, "%s", l->body);
        cr_assert_eq(json_array_size(jget(l, "items")), 1);
        const char *cursor = jstr(l, "next_cursor");
        cr_assert(cursor);
        snprintf(path, sizeof(path), NODES "?limit=1&cursor=%s", cursor);
        _cleanup_resp_ HttpResponse *l2 = api_get(c, path, admin.access);
        cr_assert_str_eq(
            json_string_value(json_object_get(json_array_get(jget(l2, "items"), 0), "name")),
            "sim-1");
        _cleanup_resp_ HttpResponse *nf =
            api_get(c, NODES "/nod_AAAAAAAAAAAAAAAAAAAAAA", admin.access);
        assert_error(nf, 404, "not_found");
        _cleanup_resp_ HttpResponse *bad = api_post(c, NODES, admin.access, "{\"name\":\"\"}");
        assert_invalid_field(bad, "name");
        ctl_stop_clean(c);
}

Test(nodes, enrollment_signs_the_node_id_and_spends_the_token_once)
{
        _cleanup_ctl_ Controller *c = started();
        Tokens admin;
        admin_sign_in(c, "root@example.com", NULL, &admin);
        _cleanup_resp_ HttpResponse *r = api_post(c, NODES, admin.access, "{\"name\":\"h1\"}");
        const char *id = jstr(r, "node.id"), *token = jstr(r, "bootstrap_token");
        _cleanup_free_ char *csr = csr_for_new_key();

        /* a CSR that is no CSR spends nothing */
        _cleanup_resp_ HttpResponse *junk = enroll(
            c, token,
            "-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n", NULL);
        assert_invalid_field(junk, "csr_pem");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM bootstrap_tokens WHERE used_at IS NULL"),
                     1);

        /* a host that already is another node cannot take this token */
        _cleanup_resp_ HttpResponse *other =
            enroll(c, token, csr, json_pack("{s:s}", "node_id", "nod_BBBBBBBBBBBBBBBBBBBBBB"));
        assert_error(other, 401, "bootstrap_token_wrong_node");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM node_certificates"), 0);

        _cleanup_resp_ HttpResponse *ok =
            enroll(c, token, csr, json_pack("{s:s}", "hostname", "h1"));
        cr_assert_eq(ok->status, 200, "%s", ok->body);
        cr_assert_str_eq(jstr(ok, "node_id"), id);
        _cleanup_free_ char *cn = cert_cn(jstr(ok, "certificate_pem"));
        cr_assert_str_eq(cn, id, "the certificate names the node, not what the CSR asked for");
        cr_assert(strstr(jstr(ok, "ca_pem"), "BEGIN CERTIFICATE"));
        cr_assert(startswith(strempty(jstr(ok, "agent_endpoint")), "tls+tcp://127.0.0.1:"));
        char path[128];
        snprintf(path, sizeof(path), NODES "/%s", id);
        _cleanup_resp_ HttpResponse *g = api_get(c, path, admin.access);
        cr_assert_str_eq(jstr(g, "state"), "enrolled");
        cr_assert_eq(audit_count(c, "node.enroll"), 1);

        /* reuse */
        long long audits = db_scalar(c, "SELECT COUNT(*) FROM audit_logs");
        _cleanup_resp_ HttpResponse *again = enroll(c, token, csr, NULL);
        assert_error(again, 401, "bootstrap_token_used");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM node_certificates"), 1);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM audit_logs"), audits);

        /* unknown */
        _cleanup_resp_ HttpResponse *unk = enroll(c, "gsb_nope", csr, NULL);
        assert_error(unk, 401, "bootstrap_token_invalid");

        /* the CA key is private to the controller */
        _cleanup_free_ char *ca_key = NULL;
        ca_key = malloc(strlen(c->state_dir) + 16);
        sprintf(ca_key, "%s/ca/ca.key", c->state_dir);
        struct stat st;
        cr_assert_eq(stat(ca_key, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0600);
        ctl_stop_clean(c);
}

Test(nodes, expired_token_is_refused_and_ttl_is_configurable)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--bootstrap-token-ttl-s", "120", NULL);
        ctl_start_or_fail(c);
        Tokens admin;
        admin_sign_in(c, "root@example.com", NULL, &admin);
        _cleanup_resp_ HttpResponse *r = api_post(c, NODES, admin.access, "{\"name\":\"h1\"}");
        cr_assert_eq(db_scalar(c, "SELECT (expires_at - created_at) / 1000000 FROM "
                                  "bootstrap_tokens"),
                     120);
        db_exec_rw(c, "UPDATE bootstrap_tokens SET expires_at = created_at - 1");
        _cleanup_free_ char *csr = csr_for_new_key();
        _cleanup_resp_ HttpResponse *e = enroll(c, jstr(r, "bootstrap_token"), csr, NULL);
        assert_error(e, 401, "bootstrap_token_expired");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM nodes WHERE state = 'pending_enrollment'"),
                     1);
        ctl_stop_clean(c);
}

Test(nodes, delete_disables_the_node_and_revokes_its_certificate)
{
        _cleanup_ctl_ Controller *c = started();
        Tokens admin;
        admin_sign_in(c, "root@example.com", NULL, &admin);
        EnrolledNode n;
        node_create_and_enroll(c, admin.access, "h1", &n);
        char path[128];
        snprintf(path, sizeof(path), NODES "/%s", n.node_id);
        HttpRequest rq = {.method = "DELETE", .path = path, .bearer = admin.access};
        _cleanup_resp_ HttpResponse *d = http_send(c, &rq);
        cr_assert_eq(d->status, 200, "%s", d->body);
        cr_assert_str_eq(jstr(d, "state"), "disabled");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM node_certificates WHERE revoked_at IS "
                                  "NOT NULL"),
                     1);
        cr_assert_eq(audit_count(c, "node.revoke"), 1);
        _cleanup_resp_ HttpResponse *d2 = http_send(c, &rq);
        assert_error(d2, 409, "invalid_state");
        cr_assert_str_eq(jstr(d2, "error.details.state"), "disabled");
        cr_assert_eq(audit_count(c, "node.revoke"), 1);

        /* a node deleted before it enrolled: its token no longer works */
        _cleanup_resp_ HttpResponse *r = api_post(c, NODES, admin.access, "{\"name\":\"h2\"}");
        snprintf(path, sizeof(path), NODES "/%s", jstr(r, "node.id"));
        HttpRequest rq2 = {.method = "DELETE", .path = path, .bearer = admin.access};
        _cleanup_resp_ HttpResponse *d3 = http_send(c, &rq2);
        cr_assert_eq(d3->status, 200, "%s", d3->body);
        _cleanup_free_ char *csr = csr_for_new_key();
        _cleanup_resp_ HttpResponse *e = enroll(c, jstr(r, "bootstrap_token"), csr, NULL);
        assert_error(e, 401, "bootstrap_token_invalid");
        enrolled_node_done(&n);
        ctl_stop_clean(c);
}

Test(nodes, admin_routes_refuse_everyone_but_admins)
{
        _cleanup_ctl_ Controller *c = started();
        Tokens admin, billing, user;
        admin_sign_in(c, "root@example.com", NULL, &admin);
        admin_sign_in(c, "money@example.com", "billing_operator", &billing);
        cr_assert_eq(api_signup(c, "u@example.com", "user password 1", "U", &user), 201);
        _cleanup_resp_ HttpResponse *r = api_post(c, NODES, admin.access, "{\"name\":\"h1\"}");
        const char *id = jstr(r, "node.id");
        static const char *const routes[][2] = {
            {"GET", NODES},
            {"POST", NODES},
            {"GET", NODES "/%s"},
            {"DELETE", NODES "/%s"},
            {"GET", NODES "/%s/slots"},
            {"POST", NODES "/%s/slice-topology/discovery"},
            {"GET", NODES "/%s/slice-topology/candidates/dsc_AAAAAAAAAAAAAAAAAAAAAA"},
            {"POST", NODES "/%s/slice-topology/candidates/dsc_AAAAAAAAAAAAAAAAAAAAAA/approve"},
        };
        long long nodes_before = db_scalar(c, "SELECT COUNT(*) FROM nodes");
        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                char path[256];
                snprintf(path, sizeof(path), routes[i][1], id);
                const char *who[] = {user.access, billing.access, NULL};
                for (size_t k = 0; k < 3; k++) {
                        HttpRequest rq = {.method = routes[i][0],
                                          .path = path,
                                          .bearer = who[k],
                                          .body = streq(routes[i][0], "POST") ? "{\"name\":\"x\"}"
                                                                              : NULL};
                        _cleanup_resp_ HttpResponse *resp = http_send(c, &rq);
                        assert_error(resp, who[k] ? 403 : 401,
                                     who[k] ? "forbidden" : "unauthenticated");
                }
        }
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM nodes"), nodes_before);
        cr_assert_eq(db_scalar(c, "SELECT state = 'pending_enrollment' FROM nodes"), 1);
        /* the audit log: admins and billing operators */
        _cleanup_resp_ HttpResponse *a1 = api_get(c, AUDIT, billing.access);
        cr_assert_eq(a1->status, 200, "%s", a1->body);
        _cleanup_resp_ HttpResponse *a2 = api_get(c, AUDIT, user.access);
        assert_error(a2, 403, "forbidden");
        ctl_stop_clean(c);
}

Test(nodes, audit_log_lists_in_order_with_filters_and_a_cursor_that_survives_inserts)
{
        _cleanup_ctl_ Controller *c = started();
        Tokens admin;
        admin_sign_in(c, "root@example.com", NULL, &admin);
        for (int i = 0; i < 3; i++) {
                char body[64];
                snprintf(body, sizeof(body), "{\"name\":\"n%d\"}", i);
                _cleanup_resp_ HttpResponse *r = api_post(c, NODES, admin.access, body);
                cr_assert_eq(r->status, 201);
        }
        _cleanup_resp_ HttpResponse *p1 =
            api_get(c, AUDIT "?action=node.create&limit=2", admin.access);
        cr_assert_eq(p1->status, 200, "%s", p1->body);
        json_t *items = jget(p1, "items");
        cr_assert_eq(json_array_size(items), 2);
        json_t *first = json_array_get(items, 0);
        cr_assert_str_eq(json_string_value(json_object_get(first, "action")), "node.create");
        cr_assert_str_eq(json_string_value(json_object_get(first, "actor_id")), admin.user_id);
        cr_assert_str_eq(json_string_value(json_object_get(first, "target_type")), "node");
        cr_assert_str_eq(
            json_string_value(json_object_get(json_object_get(first, "details"), "name")), "n0");
        cr_assert(json_is_string(json_object_get(first, "at")));
        const char *cursor = jstr(p1, "next_cursor");
        cr_assert(cursor);
        /* rows added after the first page do not shift the second */
        _cleanup_resp_ HttpResponse *more = api_post(c, NODES, admin.access, "{\"name\":\"n3\"}");
        char path[200];
        snprintf(path, sizeof(path), AUDIT "?action=node.create&limit=2&cursor=%s", cursor);
        _cleanup_resp_ HttpResponse *p2 = api_get(c, path, admin.access);
        json_t *items2 = jget(p2, "items");
        cr_assert_eq(json_array_size(items2), 2, "%s", p2->body);
        cr_assert_str_eq(json_string_value(json_object_get(
                             json_object_get(json_array_get(items2, 0), "details"), "name")),
                         "n2");
        cr_assert_str_eq(json_string_value(json_object_get(
                             json_object_get(json_array_get(items2, 1), "details"), "name")),
                         "n3");
        /* target filter */
        snprintf(path, sizeof(path), AUDIT "?target_id=%s", jstr(more, "node.id"));
        _cleanup_resp_ HttpResponse *t = api_get(c, path, admin.access);
        cr_assert_eq(json_array_size(jget(t, "items")), 1, "%s", t->body);
        _cleanup_resp_ HttpResponse *bad = api_get(c, AUDIT "?cursor=zzz", admin.access);
        assert_invalid_field(bad, "cursor");
        ctl_stop_clean(c);
}
