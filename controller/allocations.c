/* SPDX-License-Identifier: MIT */
/* Allocations: rows, the launch transaction, release, force release, and
 * what replies and deadlines do. See allocations.h. */
#include "allocations.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "audit.h"
#include "db.h"
#include "events.h"
#include "json-util.h"
#include "ledger.h"
#include "log.h"
#include "macro.h"
#include "node-commands.h"
#include "slot-state.h"
#include "tasks.h"

#define CMD_ASSIGN  "command.allocation.assign"
#define CMD_RELEASE "command.allocation.release"

static const char *const provision_steps[] = {"reserve_slots", "assign", "activate"};
static const char *const release_steps[] = {"stop_billing", "teardown", "return_slots"};
static const char *const cleanup_steps[] = {"teardown", "return_slots"};

/* ---- rows ---- */

void allocation_done(Allocation *a)
{
        json_decref(a->ssh_key_ids);
        json_decref(a->storage);
        json_decref(a->connection);
        json_decref(a->macs);
        json_decref(a->slots);
        free(a->failure_reason);
        free(a->release_failed_reason);
        *a = (Allocation){0};
}

static json_t *connection_json(const json_t *c)
{
        const char *host = json_string_value(json_object_get(c, "host"));
        const char *user = json_string_value(json_object_get(c, "user"));
        json_t *port = json_object_get(c, "port");
        if (!host || !user || !json_is_integer(port))
                return json_null();
        char cmd[512];
        bool v6 = strchr(host, ':') != NULL;
        (void)v6; /* ssh takes a bare IPv6 address after '@' */
        snprintf(cmd, sizeof(cmd), "ssh -p %" JSON_INTEGER_FORMAT " %s@%s",
                 json_integer_value(port), user, host);
        return json_pack("{s:s, s:I, s:s, s:s}", "host", host, "port", json_integer_value(port),
                         "user", user, "ssh_command", cmd);
}

json_t *allocation_to_json(const Allocation *a)
{
        return json_pack(
            "{s:s, s:s, s:s, s:s, s:I, s:s?, s:O, s:o, s:o, s:I, s:s, s:s?, s:s?, s:b, s:o, s:s, "
            "s:s, s:O, s:O?, s:O, s:o, s:o, s:o, s:s?}",
            "id", a->id, "user_id", a->user_id, "state", alloc_state_to_string(a->state), "sku_id",
            a->sku_id, "gpu_count", (json_int_t)a->gpu_count, "node_id",
            a->node_id[0] ? a->node_id : NULL, "slots", a->slots ? a->slots : json_array(),
            "created_at", json_timestamp(a->created_at), "updated_at",
            json_timestamp(a->updated_at), "hourly_cost_micros", (json_int_t)a->hourly_cost_micros,
            "currency", a->currency, "failure_reason", a->failure_reason, "release_failed_reason",
            a->release_failed_reason, "billing_stopped", a->billing_stopped, "connection",
            a->connection && a->state == ALLOC_ACTIVE ? connection_json(a->connection)
                                                      : json_null(),
            "image_id", a->image_id, "network_id", a->network_id, "ssh_key_ids",
            a->ssh_key_ids ? a->ssh_key_ids : json_array(), "storage", a->storage, "macs",
            a->macs ? a->macs : json_array(), "billing_started_at",
            json_timestamp(a->billing_started_at), "billing_ended_at",
            json_timestamp(a->billing_ended_at), "released_at", json_timestamp(a->released_at),
            "task_id", a->task_id[0] ? a->task_id : NULL);
}

#define ALLOC_COLUMNS                                                                              \
        "a.id, a.user_id, a.state, a.sku_id, a.gpu_count, a.node_id, a.image_id, a.network_id, "   \
        "a.ssh_key_ids, a.storage, a.hourly_cost_micros, a.currency, a.failure_reason, "           \
        "a.release_failed_reason, a.billing_stopped, a.billing_started_at, a.billing_ended_at, "   \
        "a.created_at, a.updated_at, a.released_at, a.connection, a.mac, a.seq"

static json_t *load_json(const char *text)
{
        return text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
}

static char *dup_or_null(const char *s)
{
        return s ? strdup(s) : NULL;
}

static void allocation_from_row(sqlite3_stmt *s, Allocation *a)
{
        *a = (Allocation){0};
        snprintf(a->id, sizeof(a->id), "%s", strempty(db_column_text(s, 0)));
        snprintf(a->user_id, sizeof(a->user_id), "%s", strempty(db_column_text(s, 1)));
        a->state = alloc_state_from_string(db_column_text(s, 2));
        snprintf(a->sku_id, sizeof(a->sku_id), "%s", strempty(db_column_text(s, 3)));
        a->gpu_count = (unsigned)sqlite3_column_int(s, 4);
        snprintf(a->node_id, sizeof(a->node_id), "%s", strempty(db_column_text(s, 5)));
        snprintf(a->image_id, sizeof(a->image_id), "%s", strempty(db_column_text(s, 6)));
        snprintf(a->network_id, sizeof(a->network_id), "%s", strempty(db_column_text(s, 7)));
        a->ssh_key_ids = load_json(db_column_text(s, 8));
        a->storage = load_json(db_column_text(s, 9));
        a->hourly_cost_micros = sqlite3_column_int64(s, 10);
        snprintf(a->currency, sizeof(a->currency), "%s", strempty(db_column_text(s, 11)));
        a->failure_reason = dup_or_null(db_column_text(s, 12));
        a->release_failed_reason = dup_or_null(db_column_text(s, 13));
        a->billing_stopped = sqlite3_column_int(s, 14) != 0;
        a->billing_started_at = (usec_t)sqlite3_column_int64(s, 15);
        a->billing_ended_at = (usec_t)sqlite3_column_int64(s, 16);
        a->created_at = (usec_t)sqlite3_column_int64(s, 17);
        a->updated_at = (usec_t)sqlite3_column_int64(s, 18);
        a->released_at = (usec_t)sqlite3_column_int64(s, 19);
        a->connection = load_json(db_column_text(s, 20));
        a->macs = load_json(db_column_text(s, 21));
        a->seq = sqlite3_column_int64(s, 22);
}

static int allocation_load_slots(Db *db, Allocation *a)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "SELECT s.id, s.slot_key, s.gpus, x.state, s.state FROM allocation_slots x JOIN "
                "node_resource_slots s ON s.id = x.slot_id WHERE x.allocation_id = ? ORDER BY "
                "s.slot_key");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, a->id, -1, SQLITE_TRANSIENT);
        json_t *slots = json_array();
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                json_t *gpus = load_json(db_column_text(s, 2));
                json_array_append_new(slots, json_pack("{s:s, s:s, s:o, s:s, s:s}", "id",
                                                       db_column_text(s, 0), "slot_key",
                                                       strempty(db_column_text(s, 1)), "gpus",
                                                       gpus ? gpus : json_array(), "state",
                                                       strempty(db_column_text(s, 3)), "slot_state",
                                                       strempty(db_column_text(s, 4))));
        }
        json_decref(a->slots);
        a->slots = slots;
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return task_latest_for_allocation(db, a->id, a->task_id);
}

int allocation_get(Db *db, const char *id, const char *user_id, Allocation *ret)
{
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT " ALLOC_COLUMNS " FROM allocations a WHERE a.id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
                int rc = sqlite3_step(s);
                if (rc == SQLITE_DONE)
                        return -ENOENT;
                if (rc != SQLITE_ROW)
                        return db_errno(rc);
                allocation_from_row(s, ret);
        }
        if (user_id && !streq(user_id, ret->user_id)) {
                allocation_done(ret);
                return -ENOENT;
        }
        int r = allocation_load_slots(db, ret);
        if (r < 0)
                allocation_done(ret);
        return r;
}

int allocations_list(Db *db, const AllocationFilter *f,
                     int (*fn)(const Allocation *a, void *userdata), void *userdata)
{
        /* Collected first: loading slots reuses the statement cache. */
        Allocation *list = calloc((size_t)MAX(f->limit, 1), sizeof(Allocation));
        if (!list)
                return -ENOMEM;
        size_t n = 0;
        int r = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db,
                    "SELECT " ALLOC_COLUMNS " FROM allocations a "
                    "LEFT JOIN skus k ON k.id = a.sku_id LEFT JOIN nodes n ON n.id = a.node_id "
                    "WHERE (?1 IS NULL OR a.user_id = ?1) AND (?2 IS NULL OR a.state = ?2) "
                    "AND (?3 = 0 OR a.seq < ?3) AND (?4 IS NULL OR instr(a.id, ?4) > 0 OR "
                    "instr(a.sku_id, ?4) > 0 OR instr(lower(coalesce(k.name, '')), lower(?4)) > "
                    "0 OR instr(coalesce(a.node_id, ''), ?4) > 0 OR "
                    "instr(lower(coalesce(n.name, '')), lower(?4)) > 0) "
                    "ORDER BY a.seq DESC LIMIT ?5");
                if (!s) {
                        free(list);
                        return -EIO;
                }
                db_bind_text(s, 1, f->user_id);
                db_bind_text(s, 2, f->state);
                sqlite3_bind_int64(s, 3, f->before_seq);
                db_bind_text(s, 4, f->q && *f->q ? f->q : NULL);
                sqlite3_bind_int(s, 5, f->limit);
                int rc = SQLITE_DONE;
                while (n < (size_t)f->limit && (rc = sqlite3_step(s)) == SQLITE_ROW)
                        allocation_from_row(s, &list[n++]);
                if (n < (size_t)f->limit && rc != SQLITE_DONE)
                        r = db_errno(rc);
        }
        for (size_t i = 0; i < n; i++) {
                if (r >= 0)
                        r = allocation_load_slots(db, &list[i]);
                if (r >= 0)
                        r = fn(&list[i], userdata);
                allocation_done(&list[i]);
        }
        free(list);
        return r;
}

/* ---- prechecks ---- */

void prechecks_done(Prechecks *p)
{
        for (size_t i = 0; i < p->n; i++)
                json_decref(p->items[i].details);
        p->n = 0;
}

static void precheck_add(Prechecks *p, ErrorCode code, json_t *details, const char *fmt, ...)
    _printf_(4, 5);
static void precheck_add(Prechecks *p, ErrorCode code, json_t *details, const char *fmt, ...)
{
        if (p->n >= PRECHECKS_MAX) {
                json_decref(details);
                return;
        }
        Precheck *c = &p->items[p->n++];
        c->code = code;
        c->details = details;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->message, sizeof(c->message), fmt, ap);
        va_end(ap);
}

static json_t *counts_json(const unsigned *c, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(a, json_integer(c[i]));
        return a;
}

/* Capacity: 1 when the count fits an online node now, else 0 with the
 * failing precheck added. */
static int capacity_precheck(Placement *p, const Sku *sku, unsigned gpu_count, Prechecks *ret)
{
        PlacementRule rule;
        if (placement_rule_from_sku(sku, &rule) < 0) {
                precheck_add(ret, ERR_SOLD_OUT, NULL, "the SKU's topology rule is unknown");
                return 0;
        }
        unsigned avail[PLACEMENT_MAX_COUNTS];
        size_t n_avail = 0;
        size_t n_counts = MIN(sku->n_gpu_counts, (size_t)PLACEMENT_MAX_COUNTS);
        (void)placement_rule_available_counts(p, &rule, sku->gpu_counts, n_counts, avail, &n_avail);
        if (!sku_allows_gpu_count(sku, gpu_count)) {
                precheck_add(ret, ERR_INVALID_GPU_COUNT,
                             json_pack("{s:I, s:o, s:o}", "gpu_count", (json_int_t)gpu_count,
                                       "gpu_counts", counts_json(sku->gpu_counts, n_counts),
                                       "available_gpu_counts", counts_json(avail, n_avail)),
                             "this SKU is sold in %s GPU counts; %u is not one of them",
                             sku->n_gpu_counts ? "these" : "no", gpu_count);
                return 0;
        }
        if (placement_max_group(p, &rule, true) >= gpu_count)
                return 1;
        json_t *details = json_pack("{s:I, s:o}", "gpu_count", (json_int_t)gpu_count,
                                    "available_gpu_counts", counts_json(avail, n_avail));
        if (placement_max_group(p, &rule, false) >= gpu_count)
                precheck_add(ret, ERR_NODE_OFFLINE, details,
                             "the nodes that could host %u GPUs of this SKU are offline now",
                             gpu_count);
        else if (n_avail == 0)
                precheck_add(ret, ERR_SOLD_OUT, details,
                             "this SKU is sold out: no online node has a free slot for it");
        else
                precheck_add(ret, ERR_INVALID_GPU_COUNT, details,
                             "no online node has %u free slots that satisfy this SKU's %s rule "
                             "now",
                             gpu_count, sku->topology);
        return 0;
}

static int balance_precheck(Db *db, const char *user_id, int64_t cost, Prechecks *ret)
{
        int64_t available = 0;
        int r = ledger_available_micros(db, user_id, &available);
        if (r < 0)
                return r;
        if (available >= cost)
                return 1;
        precheck_add(ret, ERR_INSUFFICIENT_BALANCE,
                     json_pack("{s:I, s:I, s:s}", "available_micros", (json_int_t)available,
                               "required_micros", (json_int_t)cost, "currency", "usd"),
                     "the balance available (%" PRId64 " micros) is below one hour of this "
                     "launch (%" PRId64 " micros)",
                     available, cost);
        return 0;
}

int allocation_prechecks(Db *db, Placement *p, const char *user_id, const Sku *sku,
                         unsigned gpu_count, Prechecks *ret)
{
        *ret = (Prechecks){0};
        ret->hourly_cost_micros = sku->price_per_gpu_hour_micros * (int64_t)gpu_count;
        (void)capacity_precheck(p, sku, gpu_count, ret);
        int r = balance_precheck(db, user_id, ret->hourly_cost_micros, ret);
        return r < 0 ? r : 0;
}

/* ---- launch ---- */

void launch_request_done(LaunchRequest *q)
{
        sku_done(&q->sku);
        image_done(&q->image);
        network_done(&q->network);
        json_decref(q->ssh_key_ids);
        json_decref(q->ssh_keys);
        json_decref(q->storage);
        q->ssh_key_ids = q->ssh_keys = q->storage = NULL;
}

void launch_result_done(LaunchResult *r)
{
        json_decref(r->details);
        json_decref(r->allocation);
        r->details = r->allocation = NULL;
}

void launch_result_untake(Placement *p, LaunchResult *res)
{
        for (size_t i = 0; i < res->pick.n_slots; i++)
                (void)placement_slot_set_free(p, res->pick.slot_ids[i], true);
        res->pick.n_slots = 0;
}

void allocation_slot_mac(const char *allocation_id, const char *slot_id, char ret[static 18])
{
        uint8_t h[SHA256_DIGEST_LENGTH];
        char buf[2 * ID_MAX + 24];
        int n = snprintf(buf, sizeof(buf), "gpuslice-vf-mac:%s/%s", allocation_id, slot_id);
        SHA256((const unsigned char *)buf, (size_t)MAX(n, 0) < sizeof(buf) ? (size_t)n : 0, h);
        h[0] = (uint8_t)((h[0] & 0xfc) | 0x02); /* unicast, locally administered */
        snprintf(ret, 18, "%02x:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4], h[5]);
}

/* A network with the "hardware" MAC policy: the VF keeps its own MAC. */
static bool keeps_hardware_mac(const Network *n)
{
        return streq(n->mac_policy, NETWORK_MAC_HARDWARE);
}

/* The slot as the agent's commands carry it, with mac (a reference taken:
 * the MAC string, or null for the VF's own) or, when mac is NULL, none (a
 * release does not need it). */
static json_t *slot_command_json(Db *db, const char *slot_id, json_t *mac)
{
        _cleanup_(json_decrefp) json_t *m = mac;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "SELECT slot_key, gpus, nic, vf_index, nvme FROM node_resource_slots WHERE id = ?");
        if (!s)
                return NULL;
        sqlite3_bind_text(s, 1, slot_id, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(s) != SQLITE_ROW)
                return NULL;
        json_t *gpus = load_json(db_column_text(s, 1));
        json_t *j = json_pack("{s:s, s:s, s:o, s:s?, s:o, s:s?}", "slot_id", slot_id, "slot_key",
                              strempty(db_column_text(s, 0)), "gpus", gpus ? gpus : json_array(),
                              "nic", db_column_text(s, 2), "vf_index",
                              sqlite3_column_type(s, 3) == SQLITE_NULL
                                  ? json_null()
                                  : json_integer(sqlite3_column_int64(s, 3)),
                              "nvme", db_column_text(s, 4));
        if (j && m && json_object_set_new(j, "mac", TAKE_PTR(m)) < 0) {
                json_decref(j);
                return NULL;
        }
        return j;
}

static int idempotent_replay(Db *db, const LaunchRequest *q, LaunchResult *res)
{
        if (!q->idempotency_key[0])
                return 0;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT a.id, a.request_hash, a.node_id, (SELECT t.id FROM tasks t WHERE "
                        "t.allocation_id = a.id ORDER BY t.seq LIMIT 1) FROM allocations a WHERE "
                        "a.user_id = ? AND a.idempotency_key = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, q->user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, q->idempotency_key, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return 0;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        const void *h = sqlite3_column_blob(s, 1);
        if (!h || sqlite3_column_bytes(s, 1) != ALLOCATION_REQUEST_HASH_SIZE ||
            memcmp(h, q->request_hash, ALLOCATION_REQUEST_HASH_SIZE) != 0) {
                res->code = ERR_IDEMPOTENCY_CONFLICT;
                snprintf(res->message, sizeof(res->message),
                         "this Idempotency-Key was used with a different request body");
                res->details = json_pack("{s:s}", "allocation_id", db_column_text(s, 0));
                return 1;
        }
        res->ok = res->replayed = true;
        snprintf(res->allocation_id, sizeof(res->allocation_id), "%s",
                 strempty(db_column_text(s, 0)));
        snprintf(res->node_id, sizeof(res->node_id), "%s", strempty(db_column_text(s, 2)));
        snprintf(res->task_id, sizeof(res->task_id), "%s", strempty(db_column_text(s, 3)));
        return 1;
}

static int insert_allocation(Db *db, const LaunchRequest *q, const char *id, const char *node_id,
                             int64_t cost, const char *macs)
{
        _cleanup_free_ char *keys =
            q->ssh_key_ids ? json_dumps(q->ssh_key_ids, JSON_COMPACT) : strdup("[]");
        _cleanup_free_ char *storage =
            q->storage ? json_dumps(q->storage, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        if (!keys)
                return -ENOMEM;
        usec_t now = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, node_id, "
                "image_id, network_id, ssh_key_ids, storage, hourly_cost_micros, currency, mac, "
                "idempotency_key, request_hash, created_at, updated_at) VALUES (?1, ?2, "
                "'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'usd', ?11, ?12, ?13, ?14, ?14)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, q->user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, q->sku.id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(s, 4, (int)q->gpu_count);
        sqlite3_bind_text(s, 5, node_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 6, q->image.id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 7, q->network.id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 8, keys, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 9, storage);
        sqlite3_bind_int64(s, 10, cost);
        db_bind_text(s, 11, macs);
        db_bind_text(s, 12, q->idempotency_key[0] ? q->idempotency_key : NULL);
        sqlite3_bind_blob(s, 13, q->request_hash, ALLOCATION_REQUEST_HASH_SIZE, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 14, (sqlite3_int64)now);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int allocation_slot_insert(Db *db, const char *allocation_id, const char *slot_id)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "INSERT INTO allocation_slots (allocation_id, slot_id, state) VALUES (?, ?, "
                "'held')");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, allocation_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, slot_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int launch_write(Db *db, const LaunchRequest *q, const PlacementPick *pick, int64_t cost,
                        usec_t deadline_at, LaunchResult *res)
{
        char id[ID_MAX], command_id[ID_MAX];
        int r = id_new("alc", id);
        if (r < 0)
                return r;
        /* The network's MAC policy as this launch read it: the assign command
         * (resent as stored) and macs keep it whatever the network becomes.
         * "hardware": nil in the command, null here until the agent's reply
         * reports the VF's own MAC. */
        bool hardware = keeps_hardware_mac(&q->network);
        _cleanup_(json_decrefp) json_t *slots = json_array(), *macs = json_array();
        for (size_t i = 0; i < pick->n_slots; i++) {
                char mac[18];
                allocation_slot_mac(id, pick->slot_ids[i], mac);
                json_array_append_new(macs, hardware ? json_null() : json_string(mac));
        }
        _cleanup_free_ char *macs_text = json_dumps(macs, JSON_COMPACT);
        r = insert_allocation(db, q, id, pick->node_id, cost, macs_text);
        if (r >= 0)
                r = alloc_state_transition(db, id, ALLOC_PROVISIONING, ALLOC_TRIGGER_PLACE, NULL,
                                           NULL);
        for (size_t i = 0; r >= 0 && i < pick->n_slots; i++) {
                r = slot_state_transition(db, pick->slot_ids[i], SLOT_RESERVED,
                                          SLOT_TRIGGER_RESERVE, id, NULL, NULL);
                if (r == -EPERM || r == -ENOENT)
                        return -EAGAIN; /* the index was stale */
                if (r >= 0)
                        r = allocation_slot_insert(db, id, pick->slot_ids[i]);
                if (r == -EEXIST)
                        return -EAGAIN; /* held elsewhere: the unique index caught it */
                if (r >= 0) {
                        json_t *sj = slot_command_json(db, pick->slot_ids[i],
                                                       json_incref(json_array_get(macs, i)));
                        r = sj ? json_array_append_new(slots, sj) : -EIO;
                }
        }
        if (r < 0)
                return r;
        r = ledger_hold_place(db, q->user_id, id, cost);
        if (r < 0)
                return r;
        _cleanup_(json_decrefp) json_t *body = json_pack(
            "{s:s, s:{s:s, s:s, s:s, s:s}, s:{s:s, s:i, s:b, s:b}, s:O, s:O}", "allocation_id", id,
            "image", "id", q->image.id, "name", q->image.name, "source", q->image.source,
            "ssh_user", q->image.ssh_user, "network", "id", q->network.id, "vlan", q->network.vlan,
            "spoofchk", q->network.spoofchk, "trust", q->network.trust, "ssh_keys",
            q->ssh_keys ? q->ssh_keys : json_array(), "slots", slots);
        if (!body)
                return -ENOMEM;
        r = node_command_create(db, pick->node_id, CMD_ASSIGN, body, command_id);
        if (r >= 0)
                r = task_create(db, id, TASK_PROVISION, provision_steps,
                                ELEMENTSOF(provision_steps), 1, deadline_at, command_id,
                                res->task_id);
        if (r < 0)
                return r;
        /* The answer's allocation object, from what was just written: the
         * launch is answered without reading it back. */
        usec_t now = now_usec();
        json_t *out_slots = json_array();
        size_t i;
        json_t *sj;
        json_array_foreach(slots, i, sj) json_array_append_new(
            out_slots,
            json_pack("{s:O, s:O, s:O, s:s, s:s}", "id", json_object_get(sj, "slot_id"), "slot_key",
                      json_object_get(sj, "slot_key"), "gpus", json_object_get(sj, "gpus"), "state",
                      "held", "slot_state", "reserved"));
        Allocation a = {
            .state = ALLOC_PROVISIONING,
            .gpu_count = q->gpu_count,
            .ssh_key_ids = q->ssh_key_ids,
            .storage = q->storage,
            .hourly_cost_micros = cost,
            .created_at = now,
            .updated_at = now,
            .macs = macs,
            .slots = out_slots,
        };
        memcpy(a.id, id, sizeof(id));
        snprintf(a.user_id, sizeof(a.user_id), "%s", q->user_id);
        snprintf(a.sku_id, sizeof(a.sku_id), "%s", q->sku.id);
        memcpy(a.node_id, pick->node_id, sizeof(a.node_id) - 1);
        snprintf(a.image_id, sizeof(a.image_id), "%s", q->image.id);
        snprintf(a.network_id, sizeof(a.network_id), "%s", q->network.id);
        snprintf(a.currency, sizeof(a.currency), "usd");
        memcpy(a.task_id, res->task_id, sizeof(a.task_id));
        res->allocation = allocation_to_json(&a);
        json_decref(out_slots);
        res->ok = true;
        memcpy(res->allocation_id, id, sizeof(id));
        memcpy(res->node_id, pick->node_id, MIN(sizeof(res->node_id), sizeof(pick->node_id)));
        res->node_id[sizeof(res->node_id) - 1] = '\0';
        return 0;
}

int allocations_launch(Db *db, Placement *p, const LaunchRequest *q, usec_t deadline_at,
                       LaunchResult *res)
{
        *res = (LaunchResult){0};
        int r = idempotent_replay(db, q, res);
        if (r != 0)
                return r < 0 ? r : 0;

        _cleanup_(prechecks_done) Prechecks pc = {0};
        r = allocation_prechecks(db, p, q->user_id, &q->sku, q->gpu_count, &pc);
        if (r < 0)
                return r;
        if (pc.n > 0) {
                res->code = pc.items[0].code;
                memcpy(res->message, pc.items[0].message, sizeof(res->message));
                res->details = TAKE_PTR(pc.items[0].details);
                return 0;
        }
        PlacementRule rule;
        r = placement_rule_from_sku(&q->sku, &rule);
        if (r >= 0)
                r = placement_pick(p, &rule, q->gpu_count, &res->pick);
        if (r == -ENOSPC) {
                res->code = ERR_SOLD_OUT;
                snprintf(res->message, sizeof(res->message), "no capacity for this launch now");
                return 0;
        }
        if (r < 0)
                return r;
        for (size_t i = 0; i < res->pick.n_slots; i++)
                (void)placement_slot_set_free(p, res->pick.slot_ids[i], false);
        r = launch_write(db, q, &res->pick, pc.hourly_cost_micros, deadline_at, res);
        if (r < 0) {
                launch_result_untake(p, res);
                res->ok = false;
        }
        return r;
}

/* ---- release ---- */

/* Open commands of the allocation's tasks end (superseded): an assign that
 * never ran must not run after a release, and a newer release replaces an
 * older one. */
static int close_open_commands(Db *db, const char *allocation_id, const char *type, const char *why)
{
        char ids[16][ID_MAX];
        size_t n = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db, "SELECT c.id FROM tasks t JOIN node_commands c ON c.id = t.command_id "
                        "WHERE t.allocation_id = ? AND c.state IN ('pending', 'sent') AND "
                        "(?2 IS NULL OR c.type = ?2) LIMIT 16");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, allocation_id, -1, SQLITE_TRANSIENT);
                db_bind_text(s, 2, type);
                while (n < ELEMENTSOF(ids) && sqlite3_step(s) == SQLITE_ROW)
                        snprintf(ids[n++], ID_MAX, "%s", strempty(db_column_text(s, 0)));
        }
        for (size_t i = 0; i < n; i++) {
                _cleanup_(json_decrefp) json_t *reply =
                    json_pack("{s:b, s:{s:s, s:s}}", "ok", false, "error", "code", why, "message",
                              "closed by the controller");
                int r = node_command_finish(db, ids[i], false, reply);
                if (r < 0 && r != -EALREADY)
                        return r;
        }
        return 0;
}

/* Slots of the allocation that `from` states move to `to` by trigger. */
static int move_slots(Db *db, const char *allocation_id, SlotState to, SlotTrigger trigger,
                      const char *reason, const char *row_state_from, const char *row_state_to)
{
        char ids[PLACEMENT_MAX_SLOTS][ID_MAX];
        size_t n = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT slot_id FROM allocation_slots WHERE allocation_id = ? "
                                "AND state = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, allocation_id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 2, row_state_from, -1, SQLITE_TRANSIENT);
                while (n < ELEMENTSOF(ids) && sqlite3_step(s) == SQLITE_ROW)
                        snprintf(ids[n++], ID_MAX, "%s", strempty(db_column_text(s, 0)));
        }
        for (size_t i = 0; i < n; i++) {
                int r = slot_state_transition(db, ids[i], to, trigger, NULL, reason, NULL);
                if (r == -EPERM || r == -ENOENT)
                        continue; /* already elsewhere (verified by an admin, deleted) */
                if (r < 0)
                        return r;
                if (row_state_to && !streq(row_state_to, row_state_from)) {
                        _cleanup_(db_stmt_resetp) sqlite3_stmt *u =
                            db_stmt(db, "UPDATE allocation_slots SET state = ? WHERE "
                                        "allocation_id = ? AND slot_id = ?");
                        if (!u)
                                return -EIO;
                        sqlite3_bind_text(u, 1, row_state_to, -1, SQLITE_TRANSIENT);
                        sqlite3_bind_text(u, 2, allocation_id, -1, SQLITE_TRANSIENT);
                        sqlite3_bind_text(u, 3, ids[i], -1, SQLITE_TRANSIENT);
                        int rc = sqlite3_step(u);
                        if (rc != SQLITE_DONE)
                                return db_errno(rc);
                }
        }
        return 0;
}

/* A release command (and its task) for the allocation's slots whose rows are
 * in row_state and which still belong to it. */
static int create_release(Db *db, const char *allocation_id, const char *node_id,
                          const char *row_state, bool with_billing_step, usec_t deadline_at,
                          char ret_task_id[static ID_MAX])
{
        _cleanup_(json_decrefp) json_t *slots = json_array();
        {
                char ids[PLACEMENT_MAX_SLOTS][ID_MAX];
                size_t n = 0;
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT x.slot_id FROM allocation_slots x JOIN "
                                "node_resource_slots s ON s.id = x.slot_id WHERE "
                                "x.allocation_id = ? AND x.state = ? AND s.allocation_id = "
                                "x.allocation_id ORDER BY s.slot_key");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, allocation_id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 2, row_state, -1, SQLITE_TRANSIENT);
                while (n < ELEMENTSOF(ids) && sqlite3_step(s) == SQLITE_ROW)
                        snprintf(ids[n++], ID_MAX, "%s", strempty(db_column_text(s, 0)));
                db_stmt_resetp(&s);
                for (size_t i = 0; i < n; i++) {
                        json_t *sj = slot_command_json(db, ids[i], NULL);
                        if (!sj)
                                return -EIO;
                        json_array_append_new(slots, sj);
                }
        }
        char command_id[ID_MAX];
        if (json_array_size(slots) == 0) {
                ret_task_id[0] = '\0';
                return 0; /* nothing left on the node to tear down */
        }
        _cleanup_(json_decrefp) json_t *body =
            json_pack("{s:s, s:O}", "allocation_id", allocation_id, "slots", slots);
        int r = node_command_create(db, node_id, CMD_RELEASE, body, command_id);
        if (r < 0)
                return r;
        return with_billing_step
                   ? task_create(db, allocation_id, TASK_RELEASE, release_steps,
                                 ELEMENTSOF(release_steps), 1, deadline_at, command_id, ret_task_id)
                   : task_create(db, allocation_id, TASK_RELEASE, cleanup_steps,
                                 ELEMENTSOF(cleanup_steps), 0, deadline_at, command_id,
                                 ret_task_id);
}

/* db_stmt() caches by the SQL's address: every statement is a literal. */
#define SET_COLUMNS(cols) "UPDATE allocations SET " cols " WHERE id = ?2"

/* Runs a SET_COLUMNS() statement: ?1 text, ?2 the allocation, ?3 now. */
static int set_columns(Db *db, const char *id, const char *sql, const char *text)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(db, sql);
        if (!s)
                return -EIO;
        db_bind_text(s, 1, text);
        sqlite3_bind_text(s, 2, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int fail_running_tasks(Db *db, const char *allocation_id, const char *error)
{
        char ids[16][ID_MAX];
        size_t n = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db, "SELECT id FROM tasks WHERE allocation_id = ? AND state = 'running' "
                        "LIMIT 16");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, allocation_id, -1, SQLITE_TRANSIENT);
                while (n < ELEMENTSOF(ids) && sqlite3_step(s) == SQLITE_ROW)
                        snprintf(ids[n++], ID_MAX, "%s", strempty(db_column_text(s, 0)));
        }
        for (size_t i = 0; i < n; i++) {
                _cleanup_(task_done) Task t = {0};
                int r = task_get(db, ids[i], &t);
                if (r >= 0)
                        r = task_finish(db, &t, false, error);
                if (r < 0)
                        return r;
        }
        return 0;
}

int allocations_release(Db *db, const char *id, AllocTrigger trigger, const char *reason,
                        usec_t deadline_at, char ret_task_id[static ID_MAX],
                        char ret_node_id[static ID_MAX], AllocState *ret_state)
{
        _cleanup_(allocation_done) Allocation a = {0};
        int r = allocation_get(db, id, NULL, &a);
        if (r < 0)
                return r;
        if (ret_state)
                *ret_state = a.state;
        AllocState from;
        r = alloc_state_transition(db, id, ALLOC_RELEASING, trigger, reason, &from);
        if (r < 0)
                return r;
        snprintf(ret_node_id, ID_MAX, "%s", a.node_id);
        /* Billing ends the moment the release is asked for. */
        r = set_columns(db, id,
                        SET_COLUMNS("billing_ended_at = coalesce(billing_ended_at, ?3), "
                                    "release_failed_reason = NULL, updated_at = ?3, "
                                    "failure_reason = coalesce(failure_reason, ?1)"),
                        trigger == ALLOC_TRIGGER_BILLING ? reason : NULL);
        if (r >= 0)
                r = close_open_commands(db, id, CMD_RELEASE, "superseded");
        if (r >= 0)
                r = fail_running_tasks(db, id, "superseded");
        if (r >= 0)
                r = move_slots(db, id, SLOT_CLEANING, SLOT_TRIGGER_RELEASE, NULL, "held", "held");
        if (r >= 0)
                r = move_slots(db, id, SLOT_CLEANING, SLOT_TRIGGER_RELEASE, NULL, "quarantined",
                               "held");
        if (r >= 0)
                r = create_release(db, id, a.node_id, "held", true, deadline_at, ret_task_id);
        if (r >= 0 && !ret_task_id[0]) {
                /* Every slot came back already (an admin verified them): the
                 * release is complete at once, and its task says so. */
                _cleanup_(task_done) Task t = {0};
                r = task_create(db, id, TASK_RELEASE, release_steps, ELEMENTSOF(release_steps), 1,
                                deadline_at, NULL, ret_task_id);
                if (r >= 0)
                        r = task_get(db, ret_task_id, &t);
                if (r >= 0)
                        r = task_finish(db, &t, true, NULL);
                if (r >= 0)
                        r = alloc_state_transition(db, id, ALLOC_RELEASED,
                                                   ALLOC_TRIGGER_TEARDOWN_OK, NULL, NULL);
                if (r >= 0)
                        r = set_columns(db, id, SET_COLUMNS("released_at = ?3, updated_at = ?3"),
                                        NULL);
                if (r >= 0)
                        r = ledger_hold_close(db, id);
        }
        return r;
}

int allocations_force_release(Db *db, const char *id, const char *actor_id, const char *reason,
                              usec_t deadline_at, char ret_task_id[static ID_MAX],
                              char ret_node_id[static ID_MAX], AllocState *ret_from)
{
        _cleanup_(allocation_done) Allocation a = {0};
        int r = allocation_get(db, id, NULL, &a);
        if (r < 0)
                return r;
        if (ret_from)
                *ret_from = a.state;
        r = alloc_state_transition(db, id, ALLOC_RELEASED, ALLOC_TRIGGER_FORCE_RELEASE, reason,
                                   NULL);
        if (r < 0)
                return r;
        snprintf(ret_node_id, ID_MAX, "%s", a.node_id);
        ret_task_id[0] = '\0';
        r = set_columns(
            db, id,
            SET_COLUMNS("billing_ended_at = coalesce(billing_ended_at, ?3), billing_stopped = 1, "
                        "released_at = ?3, updated_at = ?3, "
                        "failure_reason = coalesce(failure_reason, ?1)"),
            "force_released");
        if (r >= 0)
                r = close_open_commands(db, id, NULL, "force_released");
        if (r >= 0)
                r = fail_running_tasks(db, id, "force_released");
        if (r >= 0)
                r = move_slots(db, id, SLOT_QUARANTINED, SLOT_TRIGGER_FORCE_RELEASE,
                               "force_released", "held", "quarantined");
        if (r >= 0)
                r = ledger_hold_void(db, id);
        if (r >= 0)
                r = audit_log(db, actor_id, "allocation.force_release", "allocation", id, reason,
                              json_pack("{s:s, s:s?, s:s}", "previous_state",
                                        alloc_state_to_string(a.state), "node_id",
                                        a.node_id[0] ? a.node_id : NULL, "user_id", a.user_id));
        if (r >= 0)
                r = event_emit(db, "provisioning.force_release_requested", id,
                               json_pack("{s:s, s:s, s:s?, s:s, s:s?}", "allocation_id", id,
                                         "previous_state", alloc_state_to_string(a.state),
                                         "node_id", a.node_id[0] ? a.node_id : NULL, "reason",
                                         reason, "actor_id", actor_id),
                               NULL);
        /* The slots stay quarantined; a clean teardown returns them. */
        if (r >= 0 && a.node_id[0] && a.state != ALLOC_PENDING)
                r = create_release(db, id, a.node_id, "quarantined", false, deadline_at,
                                   ret_task_id);
        return r;
}

int allocations_slot_verify(Db *db, const char *node_id, const char *slot_id, const char *actor_id,
                            const char *reason, char ret_state[static 16])
{
        char allocation_id[ID_MAX] = "";
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT state, allocation_id FROM node_resource_slots WHERE id = "
                                "? AND node_id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, slot_id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 2, node_id, -1, SQLITE_TRANSIENT);
                int rc = sqlite3_step(s);
                if (rc == SQLITE_DONE)
                        return -ENOENT;
                if (rc != SQLITE_ROW)
                        return db_errno(rc);
                snprintf(ret_state, 16, "%s", strempty(db_column_text(s, 0)));
                snprintf(allocation_id, sizeof(allocation_id), "%s",
                         strempty(db_column_text(s, 1)));
        }
        int r = slot_state_transition(db, slot_id, SLOT_AVAILABLE, SLOT_TRIGGER_VERIFY, NULL,
                                      reason, NULL);
        if (r < 0)
                return r;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *u =
                    db_stmt(db, "UPDATE allocation_slots SET state = 'returned' WHERE slot_id = "
                                "? AND state != 'returned'");
                if (!u)
                        return -EIO;
                sqlite3_bind_text(u, 1, slot_id, -1, SQLITE_TRANSIENT);
                int rc = sqlite3_step(u);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        return audit_log(db, actor_id, "node.slot_verify", "slot", slot_id, reason,
                         json_pack("{s:s, s:s, s:s?}", "node_id", node_id, "previous_state",
                                   ret_state, "allocation_id",
                                   allocation_id[0] ? allocation_id : NULL));
}

/* ---- replies ---- */

static const char *reply_error_code(json_t *body)
{
        return json_string_value(json_object_get(json_object_get(body, "error"), "code"));
}

/* The agent's steps of each slot, appended to the task as "<slot_key>: <step>". */
static void append_agent_steps(Task *t, json_t *result, usec_t now)
{
        size_t i, j;
        json_t *slot, *step;
        json_array_foreach(json_object_get(result, "slots"), i, slot)
        {
                const char *sid = json_string_value(json_object_get(slot, "slot_id"));
                json_array_foreach(json_object_get(slot, "steps"), j, step)
                {
                        char name[160];
                        snprintf(name, sizeof(name), "%s: %s", strempty(sid),
                                 strempty(json_string_value(json_object_get(step, "name"))));
                        json_int_t ms = json_integer_value(json_object_get(step, "ms"));
                        bool ok = json_is_true(json_object_get(step, "ok"));
                        (void)task_step_append(t, name, ok ? "succeeded" : "failed",
                                               now - (usec_t)MAX(ms, 0) * USEC_PER_MSEC, now,
                                               json_string_value(json_object_get(step, "error")));
                }
        }
}

/* The reply's entry for a slot, or NULL. */
static json_t *reply_slot(json_t *result, const char *slot_id)
{
        size_t i;
        json_t *s;
        json_array_foreach(
            json_object_get(result, "slots"), i,
            s) if (streq_ptr(json_string_value(json_object_get(s, "slot_id")), slot_id)) return s;
        return NULL;
}

/* A failed provision: the allocation fails with reason, its slots are
 * cleaned by a release before anyone gets them, the hold goes. */
static int provision_failed(Db *db, Task *t, AllocTrigger trigger, const char *reason,
                            usec_t release_deadline_at)
{
        AllocState from;
        int r = alloc_state_transition(db, t->allocation_id, ALLOC_FAILED, trigger, reason, &from);
        if (r == -EPERM)
                return task_finish(db, t, false, reason); /* force released meanwhile */
        if (r < 0)
                return r;
        r = set_columns(db, t->allocation_id, SET_COLUMNS("failure_reason = ?1, updated_at = ?3"),
                        reason);
        if (r >= 0)
                r = ledger_hold_void(db, t->allocation_id);
        if (r >= 0)
                r = task_finish(db, t, false, reason);
        if (r >= 0)
                r = move_slots(db, t->allocation_id, SLOT_CLEANING, SLOT_TRIGGER_PROVISION_FAILED,
                               reason, "held", "held");
        char node_id[ID_MAX] = "", task_id[ID_MAX];
        if (r >= 0) {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT node_id FROM allocations WHERE id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, t->allocation_id, -1, SQLITE_TRANSIENT);
                if (sqlite3_step(s) == SQLITE_ROW)
                        snprintf(node_id, sizeof(node_id), "%s", strempty(db_column_text(s, 0)));
        }
        if (r >= 0 && node_id[0])
                r = create_release(db, t->allocation_id, node_id, "held", false,
                                   release_deadline_at, task_id);
        return r;
}

/* "aa:bb:cc:dd:ee:ff", lower case: what the agent reports for a slot. */
static bool is_mac(const char *m)
{
        if (!m || strlen(m) != 17)
                return false;
        for (size_t i = 0; i < 17; i++)
                if (i % 3 == 2 ? m[i] != ':' : !strchr("0123456789abcdef", m[i]))
                        return false;
        return true;
}

/* The MAC each slot's VF has, as the assign reply reports it, into the
 * allocation's macs (whose entries follow the command's slots): for a
 * "hardware" network the null there becomes the VF's own MAC; a generated one
 * is what the agent set and read back, so it stays. */
static int store_reported_macs(Db *db, const Task *t, json_t *result)
{
        _cleanup_(json_decrefp) json_t *macs = NULL, *cmd_body = NULL;
        NodeCommand cmd = {0};
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT mac FROM allocations WHERE id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, t->allocation_id, -1, SQLITE_TRANSIENT);
                int rc = sqlite3_step(s);
                if (rc != SQLITE_ROW)
                        return rc == SQLITE_DONE ? -ENOENT : db_errno(rc);
                macs = load_json(db_column_text(s, 0));
        }
        if (!json_is_array(macs))
                return 0;
        if (node_command_get(db, t->command_id, &cmd) >= 0)
                cmd_body = json_loads(cmd.body, 0, NULL);
        node_command_done(&cmd);
        bool changed = false;
        size_t i;
        json_t *slot;
        json_array_foreach(json_object_get(cmd_body, "slots"), i, slot)
        {
                json_t *entry =
                    reply_slot(result, json_string_value(json_object_get(slot, "slot_id")));
                const char *mac = json_string_value(json_object_get(entry, "mac"));
                if (i >= json_array_size(macs) || !is_mac(mac) ||
                    streq_ptr(json_string_value(json_array_get(macs, i)), mac))
                        continue;
                if (json_array_set_new(macs, i, json_string(mac)) < 0)
                        return -ENOMEM;
                changed = true;
        }
        if (!changed)
                return 0;
        _cleanup_free_ char *text = json_dumps(macs, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        return set_columns(db, t->allocation_id, SET_COLUMNS("mac = ?1, updated_at = ?3"), text);
}

static int on_assign_reply(Db *db, Task *t, bool ok, json_t *body, usec_t release_deadline_at)
{
        json_t *result = json_object_get(body, "result");
        const char *code = reply_error_code(body);
        usec_t now = now_usec();
        append_agent_steps(t, result, now);
        if (!ok) {
                const char *reason = code ? code : "provision_failed";
                (void)task_step_set(t, "assign", "failed", reason);
                return provision_failed(db, t, ALLOC_TRIGGER_ASSIGN_FAILED, reason,
                                        release_deadline_at);
        }
        AllocState from;
        int r = alloc_state_transition(db, t->allocation_id, ALLOC_ACTIVE, ALLOC_TRIGGER_ASSIGN_OK,
                                       NULL, &from);
        if (r == -EPERM) /* failed by its deadline or force released: the release cleans up */
                return streq(t->state, "running") ? task_finish(db, t, false, "superseded") : 0;
        if (r < 0)
                return r;
        r = move_slots(db, t->allocation_id, SLOT_ASSIGNED, SLOT_TRIGGER_ASSIGN_OK, NULL, "held",
                       "held");
        if (r >= 0)
                r = store_reported_macs(db, t, result);
        _cleanup_free_ char *conn = NULL;
        json_t *c = json_object_get(result, "connection");
        if (json_is_object(c))
                conn = json_dumps(c, JSON_COMPACT);
        if (r >= 0)
                r = set_columns(
                    db, t->allocation_id,
                    SET_COLUMNS("billing_started_at = ?3, connection = ?1, updated_at = ?3"), conn);
        if (r >= 0)
                r = task_finish(db, t, true, NULL);
        return r;
}

static int on_release_reply(Db *db, Task *t, bool ok, json_t *body)
{
        json_t *result = json_object_get(body, "result");
        const char *code = reply_error_code(body);
        bool running = streq(t->state, "running");
        if (running)
                append_agent_steps(t, result, now_usec());

        /* Each slot by its own entry: available only after a clean teardown. */
        char ids[PLACEMENT_MAX_SLOTS][ID_MAX];
        size_t n = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db, "SELECT x.slot_id FROM allocation_slots x JOIN node_resource_slots s ON "
                        "s.id = x.slot_id WHERE x.allocation_id = ? AND x.state != 'returned' "
                        "AND s.allocation_id = x.allocation_id AND s.state IN ('cleaning', "
                        "'quarantined')");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, t->allocation_id, -1, SQLITE_TRANSIENT);
                while (n < ELEMENTSOF(ids) && sqlite3_step(s) == SQLITE_ROW)
                        snprintf(ids[n++], ID_MAX, "%s", strempty(db_column_text(s, 0)));
        }
        /* Slots this command carried: only those are decided by its reply. */
        NodeCommand cmd = {0};
        _cleanup_(json_decrefp) json_t *cmd_body = NULL;
        if (node_command_get(db, t->command_id, &cmd) >= 0)
                cmd_body = json_loads(cmd.body, 0, NULL);
        node_command_done(&cmd);
        bool all_clean = ok;
        const char *first_reason = NULL;
        for (size_t i = 0; i < n; i++) {
                if (cmd_body && !reply_slot(cmd_body, ids[i]))
                        continue;
                json_t *entry = reply_slot(result, ids[i]);
                bool clean = entry && json_is_true(json_object_get(entry, "ok"));
                const char *reason = json_string_value(json_object_get(entry, "reason"));
                if (!clean) {
                        all_clean = false;
                        if (!first_reason)
                                first_reason = reason ? reason : code;
                }
                if (!clean && !running)
                        continue; /* a late failure changes nothing more */
                int r = slot_state_transition(
                    db, ids[i], clean ? SLOT_AVAILABLE : SLOT_QUARANTINED,
                    clean ? SLOT_TRIGGER_TEARDOWN_OK : SLOT_TRIGGER_TEARDOWN_FAILED, NULL,
                    clean ? NULL
                          : (reason ? reason
                             : code ? code
                                    : "teardown_failed"),
                    NULL);
                if (r == -EPERM)
                        continue;
                if (r < 0)
                        return r;
                _cleanup_(db_stmt_resetp) sqlite3_stmt *u =
                    db_stmt(db, "UPDATE allocation_slots SET state = ? WHERE allocation_id = ? "
                                "AND slot_id = ?");
                if (!u)
                        return -EIO;
                sqlite3_bind_text(u, 1, clean ? "returned" : "quarantined", -1, SQLITE_STATIC);
                sqlite3_bind_text(u, 2, t->allocation_id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(u, 3, ids[i], -1, SQLITE_TRANSIENT);
                int rc = sqlite3_step(u);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        if (!running)
                return 0;
        const char *reason = all_clean      ? NULL
                             : code         ? code
                             : first_reason ? first_reason
                                            : "teardown_failed";
        (void)task_step_set(t, "teardown", all_clean ? "succeeded" : "failed", reason);
        AllocState from;
        int r = alloc_state_transition(
            db, t->allocation_id, all_clean ? ALLOC_RELEASED : ALLOC_RELEASE_FAILED,
            all_clean ? ALLOC_TRIGGER_TEARDOWN_OK : ALLOC_TRIGGER_TEARDOWN_FAILED, reason, &from);
        if (r >= 0 && all_clean) {
                r = set_columns(db, t->allocation_id,
                                SET_COLUMNS("released_at = ?3, updated_at = ?3"), NULL);
                if (r >= 0)
                        r = ledger_hold_close(db, t->allocation_id);
        } else if (r >= 0)
                /* Billing stops the moment teardown fails. */
                r = set_columns(db, t->allocation_id,
                                SET_COLUMNS("release_failed_reason = ?1, billing_stopped = 1, "
                                            "billing_ended_at = coalesce(billing_ended_at, ?3), "
                                            "updated_at = ?3"),
                                reason);
        else if (r == -EPERM)
                r = 0; /* a cleanup after a failed provision or a force release */
        if (r >= 0)
                r = task_finish(db, t, all_clean, reason);
        return r;
}

int allocations_on_reply(Db *db, Task *t, bool ok, json_t *body, usec_t release_deadline_at)
{
        if (streq(t->kind, TASK_PROVISION)) {
                if (!streq(t->state, "running"))
                        return 0;
                return on_assign_reply(db, t, ok, body, release_deadline_at);
        }
        return on_release_reply(db, t, ok, body);
}

int allocations_on_timeout(Db *db, Task *t, usec_t release_deadline_at)
{
        if (!streq(t->state, "running"))
                return 0;
        if (streq(t->kind, TASK_PROVISION)) {
                /* The assign must not run later: a release cleans what it may
                 * have done already. */
                int r = close_open_commands(db, t->allocation_id, CMD_ASSIGN, "agent_timeout");
                if (r < 0)
                        return r;
                (void)task_step_set(t, "assign", "failed", "agent_timeout");
                return provision_failed(db, t, ALLOC_TRIGGER_TIMEOUT, "agent_timeout",
                                        release_deadline_at);
        }
        /* The release command stays open: a late clean teardown still
         * returns the slots. */
        (void)task_step_set(t, "teardown", "failed", "agent_timeout");
        int r = move_slots(db, t->allocation_id, SLOT_QUARANTINED, SLOT_TRIGGER_TIMEOUT,
                           "agent_timeout", "held", "quarantined");
        if (r < 0)
                return r;
        r = alloc_state_transition(db, t->allocation_id, ALLOC_RELEASE_FAILED,
                                   ALLOC_TRIGGER_TIMEOUT, "agent_timeout", NULL);
        if (r >= 0)
                r = set_columns(db, t->allocation_id,
                                SET_COLUMNS("release_failed_reason = ?1, billing_stopped = 1, "
                                            "billing_ended_at = coalesce(billing_ended_at, ?3), "
                                            "updated_at = ?3"),
                                "agent_timeout");
        else if (r == -EPERM)
                r = 0;
        if (r >= 0)
                r = task_finish(db, t, false, "agent_timeout");
        return r;
}

int allocations_fail_pending(Db *db)
{
        char ids[64][ID_MAX];
        size_t n = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT id FROM allocations WHERE state = 'pending' LIMIT 64");
                if (!s)
                        return -EIO;
                while (n < ELEMENTSOF(ids) && sqlite3_step(s) == SQLITE_ROW)
                        snprintf(ids[n++], ID_MAX, "%s", strempty(db_column_text(s, 0)));
        }
        for (size_t i = 0; i < n; i++) {
                int r = alloc_state_transition(db, ids[i], ALLOC_FAILED, ALLOC_TRIGGER_ABANDON,
                                               "controller_restart", NULL);
                if (r >= 0)
                        r = set_columns(db, ids[i],
                                        SET_COLUMNS("failure_reason = ?1, updated_at = ?3"),
                                        "controller_restart");
                if (r >= 0)
                        r = move_slots(db, ids[i], SLOT_AVAILABLE, SLOT_TRIGGER_UNRESERVE, NULL,
                                       "held", "returned");
                if (r >= 0)
                        r = ledger_hold_void(db, ids[i]);
                if (r < 0 && r != -EPERM)
                        return r;
        }
        return (int)n;
}
