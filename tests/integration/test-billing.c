/* SPDX-License-Identifier: MIT */
/* Billing against the real controller: adding funds through a fake Stripe
 * (tests/node/stripe-fake.mjs, speaking Stripe's wire format, its webhooks
 * signed by Stripe's own npm library, stripe.webhooks.generateTestHeaderString),
 * webhook chaos (duplicates, reordering, stale and future timestamps, wrong
 * secret, truncated bodies, unknown types, a webhook before the checkout call
 * returned), refunds inside and outside the window, admin credit, the
 * operator's lists, and metering of allocation rows written into a stopped
 * controller's database. After every scenario the ledger sums to zero. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define SK          "sk_test_51gpusliceFakeKey0123456789"
#define WHSEC       "whsec_5bR3nq0rUWzWJ2PAfq8rlhQFb2SgYq9p"
#define API_VERSION "2026-10-28.endive"
#define WEBHOOK     "/api/v1/billing/webhooks/stripe"

TestSuite(billing, .timeout = 240);

/* ---- the fake Stripe ---- */

static pid_t fake_pid;
static Controller fake; /* only .url: http_send talks to it like to a controller */

static void fake_stop(void)
{
        if (fake_pid <= 0)
                return;
        kill(fake_pid, SIGTERM);
        long long deadline = mono_ms() + 10000;
        int status;
        while (waitpid(fake_pid, &status, WNOHANG) == 0) {
                if (mono_ms() > deadline) {
                        kill(fake_pid, SIGKILL);
                        waitpid(fake_pid, &status, 0);
                        break;
                }
                poll(NULL, 0, 5);
        }
        fake_pid = 0;
}

static void fake_start(void)
{
        const char *src = getenv("GPUSLICE_TEST_SOURCE_ROOT");
        cr_assert(src, "GPUSLICE_TEST_SOURCE_ROOT is not set (meson sets it)");
        _cleanup_free_ char *script = xasprintf("%s/tests/node/stripe-fake.mjs", src);
        _cleanup_free_ char *module = xasprintf("%s/tests/node/node_modules/stripe", src);
        cr_assert(access(module, F_OK) == 0,
                  "npm stripe is missing: run (cd tests/node && npm ci)");
        int out[2];
        cr_assert(pipe2(out, O_CLOEXEC) == 0);
        pid_t parent = getpid();
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                dup2(out[1], STDOUT_FILENO);
                execlp("node", "node", script, "--port", "0", "--secret-key", SK, "--webhook-url",
                       "http://127.0.0.1:9/not-yet", "--webhook-secret", WHSEC, (char *)NULL);
                _exit(127);
        }
        close(out[1]);
        fake_pid = pid;
        atexit(fake_stop);
        char buf[256] = "";
        size_t len = 0;
        long long deadline = mono_ms() + 30000;
        while (!strchr(buf, '\n')) {
                long long left = deadline - mono_ms();
                cr_assert(left > 0, "the fake Stripe did not print READY: %s", buf);
                struct pollfd p = {.fd = out[0], .events = POLLIN};
                if (poll(&p, 1, (int)left) <= 0)
                        continue;
                ssize_t k = read(out[0], buf + len, sizeof(buf) - 1 - len);
                cr_assert(k > 0, "the fake Stripe exited before READY: %s", buf);
                len += (size_t)k;
                buf[len] = '\0';
        }
        close(out[0]);
        unsigned port = 0;
        cr_assert(sscanf(buf, "READY %u", &port) == 1, "%s", buf);
        snprintf(fake.url, sizeof(fake.url), "http://127.0.0.1:%u", port);
}

/* POSTs JSON to the fake's test control; body is stolen. */
static HttpResponse *fake_post(const char *path, json_t *body)
{
        _cleanup_free_ char *s = body ? json_dumps(body, JSON_COMPACT) : strdup("{}");
        json_decref(body);
        HttpResponse *r = api_post(&fake, path, NULL, s);
        cr_assert_eq(r->status, 200, "fake %s: %ld %s", path, r->status, r->body);
        return r;
}

/* The n-th last API request the fake received (0: the last). */
static json_t *fake_request(size_t back)
{
        _cleanup_resp_ HttpResponse *r = api_get(&fake, "/_test/requests", NULL);
        json_t *list = jget(r, "requests");
        size_t n = json_array_size(list);
        cr_assert(n > back, "the fake got %zu requests", n);
        return json_incref(json_array_get(list, n - 1 - back));
}

static long long delivered_status(const HttpResponse *r)
{
        return json_integer_value(jget(r, "status"));
}

static const char *delivered_outcome(const HttpResponse *r)
{
        return strempty(jstr(r, "body.outcome"));
}

/* ---- the controller ---- */

typedef struct World {
        Controller *c;
        Tokens user;
        char user_email[64];
        Tokens admin;
} World;

static void world_free(World *w)
{
        ctl_free(w->c);
}

static void create_admin(World *w, const char *email, const char *role, Tokens *t)
{
        const char *argv[] = {"gpuslice-controller",
                              "create-admin",
                              "--state-dir",
                              w->c->state_dir,
                              "--email",
                              email,
                              "--role",
                              role,
                              "--password-scrypt-log-n",
                              "10",
                              NULL};
        CliResult res;
        int status = cli_run(argv, NULL, 60000, &res);
        cr_assert_eq(cli_exit_code(status), 0, "create-admin: %d %s", status, res.err);
        char password[128];
        snprintf(password, sizeof(password), "%.*s", (int)strcspn(res.out, "\n"), res.out);
        cli_result_done(&res);
        cr_assert_eq(api_login(w->c, email, password, t), 200);
}

/* A controller (with the fake Stripe unless stripe is false), a user and an admin. */
static void world_start(World *w, bool stripe, const char *const *extra_env)
{
        *w = (World){0};
        w->c = ctl_new();
        ctl_env(w->c, "GPUSLICE_METERING_INTERVAL_S=1");
        if (stripe) {
                fake_start();
                _cleanup_free_ char *base = xasprintf("GPUSLICE_STRIPE_API_BASE=%s", fake.url);
                ctl_env(w->c, base);
                ctl_env(w->c, "GPUSLICE_STRIPE_SECRET_KEY=" SK);
                ctl_env(w->c, "GPUSLICE_STRIPE_WEBHOOK_SECRET=" WHSEC);
        }
        for (size_t i = 0; extra_env && extra_env[i]; i++)
                ctl_env(w->c, extra_env[i]);
        ctl_start_or_fail(w->c);
        if (stripe) {
                _cleanup_free_ char *hook = xasprintf("%s" WEBHOOK, w->c->url);
                _cleanup_resp_ HttpResponse *r =
                    fake_post("/_test/config", json_pack("{s:s}", "webhook_url", hook));
        }
        snprintf(w->user_email, sizeof(w->user_email), "payer@example.com");
        cr_assert_eq(api_signup(w->c, w->user_email, "password-payer", "Payer", &w->user), 201);
        create_admin(w, "admin@example.com", "admin", &w->admin);
}

/* Money is neither created nor destroyed: entries sum to zero, every
 * transaction balances, every cached balance equals its entries. */
static void assert_ledger_sound(const Controller *c)
{
        cr_assert_eq(db_scalar(c, "SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_entries"), 0,
                     "the ledger does not sum to zero");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM (SELECT txn_id FROM ledger_entries GROUP "
                                  "BY txn_id HAVING SUM(amount_micros) != 0)"),
                     0, "an unbalanced transaction");
        cr_assert_eq(db_scalar(c, "SELECT COUNT(*) FROM ledger_accounts a WHERE balance_micros != "
                                  "(SELECT COALESCE(SUM(amount_micros), 0) FROM ledger_entries e "
                                  "WHERE e.account_id = a.id)"),
                     0, "a cached balance differs from its entries");
}

static long long balance(const World *w)
{
        _cleanup_resp_ HttpResponse *r = api_get(w->c, "/api/v1/billing/balance", w->user.access);
        cr_assert_eq(r->status, 200, "%s", r->body);
        return json_integer_value(jget(r, "balance_micros"));
}

/* Starts a checkout of amount for the user; returns the payment session id
 * and (if cs) Stripe's session id. */
static void checkout(World *w, long long amount, char pay[64], char cs[96])
{
        _cleanup_free_ char *body = xasprintf("{\"amount_micros\":%lld}", amount);
        _cleanup_resp_ HttpResponse *r =
            api_post(w->c, "/api/v1/billing/checkout", w->user.access, body);
        cr_assert_eq(r->status, 200, "checkout: %ld %s", r->status, r->body);
        cr_assert(strncmp(strempty(jstr(r, "checkout_url")), "https://checkout.stripe.com/", 28) ==
                      0,
                  "%s", r->body);
        snprintf(pay, 64, "%s", strempty(jstr(r, "payment_session_id")));
        cr_assert(strncmp(pay, "pay_", 4) == 0, "%s", r->body);
        if (cs) {
                _cleanup_free_ char *q = xasprintf("SELECT provider_session_id FROM "
                                                   "payment_sessions WHERE id = '%s'",
                                                   pay);
                /* db_scalar reads integers: read the session from the list. */
                _cleanup_resp_ HttpResponse *l =
                    api_get(w->c, "/api/v1/billing/payments?limit=500", w->user.access);
                json_t *items = jget(l, "items");
                size_t i;
                json_t *it;
                cs[0] = '\0';
                json_array_foreach(items, i, it)
                {
                        if (strcmp(json_string_value(json_object_get(it, "id")), pay) == 0)
                                snprintf(cs, 96, "%s",
                                         strempty(json_string_value(
                                             json_object_get(it, "provider_session_id"))));
                }
                cr_assert(strncmp(cs, "cs_test_", 8) == 0, "no Stripe session for %s: %s", pay,
                          l->body);
        }
}

/* Completes the checkout at the fake; Stripe's webhook is delivered. */
static HttpResponse *complete(const char *cs)
{
        _cleanup_free_ char *path = xasprintf("/_test/sessions/%s/complete", cs);
        return fake_post(path, NULL);
}

static void paid(World *w, long long amount, char pay[64])
{
        char cs[96];
        checkout(w, amount, pay, cs);
        _cleanup_resp_ HttpResponse *d = complete(cs);
        cr_assert_eq(delivered_status(d), 200, "%s", d->body);
        cr_assert_str_eq(delivered_outcome(d), "credited", "%s", d->body);
}

static const char *payment_field(World *w, const char *pay, const char *field, char *buf,
                                 size_t size)
{
        _cleanup_resp_ HttpResponse *l =
            api_get(w->c, "/api/v1/billing/payments?limit=500", w->user.access);
        size_t i;
        json_t *it;
        buf[0] = '\0';
        json_array_foreach(jget(l, "items"), i, it)
        {
                if (strcmp(json_string_value(json_object_get(it, "id")), pay) == 0) {
                        json_t *v = json_object_get(it, field);
                        if (json_is_string(v))
                                snprintf(buf, size, "%s", json_string_value(v));
                        else if (json_is_integer(v))
                                snprintf(buf, size, "%lld", (long long)json_integer_value(v));
                }
        }
        return buf;
}

/* ---- adding funds ---- */

Test(billing, checkout_speaks_stripes_wire_format_and_the_webhook_credits_once)
{
        World w;
        world_start(&w, true, NULL);
        char pay[64], cs[96];
        checkout(&w, 25000000, pay, cs);

        /* What reached "Stripe": a form-encoded Checkout Session. */
        json_t *rq = fake_request(0);
        cr_assert_str_eq(json_string_value(json_object_get(rq, "path")), "/v1/checkout/sessions");
        cr_assert_str_eq(json_string_value(json_object_get(rq, "authorization")), "Bearer " SK);
        cr_assert_str_eq(json_string_value(json_object_get(rq, "stripe_version")), API_VERSION);
        cr_assert_str_eq(json_string_value(json_object_get(rq, "idempotency_key")), pay);
        cr_assert(strncmp(json_string_value(json_object_get(rq, "content_type")),
                          "application/x-www-form-urlencoded", 33) == 0);
        json_t *form = json_object_get(rq, "form");
        json_t *pd = json_object_get(
            json_object_get(json_object_get(json_object_get(form, "line_items"), "0"),
                            "price_data"),
            "unit_amount");
        cr_assert_str_eq(json_string_value(pd), "2500");
        cr_assert_str_eq(json_string_value(json_object_get(form, "client_reference_id")), pay);
        cr_assert_str_eq(json_string_value(json_object_get(form, "mode")), "payment");
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(form, "metadata"),
                                                           "payment_session_id")),
                         pay);
        cr_assert(strstr(json_string_value(json_object_get(rq, "body")),
                         "line_items[0][price_data][currency]=usd"),
                  "brackets stay literal in keys");
        json_decref(rq);

        /* Nothing is credited on the way out: only the webhook does that. */
        char buf[96];
        cr_assert_eq(balance(&w), 0);
        cr_assert_str_eq(payment_field(&w, pay, "state", buf, sizeof(buf)), "pending");

        _cleanup_resp_ HttpResponse *d = complete(cs);
        cr_assert_eq(delivered_status(d), 200, "%s", d->body);
        cr_assert_str_eq(delivered_outcome(d), "credited");
        cr_assert_eq(balance(&w), 25000000);
        cr_assert_str_eq(payment_field(&w, pay, "state", buf, sizeof(buf)), "completed");
        cr_assert_str_eq(payment_field(&w, pay, "payment_intent", buf, sizeof(buf))[0] ? "pi" : "",
                         "pi");
        {
                _cleanup_resp_ HttpResponse *me = api_get(w.c, "/api/v1/me", w.user.access);
                cr_assert_eq(json_integer_value(jget(me, "balance_micros")), 25000000);
                cr_assert(json_is_false(jget(me, "first_run")));
        }

        /* Stripe delivers at least once: the same event again changes nothing. */
        _cleanup_free_ char *again = json_dumps(jget(d, "event"), JSON_COMPACT);
        _cleanup_resp_ HttpResponse *d2 =
            fake_post("/_test/deliver", json_pack("{s:o}", "event", json_loads(again, 0, NULL)));
        cr_assert_eq(delivered_status(d2), 200);
        cr_assert_str_eq(delivered_outcome(d2), "duplicate");
        /* Another event about the same paid session: credited already. */
        _cleanup_resp_ HttpResponse *d3 = complete(cs);
        cr_assert_eq(delivered_status(d3), 200);
        cr_assert_str_eq(delivered_outcome(d3), "already_completed");
        cr_assert_eq(balance(&w), 25000000);
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM ledger_transactions WHERE kind = "
                                    "'payment'"),
                     1);
        cr_assert_eq(db_scalar(w.c, "SELECT balance_micros FROM ledger_accounts WHERE id = "
                                    "'platform:stripe_clearing'"),
                     -25000000);
        assert_ledger_sound(w.c);
        world_free(&w);
}

Test(billing, a_webhook_before_the_checkout_call_returned_still_credits)
{
        World w;
        world_start(&w, true, NULL);
        _cleanup_resp_ HttpResponse *cfg =
            fake_post("/_test/config", json_pack("{s:b}", "webhook_before_reply", 1));
        char pay[64], cs[96], buf[96];
        checkout(&w, 10000000, pay, cs);
        cr_assert_eq(balance(&w), 10000000);
        cr_assert_str_eq(payment_field(&w, pay, "state", buf, sizeof(buf)), "completed");
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM stripe_events WHERE outcome = "
                                    "'credited'"),
                     1);
        assert_ledger_sound(w.c);
        world_free(&w);
}

Test(billing, checkout_amounts_are_bounded_and_stripe_refusals_fail_the_session)
{
        World w;
        world_start(&w, true, NULL);
        const char *bad[] = {"{\"amount_micros\":4990000}", "{\"amount_micros\":10000000010000}",
                             "{\"amount_micros\":5000001}", "{\"amount_micros\":\"5\"}",
                             "{\"amount\":5000000}"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_resp_ HttpResponse *r =
                    api_post(w.c, "/api/v1/billing/checkout", w.user.access, bad[i]);
                assert_error(r, 400, "invalid_request");
        }
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM payment_sessions"), 0);

        _cleanup_resp_ HttpResponse *cfg = fake_post(
            "/_test/config", json_pack("{s:{s:i, s:s, s:s}}", "fail_next", "status", 400, "type",
                                       "invalid_request_error", "code", "amount_too_small"));
        _cleanup_resp_ HttpResponse *r =
            api_post(w.c, "/api/v1/billing/checkout", w.user.access, "{\"amount_micros\":5000000}");
        assert_error(r, 503, "unavailable");
        cr_assert_str_eq(strempty(jstr(r, "error.details.provider_error")), "amount_too_small");
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM payment_sessions WHERE state = "
                                    "'failed' AND failure_reason = "
                                    "'provider_error:amount_too_small'"),
                     1);
        cr_assert_eq(balance(&w), 0);
        assert_ledger_sound(w.c);
        world_free(&w);
}

/* ---- webhook chaos ---- */

static HttpResponse *deliver_session_event(const char *type, const char *cs_json, json_t *opts)
{
        json_t *body = opts ? opts : json_object();
        json_object_set_new(body, "type", json_string(type));
        json_object_set_new(body, "object", json_loads(cs_json, 0, NULL));
        return fake_post("/_test/deliver", body);
}

/* A paid checkout.session object for pay (as Stripe would send it). */
static char *paid_session_json(const char *pay, long long cents)
{
        return xasprintf("{\"id\":\"cs_test_chaos%s\",\"object\":\"checkout.session\","
                         "\"amount_total\":%lld,\"currency\":\"usd\",\"client_reference_id\":"
                         "\"%s\",\"metadata\":{\"payment_session_id\":\"%s\"},\"payment_status\":"
                         "\"paid\",\"status\":\"complete\",\"payment_intent\":\"pi_chaos%s\"}",
                         pay + 4, cents, pay, pay, pay + 4);
}

static void assert_refused(HttpResponse *d, const char *reason)
{
        cr_assert_eq(delivered_status(d), 400, "%s", d->body);
        cr_assert_str_eq(strempty(jstr(d, "body.error.code")), "invalid_request", "%s", d->body);
        if (reason)
                cr_assert_str_eq(strempty(jstr(d, "body.error.details.reason")), reason, "%s",
                                 d->body);
}

Test(billing, bad_signatures_are_refused_and_touch_nothing)
{
        World w;
        world_start(&w, true, NULL);
        char pay[64];
        checkout(&w, 20000000, pay, NULL);
        _cleanup_free_ char *cs = paid_session_json(pay, 2000);
        long long now = (long long)time(NULL);

        HttpResponse *d;
        d = deliver_session_event("checkout.session.completed", cs,
                                  json_pack("{s:s}", "secret", "whsec_not_the_endpoints"));
        assert_refused(d, "no_matching_signature");
        http_response_free(d);
        d = deliver_session_event("checkout.session.completed", cs,
                                  json_pack("{s:I}", "timestamp", (json_int_t)(now - 400)));
        assert_refused(d, "timestamp_outside_tolerance");
        http_response_free(d);
        d = deliver_session_event("checkout.session.completed", cs,
                                  json_pack("{s:I}", "timestamp", (json_int_t)(now + 400)));
        assert_refused(d, "timestamp_outside_tolerance");
        http_response_free(d);
        d = deliver_session_event("checkout.session.completed", cs,
                                  json_pack("{s:i}", "truncate", 7));
        assert_refused(d, "no_matching_signature");
        http_response_free(d);
        d = deliver_session_event("checkout.session.completed", cs,
                                  json_pack("{s:s}", "header", "t=abc"));
        assert_refused(d, "malformed_header");
        http_response_free(d);
        d = deliver_session_event("checkout.session.completed", cs,
                                  json_pack("{s:s}", "header", ""));
        assert_refused(d, "malformed_header");
        http_response_free(d);
        /* Correctly signed, but not an event. */
        d = fake_post("/_test/deliver", json_pack("{s:s, s:s}", "type", "x", "raw", "{\"a\":1}"));
        assert_refused(d, NULL);
        http_response_free(d);
        d = fake_post("/_test/deliver", json_pack("{s:s, s:s}", "type", "x", "raw", "[1,2"));
        assert_refused(d, NULL);
        http_response_free(d);

        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM stripe_events"), 0);
        cr_assert_eq(balance(&w), 0);
        assert_ledger_sound(w.c);

        /* Within the tolerance, and the same body signed properly: credited. */
        d = deliver_session_event("checkout.session.completed", cs,
                                  json_pack("{s:I}", "timestamp", (json_int_t)(now - 200)));
        cr_assert_eq(delivered_status(d), 200, "%s", d->body);
        cr_assert_str_eq(delivered_outcome(d), "credited");
        http_response_free(d);
        cr_assert_eq(balance(&w), 20000000);
        assert_ledger_sound(w.c);

        /* An event type we do not use: acknowledged, recorded, nothing else. */
        d = fake_post("/_test/deliver", json_pack("{s:s, s:{s:s, s:s}}", "type", "customer.created",
                                                  "object", "id", "cus_123", "object", "customer"));
        cr_assert_eq(delivered_status(d), 200);
        cr_assert_str_eq(delivered_outcome(d), "ignored");
        http_response_free(d);
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM stripe_events"), 2);
        cr_assert_eq(balance(&w), 20000000);
        assert_ledger_sound(w.c);
        world_free(&w);
}

Test(billing, events_out_of_order_settle_to_the_truth)
{
        World w;
        world_start(&w, true, NULL);
        char pay1[64], pay2[64], pay3[64], cs1[96], cs2[96], cs3[96], buf[96];
        HttpResponse *d;

        /* expired after completed: stays completed. */
        checkout(&w, 5000000, pay1, cs1);
        d = complete(cs1);
        cr_assert_str_eq(delivered_outcome(d), "credited");
        http_response_free(d);
        _cleanup_free_ char *p1 = xasprintf("/_test/sessions/%s/expire", cs1);
        d = fake_post(p1, NULL);
        cr_assert_eq(delivered_status(d), 200);
        cr_assert_str_eq(delivered_outcome(d), "ignored_state");
        http_response_free(d);
        cr_assert_str_eq(payment_field(&w, pay1, "state", buf, sizeof(buf)), "completed");

        /* A paid completion after an expiry (delivered out of order): the
         * money was taken, so it is credited. */
        checkout(&w, 6000000, pay2, cs2);
        _cleanup_free_ char *p2 = xasprintf("/_test/sessions/%s/expire", cs2);
        d = fake_post(p2, NULL);
        cr_assert_str_eq(delivered_outcome(d), "expired");
        http_response_free(d);
        cr_assert_str_eq(payment_field(&w, pay2, "state", buf, sizeof(buf)), "expired");
        d = complete(cs2);
        cr_assert_str_eq(delivered_outcome(d), "credited");
        http_response_free(d);
        cr_assert_str_eq(payment_field(&w, pay2, "state", buf, sizeof(buf)), "completed");

        /* Async payment failed: the session fails, nothing credited. */
        checkout(&w, 7000000, pay3, cs3);
        _cleanup_free_ char *p3 = xasprintf("/_test/sessions/%s/async_failed", cs3);
        d = fake_post(p3, NULL);
        cr_assert_str_eq(delivered_outcome(d), "failed");
        http_response_free(d);
        cr_assert_str_eq(payment_field(&w, pay3, "failure_reason", buf, sizeof(buf)),
                         "async_payment_failed");
        cr_assert_eq(balance(&w), 11000000);
        assert_ledger_sound(w.c);
        world_free(&w);
}

Test(billing, a_refund_reported_before_its_payment_waits_for_it)
{
        World w;
        world_start(&w, true, NULL);
        char pay[64], cs[96];
        checkout(&w, 30000000, pay, cs);

        /* The customer paid (at Stripe), but the completion event is late. */
        _cleanup_free_ char *cs_json = NULL;
        {
                _cleanup_free_ char *path = xasprintf("/_test/sessions/%s/complete", cs);
                /* Complete at the fake, but deliver with a wrong secret: the
                 * controller refuses it, so the event is "not delivered yet". */
                _cleanup_resp_ HttpResponse *d =
                    fake_post(path, json_pack("{s:s}", "secret", "whsec_lost"));
                cr_assert_eq(delivered_status(d), 400);
                cs_json = json_dumps(jget(d, "session"), JSON_COMPACT);
        }
        const char *pi_start = strstr(cs_json, "\"payment_intent\":\"") + 18;
        char pi[64];
        snprintf(pi, sizeof(pi), "%.*s", (int)strcspn(pi_start, "\""), pi_start);

        /* A dashboard refund of 5 USD: charge.refunded arrives first. */
        _cleanup_resp_ HttpResponse *ext = fake_post(
            "/_test/refund_external", json_pack("{s:s, s:i}", "payment_intent", pi, "amount", 500));
        cr_assert_eq(delivered_status(ext), 503, "%s", ext->body);
        cr_assert_eq(balance(&w), 0);

        /* Then the completion, then Stripe's retry of the refund event. */
        HttpResponse *d = deliver_session_event("checkout.session.completed", cs_json, NULL);
        cr_assert_str_eq(delivered_outcome(d), "credited");
        http_response_free(d);
        _cleanup_free_ char *retry = json_dumps(jget(ext, "event"), JSON_COMPACT);
        d = fake_post("/_test/deliver", json_pack("{s:o}", "event", json_loads(retry, 0, NULL)));
        cr_assert_eq(delivered_status(d), 200, "%s", d->body);
        cr_assert_str_eq(delivered_outcome(d), "external_refund_recorded");
        http_response_free(d);
        cr_assert_eq(balance(&w), 25000000);
        d = fake_post("/_test/deliver", json_pack("{s:o}", "event", json_loads(retry, 0, NULL)));
        cr_assert_str_eq(delivered_outcome(d), "duplicate");
        http_response_free(d);
        cr_assert_eq(balance(&w), 25000000);

        _cleanup_resp_ HttpResponse *l = api_get(w.c, "/api/v1/billing/refunds", w.user.access);
        cr_assert_eq(json_array_size(jget(l, "items")), 1);
        cr_assert_str_eq(strempty(jstr(l, "items.0.reason")), "refunded_at_stripe");
        assert_ledger_sound(w.c);
        world_free(&w);
}

/* ---- refunds ---- */

static HttpResponse *refund(World *w, const char *pay, long long amount)
{
        _cleanup_free_ char *body = xasprintf(
            "{\"payment_id\":\"%s\",\"amount_micros\":%lld,\"reason\":\"did not need it\"}", pay,
            amount);
        return api_post(w->c, "/api/v1/billing/refunds", w->user.access, body);
}

Test(billing, a_recent_payment_is_refunded_through_stripe)
{
        World w;
        world_start(&w, true, NULL);
        char pay[64];
        paid(&w, 25000000, pay);

        _cleanup_resp_ HttpResponse *r = refund(&w, pay, 10000000);
        cr_assert_eq(r->status, 201, "%s", r->body);
        cr_assert_str_eq(strempty(jstr(r, "kind")), "provider_refund");
        cr_assert_str_eq(strempty(jstr(r, "state")), "succeeded");
        cr_assert(strncmp(strempty(jstr(r, "refund_id")), "ref_", 4) == 0);
        cr_assert(strncmp(strempty(jstr(r, "provider_refund_id")), "re_", 3) == 0);
        cr_assert_eq(balance(&w), 15000000);

        json_t *rq = fake_request(0);
        cr_assert_str_eq(json_string_value(json_object_get(rq, "path")), "/v1/refunds");
        cr_assert_str_eq(json_string_value(json_object_get(rq, "idempotency_key")),
                         jstr(r, "refund_id"));
        json_t *form = json_object_get(rq, "form");
        cr_assert_str_eq(json_string_value(json_object_get(form, "amount")), "1000");
        cr_assert(strncmp(json_string_value(json_object_get(form, "payment_intent")), "pi_", 3) ==
                  0);
        json_decref(rq);

        /* More than is left unspent: refused with what is refundable. */
        _cleanup_resp_ HttpResponse *over = refund(&w, pay, 20000000);
        assert_error(over, 409, "insufficient_balance");
        cr_assert_eq(json_integer_value(jget(over, "error.details.refundable_micros")), 15000000);
        _cleanup_resp_ HttpResponse *bad = refund(&w, pay, 10000001);
        assert_invalid_field(bad, "amount_micros");

        /* Stripe refuses the next one: failed, and the debit is reversed. */
        _cleanup_resp_ HttpResponse *cfg = fake_post(
            "/_test/config", json_pack("{s:{s:i, s:s, s:s}}", "fail_next", "status", 400, "type",
                                       "invalid_request_error", "code", "charge_disputed"));
        _cleanup_resp_ HttpResponse *f = refund(&w, pay, 5000000);
        cr_assert_eq(f->status, 201, "%s", f->body);
        cr_assert_str_eq(strempty(jstr(f, "state")), "failed");
        cr_assert_str_eq(strempty(jstr(f, "failure_reason")), "provider_error:charge_disputed");
        cr_assert_eq(balance(&w), 15000000);

        /* A refund Stripe reports pending settles by webhook. */
        _cleanup_resp_ HttpResponse *cfg2 =
            fake_post("/_test/config", json_pack("{s:s}", "refund_status", "pending"));
        _cleanup_resp_ HttpResponse *p = refund(&w, pay, 1000000);
        cr_assert_str_eq(strempty(jstr(p, "state")), "pending");
        cr_assert_eq(balance(&w), 14000000);
        _cleanup_free_ char *re_obj = xasprintf(
            "{\"id\":\"%s\",\"object\":\"refund\",\"amount\":100,\"status\":\"failed\","
            "\"failure_reason\":\"expired_or_canceled_card\",\"metadata\":{\"refund_id\":\"%s\"}}",
            jstr(p, "provider_refund_id"), jstr(p, "refund_id"));
        HttpResponse *d =
            fake_post("/_test/deliver", json_pack("{s:s, s:o}", "type", "refund.failed", "object",
                                                  json_loads(re_obj, 0, NULL)));
        cr_assert_str_eq(delivered_outcome(d), "refund_updated", "%s", d->body);
        http_response_free(d);
        cr_assert_eq(balance(&w), 15000000, "a failed refund gives the money back, once");
        d = fake_post("/_test/deliver", json_pack("{s:s, s:o}", "type", "refund.failed", "object",
                                                  json_loads(re_obj, 0, NULL)));
        http_response_free(d);
        cr_assert_eq(balance(&w), 15000000);

        _cleanup_resp_ HttpResponse *l = api_get(w.c, "/api/v1/billing/refunds", w.user.access);
        cr_assert_eq(json_array_size(jget(l, "items")), 3);
        _cleanup_resp_ HttpResponse *audit = api_get(
            w.c, "/api/v1/admin/audit-logs?action=billing.refund_requested&target_type=refund",
            w.admin.access);
        cr_assert_eq(json_array_size(jget(audit, "items")), 3, "%s", audit->body);
        _cleanup_resp_ HttpResponse *audit2 =
            api_get(w.c, "/api/v1/admin/audit-logs?action=billing.refund_failed", w.admin.access);
        cr_assert_eq(json_array_size(jget(audit2, "items")), 2, "%s", audit2->body);
        assert_ledger_sound(w.c);
        world_free(&w);
}

Test(billing, an_old_payment_is_refunded_as_account_credit)
{
        World w;
        world_start(&w, true, NULL);
        char pay[64];
        paid(&w, 20000000, pay);
        size_t requests_before;
        {
                _cleanup_resp_ HttpResponse *rq = api_get(&fake, "/_test/requests", NULL);
                requests_before = json_array_size(jget(rq, "requests"));
        }
        /* Completed 31 days ago: outside the default 30-day window. */
        _cleanup_free_ char *sql = xasprintf(
            "UPDATE payment_sessions SET completed_at = completed_at - 31 * 86400000000 WHERE "
            "id = '%s'",
            pay);
        db_exec_rw(w.c, sql);
        _cleanup_resp_ HttpResponse *r = refund(&w, pay, 8000000);
        cr_assert_eq(r->status, 201, "%s", r->body);
        cr_assert_str_eq(strempty(jstr(r, "kind")), "internal_credit");
        cr_assert_str_eq(strempty(jstr(r, "state")), "succeeded");
        cr_assert_eq(balance(&w), 20000000, "the money stays, as account credit");
        {
                _cleanup_resp_ HttpResponse *rq = api_get(&fake, "/_test/requests", NULL);
                cr_assert_eq(json_array_size(jget(rq, "requests")), requests_before,
                             "Stripe is not asked");
        }
        char buf[32];
        cr_assert_str_eq(payment_field(&w, pay, "refundable_micros", buf, sizeof(buf)), "12000000");
        _cleanup_resp_ HttpResponse *over = refund(&w, pay, 13000000);
        assert_error(over, 409, "insufficient_balance");
        _cleanup_resp_ HttpResponse *audit =
            api_get(w.c, "/api/v1/admin/audit-logs?action=billing.refund_credited", w.admin.access);
        cr_assert_eq(json_array_size(jget(audit, "items")), 1);
        assert_ledger_sound(w.c);
        world_free(&w);
}

Test(billing, refunds_of_other_users_payments_do_not_exist)
{
        World w;
        world_start(&w, true, NULL);
        char pay[64];
        paid(&w, 5000000, pay);
        Tokens other;
        cr_assert_eq(api_signup(w.c, "other@example.com", "password-other", "Other", &other), 201);
        _cleanup_free_ char *body =
            xasprintf("{\"payment_id\":\"%s\",\"amount_micros\":10000,\"reason\":\"mine\"}", pay);
        _cleanup_resp_ HttpResponse *r =
            api_post(w.c, "/api/v1/billing/refunds", other.access, body);
        assert_error(r, 404, "not_found");
        _cleanup_resp_ HttpResponse *l = api_get(w.c, "/api/v1/billing/payments", other.access);
        cr_assert_eq(json_array_size(jget(l, "items")), 0);
        assert_ledger_sound(w.c);
        world_free(&w);
}

/* ---- without Stripe: admin credit ---- */

Test(billing, without_stripe_keys_checkout_is_unavailable_and_admins_grant_credit)
{
        World w;
        world_start(&w, false, NULL);
        {
                _cleanup_resp_ HttpResponse *me = api_get(w.c, "/api/v1/me", w.user.access);
                cr_assert(json_is_true(jget(me, "first_run")));
                cr_assert_str_eq(strempty(jstr(me, "next")), "/billing");
        }
        _cleanup_resp_ HttpResponse *r =
            api_post(w.c, "/api/v1/billing/checkout", w.user.access, "{\"amount_micros\":5000000}");
        assert_error(r, 503, "payments_not_configured");
        _cleanup_resp_ HttpResponse *h = api_post(w.c, WEBHOOK, NULL, "{}");
        assert_error(h, 503, "payments_not_configured");

        _cleanup_free_ char *path = xasprintf("/api/v1/admin/users/%s/credits", w.user.user_id);
        const char *bad[] = {"{\"amount_micros\":0,\"reason\":\"x\"}",
                             "{\"amount_micros\":-5,\"reason\":\"x\"}", "{\"amount_micros\":5}",
                             "{\"amount_micros\":5,\"reason\":\"\"}",
                             "{\"amount_micros\":5,\"reason\":\"x\",\"extra\":1}"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_resp_ HttpResponse *b = api_post(w.c, path, w.admin.access, bad[i]);
                assert_error(b, 400, "invalid_request");
        }
        _cleanup_resp_ HttpResponse *nf =
            api_post(w.c, "/api/v1/admin/users/usr_AAAAAAAAAAAAAAAAAAAAAA/credits", w.admin.access,
                     "{\"amount_micros\":5,\"reason\":\"x\"}");
        assert_error(nf, 404, "not_found");
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM ledger_entries"), 0);
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM audit_logs WHERE action = "
                                    "'billing.credit_granted'"),
                     0);

        _cleanup_resp_ HttpResponse *g = api_post(
            w.c, path, w.admin.access, "{\"amount_micros\":50000000,\"reason\":\"trial credit\"}");
        cr_assert_eq(g->status, 201, "%s", g->body);
        cr_assert_eq(json_integer_value(jget(g, "balance_micros")), 50000000);
        cr_assert_eq(balance(&w), 50000000);
        {
                _cleanup_resp_ HttpResponse *me = api_get(w.c, "/api/v1/me", w.user.access);
                cr_assert(json_is_false(jget(me, "first_run")));
                cr_assert_eq(json_integer_value(jget(me, "balance_micros")), 50000000);
        }
        _cleanup_free_ char *q = xasprintf(
            "/api/v1/admin/audit-logs?action=billing.credit_granted&target=%s&actor_id=%s",
            w.user.user_id, w.admin.user_id);
        _cleanup_resp_ HttpResponse *a = api_get(w.c, q, w.admin.access);
        cr_assert_eq(json_array_size(jget(a, "items")), 1, "%s", a->body);
        cr_assert_str_eq(strempty(jstr(a, "items.0.reason")), "trial credit");
        /* Time filters: nothing before 2000, nothing from next year on. */
        _cleanup_resp_ HttpResponse *a2 = api_get(
            w.c, "/api/v1/admin/audit-logs?action=billing.credit_granted&to=2000-01-01T00:00:00Z",
            w.admin.access);
        cr_assert_eq(json_array_size(jget(a2, "items")), 0);
        _cleanup_resp_ HttpResponse *a3 =
            api_get(w.c, "/api/v1/admin/audit-logs?from=nonsense", w.admin.access);
        assert_invalid_field(a3, "from");

        /* A user cannot grant themselves credit. */
        _cleanup_resp_ HttpResponse *self =
            api_post(w.c, path, w.user.access, "{\"amount_micros\":5,\"reason\":\"x\"}");
        assert_error(self, 403, "forbidden");
        assert_ledger_sound(w.c);
        world_free(&w);
}

/* ---- the operator's lists ---- */

Test(billing, billing_operators_list_users_and_payment_sessions_but_not_nodes)
{
        World w;
        world_start(&w, true, NULL);
        Tokens op;
        create_admin(&w, "ops@example.com", "billing_operator", &op);
        char pay1[64], pay2[64];
        paid(&w, 5000000, pay1);
        checkout(&w, 6000000, pay2, NULL);

        _cleanup_resp_ HttpResponse *all =
            api_get(w.c, "/api/v1/admin/payment-sessions?limit=1", op.access);
        cr_assert_eq(all->status, 200, "%s", all->body);
        cr_assert_eq(json_array_size(jget(all, "items")), 1);
        cr_assert_str_eq(strempty(jstr(all, "items.0.id")), pay1);
        const char *next = jstr(all, "next_cursor");
        cr_assert(next);
        _cleanup_free_ char *p2 =
            xasprintf("/api/v1/admin/payment-sessions?limit=1&cursor=%s", next);
        _cleanup_resp_ HttpResponse *page2 = api_get(w.c, p2, op.access);
        cr_assert_str_eq(strempty(jstr(page2, "items.0.id")), pay2);
        _cleanup_resp_ HttpResponse *done =
            api_get(w.c, "/api/v1/admin/payment-sessions?state=completed", op.access);
        cr_assert_eq(json_array_size(jget(done, "items")), 1);
        _cleanup_free_ char *pu =
            xasprintf("/api/v1/admin/payment-sessions?user_id=%s", w.admin.user_id);
        _cleanup_resp_ HttpResponse *none = api_get(w.c, pu, op.access);
        cr_assert_eq(json_array_size(jget(none, "items")), 0);
        _cleanup_resp_ HttpResponse *badstate =
            api_get(w.c, "/api/v1/admin/payment-sessions?state=paid", op.access);
        assert_invalid_field(badstate, "state");

        _cleanup_resp_ HttpResponse *users = api_get(w.c, "/api/v1/admin/users?q=PAYER", op.access);
        cr_assert_eq(users->status, 200);
        cr_assert_eq(json_array_size(jget(users, "items")), 1, "%s", users->body);
        cr_assert_eq(json_integer_value(jget(users, "items.0.balance_micros")), 5000000);
        _cleanup_resp_ HttpResponse *ops =
            api_get(w.c, "/api/v1/admin/users?role=billing_operator", op.access);
        cr_assert_eq(json_array_size(jget(ops, "items")), 1);
        _cleanup_resp_ HttpResponse *like =
            api_get(w.c, "/api/v1/admin/users?q=%25", op.access); /* a literal % */
        cr_assert_eq(json_array_size(jget(like, "items")), 0);
        _cleanup_resp_ HttpResponse *page = api_get(w.c, "/api/v1/admin/users?limit=2", op.access);
        cr_assert_eq(json_array_size(jget(page, "items")), 2);
        cr_assert(jstr(page, "next_cursor"));

        _cleanup_resp_ HttpResponse *nodes = api_get(w.c, "/api/v1/admin/nodes", op.access);
        assert_error(nodes, 403, "forbidden");
        _cleanup_free_ char *cp = xasprintf("/api/v1/admin/users/%s/credits", w.user.user_id);
        _cleanup_resp_ HttpResponse *grant =
            api_post(w.c, cp, op.access, "{\"amount_micros\":5,\"reason\":\"x\"}");
        assert_error(grant, 403, "forbidden");
        assert_ledger_sound(w.c);
        world_free(&w);
}

/* ---- metering ---- */

/* An allocation row as the allocations code leaves it, written into the
 * stopped controller's database. */
static void insert_allocation(World *w, const char *id, const char *state, long long hourly,
                              const char *started_sql)
{
        _cleanup_free_ char *sql = xasprintf(
            "INSERT INTO allocations (id, user_id, state, sku_id, gpu_count, image_id, "
            "network_id, hourly_cost_micros, billing_started_at, created_at, updated_at) VALUES "
            "('%s', '%s', '%s', 'sku_test', 1, 'img_test', 'net_test', %lld, %s, 1, 1)",
            id, w->user.user_id, state, hourly, started_sql);
        db_exec_rw(w->c, sql);
}

static void wait_for(const Controller *c, const char *sql, long long want_at_least,
                     const char *what)
{
        long long deadline = mono_ms() + 60000, v = 0;
        while ((v = db_scalar(c, sql)) < want_at_least) {
                cr_assert(mono_ms() < deadline, "%s: %lld after 60 s", what, v);
                poll(NULL, 0, 100);
        }
}

Test(billing, running_allocations_are_charged_per_second_and_at_their_end)
{
        World w;
        const char *env[] = {"GPUSLICE_BILLING_GRACE_PERIOD_S=3600", NULL};
        world_start(&w, false, env);
        _cleanup_free_ char *path = xasprintf("/api/v1/admin/users/%s/credits", w.user.user_id);
        _cleanup_resp_ HttpResponse *g =
            api_post(w.c, path, w.admin.access, "{\"amount_micros\":100000000,\"reason\":\"m\"}");
        cr_assert_eq(g->status, 201);
        {
                _cleanup_resp_ HttpResponse *b =
                    api_get(w.c, "/api/v1/billing/balance", w.user.access);
                cr_assert(json_is_null(jget(b, "runway_hours")), "nothing runs: %s", b->body);
        }
        ctl_stop_clean(w.c);

        /* 3.6 USD an hour = 1000 micro-USD a second; active for 20 s already.
         * One provisioning and one failed: never charged. */
        insert_allocation(&w, "alc_meteredactiveAAAAAAA", "active", 3600000,
                          "CAST(strftime('%s','now') AS INTEGER) * 1000000 - 20000000");
        insert_allocation(&w, "alc_meteredprovisioningA", "provisioning", 3600000, "NULL");
        insert_allocation(&w, "alc_meteredfailedAAAAAAA", "failed", 3600000, "NULL");
        ctl_start_or_fail(w.c);

        wait_for(w.c, "SELECT COALESCE(SUM(charged_micros), 0) FROM allocation_usage", 21000,
                 "charges");
        long long b1 = balance(&w);
        cr_assert(b1 <= 100000000 - 20000, "charged for the 20 s before start: %lld", b1);
        wait_for(w.c,
                 "SELECT COALESCE(SUM(charged_micros), 0) FROM allocation_usage WHERE "
                 "allocation_id = 'alc_meteredactiveAAAAAAA'",
                 100000000 - b1 + 2000, "charges keep coming");
        cr_assert_eq(db_scalar(w.c, "SELECT COUNT(*) FROM allocation_usage WHERE allocation_id "
                                    "!= 'alc_meteredactiveAAAAAAA'"),
                     0);
        {
                _cleanup_resp_ HttpResponse *b =
                    api_get(w.c, "/api/v1/billing/balance", w.user.access);
                cr_assert_eq(json_integer_value(jget(b, "burn_rate_micros_per_hour")), 3600000);
                double runway = json_number_value(jget(b, "runway_hours"));
                cr_assert(runway > 27.0 && runway < 28.0, "runway %f", runway);
                _cleanup_resp_ HttpResponse *u =
                    api_get(w.c, "/api/v1/billing/usage?bucket=hour", w.user.access);
                cr_assert_eq(u->status, 200, "%s", u->body);
                cr_assert_eq(json_array_size(jget(u, "items")), 1, "%s", u->body);
                cr_assert_str_eq(strempty(jstr(u, "items.0.allocation_id")),
                                 "alc_meteredactiveAAAAAAA");
                cr_assert_eq(json_integer_value(jget(u, "total_micros")), 100000000 - balance(&w));
                _cleanup_resp_ HttpResponse *ud =
                    api_get(w.c, "/api/v1/billing/usage?bucket=day", w.user.access);
                cr_assert_eq(ud->status, 200);
                _cleanup_resp_ HttpResponse *ub =
                    api_get(w.c, "/api/v1/billing/usage?bucket=week", w.user.access);
                assert_invalid_field(ub, "bucket");
        }

        /* Release requested 2.5 s after the last charge: the final charge is
         * the whole seconds up to billing_ended_at, then the meter closes. */
        ctl_stop_clean(w.c);
        long long charged = db_scalar(w.c, "SELECT charged_to FROM allocation_usage");
        _cleanup_free_ char *end = xasprintf(
            "UPDATE allocations SET state = 'releasing', billing_ended_at = %lld WHERE id = "
            "'alc_meteredactiveAAAAAAA'",
            charged + 2500000);
        db_exec_rw(w.c, end);
        long long before = db_scalar(w.c, "SELECT balance_micros FROM ledger_accounts WHERE id "
                                          "LIKE 'user:%'");
        ctl_start_or_fail(w.c);
        wait_for(w.c, "SELECT closed FROM allocation_meters", 1, "the meter closes");
        /* Whole seconds since the start: from where it stood to the end. */
        long long started = db_scalar(w.c, "SELECT billing_started_at FROM allocations WHERE id "
                                           "= 'alc_meteredactiveAAAAAAA'");
        long long last_secs = (charged + 2500000 - started) / 1000000;
        long long had_secs = (charged - started) / 1000000;
        cr_assert_eq(db_scalar(w.c, "SELECT balance_micros FROM ledger_accounts WHERE id LIKE "
                                    "'user:%'"),
                     before - 1000 * (last_secs - had_secs),
                     "the last whole seconds up to billing_ended_at");
        cr_assert_eq(db_scalar(w.c, "SELECT charged_micros FROM allocation_usage"),
                     1000 * last_secs);
        long long closed_at = db_scalar(w.c, "SELECT charged_micros FROM allocation_usage");
        /* Nothing after the end, however long it runs. */
        poll(NULL, 0, 2500);
        cr_assert_eq(db_scalar(w.c, "SELECT charged_micros FROM allocation_usage"), closed_at);
        assert_ledger_sound(w.c);
        world_free(&w);
}

Test(billing, a_low_balance_is_announced_and_an_exhausted_one_ends_its_allocations)
{
        World w;
        const char *env[] = {"GPUSLICE_BILLING_GRACE_PERIOD_S=2", NULL};
        world_start(&w, false, env);
        _cleanup_free_ char *path = xasprintf("/api/v1/admin/users/%s/credits", w.user.user_id);
        /* Ten seconds of a 36 USD/h allocation. */
        _cleanup_resp_ HttpResponse *g =
            api_post(w.c, path, w.admin.access, "{\"amount_micros\":100000,\"reason\":\"m\"}");
        cr_assert_eq(g->status, 201);
        ctl_stop_clean(w.c);
        insert_allocation(&w, "alc_meteredexhaustedAAAA", "active", 36000000,
                          "CAST(strftime('%s','now') AS INTEGER) * 1000000");
        ctl_start_or_fail(w.c);
        wait_for(w.c,
                 "SELECT COUNT(*) FROM events WHERE type = 'billing.low_balance' AND "
                 "json_extract(data, '$.exhausted')",
                 1, "the exhausted event");
        cr_assert(
            db_scalar(w.c, "SELECT COUNT(*) FROM events WHERE type = 'billing.low_balance'") >= 2);
        cr_assert(balance(&w) <= 0);
        /* After the grace period the allocations code releases it, with a
         * reason its owner sees; billing ends there. */
        wait_for(w.c,
                 "SELECT COUNT(*) FROM allocations WHERE id = 'alc_meteredexhaustedAAAA' AND "
                 "state != 'active' AND failure_reason = 'insufficient_balance' AND "
                 "billing_ended_at IS NOT NULL",
                 1, "the release for insufficient_balance");
        long long exhausted_at = db_scalar(w.c, "SELECT MIN(at) FROM events WHERE type = "
                                                "'billing.low_balance' AND json_extract(data, "
                                                "'$.exhausted')");
        long long ended = db_scalar(w.c, "SELECT billing_ended_at FROM allocations");
        cr_assert(ended - exhausted_at >= 2000000, "released %lld us after exhaustion, grace 2 s",
                  ended - exhausted_at);
        wait_for(w.c, "SELECT closed FROM allocation_meters", 1, "the meter closes");
        long long after = balance(&w);
        poll(NULL, 0, 2500);
        cr_assert_eq(balance(&w), after, "nothing is charged after the release");
        assert_ledger_sound(w.c);
        world_free(&w);
}
