/* SPDX-License-Identifier: MIT */
#include "catalog.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "json-util.h"
#include "macro.h"

/* ---- validation helpers ---- */

_printf_(3, 4) static int field_error(CatalogFieldError *err, const char *field, const char *fmt,
                                      ...)
{
        if (err) {
                snprintf(err->field, sizeof(err->field), "%s", field);
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err->message, sizeof(err->message), fmt, ap);
                va_end(ap);
        }
        return -EINVAL;
}

/* Characters (code points) of a valid UTF-8 string: jansson only hands out
 * valid UTF-8, so counting the bytes that do not continue a sequence is enough. */
static size_t utf8_chars(const char *s)
{
        size_t n = 0;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                n += (*p & 0xc0) != 0x80;
        return n;
}

/* No control characters; newlines and tabs only where multi_line. */
static bool text_clean(const char *s, bool multi_line)
{
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if (multi_line && (*p == '\n' || *p == '\t'))
                        continue;
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        }
        return true;
}

static bool all_blank(const char *s)
{
        for (; *s; s++)
                if (!isspace((unsigned char)*s))
                        return false;
        return true;
}

bool catalog_name_valid(const char *s)
{
        if (!s)
                return false;
        size_t n = utf8_chars(s);
        return n >= 1 && n <= CATALOG_NAME_MAX && text_clean(s, false) && !all_blank(s);
}

bool pci_id_valid(const char *s)
{
        if (!s || strlen(s) != 9 || s[4] != ':')
                return false;
        for (int i = 0; i < 9; i++)
                if (i != 4 && !isxdigit((unsigned char)s[i]))
                        return false;
        return true;
}

bool unix_user_name_valid(const char *s)
{
        if (!s || !*s || strlen(s) > IMAGE_SSH_USER_MAX)
                return false;
        if (!(islower((unsigned char)s[0]) || s[0] == '_'))
                return false;
        for (const char *p = s + 1; *p; p++)
                if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_' ||
                      *p == '-'))
                        return false;
        return true;
}

/* Refuses any member of body not in allowed (the API's reader does this too;
 * the catalog does not rely on it). */
static int check_known_fields(json_t *body, const char *const *allowed, size_t n,
                              CatalogFieldError *err)
{
        if (!json_is_object(body))
                return field_error(err, "body", "the body must be a JSON object");
        const char *key;
        json_t *v;
        json_object_foreach(body, key, v)
        {
                bool known = false;
                for (size_t i = 0; i < n && !known; i++)
                        known = streq(key, allowed[i]);
                if (!known)
                        return field_error(err, key, "unknown field \"%.60s\"", key);
        }
        return 0;
}

/* The string member field: 0 and *ret (borrowed; NULL when absent),
 * -EINVAL when present but not a string (null included). */
static int member_string(json_t *body, const char *field, const char **ret, CatalogFieldError *err)
{
        json_t *v = json_object_get(body, field);
        *ret = NULL;
        if (!v)
                return 0;
        if (!json_is_string(v))
                return field_error(err, field, "%s must be a string", field);
        *ret = json_string_value(v);
        return 0;
}

/* 1 and *ret when the integer member is present, 0 when absent. */
static int member_int(json_t *body, const char *field, long long min, long long max, long long *ret,
                      CatalogFieldError *err)
{
        json_t *v = json_object_get(body, field);
        if (!v)
                return 0;
        if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
                return field_error(err, field, "%s must be an integer from %lld to %lld", field,
                                   min, max);
        *ret = json_integer_value(v);
        return 1;
}

static int member_bool(json_t *body, const char *field, bool *ret, CatalogFieldError *err)
{
        json_t *v = json_object_get(body, field);
        if (!v)
                return 0;
        if (!json_is_boolean(v))
                return field_error(err, field, "%s must be true or false", field);
        *ret = json_is_true(v);
        return 1;
}

static int replace_string(char **slot, const char *value)
{
        char *copy = strdup(value);
        if (!copy)
                return -ENOMEM;
        free(*slot);
        *slot = copy;
        return 0;
}

static int member_name(json_t *body, char **slot, CatalogFieldError *err)
{
        const char *v;
        int r = member_string(body, "name", &v, err);
        if (r < 0 || !v)
                return r;
        if (!catalog_name_valid(v))
                return field_error(err, "name",
                                   "name must be 1 to %d characters without control characters",
                                   CATALOG_NAME_MAX);
        return replace_string(slot, v);
}

/* Optional free text (description, source): up to max bytes. */
static int member_text(json_t *body, const char *field, size_t max, bool multi_line, char **slot,
                       CatalogFieldError *err)
{
        const char *v;
        int r = member_string(body, field, &v, err);
        if (r < 0 || !v)
                return r;
        if (strlen(v) > max || !text_clean(v, multi_line))
                return field_error(err, field,
                                   "%s must be at most %zu bytes without control characters", field,
                                   max);
        return replace_string(slot, v);
}

static int require(const void *have, const char *field, CatalogFieldError *err)
{
        return have ? 0 : field_error(err, field, "%s is required", field);
}

static int db_changes(Db *db)
{
        return sqlite3_changes(db_handle(db));
}

/* ---- SKUs ---- */

void sku_done(Sku *s)
{
        if (!s)
                return;
        free(s->name);
        free(s->gpu_model);
        for (size_t i = 0; i < s->n_pci_ids; i++)
                free(s->pci_ids[i]);
        free(s->pci_ids);
        free(s->gpu_counts);
        *s = (Sku){0};
}

bool sku_matches_pci_id(const Sku *s, const char *pci_id)
{
        for (size_t i = 0; i < s->n_pci_ids; i++)
                if (strcasecmp(s->pci_ids[i], pci_id) == 0)
                        return true;
        return false;
}

bool sku_allows_gpu_count(const Sku *s, unsigned count)
{
        for (size_t i = 0; i < s->n_gpu_counts; i++)
                if (s->gpu_counts[i] == count)
                        return true;
        return false;
}

static json_t *pci_ids_json(const Sku *s)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < s->n_pci_ids; i++)
                json_array_append_new(a, json_string(s->pci_ids[i]));
        return a;
}

static json_t *gpu_counts_json(const Sku *s)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < s->n_gpu_counts; i++)
                json_array_append_new(a, json_integer(s->gpu_counts[i]));
        return a;
}

json_t *sku_to_json(const Sku *s)
{
        return json_pack("{s:s, s:s, s:s, s:i, s:o, s:o, s:I, s:s, s:s, s:o, s:o}", "id", s->id,
                         "name", s->name, "gpu_model", s->gpu_model, "gpu_memory_gb",
                         s->gpu_memory_gb, "pci_ids", pci_ids_json(s), "gpu_counts",
                         gpu_counts_json(s), "price_per_gpu_hour_micros",
                         (json_int_t)s->price_per_gpu_hour_micros, "currency", "USD", "topology",
                         s->topology, "created_at", json_timestamp(s->created_at), "updated_at",
                         json_timestamp(s->updated_at));
}

static int sku_set_pci_ids(Sku *s, json_t *a, CatalogFieldError *err)
{
        size_t n = json_array_size(a);
        if (!json_is_array(a) || n == 0 || n > SKU_PCI_IDS_MAX)
                return field_error(err, "pci_ids",
                                   "pci_ids must be 1 to %d \"vvvv:dddd\" PCI ids (hex)",
                                   SKU_PCI_IDS_MAX);
        char **ids = calloc(n, sizeof(char *));
        if (!ids)
                return -ENOMEM;
        int r = 0;
        for (size_t i = 0; i < n && r == 0; i++) {
                const char *v = json_string_value(json_array_get(a, i));
                if (!pci_id_valid(v)) {
                        r = field_error(err, "pci_ids",
                                        "pci_ids[%zu] must be a \"vvvv:dddd\" PCI id (hex)", i);
                        break;
                }
                ids[i] = strdup(v);
                if (!ids[i]) {
                        r = -ENOMEM;
                        break;
                }
                for (char *p = ids[i]; *p; p++)
                        *p = (char)tolower((unsigned char)*p);
                for (size_t j = 0; j < i; j++)
                        if (streq(ids[j], ids[i])) {
                                r = field_error(err, "pci_ids", "pci_ids lists %s twice", ids[i]);
                                break;
                        }
        }
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        free(ids[i]);
                free(ids);
                return r;
        }
        for (size_t i = 0; i < s->n_pci_ids; i++)
                free(s->pci_ids[i]);
        free(s->pci_ids);
        s->pci_ids = ids;
        s->n_pci_ids = n;
        return 0;
}

static int sku_set_gpu_counts(Sku *s, json_t *a, CatalogFieldError *err)
{
        size_t n = json_array_size(a);
        if (!json_is_array(a) || n == 0 || n > SKU_GPU_COUNTS_MAX)
                return field_error(err, "gpu_counts",
                                   "gpu_counts must list 1 to %d GPU counts in ascending order",
                                   SKU_GPU_COUNTS_MAX);
        unsigned *counts = calloc(n, sizeof(unsigned));
        if (!counts)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_t *v = json_array_get(a, i);
                json_int_t c = json_is_integer(v) ? json_integer_value(v) : 0;
                if (c < 1 || c > SKU_GPU_COUNT_MAX || (i > 0 && (unsigned)c <= counts[i - 1])) {
                        free(counts);
                        return field_error(err, "gpu_counts",
                                           "gpu_counts must be integers from 1 to %d in strictly "
                                           "ascending order (gpu_counts[%zu] is not)",
                                           SKU_GPU_COUNT_MAX, i);
                }
                counts[i] = (unsigned)c;
        }
        free(s->gpu_counts);
        s->gpu_counts = counts;
        s->n_gpu_counts = n;
        return 0;
}

static const char *const sku_fields[] = {
    "name",     "gpu_model", "gpu_memory_gb", "pci_ids", "gpu_counts", "price_per_gpu_hour_micros",
    "topology",
};

/* Applies the members of body to s, validating each. */
static int sku_apply(Sku *s, json_t *body, CatalogFieldError *err)
{
        int r = check_known_fields(body, sku_fields, ELEMENTSOF(sku_fields), err);
        if (r < 0)
                return r;
        r = member_name(body, &s->name, err);
        if (r < 0)
                return r;
        const char *model;
        r = member_string(body, "gpu_model", &model, err);
        if (r < 0)
                return r;
        if (model) {
                size_t n = utf8_chars(model);
                if (n < 1 || n > SKU_GPU_MODEL_MAX || !text_clean(model, false) || all_blank(model))
                        return field_error(err, "gpu_model",
                                           "gpu_model must be 1 to %d characters without control "
                                           "characters",
                                           SKU_GPU_MODEL_MAX);
                r = replace_string(&s->gpu_model, model);
                if (r < 0)
                        return r;
        }
        long long v;
        r = member_int(body, "gpu_memory_gb", 1, SKU_GPU_MEMORY_GB_MAX, &v, err);
        if (r < 0)
                return r;
        if (r > 0)
                s->gpu_memory_gb = (int)v;
        json_t *a = json_object_get(body, "pci_ids");
        if (a && (r = sku_set_pci_ids(s, a, err)) < 0)
                return r;
        a = json_object_get(body, "gpu_counts");
        if (a && (r = sku_set_gpu_counts(s, a, err)) < 0)
                return r;
        r = member_int(body, "price_per_gpu_hour_micros", 1, SKU_PRICE_MICROS_MAX, &v, err);
        if (r < 0)
                return r;
        if (r > 0)
                s->price_per_gpu_hour_micros = v;
        const char *topo;
        r = member_string(body, "topology", &topo, err);
        if (r < 0)
                return r;
        if (topo) {
                if (!streq(topo, SKU_TOPOLOGY_NODE) && !streq(topo, SKU_TOPOLOGY_NUMA) &&
                    !streq(topo, SKU_TOPOLOGY_SWITCH))
                        return field_error(err, "topology",
                                           "topology must be \"node\", \"numa\" or \"switch\"");
                snprintf(s->topology, sizeof(s->topology), "%s", topo);
        }
        return 0;
}

#define SKU_COLUMNS                                                                                \
        "seq, id, name, gpu_model, gpu_memory_gb, pci_ids, gpu_counts, "                           \
        "price_per_gpu_hour_micros, topology, created_at, updated_at "

static int sku_from_row(sqlite3_stmt *st, Sku *ret)
{
        _cleanup_(sku_done) Sku s = {0};
        s.seq = sqlite3_column_int64(st, 0);
        snprintf(s.id, sizeof(s.id), "%s", strempty(db_column_text(st, 1)));
        s.name = strdup(strempty(db_column_text(st, 2)));
        s.gpu_model = strdup(strempty(db_column_text(st, 3)));
        if (!s.name || !s.gpu_model)
                return -ENOMEM;
        s.gpu_memory_gb = sqlite3_column_int(st, 4);
        _cleanup_(json_decrefp) json_t *pci = json_loads(strempty(db_column_text(st, 5)), 0, NULL);
        _cleanup_(json_decrefp) json_t *counts =
            json_loads(strempty(db_column_text(st, 6)), 0, NULL);
        /* Rows were validated on the way in; a row that no longer parses is
         * damage, not input. */
        if (sku_set_pci_ids(&s, pci, NULL) < 0 || sku_set_gpu_counts(&s, counts, NULL) < 0)
                return -EBADMSG;
        s.price_per_gpu_hour_micros = sqlite3_column_int64(st, 7);
        snprintf(s.topology, sizeof(s.topology), "%s", strempty(db_column_text(st, 8)));
        s.created_at = (usec_t)sqlite3_column_int64(st, 9);
        s.updated_at = (usec_t)sqlite3_column_int64(st, 10);
        *ret = s;
        s = (Sku){0};
        return 0;
}

/* Writes s (insert when insert, else update by id). */
static int sku_store(Db *db, const Sku *s, bool insert)
{
        _cleanup_(json_decrefp) json_t *pci = pci_ids_json(s);
        _cleanup_(json_decrefp) json_t *counts = gpu_counts_json(s);
        _cleanup_free_ char *pci_text = pci ? json_dumps(pci, JSON_COMPACT) : NULL;
        _cleanup_free_ char *counts_text = counts ? json_dumps(counts, JSON_COMPACT) : NULL;
        if (!pci_text || !counts_text)
                return -ENOMEM;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st = db_stmt(
            db, insert ? "INSERT INTO skus (name, gpu_model, gpu_memory_gb, pci_ids, gpu_counts, "
                         "price_per_gpu_hour_micros, topology, id, created_at, updated_at) VALUES "
                         "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                       : "UPDATE skus SET name = ?1, gpu_model = ?2, gpu_memory_gb = ?3, "
                         "pci_ids = ?4, gpu_counts = ?5, price_per_gpu_hour_micros = ?6, "
                         "topology = ?7, updated_at = ?10 WHERE id = ?8 AND deleted_at IS NULL");
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, s->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, s->gpu_model, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 3, s->gpu_memory_gb);
        sqlite3_bind_text(st, 4, pci_text, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, counts_text, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 6, s->price_per_gpu_hour_micros);
        sqlite3_bind_text(st, 7, s->topology, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 8, s->id, -1, SQLITE_TRANSIENT);
        if (insert)
                sqlite3_bind_int64(st, 9, (sqlite3_int64)s->created_at);
        sqlite3_bind_int64(st, 10, (sqlite3_int64)s->updated_at);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return insert || db_changes(db) > 0 ? 0 : -ENOENT;
}

int catalog_sku_create(Db *db, json_t *body, Sku *ret, CatalogFieldError *err)
{
        _cleanup_(sku_done) Sku s = {0};
        int r = sku_apply(&s, body, err);
        if (r < 0)
                return r;
        if ((r = require(s.name, "name", err)) < 0 ||
            (r = require(s.gpu_model, "gpu_model", err)) < 0 ||
            (r = require(s.gpu_memory_gb ? "" : NULL, "gpu_memory_gb", err)) < 0 ||
            (r = require(s.pci_ids, "pci_ids", err)) < 0 ||
            (r = require(s.gpu_counts, "gpu_counts", err)) < 0 ||
            (r = require(s.price_per_gpu_hour_micros ? "" : NULL, "price_per_gpu_hour_micros",
                         err)) < 0 ||
            (r = require(s.topology[0] ? "" : NULL, "topology", err)) < 0)
                return r;
        r = id_new("sku", s.id);
        if (r < 0)
                return r;
        s.created_at = s.updated_at = now_usec();
        r = sku_store(db, &s, true);
        if (r < 0)
                return r;
        return ret ? catalog_sku_get(db, s.id, ret) : 0;
}

int catalog_sku_update(Db *db, const char *id, json_t *body, Sku *ret, CatalogFieldError *err)
{
        _cleanup_(sku_done) Sku s = {0};
        int r = catalog_sku_get(db, id, &s);
        if (r < 0)
                return r;
        r = sku_apply(&s, body, err);
        if (r < 0)
                return r;
        s.updated_at = now_usec();
        r = sku_store(db, &s, false);
        if (r < 0)
                return r;
        return ret ? catalog_sku_get(db, id, ret) : 0;
}

static int soft_delete(Db *db, const char *sql, const char *id)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st = db_stmt(db, sql);
        if (!st)
                return -EIO;
        usec_t now = now_usec();
        sqlite3_bind_int64(st, 1, (sqlite3_int64)now);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return db_changes(db) > 0 ? 0 : -ENOENT;
}

int catalog_sku_delete(Db *db, const char *id)
{
        return soft_delete(db,
                           "UPDATE skus SET deleted_at = ?1, updated_at = ?1 WHERE id = ?2 AND "
                           "deleted_at IS NULL",
                           id);
}

int catalog_sku_get(Db *db, const char *id, Sku *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st =
            db_stmt(db, "SELECT " SKU_COLUMNS "FROM skus WHERE id = ? AND deleted_at IS NULL");
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, strempty(id), -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        return sku_from_row(st, ret);
}

int catalog_skus_list(Db *db, long long after_seq, int limit,
                      int (*fn)(const Sku *s, void *userdata), void *userdata)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st =
            db_stmt(db, "SELECT " SKU_COLUMNS "FROM skus WHERE deleted_at IS NULL AND seq > ? "
                        "ORDER BY seq LIMIT ?");
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, after_seq);
        sqlite3_bind_int(st, 2, limit > 0 ? limit : -1);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                _cleanup_(sku_done) Sku s = {0};
                int r = sku_from_row(st, &s);
                if (r < 0)
                        return r;
                r = fn(&s, userdata);
                if (r != 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int catalog_skus_foreach(Db *db, int (*fn)(const Sku *s, void *userdata), void *userdata)
{
        return catalog_skus_list(db, 0, 0, fn, userdata);
}

/* ---- images ---- */

void image_done(Image *i)
{
        if (!i)
                return;
        free(i->name);
        free(i->description);
        free(i->source);
        free(i->ssh_user);
        *i = (Image){0};
}

json_t *image_to_json(const Image *i)
{
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "id", i->id, "name", i->name,
                         "description", i->description, "source", i->source, "ssh_user",
                         i->ssh_user, "created_at", json_timestamp(i->created_at), "updated_at",
                         json_timestamp(i->updated_at));
}

static const char *const image_fields[] = {"name", "description", "source", "ssh_user"};

static int image_apply(Image *i, json_t *body, CatalogFieldError *err)
{
        int r = check_known_fields(body, image_fields, ELEMENTSOF(image_fields), err);
        if (r < 0)
                return r;
        if ((r = member_name(body, &i->name, err)) < 0 ||
            (r = member_text(body, "description", CATALOG_DESCRIPTION_MAX, true, &i->description,
                             err)) < 0 ||
            (r = member_text(body, "source", CATALOG_SOURCE_MAX, false, &i->source, err)) < 0)
                return r;
        const char *user;
        r = member_string(body, "ssh_user", &user, err);
        if (r < 0)
                return r;
        if (user) {
                if (!unix_user_name_valid(user))
                        return field_error(err, "ssh_user",
                                           "ssh_user must be a user name: a lower-case letter or "
                                           "'_', then up to %d of [a-z0-9_-]",
                                           IMAGE_SSH_USER_MAX - 1);
                r = replace_string(&i->ssh_user, user);
        }
        return r;
}

#define IMAGE_COLUMNS "seq, id, name, description, source, ssh_user, created_at, updated_at "

static int image_from_row(sqlite3_stmt *st, Image *ret)
{
        _cleanup_(image_done) Image i = {0};
        i.seq = sqlite3_column_int64(st, 0);
        snprintf(i.id, sizeof(i.id), "%s", strempty(db_column_text(st, 1)));
        i.name = strdup(strempty(db_column_text(st, 2)));
        i.description = strdup(strempty(db_column_text(st, 3)));
        i.source = strdup(strempty(db_column_text(st, 4)));
        i.ssh_user = strdup(strempty(db_column_text(st, 5)));
        if (!i.name || !i.description || !i.source || !i.ssh_user)
                return -ENOMEM;
        i.created_at = (usec_t)sqlite3_column_int64(st, 6);
        i.updated_at = (usec_t)sqlite3_column_int64(st, 7);
        *ret = i;
        i = (Image){0};
        return 0;
}

static int image_store(Db *db, const Image *i, bool insert)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st =
            db_stmt(db, insert ? "INSERT INTO images (name, description, source, ssh_user, id, "
                                 "created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                               : "UPDATE images SET name = ?1, description = ?2, source = ?3, "
                                 "ssh_user = ?4, updated_at = ?7 WHERE id = ?5 AND deleted_at IS "
                                 "NULL");
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, i->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, strempty(i->description), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, strempty(i->source), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, i->ssh_user, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, i->id, -1, SQLITE_TRANSIENT);
        if (insert)
                sqlite3_bind_int64(st, 6, (sqlite3_int64)i->created_at);
        sqlite3_bind_int64(st, 7, (sqlite3_int64)i->updated_at);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return insert || db_changes(db) > 0 ? 0 : -ENOENT;
}

int catalog_image_create(Db *db, json_t *body, Image *ret, CatalogFieldError *err)
{
        _cleanup_(image_done) Image i = {0};
        int r = image_apply(&i, body, err);
        if (r < 0)
                return r;
        if ((r = require(i.name, "name", err)) < 0)
                return r;
        if (!i.ssh_user && (r = replace_string(&i.ssh_user, "ubuntu")) < 0)
                return r;
        r = id_new("img", i.id);
        if (r < 0)
                return r;
        i.created_at = i.updated_at = now_usec();
        r = image_store(db, &i, true);
        if (r < 0)
                return r;
        return ret ? catalog_image_get(db, i.id, ret) : 0;
}

int catalog_image_update(Db *db, const char *id, json_t *body, Image *ret, CatalogFieldError *err)
{
        _cleanup_(image_done) Image i = {0};
        int r = catalog_image_get(db, id, &i);
        if (r < 0)
                return r;
        r = image_apply(&i, body, err);
        if (r < 0)
                return r;
        i.updated_at = now_usec();
        r = image_store(db, &i, false);
        if (r < 0)
                return r;
        return ret ? catalog_image_get(db, id, ret) : 0;
}

int catalog_image_delete(Db *db, const char *id)
{
        return soft_delete(db,
                           "UPDATE images SET deleted_at = ?1, updated_at = ?1 WHERE id = ?2 AND "
                           "deleted_at IS NULL",
                           id);
}

int catalog_image_get(Db *db, const char *id, Image *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st =
            db_stmt(db, "SELECT " IMAGE_COLUMNS "FROM images WHERE id = ? AND deleted_at IS NULL");
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, strempty(id), -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        return image_from_row(st, ret);
}

int catalog_images_list(Db *db, long long after_seq, int limit,
                        int (*fn)(const Image *i, void *userdata), void *userdata)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st =
            db_stmt(db, "SELECT " IMAGE_COLUMNS "FROM images WHERE deleted_at IS NULL AND seq > ? "
                        "ORDER BY seq LIMIT ?");
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, after_seq);
        sqlite3_bind_int(st, 2, limit > 0 ? limit : -1);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                _cleanup_(image_done) Image i = {0};
                int r = image_from_row(st, &i);
                if (r < 0)
                        return r;
                r = fn(&i, userdata);
                if (r != 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

/* ---- networks ---- */

void network_done(Network *n)
{
        if (!n)
                return;
        free(n->name);
        free(n->description);
        *n = (Network){0};
}

json_t *network_to_json(const Network *n)
{
        return json_pack("{s:s, s:s, s:s, s:i, s:b, s:s, s:b, s:b, s:o, s:o}", "id", n->id, "name",
                         n->name, "description", n->description, "vlan", n->vlan, "untagged",
                         n->vlan == 0, "mac_policy", n->mac_policy, "spoofchk", n->spoofchk,
                         "trust", n->trust, "created_at", json_timestamp(n->created_at),
                         "updated_at", json_timestamp(n->updated_at));
}

static const char *const network_fields[] = {"name",       "description", "vlan",
                                             "mac_policy", "spoofchk",    "trust"};

static int network_apply(Network *n, json_t *body, bool *vlan_set, CatalogFieldError *err)
{
        int r = check_known_fields(body, network_fields, ELEMENTSOF(network_fields), err);
        if (r < 0)
                return r;
        if ((r = member_name(body, &n->name, err)) < 0 ||
            (r = member_text(body, "description", CATALOG_DESCRIPTION_MAX, true, &n->description,
                             err)) < 0)
                return r;
        long long v;
        r = member_int(body, "vlan", 0, NETWORK_VLAN_MAX, &v, err);
        if (r < 0)
                return r;
        if (r > 0) {
                n->vlan = (int)v;
                *vlan_set = true;
        }
        const char *policy;
        r = member_string(body, "mac_policy", &policy, err);
        if (r < 0)
                return r;
        if (policy) {
                if (!streq(policy, NETWORK_MAC_GENERATED) && !streq(policy, NETWORK_MAC_HARDWARE))
                        return field_error(err, "mac_policy",
                                           "mac_policy must be \"generated\" or \"hardware\"");
                snprintf(n->mac_policy, sizeof(n->mac_policy), "%s", policy);
        }
        if ((r = member_bool(body, "spoofchk", &n->spoofchk, err)) < 0 ||
            (r = member_bool(body, "trust", &n->trust, err)) < 0)
                return r;
        return 0;
}

#define NETWORK_COLUMNS                                                                            \
        "seq, id, name, description, vlan, mac_policy, spoofchk, trust, created_at, updated_at "

static int network_from_row(sqlite3_stmt *st, Network *ret)
{
        _cleanup_(network_done) Network n = {0};
        n.seq = sqlite3_column_int64(st, 0);
        snprintf(n.id, sizeof(n.id), "%s", strempty(db_column_text(st, 1)));
        n.name = strdup(strempty(db_column_text(st, 2)));
        n.description = strdup(strempty(db_column_text(st, 3)));
        if (!n.name || !n.description)
                return -ENOMEM;
        n.vlan = sqlite3_column_int(st, 4);
        snprintf(n.mac_policy, sizeof(n.mac_policy), "%s", strempty(db_column_text(st, 5)));
        n.spoofchk = sqlite3_column_int(st, 6) != 0;
        n.trust = sqlite3_column_int(st, 7) != 0;
        n.created_at = (usec_t)sqlite3_column_int64(st, 8);
        n.updated_at = (usec_t)sqlite3_column_int64(st, 9);
        *ret = n;
        n = (Network){0};
        return 0;
}

static int network_store(Db *db, const Network *n, bool insert)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st = db_stmt(
            db, insert ? "INSERT INTO networks (name, description, vlan, mac_policy, spoofchk, "
                         "trust, id, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
                         "?8, ?9)"
                       : "UPDATE networks SET name = ?1, description = ?2, vlan = ?3, "
                         "mac_policy = ?4, spoofchk = ?5, trust = ?6, updated_at = ?9 WHERE id = "
                         "?7 AND deleted_at IS NULL");
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, n->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, strempty(n->description), -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 3, n->vlan);
        sqlite3_bind_text(st, 4, n->mac_policy, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 5, n->spoofchk);
        sqlite3_bind_int(st, 6, n->trust);
        sqlite3_bind_text(st, 7, n->id, -1, SQLITE_TRANSIENT);
        if (insert)
                sqlite3_bind_int64(st, 8, (sqlite3_int64)n->created_at);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)n->updated_at);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return insert || db_changes(db) > 0 ? 0 : -ENOENT;
}

int catalog_network_create(Db *db, json_t *body, Network *ret, CatalogFieldError *err)
{
        _cleanup_(network_done) Network n = {
            .spoofchk = true,
            .trust = false,
        };
        snprintf(n.mac_policy, sizeof(n.mac_policy), "%s", NETWORK_MAC_GENERATED);
        bool vlan_set = false;
        int r = network_apply(&n, body, &vlan_set, err);
        if (r < 0)
                return r;
        if ((r = require(n.name, "name", err)) < 0 ||
            (r = require(vlan_set ? "" : NULL, "vlan", err)) < 0)
                return r;
        r = id_new("net", n.id);
        if (r < 0)
                return r;
        n.created_at = n.updated_at = now_usec();
        r = network_store(db, &n, true);
        if (r < 0)
                return r;
        return ret ? catalog_network_get(db, n.id, ret) : 0;
}

int catalog_network_update(Db *db, const char *id, json_t *body, Network *ret,
                           CatalogFieldError *err)
{
        _cleanup_(network_done) Network n = {0};
        int r = catalog_network_get(db, id, &n);
        if (r < 0)
                return r;
        bool vlan_set = false;
        r = network_apply(&n, body, &vlan_set, err);
        if (r < 0)
                return r;
        n.updated_at = now_usec();
        r = network_store(db, &n, false);
        if (r < 0)
                return r;
        return ret ? catalog_network_get(db, id, ret) : 0;
}

int catalog_network_delete(Db *db, const char *id)
{
        return soft_delete(db,
                           "UPDATE networks SET deleted_at = ?1, updated_at = ?1 WHERE id = ?2 "
                           "AND deleted_at IS NULL",
                           id);
}

int catalog_network_get(Db *db, const char *id, Network *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st = db_stmt(
            db, "SELECT " NETWORK_COLUMNS "FROM networks WHERE id = ? AND deleted_at IS NULL");
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, strempty(id), -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        return network_from_row(st, ret);
}

int catalog_networks_list(Db *db, long long after_seq, int limit,
                          int (*fn)(const Network *n, void *userdata), void *userdata)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *st =
            db_stmt(db, "SELECT " NETWORK_COLUMNS "FROM networks WHERE deleted_at IS NULL AND "
                        "seq > ? ORDER BY seq LIMIT ?");
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, after_seq);
        sqlite3_bind_int(st, 2, limit > 0 ? limit : -1);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                _cleanup_(network_done) Network n = {0};
                int r = network_from_row(st, &n);
                if (r < 0)
                        return r;
                r = fn(&n, userdata);
                if (r != 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}
