/* SPDX-License-Identifier: MIT */
/* The catalog over HTTP. Admins create, read, update and delete SKUs, images
 * and networks under /api/v1/admin/...; everyone signed in lists them under
 * /api/v1/catalog/.... Each change runs in one transaction with its audit
 * row and its outbox event ("catalog.sku_created", ...); a refused request
 * changes nothing. A SKU always shows which of its GPU counts some online
 * node can host right now (available_gpu_counts, from the placement index)
 * and status "unavailable" when none can. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api-list.h"
#include "api.h"
#include "audit.h"
#include "catalog.h"
#include "db.h"
#include "events.h"
#include "log.h"
#include "placement.h"
#include "server.h"

/* ---- shared pieces ---- */

/* Reads a create (all required fields) or update (every field optional) body. */
static int read_body(Request *r, const JsonField *fields, size_t n, bool create, json_t **ret)
{
        JsonField f[16];
        if (n > ELEMENTSOF(f))
                return -E2BIG;
        memcpy(f, fields, n * sizeof(*f));
        if (!create)
                for (size_t i = 0; i < n; i++)
                        f[i].required = false;
        return http_read_json(r, f, n, ret);
}

/* The id of path parameter 0 when it has the kind's prefix, else NULL (the
 * caller answers 404: a malformed id names nothing). */
static const char *param_id(Request *r, const char *prefix)
{
        const char *id = http_param(r, 0);
        return id_valid(prefix, id) ? id : NULL;
}

/* Answers a failed create/update/delete/get. */
static int reply_failure(Request *r, int ret, const CatalogFieldError *err, const char *noun)
{
        switch (ret) {
        case -EINVAL:
                return http_reply_invalid_field(r, err->field, "%s", err->message);
        case -EEXIST:
                return http_reply_error(r, ERR_NAME_TAKEN, json_pack("{s:s}", "field", "name"),
                                        "another %s already has this name", noun);
        case -ENOENT:
                return http_reply_error(r, ERR_NOT_FOUND, NULL, "no such %s", noun);
        default:
                log_error("Catalog change failed | what=%s error=%s", noun, strerror(-ret));
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot change the %s now", noun);
        }
}

/* The audit row and the outbox event of one change, in the caller's
 * transaction. kind: "sku", verb: "create" (audit action catalog.sku.create,
 * event catalog.sku_created). details is stolen. */
static int record_change(Request *r, const char *kind, const char *verb, const char *id,
                         const char *name, json_t *details)
{
        Db *db = r->server->db;
        char action[64], type[64];
        snprintf(action, sizeof(action), "catalog.%s.%s", kind, verb);
        snprintf(type, sizeof(type), "catalog.%s_%sd", kind, verb); /* create -> created */
        int ret = audit_log(db, r->auth.user_id, action, kind, id, NULL, details);
        if (ret < 0)
                return ret;
        return event_emit(db, type, id,
                          json_pack("{s:s, s:s}", "name", name, "actor_id", r->auth.user_id), NULL);
}

static int reply_created(Request *r, const char *path, const char *id, json_t *body)
{
        char loc[128];
        snprintf(loc, sizeof(loc), "%s%s", path, id);
        http_add_header(r, "location", loc);
        return http_reply_json(r, 201, body);
}

/* ---- SKUs ---- */

static const JsonField sku_fields[] = {
    {"name", JSON_FIELD_STRING, true, 1, 4 * CATALOG_NAME_MAX},
    {"gpu_model", JSON_FIELD_STRING, true, 1, 4 * SKU_GPU_MODEL_MAX},
    {"gpu_memory_gb", JSON_FIELD_INTEGER, true, 0, 0},
    {"pci_ids", JSON_FIELD_ARRAY, true, 0, 0},
    {"gpu_counts", JSON_FIELD_ARRAY, true, 0, 0},
    {"price_per_gpu_hour_micros", JSON_FIELD_INTEGER, true, 0, 0},
    {"topology", JSON_FIELD_STRING, true, 1, 16},
};

/* The SKU with available_gpu_counts and status from the placement index. */
static json_t *sku_json(Request *r, const Sku *s)
{
        json_t *j = sku_to_json(s);
        json_t *avail = json_array();
        unsigned counts[PLACEMENT_MAX_COUNTS > SKU_GPU_COUNTS_MAX ? PLACEMENT_MAX_COUNTS
                                                                  : SKU_GPU_COUNTS_MAX];
        size_t n = 0;
        Placement *p = r->server->placement;
        if (p && placement_available_counts(p, s, counts, &n) < 0)
                n = 0;
        for (size_t i = 0; i < n && avail; i++)
                json_array_append_new(avail, json_integer(counts[i]));
        json_object_set_new(j, "available_gpu_counts", avail);
        json_object_set_new(j, "status", json_string(n > 0 ? "available" : "unavailable"));
        return j;
}

typedef struct ListCtx {
        Request *r;
        json_t *items;
        long long last_seq;
} ListCtx;

static int sku_list_one(const Sku *s, void *userdata)
{
        ListCtx *c = userdata;
        c->last_seq = s->seq;
        return json_array_append_new(c->items, sku_json(c->r, s)) < 0 ? -ENOMEM : 0;
}

static int skus_list(Request *r)
{
        int limit;
        long long after;
        if (api_list_params(r, API_LIST_MAX_LIMIT, &limit, &after) < 0)
                return 0;
        ListCtx c = {.r = r, .items = json_array()};
        int ret = catalog_skus_list(r->server->db, after, limit, sku_list_one, &c);
        if (ret < 0) {
                json_decref(c.items);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot list SKUs now");
        }
        return api_list_reply(r, c.items, c.last_seq, limit);
}

int api_catalog_skus(Request *r)
{
        return skus_list(r);
}

int api_admin_skus_list(Request *r)
{
        return skus_list(r);
}

int api_admin_skus_create(Request *r)
{
        json_t *body;
        if (read_body(r, sku_fields, ELEMENTSOF(sku_fields), true, &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        _cleanup_(sku_done) Sku s = {0};
        CatalogFieldError err = {0};
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(r->server->db, &txn);
        if (ret >= 0)
                ret = catalog_sku_create(r->server->db, b, &s, &err);
        if (ret >= 0)
                ret = record_change(r, "sku", "create", s.id, s.name, sku_to_json(&s));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return reply_failure(r, ret, &err, "SKU");
        log_info("SKU created | sku_id=%s name=%s", s.id, s.name);
        return reply_created(r, "/api/v1/admin/skus/", s.id, sku_json(r, &s));
}

int api_admin_skus_get(Request *r)
{
        const char *id = param_id(r, "sku");
        _cleanup_(sku_done) Sku s = {0};
        int ret = id ? catalog_sku_get(r->server->db, id, &s) : -ENOENT;
        if (ret < 0)
                return reply_failure(r, ret, NULL, "SKU");
        return http_reply_json(r, 200, sku_json(r, &s));
}

int api_admin_skus_update(Request *r)
{
        const char *id = param_id(r, "sku");
        if (!id)
                return reply_failure(r, -ENOENT, NULL, "SKU");
        json_t *body;
        if (read_body(r, sku_fields, ELEMENTSOF(sku_fields), false, &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        _cleanup_(sku_done) Sku s = {0};
        CatalogFieldError err = {0};
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(r->server->db, &txn);
        if (ret >= 0)
                ret = catalog_sku_update(r->server->db, id, b, &s, &err);
        if (ret >= 0)
                ret = record_change(r, "sku", "update", s.id, s.name,
                                    json_pack("{s:O}", "changes", b));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return reply_failure(r, ret, &err, "SKU");
        return http_reply_json(r, 200, sku_json(r, &s));
}

int api_admin_skus_delete(Request *r)
{
        const char *id = param_id(r, "sku");
        _cleanup_(sku_done) Sku s = {0};
        _cleanup_txn_ DbTxn txn = {0};
        int ret = id ? db_begin(r->server->db, &txn) : -ENOENT;
        if (ret >= 0)
                ret = catalog_sku_get(r->server->db, id, &s);
        if (ret >= 0)
                ret = catalog_sku_delete(r->server->db, id);
        if (ret >= 0)
                ret = record_change(r, "sku", "delete", s.id, s.name, NULL);
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return reply_failure(r, ret, NULL, "SKU");
        log_info("SKU deleted | sku_id=%s name=%s", s.id, s.name);
        return http_reply_empty(r, 204);
}

/* ---- images ---- */

static const JsonField image_fields[] = {
    {"name", JSON_FIELD_STRING, true, 1, 4 * CATALOG_NAME_MAX},
    {"description", JSON_FIELD_STRING, false, 0, CATALOG_DESCRIPTION_MAX},
    {"source", JSON_FIELD_STRING, false, 0, CATALOG_SOURCE_MAX},
    {"ssh_user", JSON_FIELD_STRING, false, 1, IMAGE_SSH_USER_MAX},
};

static int image_list_one(const Image *i, void *userdata)
{
        ListCtx *c = userdata;
        c->last_seq = i->seq;
        return json_array_append_new(c->items, image_to_json(i)) < 0 ? -ENOMEM : 0;
}

static int images_list(Request *r)
{
        int limit;
        long long after;
        if (api_list_params(r, API_LIST_MAX_LIMIT, &limit, &after) < 0)
                return 0;
        ListCtx c = {.r = r, .items = json_array()};
        int ret = catalog_images_list(r->server->db, after, limit, image_list_one, &c);
        if (ret < 0) {
                json_decref(c.items);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot list images now");
        }
        return api_list_reply(r, c.items, c.last_seq, limit);
}

int api_catalog_images(Request *r)
{
        return images_list(r);
}

int api_admin_images_list(Request *r)
{
        return images_list(r);
}

int api_admin_images_create(Request *r)
{
        json_t *body;
        if (read_body(r, image_fields, ELEMENTSOF(image_fields), true, &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        _cleanup_(image_done) Image i = {0};
        CatalogFieldError err = {0};
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(r->server->db, &txn);
        if (ret >= 0)
                ret = catalog_image_create(r->server->db, b, &i, &err);
        if (ret >= 0)
                ret = record_change(r, "image", "create", i.id, i.name, image_to_json(&i));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return reply_failure(r, ret, &err, "image");
        log_info("Image created | image_id=%s name=%s", i.id, i.name);
        return reply_created(r, "/api/v1/admin/images/", i.id, image_to_json(&i));
}

int api_admin_images_get(Request *r)
{
        const char *id = param_id(r, "img");
        _cleanup_(image_done) Image i = {0};
        int ret = id ? catalog_image_get(r->server->db, id, &i) : -ENOENT;
        if (ret < 0)
                return reply_failure(r, ret, NULL, "image");
        return http_reply_json(r, 200, image_to_json(&i));
}

int api_admin_images_update(Request *r)
{
        const char *id = param_id(r, "img");
        if (!id)
                return reply_failure(r, -ENOENT, NULL, "image");
        json_t *body;
        if (read_body(r, image_fields, ELEMENTSOF(image_fields), false, &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        _cleanup_(image_done) Image i = {0};
        CatalogFieldError err = {0};
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(r->server->db, &txn);
        if (ret >= 0)
                ret = catalog_image_update(r->server->db, id, b, &i, &err);
        if (ret >= 0)
                ret = record_change(r, "image", "update", i.id, i.name,
                                    json_pack("{s:O}", "changes", b));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return reply_failure(r, ret, &err, "image");
        return http_reply_json(r, 200, image_to_json(&i));
}

int api_admin_images_delete(Request *r)
{
        const char *id = param_id(r, "img");
        _cleanup_(image_done) Image i = {0};
        _cleanup_txn_ DbTxn txn = {0};
        int ret = id ? db_begin(r->server->db, &txn) : -ENOENT;
        if (ret >= 0)
                ret = catalog_image_get(r->server->db, id, &i);
        if (ret >= 0)
                ret = catalog_image_delete(r->server->db, id);
        if (ret >= 0)
                ret = record_change(r, "image", "delete", i.id, i.name, NULL);
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return reply_failure(r, ret, NULL, "image");
        log_info("Image deleted | image_id=%s name=%s", i.id, i.name);
        return http_reply_empty(r, 204);
}

/* ---- networks ---- */

static const JsonField network_fields[] = {
    {"name", JSON_FIELD_STRING, true, 1, 4 * CATALOG_NAME_MAX},
    {"description", JSON_FIELD_STRING, false, 0, CATALOG_DESCRIPTION_MAX},
    {"vlan", JSON_FIELD_INTEGER, true, 0, 0},
    {"mac_policy", JSON_FIELD_STRING, false, 1, 16},
    {"spoofchk", JSON_FIELD_BOOLEAN, false, 0, 0},
    {"trust", JSON_FIELD_BOOLEAN, false, 0, 0},
};

static int network_list_one(const Network *n, void *userdata)
{
        ListCtx *c = userdata;
        c->last_seq = n->seq;
        return json_array_append_new(c->items, network_to_json(n)) < 0 ? -ENOMEM : 0;
}

static int networks_list(Request *r)
{
        int limit;
        long long after;
        if (api_list_params(r, API_LIST_MAX_LIMIT, &limit, &after) < 0)
                return 0;
        ListCtx c = {.r = r, .items = json_array()};
        int ret = catalog_networks_list(r->server->db, after, limit, network_list_one, &c);
        if (ret < 0) {
                json_decref(c.items);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot list networks now");
        }
        return api_list_reply(r, c.items, c.last_seq, limit);
}

int api_catalog_networks(Request *r)
{
        return networks_list(r);
}

int api_admin_networks_list(Request *r)
{
        return networks_list(r);
}

int api_admin_networks_create(Request *r)
{
        json_t *body;
        if (read_body(r, network_fields, ELEMENTSOF(network_fields), true, &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        _cleanup_(network_done) Network n = {0};
        CatalogFieldError err = {0};
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(r->server->db, &txn);
        if (ret >= 0)
                ret = catalog_network_create(r->server->db, b, &n, &err);
        if (ret >= 0)
                ret = record_change(r, "network", "create", n.id, n.name, network_to_json(&n));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return reply_failure(r, ret, &err, "network");
        log_info("Network created | network_id=%s name=%s vlan=%d", n.id, n.name, n.vlan);
        return reply_created(r, "/api/v1/admin/networks/", n.id, network_to_json(&n));
}

int api_admin_networks_get(Request *r)
{
        const char *id = param_id(r, "net");
        _cleanup_(network_done) Network n = {0};
        int ret = id ? catalog_network_get(r->server->db, id, &n) : -ENOENT;
        if (ret < 0)
                return reply_failure(r, ret, NULL, "network");
        return http_reply_json(r, 200, network_to_json(&n));
}

int api_admin_networks_update(Request *r)
{
        const char *id = param_id(r, "net");
        if (!id)
                return reply_failure(r, -ENOENT, NULL, "network");
        json_t *body;
        if (read_body(r, network_fields, ELEMENTSOF(network_fields), false, &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        _cleanup_(network_done) Network n = {0};
        CatalogFieldError err = {0};
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(r->server->db, &txn);
        if (ret >= 0)
                ret = catalog_network_update(r->server->db, id, b, &n, &err);
        if (ret >= 0)
                ret = record_change(r, "network", "update", n.id, n.name,
                                    json_pack("{s:O}", "changes", b));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return reply_failure(r, ret, &err, "network");
        return http_reply_json(r, 200, network_to_json(&n));
}

int api_admin_networks_delete(Request *r)
{
        const char *id = param_id(r, "net");
        _cleanup_(network_done) Network n = {0};
        _cleanup_txn_ DbTxn txn = {0};
        int ret = id ? db_begin(r->server->db, &txn) : -ENOENT;
        if (ret >= 0)
                ret = catalog_network_get(r->server->db, id, &n);
        if (ret >= 0)
                ret = catalog_network_delete(r->server->db, id);
        if (ret >= 0)
                ret = record_change(r, "network", "delete", n.id, n.name, NULL);
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret < 0)
                return reply_failure(r, ret, NULL, "network");
        log_info("Network deleted | network_id=%s name=%s", n.id, n.name);
        return http_reply_empty(r, 204);
}
