/* SPDX-License-Identifier: MIT */
#include "discoveries.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "json-util.h"
#include "macro.h"
#include "slot-state.h"

void discovery_done(Discovery *d)
{
        json_decref(d->document);
        json_decref(d->changes);
        free(d->fingerprint);
        free(d->error);
        free(d->requested_by);
        *d = (Discovery){0};
}

int discovery_create(Db *db, const char *node_id, const char *command_id, const char *requested_by,
                     char ret_id[static ID_MAX])
{
        int r = id_new("dsc", ret_id);
        if (r < 0)
                return r;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO discoveries (id, node_id, command_id, state, requested_by, "
                        "created_at) VALUES (?, ?, ?, 'running', ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, ret_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, node_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, command_id, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 4, requested_by);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

#define DISCOVERY_COLUMNS                                                                          \
        "id, node_id, command_id, state, document, fingerprint, changes, error, requested_by, "    \
        "created_at, finished_at "

static json_t *load_json(const char *text)
{
        return text ? json_loads(text, 0, NULL) : NULL;
}

static void discovery_from_row(sqlite3_stmt *s, Discovery *d)
{
        *d = (Discovery){0};
        snprintf(d->id, sizeof(d->id), "%s", strempty(db_column_text(s, 0)));
        snprintf(d->node_id, sizeof(d->node_id), "%s", strempty(db_column_text(s, 1)));
        snprintf(d->command_id, sizeof(d->command_id), "%s", strempty(db_column_text(s, 2)));
        snprintf(d->state, sizeof(d->state), "%s", strempty(db_column_text(s, 3)));
        d->document = load_json(db_column_text(s, 4));
        const char *fp = db_column_text(s, 5), *err = db_column_text(s, 7),
                   *by = db_column_text(s, 8);
        d->fingerprint = fp ? strdup(fp) : NULL;
        d->changes = load_json(db_column_text(s, 6));
        d->error = err ? strdup(err) : NULL;
        d->requested_by = by ? strdup(by) : NULL;
        d->created_at = (usec_t)sqlite3_column_int64(s, 9);
        d->finished_at = (usec_t)sqlite3_column_int64(s, 10);
}

static int get_one(sqlite3_stmt *s, Discovery *ret)
{
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        discovery_from_row(s, ret);
        return 0;
}

int discovery_get(Db *db, const char *node_id, const char *id, Discovery *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "SELECT " DISCOVERY_COLUMNS "FROM discoveries WHERE id = ? AND node_id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, node_id, -1, SQLITE_TRANSIENT);
        return get_one(s, ret);
}

int discovery_get_by_command(Db *db, const char *command_id, Discovery *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " DISCOVERY_COLUMNS "FROM discoveries WHERE command_id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, command_id, -1, SQLITE_TRANSIENT);
        return get_one(s, ret);
}

int discovery_fail(Db *db, const char *id, const char *error)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE discoveries SET state = 'failed', error = ?, finished_at = ? "
                        "WHERE id = ? AND state = 'running'");
        if (!s)
                return -EIO;
        db_bind_text(s, 1, error);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 3, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

/* ---- invariants ---- */

static json_t *find_slot(json_t *slots, const char *key)
{
        size_t i;
        json_t *s;
        json_array_foreach(
            slots, i, s) if (streq_ptr(json_string_value(json_object_get(s, "id")), key)) return s;
        return NULL;
}

/* The numa node the document's devices list gives an address; -1 unknown. */
static json_int_t device_numa(json_t *devices, const char *addr)
{
        size_t i;
        json_t *d;
        json_array_foreach(devices, i, d)
        {
                if (streq_ptr(json_string_value(json_object_get(d, "address")), addr)) {
                        json_t *n = json_object_get(d, "numa_node");
                        return json_is_integer(n) ? json_integer_value(n) : -1;
                }
        }
        return -1;
}

static bool slot_flag_false(json_t *slot, const char *name)
{
        return json_is_false(json_object_get(json_object_get(slot, "invariants"), name));
}

static void fail(json_t *failing, const char *inv, const char *slot, const char *fmt, ...)
    _printf_(4, 5);
static void fail(json_t *failing, const char *inv, const char *slot, const char *fmt, ...)
{
        va_list ap;
        char buf[512];
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        json_array_append_new(
            failing, json_pack("{s:s, s:s, s:s}", "invariant", inv, "slot", slot, "detail", buf));
}

static size_t count_failing(json_t *failing, const char *inv)
{
        size_t i, n = 0;
        json_t *f;
        json_array_foreach(failing, i, f) n +=
            streq_ptr(json_string_value(json_object_get(f, "invariant")), inv);
        return n;
}

static const char *slot_problems(json_t *slot, char *buf, size_t size)
{
        size_t i, len = 0;
        json_t *p;
        buf[0] = '\0';
        json_array_foreach(json_object_get(slot, "problems"), i, p)
        {
                int n = snprintf(buf + len, size - len, "%s%s", len ? "; " : "",
                                 strempty(json_string_value(p)));
                if (n < 0 || (size_t)n >= size - len)
                        break;
                len += (size_t)n;
        }
        return buf[0] ? buf : "the agent marked it not ok";
}

int discovery_evaluate(json_t *document, json_t *keys, json_t **ret_invariants,
                       json_t **ret_failing, const char **ret_unknown)
{
        json_t *slots = json_object_get(document, "slots");
        json_t *devices = json_object_get(document, "devices");
        if (!json_is_array(slots))
                return -EINVAL;
        _cleanup_(json_decrefp) json_t *selected = json_array();
        if (keys) {
                size_t i;
                json_t *k;
                json_array_foreach(keys, i, k)
                {
                        json_t *s = find_slot(slots, json_string_value(k));
                        if (!s) {
                                if (ret_unknown)
                                        *ret_unknown = json_string_value(k);
                                return -ENOENT;
                        }
                        bool dup = false;
                        size_t j;
                        json_t *e;
                        json_array_foreach(selected, j, e) dup |= e == s;
                        if (!dup)
                                json_array_append(selected, s);
                }
        } else
                json_array_extend(selected, slots);

        _cleanup_(json_decrefp) json_t *failing = json_array();
        size_t i;
        json_t *s;
        json_array_foreach(selected, i, s)
        {
                const char *id = strempty(json_string_value(json_object_get(s, "id")));
                const char *nic = json_string_value(json_object_get(s, "nic"));
                json_t *vf = json_object_get(s, "vf_index");
                const char *nvme = json_string_value(json_object_get(s, "nvme"));
                json_t *numa = json_object_get(s, "numa_node");
                char pb[400];

                /* per-slot VF: present, and no two approved slots share one */
                if (!nic || !json_is_integer(vf))
                        fail(failing, "per_slot_vf", id, "%s has no NIC VF", id);
                else if (slot_flag_false(s, "per_slot_vf"))
                        fail(failing, "per_slot_vf", id, "%s: %s", id,
                             slot_problems(s, pb, sizeof(pb)));
                for (size_t j = 0; j < i && nic && json_is_integer(vf); j++) {
                        json_t *o = json_array_get(selected, j);
                        if (streq_ptr(json_string_value(json_object_get(o, "nic")), nic) &&
                            json_equal(json_object_get(o, "vf_index"), vf))
                                fail(failing, "per_slot_vf", id, "%s and %s share VF %lld of %s",
                                     strempty(json_string_value(json_object_get(o, "id"))), id,
                                     (long long)json_integer_value(vf), nic);
                }

                /* NVMe ownership: a drive in at most one approved slot */
                if (slot_flag_false(s, "nvme_ownership"))
                        fail(failing, "nvme_ownership", id, "%s: %s", id,
                             slot_problems(s, pb, sizeof(pb)));
                for (size_t j = 0; j < i && nvme; j++) {
                        json_t *o = json_array_get(selected, j);
                        if (streq_ptr(json_string_value(json_object_get(o, "nvme")), nvme))
                                fail(failing, "nvme_ownership", id, "NVMe %s is in both %s and %s",
                                     nvme, strempty(json_string_value(json_object_get(o, "id"))),
                                     id);
                }

                /* NUMA locality: every device of the slot on the slot's node */
                if (!json_is_integer(numa))
                        fail(failing, "numa_locality", id, "%s has no known NUMA node", id);
                else {
                        json_int_t home = json_integer_value(numa);
                        json_t *gpus = json_object_get(s, "gpus");
                        size_t g;
                        json_t *ga;
                        bool bad = slot_flag_false(s, "numa_locality");
                        char where[200] = "";
                        json_array_foreach(gpus, g, ga)
                        {
                                json_int_t n = device_numa(devices, json_string_value(ga));
                                if (n >= 0 && n != home) {
                                        bad = true;
                                        snprintf(where, sizeof(where), "GPU %s on node %lld",
                                                 json_string_value(ga), (long long)n);
                                }
                        }
                        const char *others[] = {nic, nvme};
                        for (size_t k = 0; k < 2; k++) {
                                json_int_t n = others[k] ? device_numa(devices, others[k]) : -1;
                                if (n >= 0 && n != home) {
                                        bad = true;
                                        snprintf(where, sizeof(where), "%s on node %lld", others[k],
                                                 (long long)n);
                                }
                        }
                        if (bad)
                                fail(failing, "numa_locality", id, "%s (home node %lld): %s", id,
                                     (long long)home,
                                     where[0] ? where : slot_problems(s, pb, sizeof(pb)));
                }

                /* the agent's own verdict on the slot */
                if (!json_is_true(json_object_get(s, "ok")))
                        fail(failing, "slots_ok", id, "%s: %s", id,
                             slot_problems(s, pb, sizeof(pb)));
        }

        static const char *const names[] = {"per_slot_vf", "nvme_ownership", "numa_locality",
                                            "slots_ok"};
        _cleanup_(json_decrefp) json_t *inv = json_array();
        bool all = json_array_size(selected) > 0;
        for (size_t k = 0; k < ELEMENTSOF(names); k++) {
                size_t n = count_failing(failing, names[k]);
                char detail[200];
                if (n == 0)
                        snprintf(detail, sizeof(detail), "holds for all %zu slot(s)",
                                 json_array_size(selected));
                else
                        snprintf(detail, sizeof(detail), "fails for %zu of %zu slot(s)", n,
                                 json_array_size(selected));
                all &= n == 0;
                json_array_append_new(inv, json_pack("{s:s, s:b, s:s}", "name", names[k], "ok",
                                                     n == 0, "detail", detail));
        }
        if (ret_invariants)
                *ret_invariants = TAKE_PTR(inv);
        if (ret_failing)
                *ret_failing = TAKE_PTR(failing);
        return all ? 1 : 0;
}

/* ---- completion and comparison ---- */

static bool same_text(json_t *a, const char *b)
{
        return streq_ptr(json_is_string(a) ? json_string_value(a) : NULL, b);
}

/* Does a stored slot row still match the document's slot of the same key? */
static bool slot_matches(sqlite3_stmt *row, json_t *slot)
{
        _cleanup_(json_decrefp) json_t *gpus = load_json(db_column_text(row, 2));
        json_t *vf = json_object_get(slot, "vf_index"), *numa = json_object_get(slot, "numa_node");
        bool vf_same =
            sqlite3_column_type(row, 4) == SQLITE_NULL
                ? !json_is_integer(vf)
                : json_is_integer(vf) && json_integer_value(vf) == sqlite3_column_int64(row, 4);
        bool numa_same =
            sqlite3_column_type(row, 6) == SQLITE_NULL
                ? !json_is_integer(numa)
                : json_is_integer(numa) && json_integer_value(numa) == sqlite3_column_int64(row, 6);
        return gpus && json_equal(gpus, json_object_get(slot, "gpus")) &&
               same_text(json_object_get(slot, "nic"), db_column_text(row, 3)) && vf_same &&
               same_text(json_object_get(slot, "nvme"), db_column_text(row, 5)) && numa_same;
}

static int compare_with_approved(Db *db, const char *node_id, json_t *document,
                                 json_t **ret_changes)
{
        _cleanup_free_ char *approved_fp = NULL;
        _cleanup_(json_decrefp) json_t *approved_doc = NULL;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db, "SELECT n.fingerprint, d.document FROM nodes n LEFT JOIN discoveries d "
                        "ON d.id = n.approved_discovery_id WHERE n.id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, node_id, -1, SQLITE_TRANSIENT);
                if (sqlite3_step(s) != SQLITE_ROW)
                        return -ENOENT;
                const char *fp = db_column_text(s, 0);
                approved_fp = fp ? strdup(fp) : NULL;
                approved_doc = load_json(db_column_text(s, 1));
        }
        *ret_changes = NULL;
        if (!approved_fp)
                return 0; /* nothing approved yet: nothing to compare with */

        json_t *slots = json_object_get(document, "slots");
        const char *fp = json_string_value(json_object_get(document, "fingerprint"));
        _cleanup_(json_decrefp) json_t *added = json_array(), *removed = json_array(),
                                       *changed = json_array(), *quarantine = json_array(),
                                       *seen = json_object();
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT id, slot_key, gpus, nic, vf_index, nvme, numa_node, state "
                                "FROM node_resource_slots WHERE node_id = ? ORDER BY slot_key");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, node_id, -1, SQLITE_TRANSIENT);
                int rc;
                while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                        const char *key = db_column_text(s, 1);
                        json_t *slot = find_slot(slots, key);
                        json_object_set_new(seen, key, json_true());
                        if (slot && slot_matches(s, slot))
                                continue;
                        json_array_append_new(slot ? changed : removed, json_string(key));
                        if (streq_ptr(db_column_text(s, 7), "available"))
                                json_array_append_new(quarantine,
                                                      json_string(db_column_text(s, 0)));
                }
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        size_t i;
        json_t *slot;
        /* New hardware: slots the approved discovery did not have (slots an
         * admin left out on purpose are not news). */
        json_t *old_slots = json_object_get(approved_doc, "slots");
        json_array_foreach(slots, i, slot)
        {
                const char *key = json_string_value(json_object_get(slot, "id"));
                if (key && !json_object_get(seen, key) && !find_slot(old_slots, key))
                        json_array_append_new(added, json_string(key));
        }
        json_array_foreach(quarantine, i, slot)
        {
                int r = slot_state_transition(db, json_string_value(slot), SLOT_QUARANTINED,
                                              SLOT_TRIGGER_HARDWARE_CHANGED, NULL,
                                              "hardware_changed", NULL);
                if (r < 0 && r != -EPERM)
                        return r;
        }
        bool unchanged = streq_ptr(fp, approved_fp) && json_array_size(added) == 0 &&
                         json_array_size(removed) == 0 && json_array_size(changed) == 0;
        *ret_changes =
            json_pack("{s:b, s:s, s:s?, s:O, s:O, s:O, s:O}", "unchanged", unchanged,
                      "approved_fingerprint", approved_fp, "fingerprint", fp, "added", added,
                      "removed", removed, "changed", changed, "quarantined", quarantine);
        return *ret_changes ? 0 : -ENOMEM;
}

int discovery_complete(Db *db, const char *id, const char *node_id, json_t *document,
                       json_t **ret_changes)
{
        _cleanup_(json_decrefp) json_t *changes = NULL;
        int r = compare_with_approved(db, node_id, document, &changes);
        if (r < 0)
                return r;
        int ok = discovery_evaluate(document, NULL, NULL, NULL, NULL);
        _cleanup_free_ char *doc = json_dumps(document, JSON_COMPACT);
        _cleanup_free_ char *ch = changes ? json_dumps(changes, JSON_COMPACT) : NULL;
        if (!doc)
                return -ENOMEM;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "UPDATE discoveries SET state = 'completed', document = ?, fingerprint = ?, "
                "ok = ?, changes = ?, finished_at = ? WHERE id = ? AND state = 'running'");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, doc, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 2, json_string_value(json_object_get(document, "fingerprint")));
        sqlite3_bind_int(s, 3, ok == 1);
        db_bind_text(s, 4, ch);
        sqlite3_bind_int64(s, 5, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 6, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        if (sqlite3_changes(db_handle(db)) != 1)
                return -EALREADY;
        if (ret_changes)
                *ret_changes = TAKE_PTR(changes);
        return 0;
}

/* ---- approval ---- */

static bool key_selected(json_t *keys, const char *key)
{
        if (!keys)
                return true;
        size_t i;
        json_t *k;
        json_array_foreach(keys, i, k) if (streq_ptr(json_string_value(k), key)) return true;
        return false;
}

static json_t *slot_row_to_json(sqlite3_stmt *s)
{
        json_t *gpus = load_json(db_column_text(s, 3));
        return json_pack(
            "{s:s, s:s, s:s, s:o, s:s?, s:o, s:s?, s:o, s:s, s:s?, s:o}", "id",
            db_column_text(s, 0), "slot_key", db_column_text(s, 1), "discovery_id",
            db_column_text(s, 2), "gpus", gpus ? gpus : json_array(), "nic", db_column_text(s, 4),
            "vf_index",
            sqlite3_column_type(s, 5) == SQLITE_NULL ? json_null()
                                                     : json_integer(sqlite3_column_int64(s, 5)),
            "nvme", db_column_text(s, 6), "numa_node",
            sqlite3_column_type(s, 7) == SQLITE_NULL ? json_null()
                                                     : json_integer(sqlite3_column_int64(s, 7)),
            "state", db_column_text(s, 8), "approved_by", db_column_text(s, 9), "approved_at",
            json_timestamp((uint64_t)sqlite3_column_int64(s, 10)));
}

int node_slots_list(Db *db, const char *node_id, json_t **ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT id, slot_key, discovery_id, gpus, nic, vf_index, nvme, "
                        "numa_node, state, approved_by, approved_at FROM node_resource_slots "
                        "WHERE node_id = ? ORDER BY slot_key");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, node_id, -1, SQLITE_TRANSIENT);
        _cleanup_(json_decrefp) json_t *a = json_array();
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
                json_array_append_new(a, slot_row_to_json(s));
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        *ret = TAKE_PTR(a);
        return 0;
}

static int slot_id_by_key(Db *db, const char *node_id, const char *key, char ret_id[static ID_MAX],
                          SlotState *ret_state)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "SELECT id, state FROM node_resource_slots WHERE node_id = ? AND slot_key = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, node_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, key, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        snprintf(ret_id, ID_MAX, "%s", strempty(db_column_text(s, 0)));
        if (ret_state)
                *ret_state = slot_state_from_string(db_column_text(s, 1));
        return 0;
}

/* What placement matches a slot by: its GPUs' vendor:device (["10de:2330"])
 * and the PCIe switch above its first GPU, from the document's devices. */
static void slot_gpu_facts(json_t *document, json_t *slot, char **ret_pci_ids,
                           const char **ret_switch)
{
        json_t *devices = json_object_get(document, "devices");
        _cleanup_(json_decrefp) json_t *ids = json_array();
        *ret_switch = NULL;
        size_t i, j;
        json_t *gpu, *dev;
        json_array_foreach(json_object_get(slot, "gpus"), i, gpu)
        {
                json_array_foreach(devices, j, dev)
                {
                        if (!json_equal(json_object_get(dev, "address"), gpu))
                                continue;
                        const char *v = json_string_value(json_object_get(dev, "vendor"));
                        const char *p = json_string_value(json_object_get(dev, "device"));
                        if (v && p) {
                                char id[16];
                                snprintf(id, sizeof(id), "%s:%s", v, p);
                                for (char *c = id; *c; c++)
                                        *c = (char)tolower((unsigned char)*c);
                                json_array_append_new(ids, json_string(id));
                        }
                        if (i == 0)
                                *ret_switch = json_string_value(json_object_get(dev, "switch"));
                        break;
                }
        }
        *ret_pci_ids = json_dumps(ids, JSON_COMPACT);
}

int discovery_approve(Db *db, const Discovery *d, json_t *keys, const char *actor_id,
                      json_t **ret_slots)
{
        json_t *slots = json_object_get(d->document, "slots");
        usec_t now = now_usec();
        /* Free slots of the node that this approval leaves out are withdrawn. */
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT slot_key FROM node_resource_slots WHERE node_id = ? AND "
                                "state IN ('available', 'quarantined')");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, d->node_id, -1, SQLITE_TRANSIENT);
                _cleanup_(json_decrefp) json_t *drop = json_array();
                int rc;
                while ((rc = sqlite3_step(s)) == SQLITE_ROW)
                        if (!key_selected(keys, db_column_text(s, 0)) ||
                            !find_slot(slots, db_column_text(s, 0)))
                                json_array_append_new(drop, json_string(db_column_text(s, 0)));
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
                db_stmt_resetp(&s);
                size_t i;
                json_t *k;
                json_array_foreach(drop, i, k)
                {
                        /* A slot that served allocations keeps its row (their
                         * history points at it) and is disabled instead. */
                        _cleanup_(db_stmt_resetp) sqlite3_stmt *del = db_stmt(
                            db, "DELETE FROM node_resource_slots WHERE node_id = ? AND slot_key = "
                                "? AND NOT EXISTS (SELECT 1 FROM allocation_slots x WHERE "
                                "x.slot_id = node_resource_slots.id) RETURNING id");
                        if (!del)
                                return -EIO;
                        sqlite3_bind_text(del, 1, d->node_id, -1, SQLITE_TRANSIENT);
                        sqlite3_bind_text(del, 2, json_string_value(k), -1, SQLITE_TRANSIENT);
                        rc = sqlite3_step(del);
                        bool deleted = rc == SQLITE_ROW;
                        while (rc == SQLITE_ROW)
                                rc = sqlite3_step(del);
                        if (rc != SQLITE_DONE)
                                return db_errno(rc);
                        if (deleted)
                                continue;
                        char sid[ID_MAX];
                        int r = slot_id_by_key(db, d->node_id, json_string_value(k), sid, NULL);
                        if (r >= 0)
                                r = slot_state_transition(db, sid, SLOT_DISABLED,
                                                          SLOT_TRIGGER_DISABLE, NULL,
                                                          "not_approved", NULL);
                        if (r < 0 && r != -EPERM && r != -ENOENT)
                                return r;
                }
        }
        size_t i;
        json_t *slot;
        json_array_foreach(slots, i, slot)
        {
                const char *key = json_string_value(json_object_get(slot, "id"));
                if (!key || !key_selected(keys, key))
                        continue;
                char sid[ID_MAX];
                int r = id_new("slt", sid);
                if (r < 0)
                        return r;
                _cleanup_free_ char *gpus =
                    json_dumps(json_object_get(slot, "gpus"), JSON_COMPACT | JSON_ENCODE_ANY);
                json_t *vf = json_object_get(slot, "vf_index"),
                       *numa = json_object_get(slot, "numa_node");
                _cleanup_free_ char *pci_ids = NULL;
                const char *sw = NULL;
                slot_gpu_facts(d->document, slot, &pci_ids, &sw);
                /* A slot in use keeps its row as it is; a free one takes the
                 * new facts, and its state moves through slot-state.c below. */
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db, "INSERT INTO node_resource_slots (id, node_id, discovery_id, slot_key, "
                        "gpus, nic, vf_index, nvme, numa_node, state, approved_by, approved_at, "
                        "gpu_pci_ids, switch, updated_at) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'available', ?10, ?11, ?12, "
                        "?13, ?11) "
                        "ON CONFLICT (node_id, slot_key) DO UPDATE SET discovery_id = ?3, "
                        "gpus = ?5, nic = ?6, vf_index = ?7, nvme = ?8, numa_node = ?9, "
                        "approved_by = ?10, approved_at = ?11, gpu_pci_ids = ?12, switch = ?13, "
                        "updated_at = ?11 "
                        "WHERE state IN ('available', 'quarantined', 'disabled')");
                if (!s)
                        return -EIO;
                db_bind_text(s, 12, pci_ids);
                db_bind_text(s, 13, sw);
                sqlite3_bind_text(s, 1, sid, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 2, d->node_id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 3, d->id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 4, key, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 5, gpus ? gpus : "[]", -1, SQLITE_TRANSIENT);
                db_bind_text(s, 6, json_string_value(json_object_get(slot, "nic")));
                if (json_is_integer(vf))
                        sqlite3_bind_int64(s, 7, json_integer_value(vf));
                db_bind_text(s, 8, json_string_value(json_object_get(slot, "nvme")));
                if (json_is_integer(numa))
                        sqlite3_bind_int64(s, 9, json_integer_value(numa));
                db_bind_text(s, 10, actor_id);
                sqlite3_bind_int64(s, 11, (sqlite3_int64)now);
                int rc = sqlite3_step(s);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
                db_stmt_resetp(&s);
                /* Approval returns a quarantined or disabled slot to service. */
                SlotState st;
                r = slot_id_by_key(db, d->node_id, key, sid, &st);
                if (r >= 0 && (st == SLOT_QUARANTINED || st == SLOT_DISABLED))
                        r = slot_state_transition(db, sid, SLOT_AVAILABLE,
                                                  st == SLOT_DISABLED ? SLOT_TRIGGER_ENABLE
                                                                      : SLOT_TRIGGER_APPROVE,
                                                  NULL, "approved", NULL);
                if (r < 0)
                        return r;
        }
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "UPDATE nodes SET fingerprint = ?, approved_discovery_id = ?, "
                                "updated_at = ? WHERE id = ?");
                if (!s)
                        return -EIO;
                db_bind_text(s, 1, d->fingerprint);
                sqlite3_bind_text(s, 2, d->id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(s, 3, (sqlite3_int64)now);
                sqlite3_bind_text(s, 4, d->node_id, -1, SQLITE_TRANSIENT);
                int rc = sqlite3_step(s);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        return node_slots_list(db, d->node_id, ret_slots);
}
