/* SPDX-License-Identifier: MIT */
#include "users.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "macro.h"

static const struct {
        unsigned bit;
        const char *name;
} role_names[] = {
    {ROLE_USER, "user"},
    {ROLE_ADMIN, "admin"},
    {ROLE_BILLING_OPERATOR, "billing_operator"},
};

void user_done(User *u)
{
        free(u->email);
        free(u->name);
        u->email = u->name = NULL;
}

int role_from_string(const char *s, unsigned *ret)
{
        for (size_t i = 0; i < ELEMENTSOF(role_names); i++)
                if (streq(s, role_names[i].name)) {
                        *ret = role_names[i].bit;
                        return 0;
                }
        return -EINVAL;
}

const char *role_to_string(unsigned bit)
{
        for (size_t i = 0; i < ELEMENTSOF(role_names); i++)
                if (role_names[i].bit == bit)
                        return role_names[i].name;
        return NULL;
}

json_t *roles_to_json(unsigned roles)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < ELEMENTSOF(role_names); i++)
                if (roles & role_names[i].bit)
                        json_array_append_new(a, json_string(role_names[i].name));
        return a;
}

json_t *user_to_json(const User *u)
{
        return json_pack("{s:s, s:s, s:s, s:o, s:o}", "id", u->id, "email", u->email, "name",
                         u->name, "roles", roles_to_json(u->roles), "created_at",
                         json_timestamp(u->created_at));
}

int email_normalize(const char *in, char **ret)
{
        while (*in == ' ' || *in == '\t')
                in++;
        size_t n = strlen(in);
        while (n > 0 && (in[n - 1] == ' ' || in[n - 1] == '\t'))
                n--;
        if (n < 3 || n > EMAIL_MAX_LEN)
                return -EINVAL;
        char *e = strndup(in, n);
        if (!e)
                return -ENOMEM;
        size_t at = SIZE_MAX;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)e[i];
                if (c <= 0x20 || c >= 0x7f || c == '"' || c == '(' || c == ')' || c == ',' ||
                    c == ';' || c == '<' || c == '>' || c == '[' || c == ']' || c == '\\') {
                        free(e);
                        return -EINVAL;
                }
                if (c == '@') {
                        if (at != SIZE_MAX) {
                                free(e);
                                return -EINVAL;
                        }
                        at = i;
                }
                e[i] = (char)tolower(c);
        }
        /* local part 1..64, domain with a dot not at either end, no empty labels */
        if (at == SIZE_MAX || at == 0 || at > 64 || at + 1 >= n) {
                free(e);
                return -EINVAL;
        }
        const char *domain = e + at + 1;
        if (!strchr(domain, '.') || domain[0] == '.' || e[n - 1] == '.' || strstr(domain, "..")) {
                free(e);
                return -EINVAL;
        }
        *ret = e;
        return 0;
}

int name_validate(const char *name)
{
        size_t n = strlen(name);
        if (n == 0 || n > NAME_MAX_LEN)
                return -EINVAL;
        for (const unsigned char *p = (const unsigned char *)name; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return -EINVAL;
        /* jansson only hands us valid UTF-8; all-blank names are not names. */
        for (const char *p = name; *p; p++)
                if (!isspace((unsigned char)*p))
                        return 0;
        return -EINVAL;
}

static int read_user(sqlite3_stmt *s, User *ret)
{
        *ret = (User){0};
        snprintf(ret->id, sizeof(ret->id), "%s", db_column_text(s, 0));
        ret->email = strdup(db_column_text(s, 1));
        ret->name = strdup(db_column_text(s, 2));
        ret->roles = (unsigned)sqlite3_column_int(s, 3);
        ret->created_at = (usec_t)sqlite3_column_int64(s, 4);
        if (!ret->email || !ret->name) {
                user_done(ret);
                return -ENOMEM;
        }
        return 0;
}

/* users.balance_micros (migration 1) is superseded by the ledger: not read. */
#define USER_COLUMNS "id, email, name, roles, created_at"

int users_insert(Db *db, const char *email, const char *name, const char *password_hash,
                 unsigned roles, User *ret)
{
        char id[ID_MAX];
        int r = id_new("usr", id);
        if (r < 0)
                return r;
        usec_t now = now_usec();
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO users (id, email, name, password_hash, roles, "
                        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, email, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, name, -1, SQLITE_TRANSIENT);
        db_bind_text(s, 4, password_hash);
        sqlite3_bind_int(s, 5, (int)roles);
        sqlite3_bind_int64(s, 6, (sqlite3_int64)now);
        sqlite3_bind_int64(s, 7, (sqlite3_int64)now);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        if (ret) {
                *ret = (User){.roles = roles, .created_at = now};
                memcpy(ret->id, id, sizeof(id));
                ret->email = strdup(email);
                ret->name = strdup(name);
                if (!ret->email || !ret->name) {
                        user_done(ret);
                        return -ENOMEM;
                }
        }
        return 0;
}

int users_get_by_email(Db *db, const char *email, User *ret, char **ret_password_hash)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " USER_COLUMNS ", password_hash FROM users WHERE email = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, email, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        int r = read_user(s, ret);
        if (r < 0)
                return r;
        if (ret_password_hash) {
                const char *h = db_column_text(s, 5);
                *ret_password_hash = h ? strdup(h) : NULL;
                if (h && !*ret_password_hash) {
                        user_done(ret);
                        return -ENOMEM;
                }
        }
        return 0;
}

int users_get(Db *db, const char *id, User *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " USER_COLUMNS " FROM users WHERE id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        return read_user(s, ret);
}

int users_email_exists(Db *db, const char *email)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT 1 FROM users WHERE email = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, email, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW)
                return 1;
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int update_one(Db *db, const char *sql, const char *id, sqlite3_int64 v_int,
                      const char *v_text)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(db, sql);
        if (!s)
                return -EIO;
        if (v_text)
                sqlite3_bind_text(s, 1, v_text, -1, SQLITE_TRANSIENT);
        else
                sqlite3_bind_int64(s, 1, v_int);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 3, id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return sqlite3_changes(db_handle(db)) == 1 ? 0 : -ENOENT;
}

int users_set_password(Db *db, const char *id, const char *password_hash)
{
        return update_one(db, "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?", id,
                          0, password_hash);
}

int users_add_roles(Db *db, const char *id, unsigned roles)
{
        return update_one(db, "UPDATE users SET roles = roles | ?, updated_at = ? WHERE id = ?", id,
                          roles, NULL);
}
