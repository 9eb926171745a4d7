/* SPDX-License-Identifier: MIT */
/* The controller process's life: graceful shutdown with a request in flight,
 * kill -9 in the middle of a burst of signups and a restart on the same state
 * dir, refusal of a newer schema, and configuration precedence and errors. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(lifecycle, .timeout = 180);

static size_t discard(char *p, size_t size, size_t n, void *u)
{
        (void)p;
        (void)u;
        return size * n;
}

static bool stderr_contains(Controller *c, const char *needle)
{
        _cleanup_free_ char *err = ctl_stderr(c);
        return err && strstr(err, needle);
}

/* Polls the captured stderr for a line, up to a deadline. */
static bool wait_for_log(Controller *c, const char *needle, long long timeout_ms)
{
        long long deadline = mono_ms() + timeout_ms;
        while (mono_ms() < deadline) {
                if (stderr_contains(c, needle))
                        return true;
                struct timespec ts = {0, 5 * 1000000L};
                nanosleep(&ts, NULL);
        }
        return stderr_contains(c, needle);
}

static void send_all(int fd, const char *s)
{
        size_t n = strlen(s);
        while (n > 0) {
                ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
                cr_assert_gt(k, 0, "send: %s", strerror(errno));
                s += k;
                n -= (size_t)k;
        }
}

Test(lifecycle, sigterm_lets_an_in_flight_signup_finish)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        /* a deliberately slow KDF (128 MiB, a good fraction of a second) keeps the
         * signup in flight while the signal arrives */
        ctl_args(c, "--password-scrypt-log-n", "17", "--log-level", "debug", NULL);
        ctl_start_or_fail(c);

        const char *body =
            "{\"email\":\"slow@example.com\",\"password\":\"password1\",\"name\":\"Slow\"}";
        char req[512];
        snprintf(req, sizeof(req),
                 "POST /api/v1/auth/personal/signup HTTP/1.1\r\nHost: test\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n%s",
                 strlen(body), body);
        int fd = tcp_connect(c);
        cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
        send_all(fd, req);

        /* Barrier: the loop reads sockets in the order their data arrived, so
         * once another connection's request has been answered, the signup has
         * been read and handed to the thread pool. */
        _cleanup_resp_ HttpResponse *h = api_get(c, "/api/v1/health", NULL);
        cr_assert_eq(h->status, 200);

        cr_assert_eq(kill(c->pid, SIGTERM), 0);
        cr_assert(wait_for_log(c, "shutting down", 30000), "no shutdown log line");
        cr_assert(stderr_contains(c, "in_flight=1"),
                  "the signup was not in flight when SIGTERM arrived; make the KDF slower");

        /* no new connections once shutting down */
        long long deadline = mono_ms() + 30000;
        int nfd;
        while ((nfd = tcp_connect(c)) >= 0 && mono_ms() < deadline)
                close(nfd);
        cr_assert_lt(nfd, 0, "still accepting connections after SIGTERM");

        /* the in-flight request completes */
        char reply[8192] = "";
        cr_assert_eq(tcp_read_until_closed(fd, reply, sizeof(reply), mono_ms() + 60000), 1,
                     "no complete reply");
        close(fd);
        cr_assert(startswith(reply, "HTTP/1.1 201"), "reply: %s", reply);
        cr_assert(strstr(reply, "access_token"), "reply: %s", reply);

        int status = ctl_wait_exit(c, 60000);
        cr_assert(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d",
                  status);
        cr_assert(stderr_contains(c, "msg=\"stopped\""));

        /* the account is on disk, and the database was closed cleanly */
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM users WHERE email='slow@example.com'"), 1);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM pragma_integrity_check "
                                  "WHERE integrity_check != 'ok'"),
                     0);
        _cleanup_free_ char *wal = NULL;
        cr_assert(asprintf(&wal, "%s/gpuslice.db-wal", c->state_dir) > 0);
        _cleanup_free_ char *wal_content = read_file(wal);
        cr_assert(!wal_content || wal_content[0] == '\0', "WAL not checkpointed at close");
}

/* The same over HTTP/2: the connection gets GOAWAY, the open stream still
 * gets its answer. */
Test(lifecycle, sigterm_lets_an_in_flight_http2_request_finish)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--password-scrypt-log-n", "17", NULL);
        ctl_start_or_fail(c);

        static const char body[] =
            "{\"email\":\"h2slow@example.com\",\"password\":\"password1\",\"name\":\"H2\"}";
        char url[300];
        snprintf(url, sizeof(url), "%s/api/v1/auth/personal/signup", c->url);
        struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        CURLM *multi = curl_multi_init();
        CURL *e = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 120000L);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
        curl_multi_add_handle(multi, e);

        /* drive the transfer until the whole body is on the wire */
        int running = 1;
        long long deadline = mono_ms() + 30000;
        curl_off_t sent = 0;
        while (running && sent < (curl_off_t)strlen(body) && mono_ms() < deadline) {
                curl_multi_perform(multi, &running);
                curl_easy_getinfo(e, CURLINFO_SIZE_UPLOAD_T, &sent);
                if (running && sent < (curl_off_t)strlen(body))
                        curl_multi_poll(multi, NULL, 0, 20, NULL);
        }
        cr_assert_eq(sent, (curl_off_t)strlen(body), "the body was not sent");
        _cleanup_resp_ HttpResponse *h = api_get(c, "/api/v1/health", NULL); /* barrier */
        cr_assert_eq(h->status, 200);

        cr_assert_eq(kill(c->pid, SIGTERM), 0);
        cr_assert(wait_for_log(c, "shutting down", 30000));
        cr_assert(stderr_contains(c, "in_flight=1"), "the request was not in flight");

        deadline = mono_ms() + 120000;
        while (running && mono_ms() < deadline) {
                curl_multi_perform(multi, &running);
                if (running)
                        curl_multi_poll(multi, NULL, 0, 100, NULL);
        }
        CURLMsg *m;
        int left;
        CURLcode result = CURLE_OK;
        while ((m = curl_multi_info_read(multi, &left)))
                if (m->msg == CURLMSG_DONE)
                        result = m->data.result;
        long status = 0, version = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
        curl_multi_remove_handle(multi, e);
        curl_easy_cleanup(e);
        curl_multi_cleanup(multi);
        curl_slist_free_all(hdrs);
        cr_assert_eq(result, CURLE_OK, "%s", curl_easy_strerror(result));
        cr_assert_eq(version, CURL_HTTP_VERSION_2_0);
        cr_assert_eq(status, 201);

        int st = ctl_wait_exit(c, 60000);
        cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM users"), 1);
}

/* A second signal (or the shutdown deadline) stops the loop while a password
 * is still hashing on the thread pool. The process must still exit cleanly:
 * nothing at exit may pull shared state (OpenSSL's) from under that thread. */
Test(lifecycle, second_signal_with_a_hash_in_flight_exits_cleanly)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--password-scrypt-log-n", "18", NULL);
        ctl_start_or_fail(c);

        const char *body =
            "{\"email\":\"cut@example.com\",\"password\":\"password1\",\"name\":\"Cut\"}";
        char req[512];
        snprintf(req, sizeof(req),
                 "POST /api/v1/auth/personal/signup HTTP/1.1\r\nHost: test\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(body), body);
        int fd = tcp_connect(c);
        cr_assert_geq(fd, 0);
        send_all(fd, req);
        _cleanup_resp_ HttpResponse *h = api_get(c, "/api/v1/health", NULL); /* barrier */
        cr_assert_eq(h->status, 200);

        cr_assert_eq(kill(c->pid, SIGTERM), 0);
        cr_assert(wait_for_log(c, "in_flight=1", 30000), "the signup was not in flight");
        cr_assert_eq(kill(c->pid, SIGTERM), 0);
        int status = ctl_wait_exit(c, 120000);
        _cleanup_free_ char *err = ctl_stderr(c);
        cr_assert(strstr(err, "second signal"), "%s", err);
        cr_assert(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "exit status %d; stderr:\n%s", status, err);
        close(fd);
}

Test(lifecycle, sigint_is_graceful_too)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_start_or_fail(c);
        cr_assert_eq(api_signup(c, "int@example.com", "password1", "I", NULL), 201);
        int status = ctl_stop(c, SIGINT, 30000);
        cr_assert(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d",
                  status);
        cr_assert(stderr_contains(c, "signal=INT"));
}

Test(lifecycle, sigterm_with_idle_keepalive_connections_exits_clean)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_start_or_fail(c);
        /* an HTTP/1.1 keep-alive connection left open after its response */
        int fd = tcp_connect(c);
        cr_assert_geq(fd, 0);
        send_all(fd, "GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n");
        char buf[4096] = "";
        cr_assert_eq(tcp_read_until_closed(fd, buf, sizeof(buf), mono_ms() + 300), 0,
                     "keep-alive connection closed early");
        cr_assert(startswith(buf, "HTTP/1.1 200"), "%s", buf);
        /* and one that never sent anything */
        int idle = tcp_connect(c);
        cr_assert_geq(idle, 0);
        /* and an HTTP/2 connection preface with nothing after it */
        int h2 = tcp_connect(c);
        cr_assert_geq(h2, 0);
        send_all(h2, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

        /* exit 0 means no ASan report and no leak at exit */
        ctl_stop_clean(c);
        close(fd);
        close(idle);
        close(h2);
}

/* kill -9 while signups are being answered: every signup the client saw
 * answered 201 must exist after a restart on the same state dir. */
#define BURST   60
#define KILL_AT 15

Test(lifecycle, kill9_during_a_signup_burst_loses_no_answered_signup)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_start_or_fail(c);

        CURLM *multi = curl_multi_init();
        CURL *easy[BURST];
        char bodies[BURST][160], urls[BURST][300];
        struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        bool answered[BURST] = {false};
        for (int i = 0; i < BURST; i++) {
                snprintf(bodies[i], sizeof(bodies[i]),
                         "{\"email\":\"burst%d@example.com\",\"password\":\"password-%d\","
                         "\"name\":\"Burst %d\"}",
                         i, i, i);
                snprintf(urls[i], sizeof(urls[i]), "%s/api/v1/auth/personal/signup", c->url);
                easy[i] = curl_easy_init();
                curl_easy_setopt(easy[i], CURLOPT_URL, urls[i]);
                curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, bodies[i]);
                curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, hdrs);
                curl_easy_setopt(easy[i], CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
                curl_easy_setopt(easy[i], CURLOPT_TIMEOUT_MS, 60000L);
                curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L);
                curl_easy_setopt(easy[i], CURLOPT_PRIVATE, (void *)(intptr_t)i);
                curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, discard);
                curl_multi_add_handle(multi, easy[i]);
        }

        int running = BURST, n_answered = 0, n_failed = 0, n_other = 0;
        bool killed = false;
        long long deadline = mono_ms() + 120000;
        while (running > 0 && mono_ms() < deadline) {
                curl_multi_perform(multi, &running);
                CURLMsg *m;
                int left;
                while ((m = curl_multi_info_read(multi, &left))) {
                        if (m->msg != CURLMSG_DONE)
                                continue;
                        void *priv = NULL;
                        long status = 0;
                        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
                        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
                        int i = (int)(intptr_t)priv;
                        if (m->data.result == CURLE_OK && status == 201) {
                                answered[i] = true;
                                n_answered++;
                        } else if (m->data.result == CURLE_OK)
                                n_other++;
                        else
                                n_failed++;
                }
                if (!killed && n_answered >= KILL_AT) {
                        kill(c->pid, SIGKILL);
                        killed = true;
                }
                if (running > 0)
                        curl_multi_poll(multi, NULL, 0, 100, NULL);
        }
        cr_assert_eq(running, 0, "the burst did not finish");
        cr_assert(killed, "fewer than %d signups were answered", KILL_AT);
        cr_assert_eq(n_other, 0, "a signup got neither 201 nor a dropped connection");
        cr_log_info("burst: %d answered 201, %d cut off by kill -9", n_answered, n_failed);
        for (int i = 0; i < BURST; i++) {
                curl_multi_remove_handle(multi, easy[i]);
                curl_easy_cleanup(easy[i]);
        }
        curl_multi_cleanup(multi);
        curl_slist_free_all(hdrs);
        ctl_kill9(c);
        cr_assert(WIFSIGNALED(c->wait_status) && WTERMSIG(c->wait_status) == SIGKILL);

        /* the controller restarts on the same state dir */
        ctl_start_or_fail(c);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM pragma_integrity_check "
                                  "WHERE integrity_check != 'ok'"),
                     0);
        long long users = db_scalar(c, "SELECT COUNT(*) FROM users");
        cr_assert_geq(users, n_answered);
        cr_assert_leq(users, BURST);
        for (int i = 0; i < BURST; i++) {
                if (!answered[i])
                        continue;
                char email[64], password[32], sql[160];
                snprintf(email, sizeof(email), "burst%d@example.com", i);
                snprintf(password, sizeof(password), "password-%d", i);
                snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM users WHERE email='%s'", email);
                cr_assert_eq(db_scalar(c, sql), 1, "%s was answered 201 but is gone", email);
                cr_assert_eq(api_login(c, email, password, NULL), 200, "%s cannot sign in", email);
        }
        /* and it keeps working */
        cr_assert_eq(api_signup(c, "after@example.com", "password1", "After", NULL), 201);
        ctl_stop_clean(c);
}

Test(lifecycle, newer_schema_refuses_to_start)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_start_or_fail(c);
        cr_assert_eq(api_signup(c, "keep@example.com", "password1", "K", NULL), 201);
        ctl_stop_clean(c);

        db_exec_rw(c, "PRAGMA user_version = 999");
        cr_assert_eq(ctl_start(c), -ECHILD, "started on a schema from the future");
        cr_assert_neq(cli_exit_code(c->wait_status), 0);
        cr_assert_neq(cli_exit_code(c->wait_status), -1, "crashed instead of refusing");
        cr_assert(stderr_contains(c, "newer than this binary"));
        /* and it left the database alone */
        cr_assert_eq(db_scalar(c, "PRAGMA user_version"), 999);
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM users"), 1);
}

/* max_body_bytes is visible from outside (413 details.max_bytes), which makes
 * it a good probe for which configuration source won. */
static long long effective_max_body(Controller *c)
{
        _cleanup_free_ char *big = malloc(70000);
        memset(big, ' ', 69999);
        big[0] = '{';
        big[69998] = '}';
        big[69999] = '\0';
        _cleanup_resp_ HttpResponse *r = api_post(c, "/api/v1/auth/personal/login", NULL, big);
        assert_error(r, 413, "payload_too_large");
        return json_integer_value(jget(r, "error.details.max_bytes"));
}

static char *config_file(Controller *c, const char *content)
{
        char *path = NULL;
        cr_assert(asprintf(&path, "%s/controller.conf", c->root) > 0);
        cr_assert_eq(write_file(path, content), 0);
        return path;
}

Test(lifecycle, config_precedence_file_env_flag)
{
        const char *file = "# test config\nmax_body_bytes = 2048\n\nlog_level = \"info\"\n";
        {
                _cleanup_ctl_ Controller *c = ctl_new();
                _cleanup_free_ char *conf = config_file(c, file);
                ctl_args(c, "--config", conf, NULL);
                ctl_start_or_fail(c);
                cr_assert_eq(effective_max_body(c), 2048, "file over default");
                ctl_stop_clean(c);
        }
        {
                _cleanup_ctl_ Controller *c = ctl_new();
                _cleanup_free_ char *conf = config_file(c, file);
                ctl_args(c, "--config", conf, NULL);
                ctl_env(c, "GPUSLICE_MAX_BODY_BYTES=4096");
                /* the agent's variables share the prefix and are not ours to refuse */
                ctl_env(c, "GPUSLICE_AGENT_CONTROLLER=https://example.com");
                ctl_start_or_fail(c);
                cr_assert_eq(effective_max_body(c), 4096, "environment over file");
                ctl_stop_clean(c);
        }
        {
                _cleanup_ctl_ Controller *c = ctl_new();
                _cleanup_free_ char *conf = config_file(c, file);
                /* the flag comes before --config on the command line and still wins */
                ctl_args(c, "--max-body-bytes", "8192", "--config", conf, NULL);
                ctl_env(c, "GPUSLICE_MAX_BODY_BYTES=4096");
                ctl_start_or_fail(c);
                cr_assert_eq(effective_max_body(c), 8192, "flag over environment");
                ctl_stop_clean(c);
        }
}

static void expect_exit2_naming(const char *const *argv, const char *const *env, const char *needle)
{
        CliResult res;
        int status = cli_run(argv, env, 60000, &res);
        cr_assert_eq(cli_exit_code(status), 2, "exit status %d (want 2); stderr: %s", status,
                     res.err);
        cr_assert(strstr(res.err, needle), "stderr does not name \"%s\": %s", needle, res.err);
        cli_result_done(&res);
}

Test(lifecycle, config_errors_exit_2_naming_the_key)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        _cleanup_free_ char *bad_file = NULL;
        cr_assert(asprintf(&bad_file, "%s/bad.conf", c->root) > 0);
        cr_assert_eq(write_file(bad_file, "max_body_bytes = 4096\nmax_bdy_bytes = 10\n"), 0);

        const char *file_argv[] = {"x",          "--listen", "127.0.0.1:0", "--state-dir",
                                   c->state_dir, "--config", bad_file,      NULL};
        expect_exit2_naming(file_argv, NULL, "max_bdy_bytes");

        const char *flag_argv[] = {"x",          "--listen",         "127.0.0.1:0", "--state-dir",
                                   c->state_dir, "--no-such-option", "1",           NULL};
        expect_exit2_naming(flag_argv, NULL, "no-such-option");

        const char *plain_argv[] = {"x",           "--listen",   "127.0.0.1:0",
                                    "--state-dir", c->state_dir, NULL};
        const char *bad_env[] = {"GPUSLICE_NO_SUCH_KEY=1", NULL};
        expect_exit2_naming(plain_argv, bad_env, "GPUSLICE_NO_SUCH_KEY");

        const char *bad_value[] = {"x",    "--state-dir", c->state_dir, "--max-body-bytes",
                                   "lots", NULL};
        expect_exit2_naming(bad_value, NULL, "max_body_bytes");
        const char *out_of_range[] = {"x",  "--state-dir", c->state_dir, "--max-body-bytes",
                                      "10", NULL};
        expect_exit2_naming(out_of_range, NULL, "max_body_bytes");
        const char *bad_level[] = {"x", "--state-dir", c->state_dir, "--log-level", "loud", NULL};
        expect_exit2_naming(bad_level, NULL, "log_level");
        const char *missing_file[] = {
            "x", "--state-dir", c->state_dir, "--config", "/nonexistent/gpuslice.conf", NULL};
        CliResult res;
        int status = cli_run(missing_file, NULL, 60000, &res);
        cr_assert_eq(cli_exit_code(status), 2, "missing config file: status %d, %s", status,
                     res.err);
        cli_result_done(&res);
        const char *stray[] = {"x", "--state-dir", c->state_dir, "positional", NULL};
        expect_exit2_naming(stray, NULL, "positional");
        const char *verb[] = {"x", "frobnicate", NULL};
        expect_exit2_naming(verb, NULL, "frobnicate");

        /* none of them got as far as creating a database */
        _cleanup_free_ char *db = NULL;
        cr_assert(asprintf(&db, "%s/gpuslice.db", c->state_dir) > 0);
        cr_assert_neq(access(db, F_OK), 0, "a refused start created %s", db);
}

Test(lifecycle, unusable_listen_address_fails_cleanly)
{
        _cleanup_ctl_ Controller *c = ctl_new();
        ctl_args(c, "--listen", "not-an-address", NULL);
        cr_assert_eq(ctl_start(c), -ECHILD);
        cr_assert_eq(cli_exit_code(c->wait_status), 1, "status %d", c->wait_status);
        cr_assert(stderr_contains(c, "listen"));
}
