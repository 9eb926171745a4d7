/* SPDX-License-Identifier: MIT */
/* gpuslice-controller: serve the API (default), create-admin, routes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "audit.h"
#include "db.h"
#include "log.h"
#include "passwords.h"
#include "routes.h"
#include "server.h"
#include "sessions.h"
#include "settings.h"
#include "users.h"
#include "version.h"

extern char **environ;

static void usage(FILE *f, Config *c)
{
        fprintf(f,
                "Usage:\n"
                "  gpuslice-controller [serve] --listen HOST:PORT --state-dir DIR [--config FILE] "
                "[options]\n"
                "  gpuslice-controller create-admin --state-dir DIR --email EMAIL "
                "[--role admin|billing_operator] [--name NAME]\n"
                "  gpuslice-controller routes        print the route table as JSON\n"
                "  gpuslice-controller --version\n\n"
                "Options (also GPUSLICE_<KEY> in the environment and key = value in --config):\n");
        if (c)
                config_print_help(c, f);
}

static int apply_log_level(Config *c)
{
        LogLevel level;
        const char *v = config_get(c, "log_level");
        if (log_level_from_string(v, &level) < 0) {
                fprintf(stderr,
                        "gpuslice-controller: log_level must be error, warning, info or "
                        "debug, got \"%s\"\n",
                        v);
                return -EINVAL;
        }
        log_set_level(level);
        return 0;
}

static int load_config(Config *c, int argc, char **argv, int start)
{
        _cleanup_free_ char *err = NULL;
        int next = 0;
        int r = config_load_all(c, argc, argv, start, environ, &next, &err);
        if (r < 0) {
                fprintf(stderr, "gpuslice-controller: %s\n", err ? err : strerror(-r));
                return r;
        }
        if (next < argc) {
                fprintf(stderr, "gpuslice-controller: unexpected argument \"%s\"\n", argv[next]);
                return -EINVAL;
        }
        return apply_log_level(c);
}

static int verb_serve(int argc, char **argv, int start)
{
        Config *c = NULL;
        int r = controller_config_new(&c);
        if (r < 0)
                return 1;
        r = load_config(c, argc, argv, start);
        if (r < 0) {
                config_free(c);
                return 2;
        }
        r = server_run(c);
        config_free(c);
        return r < 0 ? 1 : 0;
}

/* create-admin takes its own --email/--role/--name and leaves the rest to the config. */
static int verb_create_admin(int argc, char **argv)
{
        const char *email_in = NULL, *role_name = "admin", *name = NULL;
        char **rest = calloc((size_t)argc + 1, sizeof(char *));
        int n_rest = 0, r;
        if (!rest)
                return 1;
        rest[n_rest++] = argv[0];
        for (int i = 2; i < argc; i++) {
                const char **target = NULL;
                if (streq(argv[i], "--email"))
                        target = &email_in;
                else if (streq(argv[i], "--role"))
                        target = &role_name;
                else if (streq(argv[i], "--name"))
                        target = &name;
                if (target) {
                        if (i + 1 >= argc) {
                                fprintf(stderr, "create-admin: %s needs a value\n", argv[i]);
                                free(rest);
                                return 2;
                        }
                        *target = argv[++i];
                } else
                        rest[n_rest++] = argv[i];
        }

        Config *c = NULL;
        if (controller_config_new(&c) < 0) {
                free(rest);
                return 1;
        }
        r = load_config(c, n_rest, rest, 1);
        free(rest);
        if (r < 0) {
                config_free(c);
                return 2;
        }

        unsigned role;
        _cleanup_free_ char *email = NULL;
        if (!email_in || email_normalize(email_in, &email) < 0) {
                fprintf(stderr, "create-admin: --email must be a valid address\n");
                config_free(c);
                return 2;
        }
        if (role_from_string(role_name, &role) < 0 || role == ROLE_USER) {
                fprintf(stderr, "create-admin: --role must be admin or billing_operator\n");
                config_free(c);
                return 2;
        }
        if (!name)
                name = role == ROLE_ADMIN ? "Administrator" : "Billing operator";
        if (name_validate(name) < 0) {
                fprintf(stderr, "create-admin: --name is not a valid name\n");
                config_free(c);
                return 2;
        }

        char password[40];
        _cleanup_free_ char *hash = NULL;
        _cleanup_(db_closep) Db *db = NULL;
        r = random_token(18, password, sizeof(password));
        if (r >= 0)
                r = password_hash(password, (unsigned)config_get_int(c, "password_scrypt_log_n"),
                                  &hash);
        if (r >= 0)
                r = server_open_db(config_get(c, "state_dir"), &db);
        config_free(c);
        if (r < 0) {
                fprintf(stderr, "create-admin: %s\n", strerror(-r));
                return 1;
        }

        /* Re-running resets the password and keeps the account: scripts can call it on
         * every start and print fresh credentials. */
        _cleanup_txn_ DbTxn txn = {0};
        _cleanup_(user_done) User u = {0};
        bool existed = false;
        r = db_begin(db, &txn);
        if (r >= 0) {
                r = users_get_by_email(db, email, &u, NULL);
                if (r == 0) {
                        existed = true;
                        r = users_set_password(db, u.id, hash);
                        /* A role an account did not have is a security event of its own. */
                        if (r >= 0 && (u.roles & role) == 0)
                                r = audit_log(db, NULL, "user.role_grant", "user", u.id,
                                              "create-admin",
                                              json_pack("{s:s, s:o}", "role", role_to_string(role),
                                                        "roles_before", roles_to_json(u.roles)));
                        if (r >= 0)
                                r = users_add_roles(db, u.id, role | ROLE_USER);
                        if (r >= 0)
                                r = sessions_revoke_user(db, u.id, "password_reset");
                } else if (r == -ENOENT)
                        r = users_insert(db, email, name, hash, role | ROLE_USER, &u);
        }
        if (r >= 0)
                r = audit_log(db, NULL, existed ? "user.password_reset" : "user.create", "user",
                              u.id, "create-admin",
                              json_pack("{s:s}", "role", role_to_string(role)));
        if (r >= 0)
                r = db_commit(&txn);
        if (r < 0) {
                fprintf(stderr, "create-admin: cannot write the account: %s\n", strerror(-r));
                return 1;
        }
        fprintf(stderr, "%s %s %s (%s); its password follows on stdout\n",
                existed ? "reset" : "created", role_to_string(role), email, u.id);
        printf("%s\n", password);
        explicit_bzero(password, sizeof(password));
        return 0;
}

static int verb_routes(void)
{
        json_t *a = json_array();
        for (size_t i = 0; i < n_routes; i++) {
                json_t *roles = routes[i].roles ? roles_to_json(routes[i].roles) : json_array();
                json_array_append_new(a, json_pack("{s:s, s:s, s:o, s:b, s:s}", "method",
                                                   routes[i].method, "path", routes[i].pattern,
                                                   "roles", roles, "public", routes[i].roles == 0,
                                                   "summary", routes[i].summary));
        }
        json_dumpf(a, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(a);
        return 0;
}

int main(int argc, char **argv)
{
        log_set_component("controller");
        /* No OpenSSL teardown at exit: when the shutdown deadline passes with a
         * password still hashing on the thread pool, exit() would free
         * OpenSSL's locks under that thread and crash the process. */
        OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
        if (argc >= 2 &&
            (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help"))) {
                Config *c = NULL;
                (void)controller_config_new(&c);
                usage(stdout, c);
                config_free(c);
                return 0;
        }
        if (argc >= 2 && streq(argv[1], "--version")) {
                printf("gpuslice-controller %s\n", GPUSLICE_VERSION);
                return 0;
        }
        if (argc >= 2 && streq(argv[1], "create-admin"))
                return verb_create_admin(argc, argv);
        if (argc >= 2 && streq(argv[1], "routes"))
                return verb_routes();
        if (argc >= 2 && streq(argv[1], "serve"))
                return verb_serve(argc, argv, 2);
        if (argc >= 2 && !startswith(argv[1], "-")) {
                fprintf(stderr, "gpuslice-controller: unknown command \"%s\" (try --help)\n",
                        argv[1]);
                return 2;
        }
        return verb_serve(argc, argv, 1);
}
