/* SPDX-License-Identifier: MIT */
#pragma once

/* The users table: accounts and their roles (balances are the ledger's,
 * ledger.h). Emails are stored normalised (trimmed, lower case) and unique. */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "id.h"
#include "json-util.h"
#include "timeutil.h"

typedef struct Db Db;

enum {
        ROLE_USER = 1u << 0,
        ROLE_ADMIN = 1u << 1,
        ROLE_BILLING_OPERATOR = 1u << 2,
        ROLE_ANY = ROLE_USER | ROLE_ADMIN | ROLE_BILLING_OPERATOR,
};

#define EMAIL_MAX_LEN 254
#define NAME_MAX_LEN  200

typedef struct User {
        char id[ID_MAX];
        char *email;
        char *name;
        unsigned roles;
        usec_t created_at;
} User;

void user_done(User *u);
json_t *user_to_json(const User *u);

int role_from_string(const char *s, unsigned *ret);
json_t *roles_to_json(unsigned roles);
const char *role_to_string(unsigned single_role_bit);

/* Trims and lower-cases an email and checks its shape (one '@', a dot in the
 * domain, printable ASCII, at most EMAIL_MAX_LEN). -EINVAL when it is not one. */
int email_normalize(const char *in, char **ret);
/* Checks a display name: 1..NAME_MAX_LEN bytes of valid UTF-8 without control characters. */
int name_validate(const char *name);

/* -EEXIST when the (normalised) email is taken. */
int users_insert(Db *db, const char *email, const char *name, const char *password_hash,
                 unsigned roles, User *ret);
/* -ENOENT when there is no such user. *ret_password_hash may be NULL. */
int users_get_by_email(Db *db, const char *email, User *ret, char **ret_password_hash);
int users_get(Db *db, const char *id, User *ret);
int users_set_password(Db *db, const char *id, const char *password_hash);
int users_add_roles(Db *db, const char *id, unsigned roles);
int users_email_exists(Db *db, const char *email);
