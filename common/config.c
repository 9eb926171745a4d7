/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

struct Config {
        const ConfigKey *schema;
        size_t n_keys;
        char **values;
        ConfigSource *sources;
        char *env_prefix;
        char *env_ignore_prefix;
};

static int fail(char **err, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(char **err, int r, const char *fmt, ...)
{
        if (err) {
                va_list ap;
                va_start(ap, fmt);
                free(*err);
                if (vasprintf(err, fmt, ap) < 0)
                        *err = NULL;
                va_end(ap);
        }
        return r;
}

static ssize_t find_key(const Config *c, const char *key, size_t len)
{
        for (size_t i = 0; i < c->n_keys; i++)
                if (strlen(c->schema[i].key) == len && strncmp(c->schema[i].key, key, len) == 0)
                        return (ssize_t)i;
        return -1;
}

static int parse_bool(const char *v, bool *ret)
{
        static const char *const yes[] = {"1", "true", "yes", "on"};
        static const char *const no[] = {"0", "false", "no", "off"};
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(v, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcasecmp(v, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

static int parse_int(const char *v, long long *ret)
{
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || isspace((unsigned char)*v))
                return -EINVAL;
        *ret = x;
        return 0;
}

static const char *source_name(ConfigSource s)
{
        switch (s) {
        case CONFIG_SOURCE_DEFAULT:
                return "default";
        case CONFIG_SOURCE_FILE:
                return "config file";
        case CONFIG_SOURCE_ENV:
                return "environment";
        case CONFIG_SOURCE_FLAG:
                return "command line";
        }
        return "?";
}

/* where: what the error message starts with ("environment", "config file f:3"). */
static int validate(const ConfigKey *k, const char *value, const char *where, char **err)
{
        if (k->type == CONFIG_BOOL) {
                bool b;
                if (parse_bool(value, &b) < 0)
                        return fail(err, -EINVAL, "%s: %s expects true or false, got \"%s\"", where,
                                    k->key, value);
        } else if (k->type == CONFIG_INT) {
                long long x;
                if (parse_int(value, &x) < 0)
                        return fail(err, -EINVAL, "%s: %s expects an integer, got \"%s\"", where,
                                    k->key, value);
                if ((k->min != 0 || k->max != 0) && (x < k->min || x > k->max))
                        return fail(err, -ERANGE, "%s: %s must be between %lld and %lld, got %lld",
                                    where, k->key, k->min, k->max, x);
        }
        return 0;
}

int config_new(const ConfigKey *schema, size_t n_keys, const char *env_prefix,
               const char *env_ignore_prefix, Config **ret)
{
        Config *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->schema = schema;
        c->n_keys = n_keys;
        c->values = calloc(n_keys, sizeof(char *));
        c->sources = calloc(n_keys, sizeof(ConfigSource));
        c->env_prefix = strdup(env_prefix ? env_prefix : "GPUSLICE_");
        c->env_ignore_prefix = env_ignore_prefix ? strdup(env_ignore_prefix) : NULL;
        if (!c->values || !c->sources || !c->env_prefix ||
            (env_ignore_prefix && !c->env_ignore_prefix)) {
                config_free(c);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n_keys; i++) {
                if (schema[i].default_value) {
                        c->values[i] = strdup(schema[i].default_value);
                        if (!c->values[i]) {
                                config_free(c);
                                return -ENOMEM;
                        }
                }
                c->sources[i] = CONFIG_SOURCE_DEFAULT;
        }
        *ret = c;
        return 0;
}

void config_free(Config *c)
{
        if (!c)
                return;
        if (c->values)
                for (size_t i = 0; i < c->n_keys; i++)
                        free(c->values[i]);
        free(c->values);
        free(c->sources);
        free(c->env_prefix);
        free(c->env_ignore_prefix);
        free(c);
}

static int set_index(Config *c, size_t i, const char *value, ConfigSource src, char **err)
{
        int r = validate(&c->schema[i], value, source_name(src), err);
        if (r < 0)
                return r;
        char *v = strdup(value);
        if (!v)
                return fail(err, -ENOMEM, "out of memory");
        free(c->values[i]);
        c->values[i] = v;
        c->sources[i] = src;
        return 0;
}

int config_set(Config *c, const char *key, const char *value, ConfigSource src, char **err)
{
        ssize_t i = find_key(c, key, strlen(key));
        if (i < 0)
                return fail(err, -ENOENT, "%s: unknown key \"%s\"", source_name(src), key);
        return set_index(c, (size_t)i, value, src, err);
}

static char *strip(char *s)
{
        while (isspace((unsigned char)*s))
                s++;
        size_t n = strlen(s);
        while (n > 0 && isspace((unsigned char)s[n - 1]))
                s[--n] = '\0';
        return s;
}

int config_load_file(Config *c, const char *path, char **err)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        unsigned lineno = 0;

        if (!f)
                return fail(err, negative_errno(), "config file %s: %s", path, strerror(errno));

        /* Validate everything into a scratch copy first so a bad line changes nothing. */
        char **pending = calloc(c->n_keys, sizeof(char *));
        if (!pending)
                return fail(err, -ENOMEM, "out of memory");
        int r = 0;
        ssize_t len;
        while ((len = getline(&line, &cap, f)) >= 0) {
                lineno++;
                if ((size_t)len != strlen(line)) {
                        r = fail(err, -EINVAL, "config file %s:%u: NUL byte in line", path, lineno);
                        break;
                }
                char *s = strip(line);
                if (*s == '\0' || *s == '#' || *s == ';')
                        continue;
                char *eq = strchr(s, '=');
                if (!eq) {
                        r = fail(err, -EINVAL, "config file %s:%u: expected key = value", path,
                                 lineno);
                        break;
                }
                *eq = '\0';
                char *key = strip(s), *value = strip(eq + 1);
                size_t vl = strlen(value);
                if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
                        value[vl - 1] = '\0';
                        value++;
                }
                ssize_t i = find_key(c, key, strlen(key));
                if (i < 0) {
                        r = fail(err, -ENOENT, "config file %s:%u: unknown key \"%s\"", path,
                                 lineno, key);
                        break;
                }
                _cleanup_free_ char *where = NULL;
                if (asprintf(&where, "config file %s:%u", path, lineno) < 0) {
                        where = NULL;
                        r = fail(err, -ENOMEM, "out of memory");
                        break;
                }
                r = validate(&c->schema[i], value, where, err);
                if (r < 0)
                        break;
                free(pending[i]);
                pending[i] = strdup(value);
                if (!pending[i]) {
                        r = fail(err, -ENOMEM, "out of memory");
                        break;
                }
        }
        if (r == 0 && ferror(f))
                r = fail(err, -EIO, "config file %s: read error", path);
        for (size_t i = 0; i < c->n_keys; i++) {
                if (r == 0 && pending[i]) {
                        free(c->values[i]);
                        c->values[i] = pending[i];
                        c->sources[i] = CONFIG_SOURCE_FILE;
                } else
                        free(pending[i]);
        }
        free(pending);
        return r;
}

/* Like the file, the environment is applied all or nothing: every variable
 * is checked before any value changes. */
int config_load_env(Config *c, char *const *envp, char **err)
{
        size_t pl = strlen(c->env_prefix);
        if (!envp)
                return 0;
        _cleanup_free_ const char **pending = calloc(c->n_keys, sizeof(char *));
        if (!pending)
                return fail(err, -ENOMEM, "out of memory");
        for (char *const *e = envp; *e; e++) {
                if (strncmp(*e, c->env_prefix, pl) != 0)
                        continue;
                const char *eq = strchr(*e, '=');
                if (!eq)
                        continue;
                char key[128];
                size_t kl = (size_t)(eq - *e) - pl;
                if (kl == 0 || kl >= sizeof(key))
                        return fail(err, -ENOENT, "environment: unknown variable %.*s",
                                    (int)(eq - *e), *e);
                for (size_t i = 0; i < kl; i++)
                        key[i] = (char)tolower((unsigned char)(*e)[pl + i]);
                key[kl] = '\0';
                ssize_t i = find_key(c, key, kl);
                /* Another program's namespace (the controller skips GPUSLICE_AGENT_*)
                 * is not ours to refuse, but a key we know wins: the controller's
                 * agent_listen is GPUSLICE_AGENT_LISTEN. */
                if (i < 0 && c->env_ignore_prefix &&
                    strncmp(*e, c->env_ignore_prefix, strlen(c->env_ignore_prefix)) == 0)
                        continue;
                if (i < 0)
                        return fail(err, -ENOENT,
                                    "environment: unknown variable %.*s (no key \"%s\")",
                                    (int)(eq - *e), *e, key);
                int r = validate(&c->schema[i], eq + 1, source_name(CONFIG_SOURCE_ENV), err);
                if (r < 0)
                        return r;
                pending[i] = eq + 1;
        }
        for (size_t i = 0; i < c->n_keys; i++) {
                if (!pending[i])
                        continue;
                int r = set_index(c, i, pending[i], CONFIG_SOURCE_ENV, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Maps "--heartbeat-timeout-s" to the index of "heartbeat_timeout_s". */
static ssize_t find_flag(const Config *c, const char *name, size_t len)
{
        char key[128];
        if (len >= sizeof(key))
                return -1;
        for (size_t i = 0; i < len; i++)
                key[i] = name[i] == '-' ? '_' : name[i];
        key[len] = '\0';
        return find_key(c, key, len);
}

int config_load_all(Config *c, int argc, char **argv, int start, char *const *envp, int *ret_next,
                    char **err)
{
        const char *config_path = NULL;
        int i = start;
        int r;

        /* First pass: find the end of the options and the config file, and reject
         * unknown flags before anything is loaded. */
        for (; i < argc; i++) {
                const char *a = argv[i];
                if (streq(a, "--")) {
                        i++;
                        break;
                }
                if (!startswith(a, "--") || a[2] == '\0')
                        break;
                const char *name = a + 2, *eq = strchr(name, '=');
                size_t nl = eq ? (size_t)(eq - name) : strlen(name);
                if (nl == 6 && strncmp(name, "config", 6) == 0) {
                        if (eq)
                                config_path = eq + 1;
                        else if (i + 1 < argc)
                                config_path = argv[++i];
                        else
                                return fail(err, -EINVAL, "command line: --config needs a file");
                        continue;
                }
                ssize_t k = find_flag(c, name, nl);
                if (k < 0)
                        return fail(err, -ENOENT, "command line: unknown option --%.*s", (int)nl,
                                    name);
                if (!eq && c->schema[k].type != CONFIG_BOOL) {
                        if (i + 1 >= argc)
                                return fail(err, -EINVAL, "command line: --%.*s needs a value",
                                            (int)nl, name);
                        i++;
                }
        }
        int end = i;

        if (config_path) {
                r = config_load_file(c, config_path, err);
                if (r < 0)
                        return r;
        }
        r = config_load_env(c, envp, err);
        if (r < 0)
                return r;

        for (i = start; i < end; i++) {
                const char *a = argv[i];
                if (streq(a, "--"))
                        break;
                const char *name = a + 2, *eq = strchr(name, '=');
                size_t nl = eq ? (size_t)(eq - name) : strlen(name);
                if (nl == 6 && strncmp(name, "config", 6) == 0) {
                        if (!eq)
                                i++;
                        continue;
                }
                ssize_t k = find_flag(c, name, nl);
                const char *value;
                if (eq)
                        value = eq + 1;
                else if (c->schema[k].type == CONFIG_BOOL)
                        value = "true";
                else
                        value = argv[++i];
                r = set_index(c, (size_t)k, value, CONFIG_SOURCE_FLAG, err);
                if (r < 0)
                        return r;
        }
        if (ret_next)
                *ret_next = end;
        return 0;
}

const char *config_get(const Config *c, const char *key)
{
        ssize_t i = find_key(c, key, strlen(key));
        if (i < 0) {
                /* A programming error: the schema is static. */
                fprintf(stderr, "config: no key %s in schema\n", key);
                abort();
        }
        return c->values[i];
}

long long config_get_int(const Config *c, const char *key)
{
        const char *v = config_get(c, key);
        long long x = 0;
        if (v)
                (void)parse_int(v, &x);
        return x;
}

bool config_get_bool(const Config *c, const char *key)
{
        const char *v = config_get(c, key);
        bool b = false;
        if (v)
                (void)parse_bool(v, &b);
        return b;
}

ConfigSource config_source(const Config *c, const char *key)
{
        ssize_t i = find_key(c, key, strlen(key));
        return i < 0 ? CONFIG_SOURCE_DEFAULT : c->sources[i];
}

void config_print_help(const Config *c, FILE *f)
{
        for (size_t i = 0; i < c->n_keys; i++) {
                const ConfigKey *k = &c->schema[i];
                char flag[128];
                size_t n = strlen(k->key);
                if (n >= sizeof(flag))
                        n = sizeof(flag) - 1;
                for (size_t j = 0; j < n; j++)
                        flag[j] = k->key[j] == '_' ? '-' : k->key[j];
                flag[n] = '\0';
                fprintf(f, "  --%-28s %s%s%s%s\n", flag, k->help ? k->help : "",
                        k->default_value ? " (default: " : "",
                        k->default_value ? k->default_value : "", k->default_value ? ")" : "");
        }
}
