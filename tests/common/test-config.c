/* SPDX-License-Identifier: MIT */
/* Configuration: default < file < environment < flag, unknown keys named,
 * values type-checked, and a failed load changing nothing. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "macro.h"

static const ConfigKey schema[] = {
    {"listen", CONFIG_STRING, "127.0.0.1:8080", 0, 0, "address to listen on"},
    {"port", CONFIG_INT, "80", 1, 65535, "a bounded integer"},
    {"retries", CONFIG_INT, "3", 0, 0, "an unbounded integer"},
    {"verbose", CONFIG_BOOL, "false", 0, 0, "a switch"},
    {"state_dir", CONFIG_STRING, NULL, 0, 0, "unset by default"},
    {"heartbeat_timeout_s", CONFIG_INT, "30", 1, 3600, "a multi-word key"},
    {"agent_listen", CONFIG_STRING, NULL, 0, 0, "a key inside the ignored namespace"},
};

static Config *new_config(void)
{
        Config *c = NULL;
        cr_assert_eq(config_new(schema, ELEMENTSOF(schema), "GPUSLICE_", "GPUSLICE_AGENT_", &c), 0);
        cr_assert_not_null(c);
        return c;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Config *, config_free);

/* Writes content to a fresh temporary file; the caller unlinks and frees the path. */
static char *write_file(const char *content)
{
        char *path = strdup("/tmp/gpuslice-test-config-XXXXXX");
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        size_t n = strlen(content);
        cr_assert_eq(write(fd, content, n), (ssize_t)n);
        close(fd);
        return path;
}

static void unlink_freep(char **path)
{
        if (*path) {
                unlink(*path);
                free(*path);
        }
}
#define _cleanup_file_ _cleanup_(unlink_freep)

static void assert_contains(const char *s, const char *want)
{
        cr_assert_not_null(s, "no error message (wanted \"%s\")", want);
        cr_assert(strstr(s, want), "\"%s\" does not contain \"%s\"", s, want);
}

Test(config, defaults_apply_until_something_overrides_them, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        cr_assert_str_eq(config_get(c, "listen"), "127.0.0.1:8080");
        cr_assert_eq(config_get_int(c, "port"), 80);
        cr_assert_eq(config_get_bool(c, "verbose"), false);
        cr_assert_null(config_get(c, "state_dir"));
        cr_assert_eq(config_source(c, "port"), CONFIG_SOURCE_DEFAULT);
}

Test(config, precedence_is_default_file_env_flag, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_file_ char *path = write_file("listen = 10.0.0.1:1\n"
                                               "port = 1000\n"
                                               "retries = 5\n"
                                               "state_dir = /from/file\n");
        char *envp[] = {"GPUSLICE_PORT=2000", "GPUSLICE_RETRIES=6", "PATH=/usr/bin", NULL};
        char *argv[] = {"prog", "--config", path, "--retries", "7", NULL};
        _cleanup_free_ char *err = NULL;
        int next = -1;

        cr_assert_eq(config_load_all(c, 5, argv, 1, envp, &next, &err), 0, "%s", strempty(err));
        cr_assert_eq(next, 5);
        cr_assert_str_eq(config_get(c, "listen"), "10.0.0.1:1");
        cr_assert_eq(config_source(c, "listen"), CONFIG_SOURCE_FILE);
        cr_assert_eq(config_get_int(c, "port"), 2000);
        cr_assert_eq(config_source(c, "port"), CONFIG_SOURCE_ENV);
        cr_assert_eq(config_get_int(c, "retries"), 7);
        cr_assert_eq(config_source(c, "retries"), CONFIG_SOURCE_FLAG);
        cr_assert_str_eq(config_get(c, "state_dir"), "/from/file");
        cr_assert_eq(config_get_int(c, "heartbeat_timeout_s"), 30);
        cr_assert_eq(config_source(c, "heartbeat_timeout_s"), CONFIG_SOURCE_DEFAULT);
}

Test(config, config_flag_after_other_flags_still_loads_first, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_file_ char *path = write_file("retries = 5\nlisten = file:1\n");
        _cleanup_free_ char *with_eq = NULL;
        cr_assert_geq(asprintf(&with_eq, "--config=%s", path), 0);
        char *argv[] = {"prog", "--retries", "9", with_eq, NULL};
        _cleanup_free_ char *err = NULL;

        cr_assert_eq(config_load_all(c, 4, argv, 1, NULL, NULL, &err), 0, "%s", strempty(err));
        /* The flag wins although the file was named after it. */
        cr_assert_eq(config_get_int(c, "retries"), 9);
        cr_assert_str_eq(config_get(c, "listen"), "file:1");
}

Test(config, unknown_key_in_file_is_named_with_its_line, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_file_ char *path = write_file("listen = a:1\n# comment\nlisten_adress = b:2\n");
        _cleanup_free_ char *err = NULL;
        _cleanup_free_ char *want = NULL;
        cr_assert_geq(asprintf(&want, "config file %s:3: unknown key \"listen_adress\"", path), 0);

        cr_assert_eq(config_load_file(c, path, &err), -ENOENT);
        cr_assert_str_eq(err, want);
        /* The valid line before it did not take effect. */
        cr_assert_str_eq(config_get(c, "listen"), "127.0.0.1:8080");
        cr_assert_eq(config_source(c, "listen"), CONFIG_SOURCE_DEFAULT);
}

Test(config, unknown_environment_variable_is_named, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        char *envp[] = {"GPUSLICE_LISTEN=x:1", "GPUSLICE_LISTEN_PORT=9", NULL};
        _cleanup_free_ char *err = NULL;

        cr_assert_eq(config_load_env(c, envp, &err), -ENOENT);
        assert_contains(err, "GPUSLICE_LISTEN_PORT");
        assert_contains(err, "\"listen_port\"");
        /* All or nothing: the valid variable before it did not apply either. */
        cr_assert_str_eq(config_get(c, "listen"), "127.0.0.1:8080");
}

Test(config, environment_outside_the_prefix_is_ignored, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        char *envp[] = {"HOME=/root", "GPUSLICE_AGENT_TOKEN=abc", "XGPUSLICE_PORT=5",
                        "GPUSLICE_VERBOSE=yes", NULL};
        _cleanup_free_ char *err = NULL;

        cr_assert_eq(config_load_env(c, envp, &err), 0, "%s", strempty(err));
        cr_assert_eq(config_get_bool(c, "verbose"), true);
        cr_assert_eq(config_get_int(c, "port"), 80);
}

/* The controller's agent_listen is GPUSLICE_AGENT_LISTEN, inside the agent's
 * namespace that the controller otherwise skips: a key it knows is taken. */
Test(config, known_key_inside_the_ignored_namespace_is_read, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        char *envp[] = {"GPUSLICE_AGENT_LISTEN=127.0.0.1:7443", "GPUSLICE_AGENT_TOKEN=abc", NULL};
        _cleanup_free_ char *err = NULL;

        cr_assert_eq(config_load_env(c, envp, &err), 0, "%s", strempty(err));
        cr_assert_str_eq(config_get(c, "agent_listen"), "127.0.0.1:7443");
        cr_assert_eq(config_source(c, "agent_listen"), CONFIG_SOURCE_ENV);
}

Test(config, unknown_flag_is_named_and_nothing_is_loaded, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_file_ char *path = write_file("listen = file:1\n");
        char *argv[] = {"prog", "--config", path, "--port", "90", "--lisen", "x", NULL};
        char *envp[] = {"GPUSLICE_RETRIES=8", NULL};
        _cleanup_free_ char *err = NULL;

        cr_assert_eq(config_load_all(c, 7, argv, 1, envp, NULL, &err), -ENOENT);
        cr_assert_str_eq(err, "command line: unknown option --lisen");
        cr_assert_str_eq(config_get(c, "listen"), "127.0.0.1:8080");
        cr_assert_eq(config_get_int(c, "retries"), 3);
        cr_assert_eq(config_get_int(c, "port"), 80);
}

Test(config, type_errors_name_the_key_and_source, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_free_ char *err = NULL;

        _cleanup_file_ char *path = write_file("\nport = eighty\n");
        _cleanup_free_ char *want = NULL;
        cr_assert_geq(
            asprintf(&want, "config file %s:2: port expects an integer, got \"eighty\"", path), 0);
        cr_assert_eq(config_load_file(c, path, &err), -EINVAL);
        cr_assert_str_eq(err, want);

        char *envp[] = {"GPUSLICE_VERBOSE=maybe", NULL};
        cr_assert_eq(config_load_env(c, envp, &err), -EINVAL);
        cr_assert_str_eq(err, "environment: verbose expects true or false, got \"maybe\"");

        char *argv[] = {"prog", "--retries=3x", NULL};
        cr_assert_eq(config_load_all(c, 2, argv, 1, NULL, NULL, &err), -EINVAL);
        cr_assert_str_eq(err, "command line: retries expects an integer, got \"3x\"");

        static const char *const not_ints[] = {
            "", " 5", "5 ", "0x10", "1e3", "+", "99999999999999999999"};
        for (size_t i = 0; i < ELEMENTSOF(not_ints); i++)
                cr_assert_eq(config_set(c, "retries", not_ints[i], CONFIG_SOURCE_FLAG, &err),
                             -EINVAL, "\"%s\"", not_ints[i]);
        cr_assert_eq(config_get_int(c, "retries"), 3);
}

Test(config, integer_bounds_are_inclusive, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_free_ char *err = NULL;

        cr_assert_eq(config_set(c, "port", "0", CONFIG_SOURCE_FLAG, &err), -ERANGE);
        cr_assert_str_eq(err, "command line: port must be between 1 and 65535, got 0");
        cr_assert_eq(config_set(c, "port", "65536", CONFIG_SOURCE_ENV, &err), -ERANGE);
        cr_assert_str_eq(err, "environment: port must be between 1 and 65535, got 65536");
        cr_assert_eq(config_get_int(c, "port"), 80);

        cr_assert_eq(config_set(c, "port", "1", CONFIG_SOURCE_FLAG, &err), 0);
        cr_assert_eq(config_get_int(c, "port"), 1);
        cr_assert_eq(config_set(c, "port", "65535", CONFIG_SOURCE_FLAG, &err), 0);
        cr_assert_eq(config_get_int(c, "port"), 65535);
        /* min = max = 0 means unbounded. */
        cr_assert_eq(config_set(c, "retries", "-9000000000", CONFIG_SOURCE_FLAG, &err), 0);
        cr_assert_eq(config_get_int(c, "retries"), -9000000000LL);
}

Test(config, a_bad_line_leaves_every_value_untouched, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_free_ char *err = NULL;
        cr_assert_eq(config_set(c, "retries", "4", CONFIG_SOURCE_FLAG, &err), 0);

        static const char *const bad_files[] = {
            "listen = a:1\nretries = 9\nport = 99999\n",
            "listen = a:1\nretries = 9\njust some words\n",
            "listen = a:1\nretries = 9\nverbose = sometimes\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad_files); i++) {
                _cleanup_file_ char *path = write_file(bad_files[i]);
                cr_assert_lt(config_load_file(c, path, &err), 0, "file %zu", i);
                assert_contains(err, ":3:");
                cr_assert_str_eq(config_get(c, "listen"), "127.0.0.1:8080");
                cr_assert_eq(config_get_int(c, "retries"), 4);
                cr_assert_eq(config_source(c, "retries"), CONFIG_SOURCE_FLAG);
        }
}

Test(config, a_bad_environment_variable_leaves_every_value_untouched, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        char *envp[] = {"GPUSLICE_LISTEN=env:1", "GPUSLICE_PORT=0", NULL};
        _cleanup_free_ char *err = NULL;
        cr_assert_eq(config_load_env(c, envp, &err), -ERANGE);
        cr_assert_str_eq(config_get(c, "listen"), "127.0.0.1:8080");
}

Test(config, file_syntax, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_file_ char *path = write_file("# a comment\n"
                                               "; another\n"
                                               "\n"
                                               "   listen   =   \"  spaced:1  \"   \n"
                                               "verbose=on\n"
                                               "state_dir = /a=b\n"
                                               "port = 81\r\n"
                                               "port = 82\n");
        _cleanup_free_ char *err = NULL;
        cr_assert_eq(config_load_file(c, path, &err), 0, "%s", strempty(err));
        cr_assert_str_eq(config_get(c, "listen"), "  spaced:1  ");
        cr_assert_eq(config_get_bool(c, "verbose"), true);
        cr_assert_str_eq(config_get(c, "state_dir"), "/a=b");
        cr_assert_eq(config_get_int(c, "port"), 82, "the last assignment wins");
}

Test(config, nul_byte_in_file_is_refused, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_file_ char *path = strdup("/tmp/gpuslice-test-config-XXXXXX");
        int fd = mkstemp(path);
        cr_assert_eq(write(fd, "listen = a\0b\n", 13), 13);
        close(fd);
        _cleanup_free_ char *err = NULL;
        cr_assert_eq(config_load_file(c, path, &err), -EINVAL);
        assert_contains(err, ":1: NUL byte in line");
        cr_assert_str_eq(config_get(c, "listen"), "127.0.0.1:8080");
}

Test(config, missing_file_is_named, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_free_ char *err = NULL;
        cr_assert_eq(config_load_file(c, "/nonexistent/gpuslice.conf", &err), -ENOENT);
        cr_assert_str_eq(err, "config file /nonexistent/gpuslice.conf: No such file or directory");

        char *argv[] = {"prog", "--config", "/nonexistent/gpuslice.conf", NULL};
        cr_assert_eq(config_load_all(c, 3, argv, 1, NULL, NULL, &err), -ENOENT);
}

Test(config, flag_forms, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        char *argv[] = {
            "prog", "--listen=h:1", "--port", "443",   "--verbose", "--heartbeat-timeout-s",
            "15",   "--state_dir",  "/s",     "serve", "--port=1",  NULL};
        _cleanup_free_ char *err = NULL;
        int next = -1;

        cr_assert_eq(config_load_all(c, 11, argv, 1, NULL, &next, &err), 0, "%s", strempty(err));
        cr_assert_str_eq(config_get(c, "listen"), "h:1");
        cr_assert_eq(config_get_int(c, "port"), 443, "parsing stopped at \"serve\"");
        cr_assert_eq(config_get_bool(c, "verbose"), true);
        cr_assert_eq(config_get_int(c, "heartbeat_timeout_s"), 15);
        cr_assert_str_eq(config_get(c, "state_dir"), "/s");
        cr_assert_eq(next, 9);
}

Test(config, double_dash_ends_the_options, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        char *argv[] = {"prog", "--verbose=false", "--", "--port", "1", NULL};
        int next = -1;
        cr_assert_eq(config_load_all(c, 5, argv, 1, NULL, &next, NULL), 0);
        cr_assert_eq(next, 3);
        cr_assert_eq(config_get_int(c, "port"), 80);
        cr_assert_eq(config_source(c, "verbose"), CONFIG_SOURCE_FLAG);
        cr_assert_eq(config_get_bool(c, "verbose"), false);
}

Test(config, flags_missing_their_value, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_free_ char *err = NULL;
        char *argv1[] = {"prog", "--port", NULL};
        cr_assert_eq(config_load_all(c, 2, argv1, 1, NULL, NULL, &err), -EINVAL);
        cr_assert_str_eq(err, "command line: --port needs a value");
        char *argv2[] = {"prog", "--config", NULL};
        cr_assert_eq(config_load_all(c, 2, argv2, 1, NULL, NULL, &err), -EINVAL);
        cr_assert_str_eq(err, "command line: --config needs a file");
}

Test(config, config_set_rejects_unknown_keys, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        _cleanup_free_ char *err = NULL;
        cr_assert_eq(config_set(c, "nope", "1", CONFIG_SOURCE_FLAG, &err), -ENOENT);
        cr_assert_str_eq(err, "command line: unknown key \"nope\"");
}

Test(config, help_lists_flags_with_defaults, .timeout = 30)
{
        _cleanup_(config_freep) Config *c = new_config();
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        config_print_help(c, f);
        fclose(f);
        assert_contains(text, "--heartbeat-timeout-s");
        assert_contains(text, "a multi-word key (default: 30)");
        assert_contains(text, "--state-dir");
        cr_assert_null(strstr(text, "--state_dir"));
        free(text);
}
