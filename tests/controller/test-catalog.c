/* SPDX-License-Identifier: MIT */
/* catalog.c: SKUs, images and networks: every field validated (a refused
 * create or update names the field and changes nothing), names unique among
 * live rows, soft delete, defaults, list order and paging. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "db.h"
#include "harness.h"

TestSuite(catalog, .timeout = 60);

static char *dir;
static Db *db;

static void db_setup(void)
{
        dir = tmpdir_new("catalog");
        char path[4096];
        snprintf(path, sizeof(path), "%s/gpuslice.db", dir);
        cr_assert_eq(db_open(path, &db), 0);
}

static void db_teardown(void)
{
        db_close(db);
        db = NULL;
        tmpdir_remove(dir);
        free(dir);
}

static json_t *parse(const char *text)
{
        json_error_t e;
        json_t *j = json_loads(text, 0, &e);
        cr_assert(j, "bad test JSON %s: %s", text, e.text);
        return j;
}

/* A whole table as text, to compare before and after a refusal. */
static char *dump(const char *table)
{
        char *sql = xasprintf("SELECT group_concat(json_array(seq, id, name, updated_at, "
                              "deleted_at), ';') FROM %s",
                              table);
        sqlite3_stmt *s = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db_handle(db), sql, -1, &s, NULL), SQLITE_OK);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        const char *t = (const char *)sqlite3_column_text(s, 0);
        char *out = strdup(t ? t : "");
        sqlite3_finalize(s);
        free(sql);
        return out;
}

#define SKU_OK                                                                                     \
        "\"gpu_model\":\"NVIDIA H100 80GB HBM3\",\"gpu_memory_gb\":80,"                            \
        "\"pci_ids\":[\"10DE:2330\",\"10de:2331\"],\"gpu_counts\":[1,2,4,8],"                      \
        "\"price_per_gpu_hour_micros\":2500000,\"topology\":\"numa\""

/* ---- validators ---- */

Test(catalog, names)
{
        cr_assert(catalog_name_valid("h100"));
        cr_assert(catalog_name_valid("H100 × 8 (NUMA)"));
        char n[4 * CATALOG_NAME_MAX + 4];
        memset(n, 'n', CATALOG_NAME_MAX);
        n[CATALOG_NAME_MAX] = '\0';
        cr_assert(catalog_name_valid(n));
        n[CATALOG_NAME_MAX] = 'n';
        n[CATALOG_NAME_MAX + 1] = '\0';
        cr_assert_not(catalog_name_valid(n));
        /* characters, not bytes: 64 two-byte characters are fine */
        n[0] = '\0';
        for (int i = 0; i < CATALOG_NAME_MAX; i++)
                strcat(n, "é");
        cr_assert(catalog_name_valid(n));
        strcat(n, "é");
        cr_assert_not(catalog_name_valid(n));
        const char *bad[] = {"", " ", "\t", "a\nb", "tab\there", "del\x7f", NULL};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                cr_assert_not(catalog_name_valid(bad[i]), "name #%zu accepted", i);
}

Test(catalog, pci_ids_and_user_names)
{
        cr_assert(pci_id_valid("10de:2330"));
        cr_assert(pci_id_valid("10DE:233a"));
        const char *bad_pci[] = {
            "",          "10de2330",   "10de:233",   "10de:23300", "10dg:2330", "0000:3b:00.0",
            "10de-2330", " 10de:2330", "10de:2330 ", NULL};
        for (size_t i = 0; i < ELEMENTSOF(bad_pci); i++)
                cr_assert_not(pci_id_valid(bad_pci[i]), "pci id #%zu accepted", i);

        cr_assert(unix_user_name_valid("ubuntu"));
        cr_assert(unix_user_name_valid("_svc"));
        cr_assert(unix_user_name_valid("a-b_c9"));
        char u[IMAGE_SSH_USER_MAX + 2];
        memset(u, 'u', IMAGE_SSH_USER_MAX);
        u[IMAGE_SSH_USER_MAX] = '\0';
        cr_assert(unix_user_name_valid(u));
        u[IMAGE_SSH_USER_MAX] = 'u';
        u[IMAGE_SSH_USER_MAX + 1] = '\0';
        cr_assert_not(unix_user_name_valid(u));
        const char *bad_user[] = {"",        "Ubuntu", "9lives", "-dash", "a b",
                                  "root;rm", "a$",     "é",      NULL};
        for (size_t i = 0; i < ELEMENTSOF(bad_user); i++)
                cr_assert_not(unix_user_name_valid(bad_user[i]), "user #%zu accepted", i);
}

/* ---- SKUs ---- */

Test(catalog, sku_create_get_and_lower_cased_pci_ids, .init = db_setup, .fini = db_teardown)
{
        json_t *b = parse("{\"name\":\"h100\"," SKU_OK "}");
        Sku s = {0}, g = {0};
        CatalogFieldError err = {0};
        cr_assert_eq(catalog_sku_create(db, b, &s, &err), 0, "%s: %s", err.field, err.message);
        json_decref(b);
        cr_assert(id_valid("sku", s.id), "%s", s.id);
        cr_assert_str_eq(s.name, "h100");
        cr_assert_str_eq(s.gpu_model, "NVIDIA H100 80GB HBM3");
        cr_assert_eq(s.gpu_memory_gb, 80);
        cr_assert_eq(s.n_pci_ids, 2);
        cr_assert_str_eq(s.pci_ids[0], "10de:2330");
        cr_assert_eq(s.n_gpu_counts, 4);
        cr_assert_eq(s.gpu_counts[3], 8);
        cr_assert_eq(s.price_per_gpu_hour_micros, 2500000);
        cr_assert_str_eq(s.topology, "numa");
        cr_assert(sku_matches_pci_id(&s, "10DE:2331"));
        cr_assert_not(sku_matches_pci_id(&s, "10de:2332"));
        cr_assert(sku_allows_gpu_count(&s, 4));
        cr_assert_not(sku_allows_gpu_count(&s, 3));

        cr_assert_eq(catalog_sku_get(db, s.id, &g), 0);
        cr_assert_str_eq(g.name, "h100");
        cr_assert_eq(g.seq, s.seq);
        json_t *j = sku_to_json(&g);
        char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        cr_assert(strstr(text, "\"pci_ids\":[\"10de:2330\",\"10de:2331\"]"), "%s", text);
        cr_assert(strstr(text, "\"gpu_counts\":[1,2,4,8]"), "%s", text);
        cr_assert(strstr(text, "\"currency\":\"USD\""), "%s", text);
        free(text);
        json_decref(j);
        sku_done(&g);
        sku_done(&s);
        cr_assert_eq(catalog_sku_get(db, "sku_unknownxxxxxxxxxxxxxx", &g), -ENOENT);
}

static void expect_sku_refused(const char *body, const char *field)
{
        char *before = dump("skus");
        json_t *b = parse(body);
        Sku s = {0};
        CatalogFieldError err = {0};
        int r = catalog_sku_create(db, b, &s, &err);
        cr_assert_eq(r, -EINVAL, "accepted (%d): %s", r, body);
        cr_assert_str_eq(err.field, field, "%s: %s", body, err.message);
        cr_assert(err.message[0]);
        cr_assert_null(s.name);
        json_decref(b);
        char *after = dump("skus");
        cr_assert_str_eq(before, after, "a refused create changed the table");
        free(before);
        free(after);
}

Test(catalog, sku_every_field_is_validated, .init = db_setup, .fini = db_teardown)
{
        const char *gpu =
            "\"gpu_model\":\"G\",\"gpu_memory_gb\":80,\"pci_ids\":[\"10de:2330\"],"
            "\"gpu_counts\":[1],\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"";
        struct {
                const char *fields; /* replaces one member of a valid body */
                const char *field;
        } cases[] = {
            {"\"name\":\"\"", "name"},
            {"\"name\":\"   \"", "name"},
            {"\"name\":\"a\\nb\"", "name"},
            {"\"name\":5", "name"},
            {"\"name\":null", "name"},
            {"\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
             "name"},
            {"\"gpu_model\":\"\"", "gpu_model"},
            {"\"gpu_model\":[]", "gpu_model"},
            {"\"gpu_memory_gb\":0", "gpu_memory_gb"},
            {"\"gpu_memory_gb\":4097", "gpu_memory_gb"},
            {"\"gpu_memory_gb\":-1", "gpu_memory_gb"},
            {"\"gpu_memory_gb\":80.5", "gpu_memory_gb"},
            {"\"gpu_memory_gb\":\"80\"", "gpu_memory_gb"},
            {"\"pci_ids\":[]", "pci_ids"},
            {"\"pci_ids\":\"10de:2330\"", "pci_ids"},
            {"\"pci_ids\":[\"10de2330\"]", "pci_ids"},
            {"\"pci_ids\":[\"10de:2330\",\"xyz\"]", "pci_ids"},
            {"\"pci_ids\":[\"10de:2330\",\"10DE:2330\"]", "pci_ids"},
            {"\"pci_ids\":[10]", "pci_ids"},
            {"\"gpu_counts\":[]", "gpu_counts"},
            {"\"gpu_counts\":[0]", "gpu_counts"},
            {"\"gpu_counts\":[-1]", "gpu_counts"},
            {"\"gpu_counts\":[65]", "gpu_counts"},
            {"\"gpu_counts\":[2,1]", "gpu_counts"},
            {"\"gpu_counts\":[1,1]", "gpu_counts"},
            {"\"gpu_counts\":[1,\"2\"]", "gpu_counts"},
            {"\"gpu_counts\":[1.5]", "gpu_counts"},
            {"\"gpu_counts\":4", "gpu_counts"},
            {"\"price_per_gpu_hour_micros\":0", "price_per_gpu_hour_micros"},
            {"\"price_per_gpu_hour_micros\":-5", "price_per_gpu_hour_micros"},
            {"\"price_per_gpu_hour_micros\":1000000001", "price_per_gpu_hour_micros"},
            {"\"topology\":\"rack\"", "topology"},
            {"\"topology\":\"NUMA\"", "topology"},
            {"\"topology\":\"\"", "topology"},
            {"\"colour\":\"green\"", "colour"},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                /* the valid body with the case's member replacing (or adding) one */
                json_t *base = parse("{\"name\":\"n\"}");
                char *gt = xasprintf("{%s}", gpu), *ot = xasprintf("{%s}", cases[i].fields);
                json_t *g = parse(gt), *one = parse(ot);
                json_object_update(base, g);
                json_object_update(base, one);
                json_decref(g);
                json_decref(one);
                free(gt);
                free(ot);
                char *body = json_dumps(base, JSON_COMPACT);
                expect_sku_refused(body, cases[i].field);
                free(body);
                json_decref(base);
        }
        /* every required member missing, one at a time */
        const char *required[] = {"name",    "gpu_model",  "gpu_memory_gb",
                                  "pci_ids", "gpu_counts", "price_per_gpu_hour_micros",
                                  "topology"};
        for (size_t i = 0; i < ELEMENTSOF(required); i++) {
                json_t *base = parse("{\"name\":\"n\"," SKU_OK "}");
                json_object_del(base, required[i]);
                char *body = json_dumps(base, JSON_COMPACT);
                expect_sku_refused(body, required[i]);
                free(body);
                json_decref(base);
        }
        /* the largest valid values are fine */
        json_t *b = parse("{\"name\":\"max\",\"gpu_model\":\"G\",\"gpu_memory_gb\":4096,"
                          "\"pci_ids\":[\"ffff:ffff\"],\"gpu_counts\":[1,2,3,4,5,6,7,8,9,10,11,12,"
                          "13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,64],"
                          "\"price_per_gpu_hour_micros\":1000000000,\"topology\":\"switch\"}");
        CatalogFieldError err = {0};
        cr_assert_eq(catalog_sku_create(db, b, NULL, &err), 0, "%s: %s", err.field, err.message);
        json_decref(b);
        /* 33 counts are too many */
        expect_sku_refused("{\"name\":\"many\",\"gpu_model\":\"G\",\"gpu_memory_gb\":1,"
                           "\"pci_ids\":[\"ffff:ffff\"],\"gpu_counts\":[1,2,3,4,5,6,7,8,9,10,11,"
                           "12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33],"
                           "\"price_per_gpu_hour_micros\":1,\"topology\":\"node\"}",
                           "gpu_counts");
}

Test(catalog, sku_names_are_unique_among_live_skus, .init = db_setup, .fini = db_teardown)
{
        json_t *b = parse("{\"name\":\"h100\"," SKU_OK "}");
        Sku s = {0};
        cr_assert_eq(catalog_sku_create(db, b, &s, NULL), 0);
        char *before = dump("skus");
        cr_assert_eq(catalog_sku_create(db, b, NULL, NULL), -EEXIST);
        char *after = dump("skus");
        cr_assert_str_eq(before, after);
        free(before);
        free(after);

        /* deleted: gone for get, update and delete; the name is free again */
        cr_assert_eq(catalog_sku_delete(db, s.id), 0);
        Sku g = {0};
        cr_assert_eq(catalog_sku_get(db, s.id, &g), -ENOENT);
        cr_assert_eq(catalog_sku_delete(db, s.id), -ENOENT);
        json_t *p = parse("{\"gpu_memory_gb\":81}");
        cr_assert_eq(catalog_sku_update(db, s.id, p, NULL, NULL), -ENOENT);
        json_decref(p);
        Sku again = {0};
        cr_assert_eq(catalog_sku_create(db, b, &again, NULL), 0);
        cr_assert_str_neq(again.id, s.id);
        json_decref(b);
        sku_done(&again);
        sku_done(&s);
}

Test(catalog, sku_update_changes_only_what_it_names, .init = db_setup, .fini = db_teardown)
{
        json_t *b = parse("{\"name\":\"h100\"," SKU_OK "}");
        Sku s = {0}, u = {0};
        cr_assert_eq(catalog_sku_create(db, b, &s, NULL), 0);
        json_decref(b);
        b = parse("{\"name\":\"a100\"," SKU_OK "}");
        Sku other = {0};
        cr_assert_eq(catalog_sku_create(db, b, &other, NULL), 0);
        json_decref(b);

        json_t *p = parse("{\"price_per_gpu_hour_micros\":3000000,\"gpu_counts\":[1,8],"
                          "\"pci_ids\":[\"10DE:2335\"]}");
        CatalogFieldError err = {0};
        cr_assert_eq(catalog_sku_update(db, s.id, p, &u, &err), 0, "%s", err.message);
        json_decref(p);
        cr_assert_str_eq(u.name, "h100");
        cr_assert_eq(u.gpu_memory_gb, 80);
        cr_assert_eq(u.price_per_gpu_hour_micros, 3000000);
        cr_assert_eq(u.n_gpu_counts, 2);
        cr_assert_eq(u.n_pci_ids, 1);
        cr_assert_str_eq(u.pci_ids[0], "10de:2335");
        cr_assert_geq(u.updated_at, s.updated_at);
        cr_assert_eq(u.created_at, s.created_at);
        sku_done(&u);

        /* a bad member anywhere refuses the whole update */
        const char *bad[][2] = {
            {"{\"price_per_gpu_hour_micros\":1,\"gpu_counts\":[3,2]}", "gpu_counts"},
            {"{\"topology\":\"row\"}", "topology"},
            {"{\"name\":null}", "name"},
            {"{\"gpu_memory_gb\":null}", "gpu_memory_gb"},
            {"{\"id\":\"sku_x\"}", "id"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *before = dump("skus");
                p = parse(bad[i][0]);
                cr_assert_eq(catalog_sku_update(db, s.id, p, NULL, &err), -EINVAL, "%s", bad[i][0]);
                cr_assert_str_eq(err.field, bad[i][1]);
                json_decref(p);
                char *after = dump("skus");
                cr_assert_str_eq(before, after, "%s changed the table", bad[i][0]);
                free(before);
                free(after);
        }
        /* renaming onto another live SKU's name */
        p = parse("{\"name\":\"a100\"}");
        cr_assert_eq(catalog_sku_update(db, s.id, p, NULL, &err), -EEXIST);
        json_decref(p);
        cr_assert_eq(catalog_sku_get(db, s.id, &u), 0);
        cr_assert_str_eq(u.name, "h100");
        sku_done(&u);
        sku_done(&s);
        sku_done(&other);
}

typedef struct Seen {
        char names[16][CATALOG_NAME_MAX + 1];
        size_t n;
        long long last;
} Seen;

static int seen_sku(const Sku *s, void *userdata)
{
        Seen *seen = userdata;
        snprintf(seen->names[seen->n++], sizeof(seen->names[0]), "%s", s->name);
        seen->last = s->seq;
        return 0;
}

static int stop_at_second(const Sku *s, void *userdata)
{
        Seen *seen = userdata;
        seen->n++;
        return seen->n == 2 ? 42 : 0;
}

Test(catalog, sku_list_order_paging_and_deleted_rows, .init = db_setup, .fini = db_teardown)
{
        char ids[5][ID_MAX];
        for (int i = 0; i < 5; i++) {
                char *text = xasprintf("{\"name\":\"sku-%d\"," SKU_OK "}", i);
                json_t *b = parse(text);
                Sku s = {0};
                cr_assert_eq(catalog_sku_create(db, b, &s, NULL), 0);
                snprintf(ids[i], sizeof(ids[i]), "%s", s.id);
                sku_done(&s);
                json_decref(b);
                free(text);
        }
        cr_assert_eq(catalog_sku_delete(db, ids[1]), 0);
        Seen seen = {0};
        cr_assert_eq(catalog_skus_list(db, 0, 2, seen_sku, &seen), 0);
        cr_assert_eq(seen.n, 2);
        cr_assert_str_eq(seen.names[0], "sku-0");
        cr_assert_str_eq(seen.names[1], "sku-2");
        long long cursor = seen.last;
        /* a SKU created now comes after the cursor, in order */
        json_t *b = parse("{\"name\":\"late\"," SKU_OK "}");
        cr_assert_eq(catalog_sku_create(db, b, NULL, NULL), 0);
        json_decref(b);
        seen = (Seen){0};
        cr_assert_eq(catalog_skus_list(db, cursor, 10, seen_sku, &seen), 0);
        cr_assert_eq(seen.n, 3);
        cr_assert_str_eq(seen.names[0], "sku-3");
        cr_assert_str_eq(seen.names[2], "late");
        seen = (Seen){0};
        cr_assert_eq(catalog_skus_foreach(db, seen_sku, &seen), 0);
        cr_assert_eq(seen.n, 5);
        seen = (Seen){0};
        cr_assert_eq(catalog_skus_foreach(db, stop_at_second, &seen), 42);
        cr_assert_eq(seen.n, 2);
}

/* ---- images ---- */

Test(catalog, images, .init = db_setup, .fini = db_teardown)
{
        json_t *b = parse("{\"name\":\"ubuntu-22.04\"}");
        Image i = {0}, u = {0};
        CatalogFieldError err = {0};
        cr_assert_eq(catalog_image_create(db, b, &i, &err), 0, "%s", err.message);
        json_decref(b);
        cr_assert(id_valid("img", i.id));
        cr_assert_str_eq(i.ssh_user, "ubuntu");
        cr_assert_str_eq(i.description, "");
        cr_assert_str_eq(i.source, "");

        b = parse("{\"name\":\"rocky\",\"description\":\"Rocky Linux 9\\nwith CUDA 12\","
                  "\"source\":\"/var/lib/images/rocky9.qcow2\",\"ssh_user\":\"rocky\"}");
        Image r = {0};
        cr_assert_eq(catalog_image_create(db, b, &r, &err), 0, "%s", err.message);
        json_decref(b);
        cr_assert_str_eq(r.ssh_user, "rocky");
        cr_assert_str_eq(r.description, "Rocky Linux 9\nwith CUDA 12");

        const char *bad[][2] = {
            {"{\"name\":\"x\",\"ssh_user\":\"Root\"}", "ssh_user"},
            {"{\"name\":\"x\",\"ssh_user\":\"\"}", "ssh_user"},
            {"{\"name\":\"x\",\"ssh_user\":\"a b\"}", "ssh_user"},
            {"{\"name\":\"x\",\"ssh_user\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", "ssh_user"},
            {"{\"name\":\"x\",\"source\":\"a\\nb\"}", "source"},
            {"{\"name\":\"x\",\"description\":\"bell\\u0007\"}", "description"},
            {"{\"name\":\"x\",\"description\":7}", "description"},
            {"{\"description\":\"no name\"}", "name"},
            {"{\"name\":\"ubuntu-22.04\",\"ssh_user\":\"ubuntu\",\"extra\":1}", "extra"},
        };
        for (size_t k = 0; k < ELEMENTSOF(bad); k++) {
                char *before = dump("images");
                b = parse(bad[k][0]);
                cr_assert_eq(catalog_image_create(db, b, NULL, &err), -EINVAL, "%s", bad[k][0]);
                cr_assert_str_eq(err.field, bad[k][1], "%s", bad[k][0]);
                json_decref(b);
                char *after = dump("images");
                cr_assert_str_eq(before, after);
                free(before);
                free(after);
        }
        b = parse("{\"name\":\"ubuntu-22.04\"}");
        cr_assert_eq(catalog_image_create(db, b, NULL, &err), -EEXIST);
        json_decref(b);

        b = parse("{\"ssh_user\":\"admin\",\"description\":\"\"}");
        cr_assert_eq(catalog_image_update(db, i.id, b, &u, &err), 0, "%s", err.message);
        json_decref(b);
        cr_assert_str_eq(u.ssh_user, "admin");
        cr_assert_str_eq(u.name, "ubuntu-22.04");
        image_done(&u);
        cr_assert_eq(catalog_image_delete(db, i.id), 0);
        cr_assert_eq(catalog_image_get(db, i.id, &u), -ENOENT);
        image_done(&i);
        image_done(&r);
}

/* ---- networks ---- */

Test(catalog, networks, .init = db_setup, .fini = db_teardown)
{
        json_t *b = parse("{\"name\":\"tenant-a\",\"vlan\":100}");
        Network n = {0}, u = {0};
        CatalogFieldError err = {0};
        cr_assert_eq(catalog_network_create(db, b, &n, &err), 0, "%s", err.message);
        json_decref(b);
        cr_assert(id_valid("net", n.id));
        cr_assert_eq(n.vlan, 100);
        cr_assert_str_eq(n.mac_policy, "generated");
        cr_assert(n.spoofchk, "spoofchk defaults to on");
        cr_assert_not(n.trust, "trust defaults to off");

        b = parse("{\"name\":\"flat\",\"vlan\":0,\"mac_policy\":\"hardware\",\"spoofchk\":false,"
                  "\"trust\":true,\"description\":\"untagged\"}");
        Network f = {0};
        cr_assert_eq(catalog_network_create(db, b, &f, &err), 0, "%s", err.message);
        json_decref(b);
        cr_assert_eq(f.vlan, 0);
        cr_assert_str_eq(f.mac_policy, "hardware");
        cr_assert_not(f.spoofchk);
        cr_assert(f.trust);
        json_t *j = network_to_json(&f);
        cr_assert(json_is_true(json_object_get(j, "untagged")));
        json_decref(j);

        b = parse("{\"name\":\"edge\",\"vlan\":4094}");
        cr_assert_eq(catalog_network_create(db, b, NULL, &err), 0);
        json_decref(b);

        const char *bad[][2] = {
            {"{\"name\":\"x\",\"vlan\":4095}", "vlan"},
            {"{\"name\":\"x\",\"vlan\":-1}", "vlan"},
            {"{\"name\":\"x\",\"vlan\":\"100\"}", "vlan"},
            {"{\"name\":\"x\"}", "vlan"},
            {"{\"vlan\":1}", "name"},
            {"{\"name\":\"x\",\"vlan\":1,\"mac_policy\":\"random\"}", "mac_policy"},
            {"{\"name\":\"x\",\"vlan\":1,\"spoofchk\":1}", "spoofchk"},
            {"{\"name\":\"x\",\"vlan\":1,\"trust\":\"yes\"}", "trust"},
            {"{\"name\":\"x\",\"vlan\":1,\"mtu\":9000}", "mtu"},
        };
        for (size_t k = 0; k < ELEMENTSOF(bad); k++) {
                char *before = dump("networks");
                b = parse(bad[k][0]);
                cr_assert_eq(catalog_network_create(db, b, NULL, &err), -EINVAL, "%s", bad[k][0]);
                cr_assert_str_eq(err.field, bad[k][1], "%s", bad[k][0]);
                json_decref(b);
                char *after = dump("networks");
                cr_assert_str_eq(before, after);
                free(before);
                free(after);
        }
        b = parse("{\"vlan\":200,\"trust\":true}");
        cr_assert_eq(catalog_network_update(db, n.id, b, &u, &err), 0, "%s", err.message);
        json_decref(b);
        cr_assert_eq(u.vlan, 200);
        cr_assert(u.trust);
        cr_assert(u.spoofchk, "not named, not changed");
        network_done(&u);
        b = parse("{\"name\":\"flat\"}");
        cr_assert_eq(catalog_network_update(db, n.id, b, NULL, &err), -EEXIST);
        json_decref(b);
        cr_assert_eq(catalog_network_delete(db, f.id), 0);
        b = parse("{\"name\":\"flat\"}");
        cr_assert_eq(catalog_network_update(db, n.id, b, &u, &err), 0,
                     "a deleted network's name is free");
        json_decref(b);
        network_done(&u);
        network_done(&n);
        network_done(&f);
}
