/* SPDX-License-Identifier: MIT */
/* The catalog, SSH keys, client config and the events outbox against the real
 * controller: admin CRUD of SKUs, images and networks with every validation
 * error answered 400 (details.field) and nothing changed; users kept off the
 * admin routes; the public lists with paging; availability from approved
 * slots of a node whose agent (the test peer) is online; SSH keys per user
 * (another user's key is 404, a private key is refused and never stored,
 * echoed or logged, fingerprints as ssh-keygen prints them); GET /config;
 * the events list with a cursor that survives new events. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "test-peer.h"

TestSuite(catalog_api, .timeout = 240);

#define WAIT_MS 30000

static HttpResponse *call(Controller *c, const char *method, const char *path, const char *bearer,
                          const char *body)
{
        HttpRequest rq = {.method = method, .path = path, .bearer = bearer, .body = body};
        HttpResponse *r = http_send(c, &rq);
        cr_assert_eq(r->curl_code, CURLE_OK, "%s %s: %s", method, path,
                     curl_easy_strerror(r->curl_code));
        return r;
}

/* What a refused request must leave alone. */
typedef struct Snapshot {
        long long skus, images, networks, ssh_keys, audits, events, changes;
} Snapshot;

static Snapshot snapshot(Controller *c)
{
        return (Snapshot){
            .skus = db_scalar(c, "SELECT COUNT(*) FROM skus"),
            .images = db_scalar(c, "SELECT COUNT(*) FROM images"),
            .networks = db_scalar(c, "SELECT COUNT(*) FROM networks"),
            .ssh_keys = db_scalar(c, "SELECT COUNT(*) FROM ssh_keys"),
            .audits = db_scalar(c, "SELECT COUNT(*) FROM audit_logs WHERE action NOT LIKE "
                                   "'http.%' AND action NOT LIKE 'auth.%'"),
            .events = db_scalar(c, "SELECT COUNT(*) FROM events"),
            /* any change to a row, deleted or not */
            .changes = db_scalar(c, "SELECT COALESCE(SUM(updated_at), 0) + "
                                    "COALESCE(SUM(deleted_at), 0) FROM (SELECT updated_at, "
                                    "deleted_at FROM skus UNION ALL SELECT updated_at, deleted_at "
                                    "FROM images UNION ALL SELECT updated_at, deleted_at FROM "
                                    "networks)"),
        };
}

static void assert_unchanged(Snapshot a, Snapshot b, const char *what)
{
        cr_assert_eq(a.skus, b.skus, "%s: skus", what);
        cr_assert_eq(a.images, b.images, "%s: images", what);
        cr_assert_eq(a.networks, b.networks, "%s: networks", what);
        cr_assert_eq(a.ssh_keys, b.ssh_keys, "%s: ssh_keys", what);
        cr_assert_eq(a.audits, b.audits, "%s: audit rows", what);
        cr_assert_eq(a.events, b.events, "%s: events", what);
        cr_assert_eq(a.changes, b.changes, "%s: a row changed", what);
}

typedef struct World {
        Controller *c;
        Tokens admin, user, other;
} World;

static void world_start(World *w, const char *extra_arg, const char *extra_val)
{
        w->c = ctl_new();
        ctl_args(w->c, "--rate-limit-address-rps", "1000000", "--rate-limit-address-burst",
                 "1000000", "--rate-limit-session-rps", "1000000", "--rate-limit-session-burst",
                 "1000000", "--heartbeat-timeout-s", "3", "--heartbeat-interval-s", "1", NULL);
        if (extra_arg)
                ctl_args(w->c, extra_arg, extra_val, NULL);
        ctl_start_or_fail(w->c);
        admin_sign_in(w->c, "root@example.com", NULL, &w->admin);
        cr_assert_eq(api_signup(w->c, "ada@example.com", "password ada", "Ada", &w->user), 201);
        cr_assert_eq(api_signup(w->c, "bob@example.com", "password bob", "Bob", &w->other), 201);
}

static void world_stop(World *w)
{
        ctl_stop_clean(w->c);
        ctl_free(w->c);
}

#define SKU_BODY                                                                                   \
        "{\"name\":\"h100-numa\",\"gpu_model\":\"NVIDIA H100 80GB HBM3\",\"gpu_memory_gb\":80,"    \
        "\"pci_ids\":[\"10DE:2330\"],\"gpu_counts\":[1,2,4],"                                      \
        "\"price_per_gpu_hour_micros\":2500000,\"topology\":\"numa\"}"

/* Sends body; expects 400 with details.field (and code, when given) and no change. */
static void expect_refused(World *w, const char *method, const char *path, const char *body,
                           const char *field, const char *code)
{
        Snapshot before = snapshot(w->c);
        _cleanup_resp_ HttpResponse *r = call(w->c, method, path, w->admin.access, body);
        assert_error(r, 400, code ? code : "invalid_request");
        if (field)
                cr_assert_str_eq(strempty(jstr(r, "error.details.field")), field, "%s %s: %s",
                                 method, body, r->body);
        assert_unchanged(before, snapshot(w->c), body);
}

Test(catalog_api, sku_crud_and_every_validation_error)
{
        World w;
        world_start(&w, NULL, NULL);
        const char *skus = "/api/v1/admin/skus";

        _cleanup_resp_ HttpResponse *cr = api_post(w.c, skus, w.admin.access, SKU_BODY);
        cr_assert_eq(cr->status, 201, "%s", cr->body);
        const char *id = jstr(cr, "id");
        cr_assert(id && startswith(id, "sku_"), "%s", cr->body);
        _cleanup_free_ char *loc = xasprintf("%s/%s", skus, id);
        cr_assert_str_eq(strempty(jstr(cr, "name")), "h100-numa");
        cr_assert_str_eq(json_string_value(json_array_get(jget(cr, "pci_ids"), 0)), "10de:2330",
                         "pci ids are stored lower case");
        cr_assert_eq(json_integer_value(jget(cr, "price_per_gpu_hour_micros")), 2500000);
        cr_assert_str_eq(strempty(jstr(cr, "currency")), "USD");
        cr_assert_str_eq(strempty(jstr(cr, "status")), "unavailable", "no node: sold out");
        cr_assert_eq(json_array_size(jget(cr, "available_gpu_counts")), 0);
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM audit_logs WHERE action = "
                                    "'catalog.sku.create'"),
                     1);
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM events WHERE type = "
                                    "'catalog.sku_created'"),
                     1);

        _cleanup_resp_ HttpResponse *g = api_get(w.c, loc, w.admin.access);
        cr_assert_eq(g->status, 200, "%s", g->body);
        cr_assert_str_eq(jstr(g, "id"), id);

        /* every way a create can be wrong: 400 naming the field, nothing stored */
        struct {
                const char *body, *field;
        } bad[] = {
            {"{\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "name"},
            {"{\"name\":\"\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "name"},
            {"{\"name\":\"a\\u0001b\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:"
             "2330\"],\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "name"},
            {"{\"name\":\"x\",\"gpu_model\":\"\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "gpu_model"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":0,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "gpu_memory_gb"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":4097,\"pci_ids\":[\"10de:"
             "2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "gpu_memory_gb"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":\"8\",\"pci_ids\":[\"10de:"
             "2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "gpu_memory_gb"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "pci_ids"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"nvidia\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "pci_ids"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":\"10de:2330\","
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "pci_ids"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "gpu_counts"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[4,2],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "gpu_counts"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[0,1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "gpu_counts"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[1,65],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
             "gpu_counts"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":0,\"topology\":\"node\"}",
             "price_per_gpu_hour_micros"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1000000001,\"topology\":\"node\"}",
             "price_per_gpu_hour_micros"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":2.5,\"topology\":\"node\"}",
             "price_per_gpu_hour_micros"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"rack\"}",
             "topology"},
            {"{\"name\":\"x\",\"gpu_model\":\"G\",\"gpu_memory_gb\":8,\"pci_ids\":[\"10de:2330\"],"
             "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\","
             "\"discount\":5}",
             "discount"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                expect_refused(&w, "POST", skus, bad[i].body, bad[i].field, NULL);

        /* the same name again: 409 name_taken, nothing stored */
        Snapshot before = snapshot(w.c);
        _cleanup_resp_ HttpResponse *dup = api_post(w.c, skus, w.admin.access, SKU_BODY);
        assert_error(dup, 409, "name_taken");
        assert_unchanged(before, snapshot(w.c), "duplicate name");

        /* PATCH: what it names changes, the rest stays; errors change nothing */
        _cleanup_resp_ HttpResponse *p =
            call(w.c, "PATCH", loc, w.admin.access,
                 "{\"price_per_gpu_hour_micros\":2000000,\"gpu_counts\":[1,2,4,8]}");
        cr_assert_eq(p->status, 200, "%s", p->body);
        cr_assert_eq(json_integer_value(jget(p, "price_per_gpu_hour_micros")), 2000000);
        cr_assert_eq(json_array_size(jget(p, "gpu_counts")), 4);
        cr_assert_str_eq(jstr(p, "gpu_model"), "NVIDIA H100 80GB HBM3");
        expect_refused(&w, "PATCH", loc, "{\"gpu_counts\":[2,2]}", "gpu_counts", NULL);
        expect_refused(&w, "PATCH", loc, "{\"topology\":\"pod\"}", "topology", NULL);
        expect_refused(&w, "PATCH", loc, "{\"name\":null}", "name", NULL);
        expect_refused(&w, "PATCH", loc, "{\"id\":\"sku_other\"}", "id", NULL);
        expect_refused(&w, "PATCH", loc, "[1]", NULL, NULL);
        _cleanup_resp_ HttpResponse *other =
            api_post(w.c, skus, w.admin.access,
                     "{\"name\":\"a100\",\"gpu_model\":\"A100\",\"gpu_memory_gb\":40,"
                     "\"pci_ids\":[\"10de:20b0\"],\"gpu_counts\":[1],"
                     "\"price_per_gpu_hour_micros\":1000000,\"topology\":\"node\"}");
        cr_assert_eq(other->status, 201, "%s", other->body);
        before = snapshot(w.c);
        _cleanup_resp_ HttpResponse *rename =
            call(w.c, "PATCH", loc, w.admin.access, "{\"name\":\"a100\"}");
        assert_error(rename, 409, "name_taken");
        assert_unchanged(before, snapshot(w.c), "rename onto a taken name");

        /* unknown and malformed ids: 404 */
        const char *ghosts[] = {"/api/v1/admin/skus/sku_AAAAAAAAAAAAAAAAAAAAAA",
                                "/api/v1/admin/skus/nope", "/api/v1/admin/skus/img_x"};
        for (size_t i = 0; i < ELEMENTSOF(ghosts); i++) {
                _cleanup_resp_ HttpResponse *r1 = api_get(w.c, ghosts[i], w.admin.access);
                assert_error(r1, 404, "not_found");
                _cleanup_resp_ HttpResponse *r2 =
                    call(w.c, "PATCH", ghosts[i], w.admin.access, "{\"gpu_memory_gb\":1}");
                assert_error(r2, 404, "not_found");
                _cleanup_resp_ HttpResponse *r3 =
                    call(w.c, "DELETE", ghosts[i], w.admin.access, NULL);
                assert_error(r3, 404, "not_found");
        }

        /* DELETE: 204, then gone everywhere; the name is free again */
        _cleanup_resp_ HttpResponse *d = call(w.c, "DELETE", loc, w.admin.access, NULL);
        cr_assert_eq(d->status, 204, "%s", d->body);
        _cleanup_resp_ HttpResponse *gone = api_get(w.c, loc, w.admin.access);
        assert_error(gone, 404, "not_found");
        _cleanup_resp_ HttpResponse *d2 = call(w.c, "DELETE", loc, w.admin.access, NULL);
        assert_error(d2, 404, "not_found");
        _cleanup_resp_ HttpResponse *list = api_get(w.c, "/api/v1/catalog/skus", w.user.access);
        cr_assert_eq(list->status, 200);
        cr_assert_eq(json_array_size(jget(list, "items")), 1, "%s", list->body);
        cr_assert_str_eq(
            json_string_value(json_object_get(json_array_get(jget(list, "items"), 0), "name")),
            "a100");
        _cleanup_resp_ HttpResponse *again = api_post(w.c, skus, w.admin.access, SKU_BODY);
        cr_assert_eq(again->status, 201, "%s", again->body);
        cr_assert_str_neq(jstr(again, "id"), id);
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM skus WHERE deleted_at IS NOT NULL"), 1,
                     "deletion is soft");
        world_stop(&w);
}

Test(catalog_api, images_and_networks_crud_and_validation)
{
        World w;
        world_start(&w, NULL, NULL);
        const char *images = "/api/v1/admin/images", *networks = "/api/v1/admin/networks";

        _cleanup_resp_ HttpResponse *img =
            api_post(w.c, images, w.admin.access, "{\"name\":\"ubuntu-22.04-cuda\"}");
        cr_assert_eq(img->status, 201, "%s", img->body);
        cr_assert_str_eq(jstr(img, "ssh_user"), "ubuntu", "the default user");
        cr_assert(startswith(jstr(img, "id"), "img_"));
        struct {
                const char *body, *field;
        } bad_images[] = {
            {"{}", "name"},
            {"{\"name\":\"x\",\"ssh_user\":\"Admin\"}", "ssh_user"},
            {"{\"name\":\"x\",\"ssh_user\":\"root user\"}", "ssh_user"},
            {"{\"name\":\"x\",\"ssh_user\":\"\"}", "ssh_user"},
            {"{\"name\":\"x\",\"source\":\"a\\tb\"}", "source"},
            {"{\"name\":\"x\",\"description\":false}", "description"},
            {"{\"name\":\"x\",\"format\":\"qcow2\"}", "format"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad_images); i++)
                expect_refused(&w, "POST", images, bad_images[i].body, bad_images[i].field, NULL);
        Snapshot before = snapshot(w.c);
        _cleanup_resp_ HttpResponse *dup =
            api_post(w.c, images, w.admin.access, "{\"name\":\"ubuntu-22.04-cuda\"}");
        assert_error(dup, 409, "name_taken");
        assert_unchanged(before, snapshot(w.c), "duplicate image");
        _cleanup_free_ char *img_path = xasprintf("%s/%s", images, jstr(img, "id"));
        _cleanup_resp_ HttpResponse *ip =
            call(w.c, "PATCH", img_path, w.admin.access,
                 "{\"ssh_user\":\"cloud-user\",\"source\":\"/srv/images/u22.qcow2\"}");
        cr_assert_eq(ip->status, 200, "%s", ip->body);
        cr_assert_str_eq(jstr(ip, "ssh_user"), "cloud-user");
        cr_assert_str_eq(jstr(ip, "name"), "ubuntu-22.04-cuda");
        expect_refused(&w, "PATCH", img_path, "{\"ssh_user\":\"9\"}", "ssh_user", NULL);

        _cleanup_resp_ HttpResponse *net =
            api_post(w.c, networks, w.admin.access, "{\"name\":\"tenant-vlan\",\"vlan\":120}");
        cr_assert_eq(net->status, 201, "%s", net->body);
        cr_assert_eq(json_integer_value(jget(net, "vlan")), 120);
        cr_assert_str_eq(jstr(net, "mac_policy"), "generated");
        cr_assert(json_is_true(jget(net, "spoofchk")), "spoofchk on by default");
        cr_assert(json_is_false(jget(net, "trust")), "trust off by default");
        _cleanup_resp_ HttpResponse *flat = api_post(w.c, networks, w.admin.access,
                                                     "{\"name\":\"flat\",\"vlan\":0,\"mac_policy\":"
                                                     "\"hardware\",\"description\":\"untagged\"}");
        cr_assert_eq(flat->status, 201, "%s", flat->body);
        cr_assert(json_is_true(jget(flat, "untagged")));
        struct {
                const char *body, *field;
        } bad_networks[] = {
            {"{\"name\":\"x\"}", "vlan"},
            {"{\"vlan\":5}", "name"},
            {"{\"name\":\"x\",\"vlan\":4095}", "vlan"},
            {"{\"name\":\"x\",\"vlan\":-1}", "vlan"},
            {"{\"name\":\"x\",\"vlan\":\"7\"}", "vlan"},
            {"{\"name\":\"x\",\"vlan\":7,\"mac_policy\":\"random\"}", "mac_policy"},
            {"{\"name\":\"x\",\"vlan\":7,\"spoofchk\":\"no\"}", "spoofchk"},
            {"{\"name\":\"x\",\"vlan\":7,\"trust\":1}", "trust"},
            {"{\"name\":\"x\",\"vlan\":7,\"mtu\":9000}", "mtu"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad_networks); i++)
                expect_refused(&w, "POST", networks, bad_networks[i].body, bad_networks[i].field,
                               NULL);
        _cleanup_free_ char *net_path = xasprintf("%s/%s", networks, jstr(net, "id"));
        expect_refused(&w, "PATCH", net_path, "{\"vlan\":5000}", "vlan", NULL);
        _cleanup_resp_ HttpResponse *np =
            call(w.c, "PATCH", net_path, w.admin.access, "{\"vlan\":121,\"trust\":true}");
        cr_assert_eq(np->status, 200, "%s", np->body);
        cr_assert_eq(json_integer_value(jget(np, "vlan")), 121);
        cr_assert(json_is_true(jget(np, "trust")));
        cr_assert(json_is_true(jget(np, "spoofchk")));

        /* the public lists, with paging, and without what was deleted */
        _cleanup_resp_ HttpResponse *del = call(w.c, "DELETE", net_path, w.admin.access, NULL);
        cr_assert_eq(del->status, 204);
        _cleanup_resp_ HttpResponse *nl = api_get(w.c, "/api/v1/catalog/networks", w.user.access);
        cr_assert_eq(nl->status, 200);
        cr_assert_eq(json_array_size(jget(nl, "items")), 1, "%s", nl->body);
        cr_assert_str_eq(
            json_string_value(json_object_get(json_array_get(jget(nl, "items"), 0), "name")),
            "flat");
        _cleanup_resp_ HttpResponse *il = api_get(w.c, "/api/v1/catalog/images", w.other.access);
        cr_assert_eq(il->status, 200);
        cr_assert_eq(json_array_size(jget(il, "items")), 1, "%s", il->body);
        cr_assert(json_is_null(jget(il, "next_cursor")));
        world_stop(&w);
}

Test(catalog_api, users_cannot_manage_the_catalog)
{
        World w;
        world_start(&w, NULL, NULL);
        _cleanup_resp_ HttpResponse *cr =
            api_post(w.c, "/api/v1/admin/skus", w.admin.access, SKU_BODY);
        cr_assert_eq(cr->status, 201);
        _cleanup_free_ char *loc = xasprintf("/api/v1/admin/skus/%s", jstr(cr, "id"));
        const char *calls[][3] = {
            {"GET", "/api/v1/admin/skus", NULL},
            {"POST", "/api/v1/admin/skus", SKU_BODY},
            {"GET", loc, NULL},
            {"PATCH", loc, "{\"price_per_gpu_hour_micros\":1}"},
            {"DELETE", loc, NULL},
            {"POST", "/api/v1/admin/images", "{\"name\":\"mine\"}"},
            {"POST", "/api/v1/admin/networks", "{\"name\":\"mine\",\"vlan\":1}"},
            {"GET", "/api/v1/admin/events", NULL},
        };
        Snapshot before = snapshot(w.c);
        for (size_t i = 0; i < ELEMENTSOF(calls); i++) {
                _cleanup_resp_ HttpResponse *r =
                    call(w.c, calls[i][0], calls[i][1], w.user.access, calls[i][2]);
                assert_error(r, 403, "forbidden");
                _cleanup_resp_ HttpResponse *a =
                    call(w.c, calls[i][0], calls[i][1], NULL, calls[i][2]);
                assert_error(a, 401, "unauthenticated");
        }
        assert_unchanged(before, snapshot(w.c), "refused callers");
        _cleanup_resp_ HttpResponse *pub = api_get(w.c, "/api/v1/catalog/skus", NULL);
        assert_error(pub, 401, "unauthenticated");
        world_stop(&w);
}

Test(catalog_api, public_lists_page_with_a_cursor)
{
        World w;
        world_start(&w, NULL, NULL);
        for (int i = 0; i < 5; i++) {
                _cleanup_free_ char *body = xasprintf("{\"name\":\"img-%d\"}", i);
                _cleanup_resp_ HttpResponse *r =
                    api_post(w.c, "/api/v1/admin/images", w.admin.access, body);
                cr_assert_eq(r->status, 201);
        }
        _cleanup_resp_ HttpResponse *p1 =
            api_get(w.c, "/api/v1/catalog/images?limit=2", w.user.access);
        cr_assert_eq(p1->status, 200, "%s", p1->body);
        cr_assert_eq(json_array_size(jget(p1, "items")), 2);
        const char *cursor = jstr(p1, "next_cursor");
        cr_assert(cursor, "%s", p1->body);
        /* an image created now lands after the cursor, not before it */
        _cleanup_resp_ HttpResponse *late =
            api_post(w.c, "/api/v1/admin/images", w.admin.access, "{\"name\":\"img-late\"}");
        cr_assert_eq(late->status, 201);
        _cleanup_free_ char *next = xasprintf("/api/v1/catalog/images?limit=10&cursor=%s", cursor);
        _cleanup_resp_ HttpResponse *p2 = api_get(w.c, next, w.user.access);
        cr_assert_eq(p2->status, 200, "%s", p2->body);
        json_t *items = jget(p2, "items");
        cr_assert_eq(json_array_size(items), 4, "%s", p2->body);
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "name")),
                         "img-2");
        cr_assert_str_eq(json_string_value(json_object_get(json_array_get(items, 3), "name")),
                         "img-late");
        cr_assert(json_is_null(jget(p2, "next_cursor")));
        const char *bad[] = {"/api/v1/catalog/images?limit=0", "/api/v1/catalog/images?limit=501",
                             "/api/v1/catalog/images?limit=x", "/api/v1/catalog/skus?cursor=zz",
                             "/api/v1/catalog/networks?cursor=c-1"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_resp_ HttpResponse *r = api_get(w.c, bad[i], w.user.access);
                cr_assert_eq(r->status, 400, "%s: %s", bad[i], r->body);
                assert_error(r, 400, "invalid_request");
        }
        world_stop(&w);
}

/* ---- availability from a real node ---- */

static PeerOptions peer_opts(const EnrolledNode *n, json_t *doc)
{
        return (PeerOptions){.endpoint = n->endpoint,
                             .node_id = n->node_id,
                             .tls_cert = n->cert_pem,
                             .tls_key = n->key_pem,
                             .ca_pem = n->ca_pem,
                             .heartbeat_ms = 200,
                             .discovery = doc};
}

/* Two H100 slots on NUMA node 0 and one on NUMA node 1, each with its own
 * VF and NVMe drive. */
static json_t *h100_discovery(void)
{
        json_t *devices = json_array(), *slots = json_array();
        const char *gpus[] = {"0000:03:00.0", "0000:04:00.0", "0000:83:00.0"};
        const char *nvmes[] = {"0000:07:00.0", "0000:08:00.0", "0000:87:00.0"};
        int numa[] = {0, 0, 1};
        for (int i = 0; i < 3; i++) {
                json_array_append_new(devices, json_pack("{s:s, s:s, s:s, s:s, s:i}", "address",
                                                         gpus[i], "kind", "gpu", "vendor", "10de",
                                                         "device", "2330", "numa_node", numa[i]));
                json_array_append_new(devices, json_pack("{s:s, s:s, s:i}", "address", nvmes[i],
                                                         "kind", "nvme", "numa_node", numa[i]));
                char id[64];
                snprintf(id, sizeof(id), "slot-%s", gpus[i]);
                json_array_append_new(
                    slots,
                    json_pack("{s:s, s:[s], s:s, s:i, s:s, s:i, s:b, s:[], s:{s:b, s:b, s:b}}",
                              "id", id, "gpus", gpus[i], "nic",
                              numa[i] ? "0000:86:00.0" : "0000:06:00.0", "vf_index", i, "nvme",
                              nvmes[i], "numa_node", numa[i], "ok", 1, "problems", "invariants",
                              "per_slot_vf", 1, "nvme_ownership", 1, "numa_locality", 1));
        }
        json_array_append_new(devices, json_pack("{s:s, s:s, s:i}", "address", "0000:06:00.0",
                                                 "kind", "nic", "numa_node", 0));
        json_array_append_new(devices, json_pack("{s:s, s:s, s:i}", "address", "0000:86:00.0",
                                                 "kind", "nic", "numa_node", 1));
        return json_pack("{s:[{s:i, s:s, s:I}, {s:i, s:s, s:I}], s:o, s:o, s:[], s:s, s:b}",
                         "numa_nodes", "id", 0, "cpus", "0-7", "memory_bytes", (json_int_t)1 << 34,
                         "id", 1, "cpus", "8-15", "memory_bytes", (json_int_t)1 << 34, "devices",
                         devices, "slots", slots, "invariants", "fingerprint",
                         "sha256:catalog-test", "simulated", 1);
}

/* Polls the public SKU list until the SKU named name has status want. */
static HttpResponse *wait_sku_status(World *w, const char *name, const char *want)
{
        long long deadline = mono_ms() + WAIT_MS;
        for (;;) {
                HttpResponse *r = api_get(w->c, "/api/v1/catalog/skus", w->user.access);
                cr_assert_eq(r->status, 200, "%s", r->body);
                size_t i;
                json_t *v;
                json_array_foreach(jget(r, "items"), i, v)
                {
                        if (streq_ptr(json_string_value(json_object_get(v, "name")), name) &&
                            streq_ptr(json_string_value(json_object_get(v, "status")), want))
                                return r;
                }
                if (mono_ms() > deadline)
                        return r;
                http_response_free(r);
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
        }
}

static json_t *sku_named(HttpResponse *r, const char *name)
{
        size_t i;
        json_t *v;
        json_array_foreach(
            jget(r, "items"), i,
            v) if (streq_ptr(json_string_value(json_object_get(v, "name")), name)) return v;
        return NULL;
}

static char *counts_text(json_t *sku)
{
        return json_dumps(json_object_get(sku, "available_gpu_counts"), JSON_COMPACT);
}

Test(catalog_api, availability_follows_approved_slots_on_online_nodes)
{
        World w;
        world_start(&w, NULL, NULL);
        /* per NUMA node: 1 and 2 fit (node 0 has two), 4 never */
        _cleanup_resp_ HttpResponse *numa =
            api_post(w.c, "/api/v1/admin/skus", w.admin.access, SKU_BODY);
        cr_assert_eq(numa->status, 201, "%s", numa->body);
        /* any slots of the node: 1, 2 and 3 fit */
        _cleanup_resp_ HttpResponse *node =
            api_post(w.c, "/api/v1/admin/skus", w.admin.access,
                     "{\"name\":\"h100-node\",\"gpu_model\":\"H100\",\"gpu_memory_gb\":80,"
                     "\"pci_ids\":[\"10de:2330\"],\"gpu_counts\":[1,3,8],"
                     "\"price_per_gpu_hour_micros\":2500000,\"topology\":\"node\"}");
        cr_assert_eq(node->status, 201, "%s", node->body);
        /* another GPU model: never available here */
        _cleanup_resp_ HttpResponse *a100 =
            api_post(w.c, "/api/v1/admin/skus", w.admin.access,
                     "{\"name\":\"a100\",\"gpu_model\":\"A100\",\"gpu_memory_gb\":40,"
                     "\"pci_ids\":[\"10de:20b0\"],\"gpu_counts\":[1],"
                     "\"price_per_gpu_hour_micros\":1000000,\"topology\":\"node\"}");
        cr_assert_eq(a100->status, 201, "%s", a100->body);

        EnrolledNode n;
        node_create_and_enroll(w.c, w.admin.access, "gpu-host-1", &n);
        _cleanup_(json_decrefp) json_t *doc = h100_discovery();
        PeerOptions o = peer_opts(&n, doc);
        TestPeer *p = peer_start(&o);
        cr_assert(peer_wait_welcomes(p, 1, WAIT_MS), "no welcome:\n%s", ctl_stderr(w.c));

        /* online but nothing approved yet: sold out */
        _cleanup_resp_ HttpResponse *none = api_get(w.c, "/api/v1/catalog/skus", w.user.access);
        cr_assert_str_eq(json_string_value(json_object_get(sku_named(none, "h100-numa"), "status")),
                         "unavailable");

        _cleanup_free_ char *disc =
            xasprintf("/api/v1/admin/nodes/%s/slice-topology/discovery", n.node_id);
        _cleanup_resp_ HttpResponse *d = api_post(w.c, disc, w.admin.access, "{}");
        cr_assert_eq(d->status, 202, "%s", d->body);
        _cleanup_free_ char *cand = xasprintf("/api/v1/admin/nodes/%s/slice-topology/candidates/%s",
                                              n.node_id, jstr(d, "discovery_id"));
        long long deadline = mono_ms() + WAIT_MS;
        for (;;) {
                _cleanup_resp_ HttpResponse *c = api_get(w.c, cand, w.admin.access);
                cr_assert_eq(c->status, 200, "%s", c->body);
                if (!streq(strempty(jstr(c, "state")), "running"))
                        break;
                cr_assert_lt(mono_ms(), deadline, "discovery never finished");
                struct timespec ts = {0, 50 * 1000000L};
                nanosleep(&ts, NULL);
        }
        _cleanup_free_ char *approve = xasprintf("%s/approve", cand);
        _cleanup_resp_ HttpResponse *ok = api_post(w.c, approve, w.admin.access, "{}");
        cr_assert_eq(ok->status, 200, "%s", ok->body);

        _cleanup_resp_ HttpResponse *av = wait_sku_status(&w, "h100-numa", "available");
        json_t *s = sku_named(av, "h100-numa");
        _cleanup_free_ char *numa_counts = counts_text(s);
        cr_assert_str_eq(numa_counts, "[1,2]", "%s", av->body);
        cr_assert_str_eq(json_string_value(json_object_get(s, "status")), "available");
        _cleanup_free_ char *node_counts = counts_text(sku_named(av, "h100-node"));
        cr_assert_str_eq(node_counts, "[1,3]", "%s", av->body);
        cr_assert_str_eq(json_string_value(json_object_get(sku_named(av, "a100"), "status")),
                         "unavailable");

        /* the agent goes away: the node is offline, everything is sold out */
        peer_stop(p);
        _cleanup_resp_ HttpResponse *off = wait_sku_status(&w, "h100-numa", "unavailable");
        json_t *so = sku_named(off, "h100-numa");
        cr_assert_str_eq(json_string_value(json_object_get(so, "status")), "unavailable", "%s",
                         off->body);
        cr_assert_eq(json_array_size(json_object_get(so, "available_gpu_counts")), 0);

        /* and back */
        p = peer_start(&o);
        cr_assert(peer_wait_welcomes(p, 1, WAIT_MS));
        _cleanup_resp_ HttpResponse *back = wait_sku_status(&w, "h100-numa", "available");
        cr_assert_str_eq(json_string_value(json_object_get(sku_named(back, "h100-numa"), "status")),
                         "available", "%s", back->body);
        peer_stop(p);
        enrolled_node_done(&n);
        world_stop(&w);
}

/* ---- SSH keys ---- */

static char *key_body(const char *line, const char *name)
{
        json_t *j = json_pack("{s:s}", "public_key", line);
        if (name)
                json_object_set_new(j, "name", json_string(name));
        char *s = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        return s;
}

static bool have_ssh_keygen(void)
{
        return system("command -v ssh-keygen >/dev/null 2>&1") == 0;
}

Test(catalog_api, ssh_keys_are_per_user)
{
        World w;
        world_start(&w, NULL, NULL);
        const char *keys = "/api/v1/access/ssh-keys";
        _cleanup_free_ char *line = ssh_test_public_key(1, "ada@laptop");
        _cleanup_free_ char *body = key_body(line, NULL);
        _cleanup_resp_ HttpResponse *a = api_post(w.c, keys, w.user.access, body);
        cr_assert_eq(a->status, 201, "%s", a->body);
        const char *kid = jstr(a, "id");
        cr_assert(kid && startswith(kid, "key_"));
        cr_assert_str_eq(jstr(a, "name"), "ada@laptop", "named after the comment");
        cr_assert(startswith(strempty(jstr(a, "fingerprint")), "SHA256:"));
        cr_assert_str_eq(jstr(a, "public_key"), line);
        _cleanup_free_ char *kpath = xasprintf("%s/%s", keys, kid);

        /* the same key again: 409; another user may add it */
        Snapshot before = snapshot(w.c);
        _cleanup_resp_ HttpResponse *dup = api_post(w.c, keys, w.user.access, body);
        assert_error(dup, 409, "ssh_key_exists");
        assert_unchanged(before, snapshot(w.c), "duplicate key");
        _cleanup_resp_ HttpResponse *b = api_post(w.c, keys, w.other.access, body);
        cr_assert_eq(b->status, 201, "%s", b->body);

        /* lists are per user */
        _cleanup_free_ char *line2 = ssh_test_public_key(2, NULL);
        _cleanup_free_ char *body2 = key_body(line2, "ci runner");
        _cleanup_resp_ HttpResponse *a2 = api_post(w.c, keys, w.user.access, body2);
        cr_assert_eq(a2->status, 201, "%s", a2->body);
        cr_assert_str_eq(jstr(a2, "name"), "ci runner");
        _cleanup_resp_ HttpResponse *la = api_get(w.c, keys, w.user.access);
        cr_assert_eq(json_array_size(jget(la, "items")), 2, "%s", la->body);
        _cleanup_resp_ HttpResponse *lb = api_get(w.c, keys, w.other.access);
        cr_assert_eq(json_array_size(jget(lb, "items")), 1, "%s", lb->body);
        cr_assert_str_neq(
            json_string_value(json_object_get(json_array_get(jget(lb, "items"), 0), "id")), kid);

        /* another user's key does not exist for them, nor for an admin */
        before = snapshot(w.c);
        _cleanup_resp_ HttpResponse *ob = call(w.c, "DELETE", kpath, w.other.access, NULL);
        assert_error(ob, 404, "not_found");
        _cleanup_resp_ HttpResponse *oa = call(w.c, "DELETE", kpath, w.admin.access, NULL);
        assert_error(oa, 404, "not_found");
        _cleanup_resp_ HttpResponse *bogus =
            call(w.c, "DELETE", "/api/v1/access/ssh-keys/nonsense", w.user.access, NULL);
        assert_error(bogus, 404, "not_found");
        assert_unchanged(before, snapshot(w.c), "foreign deletes");
        _cleanup_resp_ HttpResponse *mine = call(w.c, "DELETE", kpath, w.user.access, NULL);
        cr_assert_eq(mine->status, 204, "%s", mine->body);
        _cleanup_resp_ HttpResponse *twice = call(w.c, "DELETE", kpath, w.user.access, NULL);
        assert_error(twice, 404, "not_found");

        /* bad keys: 400 invalid_ssh_key with a reason, nothing stored */
        struct {
                const char *line, *reason;
        } bad[] = {
            {"ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4Ed", "unsupported_type"},
            {"ssh-ed25519 not*base64", "bad_base64"},
            {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==", "truncated"},
            {"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAILhIZpWk1EytCrSgupXIasSleuV1kwZ8aDcd71EJzpfL",
             "type_mismatch"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                before = snapshot(w.c);
                _cleanup_free_ char *bb = key_body(bad[i].line, NULL);
                _cleanup_resp_ HttpResponse *r = api_post(w.c, keys, w.user.access, bb);
                assert_error(r, 400, "invalid_ssh_key");
                cr_assert_str_eq(strempty(jstr(r, "error.details.reason")), bad[i].reason, "%s",
                                 r->body);
                assert_unchanged(before, snapshot(w.c), bad[i].line);
        }
        _cleanup_resp_ HttpResponse *nokey = api_post(w.c, keys, w.user.access, "{\"name\":\"x\"}");
        assert_invalid_field(nokey, "public_key");
        world_stop(&w);
}

Test(catalog_api, private_keys_are_refused_and_never_kept)
{
        World w;
        world_start(&w, NULL, NULL);
        const char *keys = "/api/v1/access/ssh-keys";
        _cleanup_free_ char *dir = tmpdir_new("catalog-keys");
        char *priv = NULL, *pub = NULL, *fp = NULL;
        if (have_ssh_keygen()) {
                _cleanup_free_ char *gen = xasprintf("ssh-keygen -q -t ed25519 -N '' -C "
                                                     "'ada@desk' -f %s/id </dev/null >/dev/null",
                                                     dir);
                cr_assert_eq(system(gen), 0);
                _cleanup_free_ char *pp = xasprintf("%s/id", dir),
                                    *pubp = xasprintf("%s/id.pub", dir);
                priv = read_file(pp);
                pub = read_file(pubp);
                _cleanup_free_ char *cmd = xasprintf("ssh-keygen -lf %s", pubp);
                FILE *f = popen(cmd, "r");
                char out[512] = "";
                cr_assert(fgets(out, sizeof(out), f));
                pclose(f);
                char *sp = strchr(out, ' ');
                fp = strndup(sp + 1, strcspn(sp + 1, " "));
        } else {
                /* no ssh-keygen: a PEM-armoured stand-in */
                priv =
                    xasprintf("-----BEGIN OPENSSH PRIVATE KEY-----\n"
                              "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n"
                              "-----END OPENSSH PRIVATE KEY-----\n");
        }
        /* the private key's last line of base64 (its secret part), which must
         * never show up anywhere */
        const char *end = strstr(priv, "\n-----END");
        cr_assert(end);
        const char *start = end;
        while (start > priv && start[-1] != '\n')
                start--;
        _cleanup_free_ char *secret = strndup(start, (size_t)(end - start));
        cr_assert_gt(strlen(secret), 8);

        Snapshot before = snapshot(w.c);
        _cleanup_free_ char *body = key_body(priv, "oops");
        _cleanup_resp_ HttpResponse *r = api_post(w.c, keys, w.user.access, body);
        assert_error(r, 400, "invalid_ssh_key");
        cr_assert_str_eq(strempty(jstr(r, "error.details.reason")), "private_key", "%s", r->body);
        cr_assert_null(strstr(r->body, secret), "the answer echoes the private key");
        cr_assert_null(strstr(r->body, "PRIVATE KEY-----"), "the answer echoes the private key");
        assert_unchanged(before, snapshot(w.c), "private key");
        /* the armour split over a JSON field's escapes is still caught */
        _cleanup_resp_ HttpResponse *r2 =
            api_post(w.c, keys, w.user.access,
                     "{\"public_key\":\"-----BEGIN RSA PRIVATE KEY-----\\nMIIEow\\n\"}");
        assert_error(r2, 400, "invalid_ssh_key");
        cr_assert_str_eq(strempty(jstr(r2, "error.details.reason")), "private_key");

        if (pub) {
                /* its public half is welcome, with ssh-keygen's fingerprint */
                _cleanup_free_ char *pb = key_body(pub, NULL);
                _cleanup_resp_ HttpResponse *ok = api_post(w.c, keys, w.user.access, pb);
                cr_assert_eq(ok->status, 201, "%s", ok->body);
                cr_assert_str_eq(jstr(ok, "fingerprint"), fp);
                cr_assert_str_eq(jstr(ok, "name"), "ada@desk");
        }
        ctl_stop_clean(w.c);
        /* neither the database file nor the log holds the secret */
        _cleanup_free_ char *log = ctl_stderr(w.c);
        cr_assert_null(strstr(log, secret), "the controller logged the private key");
        _cleanup_free_ char *dbpath = xasprintf("%s/gpuslice.db", w.c->state_dir);
        _cleanup_free_ char *grep =
            xasprintf("grep -qF -- '%s' %s %s-wal 2>/dev/null", secret, dbpath, dbpath);
        cr_assert_neq(system(grep), 0, "the database holds the private key");
        ctl_free(w.c);
        tmpdir_remove(dir);
        free(priv);
        free(pub);
        free(fp);
}

/* ---- config ---- */

Test(catalog_api, config_for_clients)
{
        World w;
        world_start(&w, "--metrics-url-template",
                    "https://grafana.example.com/d/gpu?var-allocation={allocation_id}");
        _cleanup_resp_ HttpResponse *r = api_get(w.c, "/api/v1/config", w.user.access);
        cr_assert_eq(r->status, 200, "%s", r->body);
        cr_assert_str_eq(strempty(jstr(r, "metrics_url_template")),
                         "https://grafana.example.com/d/gpu?var-allocation={allocation_id}");
        json_t *modes = jget(r, "features.pricing_modes");
        cr_assert_eq(json_array_size(modes), 1);
        cr_assert_str_eq(json_string_value(json_array_get(modes, 0)), "on_demand");
        cr_assert(json_is_false(jget(r, "features.idle_suspend")));
        _cleanup_resp_ HttpResponse *anon = api_get(w.c, "/api/v1/config", NULL);
        assert_error(anon, 401, "unauthenticated");
        world_stop(&w);

        World d;
        world_start(&d, NULL, NULL);
        _cleanup_resp_ HttpResponse *dr = api_get(d.c, "/api/v1/config", d.user.access);
        cr_assert_eq(dr->status, 200);
        cr_assert(json_is_null(jget(dr, "metrics_url_template")), "%s", dr->body);
        world_stop(&d);
}

/* ---- the events outbox ---- */

static void collect_ids(HttpResponse *r, json_t *into)
{
        size_t i;
        json_t *v;
        json_array_foreach(jget(r, "items"), i, v)
            json_array_append(into, json_object_get(v, "id"));
}

Test(catalog_api, events_list_with_a_cursor_that_survives_inserts)
{
        World w;
        world_start(&w, NULL, NULL);
        /* three real events from admin actions */
        _cleanup_resp_ HttpResponse *s =
            api_post(w.c, "/api/v1/admin/skus", w.admin.access, SKU_BODY);
        cr_assert_eq(s->status, 201);
        _cleanup_resp_ HttpResponse *i =
            api_post(w.c, "/api/v1/admin/images", w.admin.access, "{\"name\":\"u\"}");
        cr_assert_eq(i->status, 201);
        _cleanup_free_ char *sp = xasprintf("/api/v1/admin/skus/%s", jstr(s, "id"));
        _cleanup_resp_ HttpResponse *u =
            call(w.c, "PATCH", sp, w.admin.access, "{\"gpu_memory_gb\":94}");
        cr_assert_eq(u->status, 200);

        _cleanup_resp_ HttpResponse *p1 =
            api_get(w.c, "/api/v1/admin/events?limit=2", w.admin.access);
        cr_assert_eq(p1->status, 200, "%s", p1->body);
        json_t *first = json_array_get(jget(p1, "items"), 0);
        cr_assert_str_eq(json_string_value(json_object_get(first, "type")), "catalog.sku_created");
        cr_assert_str_eq(json_string_value(json_object_get(first, "subject_id")), jstr(s, "id"));
        cr_assert(startswith(json_string_value(json_object_get(first, "id")), "evt_"));
        cr_assert(json_is_string(json_object_get(first, "at")));
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(first, "data"), "name")),
                         "h100-numa");
        const char *cursor = jstr(p1, "next_cursor");
        cr_assert(cursor, "%s", p1->body);
        json_t *seen = json_array();
        collect_ids(p1, seen);

        /* more events after the page was read, one of them from a deletion */
        _cleanup_resp_ HttpResponse *n =
            api_post(w.c, "/api/v1/admin/networks", w.admin.access, "{\"name\":\"n\",\"vlan\":3}");
        cr_assert_eq(n->status, 201);
        _cleanup_resp_ HttpResponse *del = call(w.c, "DELETE", sp, w.admin.access, NULL);
        cr_assert_eq(del->status, 204);

        _cleanup_free_ char *next = xasprintf("/api/v1/admin/events?limit=2&cursor=%s", cursor);
        for (int pages = 0; next && pages < 10; pages++) {
                _cleanup_resp_ HttpResponse *p = api_get(w.c, next, w.admin.access);
                cr_assert_eq(p->status, 200, "%s", p->body);
                collect_ids(p, seen);
                free(next);
                next = jstr(p, "next_cursor") ? xasprintf("/api/v1/admin/events?limit=2&cursor=%s",
                                                          jstr(p, "next_cursor"))
                                              : NULL;
        }
        /* every event exactly once, in the order written */
        cr_assert_eq((long long)json_array_size(seen),
                     db_scalar(w.c, "SELECT COUNT(*) FROM events"));
        cr_assert_eq(json_array_size(seen), 5);
        for (size_t k = 0; k < json_array_size(seen); k++) {
                _cleanup_free_ char *q = xasprintf("SELECT seq FROM events WHERE id = '%s'",
                                                   json_string_value(json_array_get(seen, k)));
                cr_assert_eq(db_scalar(w.c, q), (long long)k + 1, "event %zu out of order", k);
        }
        json_decref(seen);

        /* filters */
        _cleanup_resp_ HttpResponse *t =
            api_get(w.c, "/api/v1/admin/events?type=catalog.sku_updated", w.admin.access);
        cr_assert_eq(json_array_size(jget(t, "items")), 1, "%s", t->body);
        _cleanup_free_ char *bysub = xasprintf("/api/v1/admin/events?subject_id=%s", jstr(s, "id"));
        _cleanup_resp_ HttpResponse *sub = api_get(w.c, bysub, w.admin.access);
        cr_assert_eq(json_array_size(jget(sub, "items")), 3, "%s", sub->body);
        _cleanup_resp_ HttpResponse *bad =
            api_get(w.c, "/api/v1/admin/events?cursor=x", w.admin.access);
        assert_invalid_field(bad, "cursor");
        _cleanup_resp_ HttpResponse *user = api_get(w.c, "/api/v1/admin/events", w.user.access);
        assert_error(user, 403, "forbidden");
        world_stop(&w);
}

/* Events other parts write (provisioning, billing) appear in the same list,
 * in order: rows written into the stopped controller's database. */
Test(catalog_api, events_written_by_others_are_listed_in_order)
{
        World w;
        world_start(&w, NULL, NULL);
        _cleanup_resp_ HttpResponse *s =
            api_post(w.c, "/api/v1/admin/skus", w.admin.access, SKU_BODY);
        cr_assert_eq(s->status, 201);
        cr_assert_eq(ctl_stop(w.c, SIGTERM, 30000), 0);
        db_exec_rw(w.c,
                   "INSERT INTO events (id, at, type, subject_id, data) VALUES "
                   "('evt_AAAAAAAAAAAAAAAAAAAAAA', 1790000000000000, "
                   "'provisioning.force_release_requested', 'alc_AAAAAAAAAAAAAAAAAAAAAA', "
                   "'{\"reason\":\"stuck\"}'), ('evt_BBBBBBBBBBBBBBBBBBBBBB', 1790000000000001, "
                   "'billing.low_balance', NULL, '{}')");
        ctl_start_or_fail(w.c);
        _cleanup_resp_ HttpResponse *r = api_get(w.c, "/api/v1/admin/events", w.admin.access);
        cr_assert_eq(r->status, 200, "%s", r->body);
        json_t *items = jget(r, "items");
        cr_assert_eq(json_array_size(items), 3, "%s", r->body);
        json_t *fr = json_array_get(items, 1);
        cr_assert_str_eq(json_string_value(json_object_get(fr, "type")),
                         "provisioning.force_release_requested");
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(fr, "data"), "reason")),
                         "stuck");
        cr_assert(json_is_null(json_object_get(json_array_get(items, 2), "subject_id")));
        _cleanup_resp_ HttpResponse *f = api_get(
            w.c, "/api/v1/admin/events?type=provisioning.force_release_requested", w.admin.access);
        cr_assert_eq(json_array_size(jget(f, "items")), 1, "%s", f->body);
        world_stop(&w);
}
