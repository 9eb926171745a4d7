/* SPDX-License-Identifier: MIT */
/* Allocations and tasks: quote, launch (Idempotency-Key, answered after the
 * batch's commit), list, detail, release; the admin's list, force release
 * and the verification of a quarantined slot. A refused request changes
 * nothing; another tenant's allocation or task is 404. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "allocations.h"
#include "api-list.h"
#include "api.h"
#include "db.h"
#include "log.h"
#include "provisioner.h"
#include "server.h"
#include "ssh-keys.h"
#include "tasks.h"

static const JsonField launch_fields[] = {
    {"sku_id", JSON_FIELD_STRING, true, 1, ID_MAX},
    {"gpu_count", JSON_FIELD_INTEGER, true, 0, 0},
    {"image_id", JSON_FIELD_STRING, true, 1, ID_MAX},
    {"network_id", JSON_FIELD_STRING, true, 1, ID_MAX},
    {"ssh_key_ids", JSON_FIELD_ARRAY, false, 0, 0},
    {"storage", JSON_FIELD_OBJECT, false, 0, 0},
};

/* Reads and checks a quote/launch body; fills q (user, catalog rows, keys,
 * hash). Answers 400 itself and returns < 0. */
static int read_launch(Request *r, LaunchRequest *q)
{
        Server *s = r->server;
        json_t *body = NULL;
        if (http_read_json(r, launch_fields, ELEMENTSOF(launch_fields), &body) < 0)
                return -EBADMSG;
        _cleanup_(json_decrefp) json_t *b = body;
        json_int_t count = json_integer_value(json_object_get(b, "gpu_count"));
        if (count < 1 || count > SKU_GPU_COUNT_MAX) {
                http_reply_invalid_field(r, "gpu_count", "gpu_count must be 1 to %d",
                                         SKU_GPU_COUNT_MAX);
                return -EINVAL;
        }
        q->gpu_count = (unsigned)count;
        snprintf(q->user_id, sizeof(q->user_id), "%s", r->auth.user_id);

        const char *sku_id = json_field_string(b, "sku_id");
        int ret = id_valid("sku", sku_id) ? catalog_sku_get(s->db, sku_id, &q->sku) : -ENOENT;
        if (ret == -ENOENT) {
                http_reply_invalid_field(r, "sku_id", "no such SKU");
                return ret;
        }
        const char *image_id = json_field_string(b, "image_id");
        if (ret >= 0)
                ret = id_valid("img", image_id) ? catalog_image_get(s->db, image_id, &q->image)
                                                : -ENOENT;
        if (ret == -ENOENT) {
                http_reply_invalid_field(r, "image_id", "no such image");
                return ret;
        }
        const char *network_id = json_field_string(b, "network_id");
        if (ret >= 0)
                ret = id_valid("net", network_id)
                          ? catalog_network_get(s->db, network_id, &q->network)
                          : -ENOENT;
        if (ret == -ENOENT) {
                http_reply_invalid_field(r, "network_id", "no such network");
                return ret;
        }
        json_t *keys = json_object_get(b, "ssh_key_ids");
        q->ssh_key_ids = keys ? json_incref(keys) : json_array();
        if (ret >= 0 && json_array_size(q->ssh_key_ids) > 64) {
                http_reply_invalid_field(r, "ssh_key_ids", "at most 64 SSH keys");
                return -EINVAL;
        }
        if (ret >= 0)
                ret = ssh_keys_public_lines(s->db, q->user_id, q->ssh_key_ids, &q->ssh_keys);
        if (ret == -ENOENT || ret == -EINVAL) {
                http_reply_invalid_field(r, "ssh_key_ids",
                                         "ssh_key_ids must name SSH keys of yours (key_...)");
                return ret;
        }
        if (ret < 0) {
                http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the catalog now");
                return ret;
        }
        json_t *storage = json_object_get(b, "storage");
        q->storage = storage ? json_incref(storage) : NULL;

        /* The same body, whatever its key order or spacing, hashes the same. */
        _cleanup_free_ char *canon = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
        if (!canon)
                return -ENOMEM;
        SHA256((const unsigned char *)canon, strlen(canon), q->request_hash);
        return 0;
}

static json_t *prechecks_json(Prechecks *pc)
{
        json_t *a = json_array();
        for (size_t i = 0; i < pc->n; i++)
                json_array_append_new(a, json_pack("{s:s, s:s, s:O?}", "code",
                                                   error_code_to_string(pc->items[i].code),
                                                   "message", pc->items[i].message, "details",
                                                   pc->items[i].details));
        return a;
}

int api_allocations_quote(Request *r)
{
        Server *s = r->server;
        _cleanup_(launch_request_done) LaunchRequest q = {0};
        if (read_launch(r, &q) < 0)
                return 0;
        _cleanup_(prechecks_done) Prechecks pc = {0};
        if (allocation_prechecks(s->db, s->placement, q.user_id, &q.sku, q.gpu_count, &pc) < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot check the launch now");
        unsigned avail[PLACEMENT_MAX_COUNTS];
        size_t n_avail = 0;
        (void)placement_available_counts(s->placement, &q.sku, avail, &n_avail);
        json_t *counts = json_array();
        for (size_t i = 0; i < n_avail; i++)
                json_array_append_new(counts, json_integer(avail[i]));
        return http_reply_json(
            r, 200,
            json_pack("{s:I, s:s, s:o, s:b, s:s, s:I, s:I, s:o}", "hourly_cost_micros",
                      (json_int_t)pc.hourly_cost_micros, "currency", "usd", "prechecks",
                      prechecks_json(&pc), "ok", pc.n == 0, "sku_id", q.sku.id, "gpu_count",
                      (json_int_t)q.gpu_count, "price_per_gpu_hour_micros",
                      (json_int_t)q.sku.price_per_gpu_hour_micros, "available_gpu_counts", counts));
}

/* ---- launch ---- */

/* Lives in the request's pool: when h2o disposes the request before the
 * batch committed, the ticket is told not to answer it. */
typedef struct LaunchLink {
        LaunchTicket *ticket;
        Request *request;
} LaunchLink;

static void launch_link_dispose(void *p)
{
        LaunchLink *l = p;
        if (l->ticket)
                provisioner_launch_cancel(l->ticket);
        l->ticket = NULL;
}

static bool idempotency_key_valid(const char *k)
{
        size_t n = k ? strlen(k) : 0;
        if (n < 1 || n > IDEMPOTENCY_KEY_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (k[i] < 0x21 || k[i] > 0x7e)
                        return false;
        return true;
}

static void launch_done(Server *s, void *userdata, const LaunchResult *res)
{
        LaunchLink *l = userdata;
        Request *r = l->request;
        l->ticket = NULL;
        if (!res->ok) {
                http_reply_error(r, res->code, json_incref(res->details), "%s", res->message);
                return;
        }
        /* A new launch carries its object; a replayed one is read (its state
         * may have moved on since). */
        json_t *alloc = res->allocation ? json_incref(res->allocation) : NULL;
        if (!alloc) {
                _cleanup_(allocation_done) Allocation a = {0};
                if (allocation_get(s->db, res->allocation_id, NULL, &a) < 0) {
                        http_reply_error(r, ERR_UNAVAILABLE, NULL,
                                         "the launch was taken; read it at GET "
                                         "/api/v1/allocations");
                        return;
                }
                alloc = allocation_to_json(&a);
        }
        char loc[96];
        snprintf(loc, sizeof(loc), "/api/v1/tasks/%s", res->task_id);
        http_add_header(r, "location", loc);
        http_reply_json(r, 202,
                        json_pack("{s:o, s:s, s:b}", "allocation", alloc, "task_id", res->task_id,
                                  "replayed", res->replayed));
}

int api_allocations_create(Request *r)
{
        Server *s = r->server;
        const char *key = http_header(r, "idempotency-key");
        if (!idempotency_key_valid(key))
                return http_reply_error(
                    r, ERR_INVALID_REQUEST, json_pack("{s:s}", "field", "Idempotency-Key"),
                    "send an Idempotency-Key header (1 to %d printable characters) with a launch",
                    IDEMPOTENCY_KEY_MAX);
        _cleanup_(launch_request_done) LaunchRequest q = {0};
        if (read_launch(r, &q) < 0)
                return 0;
        snprintf(q.idempotency_key, sizeof(q.idempotency_key), "%s", key);
        LaunchLink *l =
            h2o_mem_alloc_shared(&r->req->pool, sizeof(LaunchLink), launch_link_dispose);
        *l = (LaunchLink){.request = r};
        int ret = provisioner_launch(s->provisioner, &q, launch_done, l, &l->ticket);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot take the launch now");
        return 0; /* answered after the batch commits */
}

/* ---- read ---- */

static int load_own(Request *r, const char *user_id, Allocation *ret)
{
        const char *id = http_param(r, 0);
        int ret_code =
            id_valid("alc", id) ? allocation_get(r->server->db, id, user_id, ret) : -ENOENT;
        if (ret_code == -ENOENT)
                http_reply_error(r, ERR_NOT_FOUND, NULL, "no such allocation");
        else if (ret_code < 0)
                http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the allocation now");
        return ret_code;
}

int api_allocations_get(Request *r)
{
        _cleanup_(allocation_done) Allocation a = {0};
        if (load_own(r, r->auth.user_id, &a) < 0)
                return 0;
        return http_reply_json(r, 200, allocation_to_json(&a));
}

typedef struct ListCtx {
        json_t *items;
        long long last_seq;
} ListCtx;

static int list_one(const Allocation *a, void *userdata)
{
        ListCtx *c = userdata;
        json_array_append_new(c->items, allocation_to_json(a));
        c->last_seq = a->seq;
        return 0;
}

static int list(Request *r, const char *user_id)
{
        int limit;
        long long before;
        if (api_list_params(r, API_LIST_MAX_LIMIT, &limit, &before) < 0)
                return 0;
        const char *state = http_query(r, "state"), *q = http_query(r, "q");
        if (state && alloc_state_from_string(state) == _ALLOC_STATE_INVALID)
                return http_reply_invalid_field(r, "state", "state is not an allocation state");
        if (q && strlen(q) > 200)
                return http_reply_invalid_field(r, "q", "q is at most 200 characters");
        AllocationFilter f = {
            .user_id = user_id, .state = state, .q = q, .before_seq = before, .limit = limit};
        ListCtx c = {.items = json_array()};
        if (allocations_list(r->server->db, &f, list_one, &c) < 0) {
                json_decref(c.items);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot list allocations now");
        }
        return api_list_reply(r, c.items, c.last_seq, limit);
}

int api_allocations_list(Request *r)
{
        return list(r, r->auth.user_id);
}

int api_admin_allocations_list(Request *r)
{
        return list(r, NULL);
}

int api_tasks_get(Request *r)
{
        const char *id = http_param(r, 0);
        _cleanup_(task_done) Task t = {0};
        int ret = id_valid("tsk", id) ? task_get(r->server->db, id, &t) : -ENOENT;
        if (ret >= 0 && !(r->auth.roles & ROLE_ADMIN) && !streq(t.user_id, r->auth.user_id))
                ret = -ENOENT; /* never reveal another tenant's task */
        if (ret == -ENOENT)
                return http_reply_error(r, ERR_NOT_FOUND, NULL, "no such task");
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the task now");
        return http_reply_json(r, 200, task_to_json(&t));
}

/* ---- release ---- */

static int reply_invalid_state(Request *r, AllocState state, const char *what)
{
        return http_reply_error(
            r, ERR_INVALID_STATE, json_pack("{s:s}", "state", alloc_state_to_string(state)),
            "an allocation in state %s cannot be %s", alloc_state_to_string(state), what);
}

int api_allocations_release(Request *r)
{
        Server *s = r->server;
        _cleanup_(allocation_done) Allocation a = {0};
        if (load_own(r, r->auth.user_id, &a) < 0)
                return 0;
        char task_id[ID_MAX] = "", node_id[ID_MAX] = "";
        AllocState state = a.state;
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret =
                    allocations_release(s->db, a.id, ALLOC_TRIGGER_RELEASE, NULL,
                                        provisioner_release_deadline(s), task_id, node_id, &state);
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret == -EPERM)
                return reply_invalid_state(r, state, "released (only active or release_failed)");
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot release now");
        provisioner_node_commands(s, node_id);
        allocation_done(&a);
        if (allocation_get(s->db, http_param(r, 0), NULL, &a) < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the allocation");
        char loc[96];
        snprintf(loc, sizeof(loc), "/api/v1/tasks/%s", task_id);
        http_add_header(r, "location", loc);
        return http_reply_json(
            r, 202,
            json_pack("{s:s, s:o}", "task_id", task_id, "allocation", allocation_to_json(&a)));
}

/* ---- admin ---- */

static const JsonField force_fields[] = {
    {"reason", JSON_FIELD_STRING, true, 1, 500},
};

int api_admin_allocations_force_release(Request *r)
{
        Server *s = r->server;
        _cleanup_(allocation_done) Allocation a = {0};
        if (load_own(r, NULL, &a) < 0)
                return 0;
        json_t *body = NULL;
        if (http_read_json(r, force_fields, ELEMENTSOF(force_fields), &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        const char *reason = json_field_string(b, "reason");
        bool blank = true;
        for (const char *c = reason; c && *c; c++)
                blank = blank && isspace((unsigned char)*c);
        if (blank)
                return http_reply_invalid_field(r, "reason", "a force release needs a reason");
        char task_id[ID_MAX] = "", node_id[ID_MAX] = "";
        AllocState from = a.state;
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = allocations_force_release(s->db, a.id, r->auth.user_id, reason,
                                                provisioner_release_deadline(s), task_id, node_id,
                                                &from);
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret == -EPERM)
                return reply_invalid_state(r, from, "force released");
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot force release now");
        log_info("allocation force released | allocation=%s actor=%s previous_state=%s", a.id,
                 r->auth.user_id, alloc_state_to_string(from));
        provisioner_node_commands(s, node_id);
        allocation_done(&a);
        if (allocation_get(s->db, http_param(r, 0), NULL, &a) < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot read the allocation");
        return http_reply_json(r, 200,
                               json_pack("{s:o, s:s?}", "allocation", allocation_to_json(&a),
                                         "task_id", task_id[0] ? task_id : NULL));
}

static const JsonField verify_fields[] = {
    {"reason", JSON_FIELD_STRING, false, 0, 500},
};

int api_admin_slots_verify(Request *r)
{
        Server *s = r->server;
        const char *node_id = http_param(r, 0), *slot_id = http_param(r, 1);
        json_t *body = NULL;
        if (r->req->entity.len > 0 &&
            http_read_json(r, verify_fields, ELEMENTSOF(verify_fields), &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        if (!id_valid("nod", node_id) || !id_valid("slt", slot_id))
                return http_reply_error(r, ERR_NOT_FOUND, NULL, "no such slot on this node");
        char state[16] = "";
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(s->db, &txn);
        if (ret >= 0)
                ret = allocations_slot_verify(s->db, node_id, slot_id, r->auth.user_id,
                                              json_field_string(b, "reason"), state);
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret == -ENOENT)
                return http_reply_error(r, ERR_NOT_FOUND, NULL, "no such slot on this node");
        if (ret == -EPERM)
                return http_reply_error(r, ERR_INVALID_STATE, json_pack("{s:s}", "state", state),
                                        "only a quarantined slot can be verified; this one is %s",
                                        state);
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot verify the slot now");
        provisioner_node_changed(s, node_id);
        return http_reply_json(r, 200,
                               json_pack("{s:s, s:s, s:s, s:s}", "id", slot_id, "node_id", node_id,
                                         "state", "available", "previous_state", state));
}
