/* SPDX-License-Identifier: MIT */
#pragma once

/* Configuration with one precedence rule, lowest first:
 *   built-in default < config file < environment (GPUSLICE_<KEY>) < command-line flag
 * Keys are snake_case; the flag is --key-with-dashes (or --key_with_underscores),
 * the environment variable the upper-case key behind the program's prefix.
 * Unknown keys in the file, the environment (under the prefix) and the flags
 * are rejected with the key named; values are type-checked when set. */

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
        CONFIG_STRING,
        CONFIG_INT,
        CONFIG_BOOL,
} ConfigType;

typedef enum {
        CONFIG_SOURCE_DEFAULT,
        CONFIG_SOURCE_FILE,
        CONFIG_SOURCE_ENV,
        CONFIG_SOURCE_FLAG,
} ConfigSource;

typedef struct ConfigKey {
        const char *key;
        ConfigType type;
        const char *default_value; /* NULL: unset */
        long long min, max;        /* CONFIG_INT bounds (both 0: unbounded) */
        const char *help;
} ConfigKey;

typedef struct Config Config;

int config_new(const ConfigKey *schema, size_t n_keys, const char *env_prefix,
               const char *env_ignore_prefix, Config **ret);
void config_free(Config *c);

/* Each returns 0 or -errno; on error *err (if given) holds a malloc'ed sentence
 * that names the key, file and line. A failed config_load_file() or
 * config_load_env() changes no value. */
int config_set(Config *c, const char *key, const char *value, ConfigSource src, char **err);
int config_load_file(Config *c, const char *path, char **err);
int config_load_env(Config *c, char *const *envp, char **err);

/* Parses argv[start..]: "--config FILE", "--key value", "--key=value" and bare
 * "--bool-key". Stops at the first positional argument or after "--"; *ret_next
 * is the index of the first argument it did not consume. Rejects unknown flags
 * before loading anything, then loads the file named by --config (none without
 * it), then envp, then the flags, so the precedence rule above holds whatever
 * the order on the command line. */
int config_load_all(Config *c, int argc, char **argv, int start, char *const *envp, int *ret_next,
                    char **err);

const char *config_get(const Config *c, const char *key);
long long config_get_int(const Config *c, const char *key);
bool config_get_bool(const Config *c, const char *key);
ConfigSource config_source(const Config *c, const char *key);

/* Prints every key with its type, default and help (for --help). */
void config_print_help(const Config *c, FILE *f);
