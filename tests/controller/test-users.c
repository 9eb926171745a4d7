/* SPDX-License-Identifier: MIT */
/* users.c: email normalisation, name validation, roles, the users table. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "harness.h"
#include "users.h"

TestSuite(users, .timeout = 30);

static void expect_email(const char *in, const char *want)
{
        char *out = NULL;
        int r = email_normalize(in, &out);
        cr_assert_eq(r, 0, "\"%s\" refused (%d)", in, r);
        cr_assert_str_eq(out, want);
        free(out);
}

static void expect_bad_email(const char *in)
{
        char *out = NULL;
        int r = email_normalize(in, &out);
        cr_assert_eq(r, -EINVAL, "\"%s\" accepted as \"%s\"", in, out ? out : "");
        cr_assert_null(out);
}

Test(users, email_is_trimmed_and_lower_cased)
{
        expect_email("alice@example.com", "alice@example.com");
        expect_email("Alice@Example.COM", "alice@example.com");
        expect_email("  bob@example.org\t", "bob@example.org");
        expect_email("\t CAROL+tag@Sub.Example.co.uk  ", "carol+tag@sub.example.co.uk");
        expect_email("o'neil.x_y-z@ex-ample.io", "o'neil.x_y-z@ex-ample.io");
}

Test(users, email_shapes_that_are_not_addresses)
{
        const char *bad[] = {
            "",
            "   ",
            "a",
            "ab",
            "@example.com",
            "alice@",
            "alice",
            "alice@localhost", /* no dot in the domain */
            "alice@.example.com",
            "alice@example.com.",
            "alice@example..com",
            "alice@@example.com",
            "al@ice@example.com",
            "al ice@example.com",
            "alice@exa mple.com",
            "alice\n@example.com",
            "alice@example.com\r\nBcc: x@y.z",
            "alice@example.com\x01",
            "\x7f"
            "alice@example.com",
            "\"alice\"@example.com",
            "<alice@example.com>",
            "alice@[127.0.0.1]",
            "alice(comment)@example.com",
            "a,b@example.com",
            "a;b@example.com",
            "a\\b@example.com",
            "ålice@example.com", /* non-ASCII */
            "alice@exämple.com",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                expect_bad_email(bad[i]);
}

Test(users, email_length_limits)
{
        char local[80], email[400];
        /* local part of 64 is fine, 65 is not */
        memset(local, 'l', 64);
        local[64] = '\0';
        snprintf(email, sizeof(email), "%s@example.com", local);
        expect_email(email, email);
        memset(local, 'l', 65);
        local[65] = '\0';
        snprintf(email, sizeof(email), "%s@example.com", local);
        expect_bad_email(email);

        /* total of EMAIL_MAX_LEN is fine, one more is not */
        char domain[300];
        size_t dl = EMAIL_MAX_LEN - 2 - 4; /* "a@" + domain + ".com" */
        memset(domain, 'd', dl);
        domain[dl] = '\0';
        snprintf(email, sizeof(email), "a@%s.com", domain);
        cr_assert_eq(strlen(email), EMAIL_MAX_LEN);
        expect_email(email, email);
        snprintf(email, sizeof(email), "ab@%s.com", domain);
        expect_bad_email(email);

        /* surrounding blanks do not count against the limit */
        char padded[400];
        snprintf(padded, sizeof(padded), "   a@%s.com   ", domain);
        snprintf(email, sizeof(email), "a@%s.com", domain);
        expect_email(padded, email);
}

Test(users, names)
{
        cr_assert_eq(name_validate("A"), 0);
        cr_assert_eq(name_validate("Ada Lovelace"), 0);
        cr_assert_eq(name_validate("Zoë Ångström 山田"), 0);
        char n[NAME_MAX_LEN + 2];
        memset(n, 'n', NAME_MAX_LEN);
        n[NAME_MAX_LEN] = '\0';
        cr_assert_eq(name_validate(n), 0);
        n[NAME_MAX_LEN] = 'n';
        n[NAME_MAX_LEN + 1] = '\0';
        cr_assert_eq(name_validate(n), -EINVAL);

        const char *bad[] = {"",          " ",      "\t  ",           "a\nb",   "a\rb",
                             "tab\there", "bell\a", "esc\x1b[31mred", "del\x7f"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                cr_assert_eq(name_validate(bad[i]), -EINVAL, "name #%zu accepted", i);
}

Test(users, roles)
{
        unsigned r = 0;
        cr_assert_eq(role_from_string("user", &r), 0);
        cr_assert_eq(r, ROLE_USER);
        cr_assert_eq(role_from_string("admin", &r), 0);
        cr_assert_eq(r, ROLE_ADMIN);
        cr_assert_eq(role_from_string("billing_operator", &r), 0);
        cr_assert_eq(r, ROLE_BILLING_OPERATOR);
        cr_assert_eq(role_from_string("Admin", &r), -EINVAL);
        cr_assert_eq(role_from_string("root", &r), -EINVAL);
        cr_assert_eq(role_from_string("", &r), -EINVAL);
        cr_assert_str_eq(role_to_string(ROLE_BILLING_OPERATOR), "billing_operator");
        cr_assert_null(role_to_string(ROLE_USER | ROLE_ADMIN));

        json_t *a = roles_to_json(ROLE_USER | ROLE_BILLING_OPERATOR);
        char *s = json_dumps(a, JSON_COMPACT);
        cr_assert_str_eq(s, "[\"user\",\"billing_operator\"]");
        free(s);
        json_decref(a);
}

/* ---- the table ---- */

static char *dir;
static Db *db;

static void db_setup(void)
{
        dir = tmpdir_new("users");
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

Test(users, insert_then_read_back, .init = db_setup, .fini = db_teardown)
{
        User u = {0}, g = {0};
        cr_assert_eq(users_insert(db, "ada@example.com", "Ada", "$hash", ROLE_USER, &u), 0);
        cr_assert(strncmp(u.id, "usr_", 4) == 0, "%s", u.id);
        cr_assert_str_eq(u.email, "ada@example.com");
        cr_assert_eq(u.roles, ROLE_USER);

        char *hash = NULL;
        cr_assert_eq(users_get_by_email(db, "ada@example.com", &g, &hash), 0);
        cr_assert_str_eq(g.id, u.id);
        cr_assert_str_eq(g.name, "Ada");
        cr_assert_str_eq(hash, "$hash");
        cr_assert_eq(g.created_at, u.created_at);
        free(hash);
        user_done(&g);

        cr_assert_eq(users_get(db, u.id, &g), 0);
        cr_assert_str_eq(g.email, "ada@example.com");
        user_done(&g);

        json_t *j = user_to_json(&u);
        cr_assert_str_eq(json_string_value(json_object_get(j, "id")), u.id);
        cr_assert_null(json_object_get(j, "password_hash"), "the hash must never be shown");
        cr_assert(json_is_string(json_object_get(j, "created_at")));
        json_decref(j);
        user_done(&u);
}

Test(users, duplicate_email_is_eexist, .init = db_setup, .fini = db_teardown)
{
        cr_assert_eq(users_insert(db, "ada@example.com", "Ada", "$h", ROLE_USER, NULL), 0);
        cr_assert_eq(users_insert(db, "ada@example.com", "Other Ada", "$h2", ROLE_USER, NULL),
                     -EEXIST);
        cr_assert_eq(users_email_exists(db, "ada@example.com"), 1);
        cr_assert_eq(users_email_exists(db, "bob@example.com"), 0);
}

Test(users, missing_users_are_enoent, .init = db_setup, .fini = db_teardown)
{
        User u = {0};
        cr_assert_eq(users_get(db, "usr_nobody", &u), -ENOENT);
        cr_assert_eq(users_get_by_email(db, "nobody@example.com", &u, NULL), -ENOENT);
        cr_assert_eq(users_set_password(db, "usr_nobody", "$h"), -ENOENT);
        cr_assert_eq(users_add_roles(db, "usr_nobody", ROLE_ADMIN), -ENOENT);
}

Test(users, password_and_roles_updates, .init = db_setup, .fini = db_teardown)
{
        User u = {0}, g = {0};
        char *hash = NULL;
        cr_assert_eq(users_insert(db, "ada@example.com", "Ada", "$old", ROLE_USER, &u), 0);
        cr_assert_eq(users_set_password(db, u.id, "$new"), 0);
        cr_assert_eq(users_add_roles(db, u.id, ROLE_ADMIN), 0);
        cr_assert_eq(users_add_roles(db, u.id, ROLE_ADMIN), 0, "adding a held role is a no-op");
        cr_assert_eq(users_get_by_email(db, "ada@example.com", &g, &hash), 0);
        cr_assert_str_eq(hash, "$new");
        cr_assert_eq(g.roles, ROLE_USER | ROLE_ADMIN);
        free(hash);
        user_done(&g);
        user_done(&u);
}
