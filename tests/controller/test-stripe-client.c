/* SPDX-License-Identifier: MIT */
/* stripe-client.c: the form encoding Stripe's API reads (bracket keys kept,
 * values percent-encoded like Stripe's own libraries) and the settings it
 * needs. The HTTP exchange itself is tested against the fake Stripe in
 * tests/integration/test-billing.c. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "settings.h"
#include "stripe-client.h"

TestSuite(stripe_client, .timeout = 30);

Test(stripe_client, forms_keep_brackets_in_keys_and_escape_values)
{
        StripeForm f = {0};
        stripe_form_add(&f, "mode", "payment");
        stripe_form_add(&f, "line_items[0][price_data][currency]", "usd");
        stripe_form_addf(&f, "line_items[0][price_data][unit_amount]", "%d", 2500);
        stripe_form_add(&f, "success_url",
                        "https://gpu.example.com/billing?checkout=success&session_id={ID}");
        stripe_form_add(&f, "metadata[note]", "J\xc3\xbcrgen & co = 100%");
        cr_assert_eq(f.error, 0);
        cr_assert_str_eq(f.buf, "mode=payment&line_items[0][price_data][currency]=usd"
                                "&line_items[0][price_data][unit_amount]=2500"
                                "&success_url=https%3A%2F%2Fgpu.example.com%2Fbilling%3Fcheckout"
                                "%3Dsuccess%26session_id%3D%7BID%7D"
                                "&metadata[note]=J%C3%BCrgen%20%26%20co%20%3D%20100%25");
        stripe_form_done(&f);
}

Test(stripe_client, no_secret_key_means_payments_are_not_configured)
{
        Config *c = NULL;
        cr_assert_eq(controller_config_new(&c), 0);
        StripeClient sc;
        cr_assert_eq(stripe_client_from_config(c, &sc), -ENOKEY);
        cr_assert_eq(config_set(c, "stripe_secret_key", "sk_test_x", CONFIG_SOURCE_FLAG, NULL), 0);
        cr_assert_eq(
            config_set(c, "stripe_api_base", "http://127.0.0.1:9/", CONFIG_SOURCE_FLAG, NULL), 0);
        cr_assert_eq(stripe_client_from_config(c, &sc), 0);
        cr_assert_str_eq(sc.api_base, "http://127.0.0.1:9", "no trailing slash");
        cr_assert_str_eq(sc.api_version, "2026-10-28.endive");
        stripe_client_done(&sc);
        config_free(c);
}

Test(stripe_client, an_unreachable_stripe_is_reported_as_such)
{
        Config *c = NULL;
        cr_assert_eq(controller_config_new(&c), 0);
        cr_assert_eq(config_set(c, "stripe_secret_key", "sk_test_x", CONFIG_SOURCE_FLAG, NULL), 0);
        /* Port 9 (discard) on loopback: nothing listens. */
        cr_assert_eq(
            config_set(c, "stripe_api_base", "http://127.0.0.1:9", CONFIG_SOURCE_FLAG, NULL), 0);
        StripeClient sc;
        cr_assert_eq(stripe_client_from_config(c, &sc), 0);
        StripeForm f = {0};
        stripe_form_add(&f, "amount", "100");
        StripeResult res;
        cr_assert_eq(stripe_post(&sc, "/v1/refunds", &f, "ref_1", &res), -EHOSTUNREACH);
        cr_assert_eq(res.status, 0);
        stripe_result_done(&res);
        stripe_form_done(&f);
        stripe_client_done(&sc);
        config_free(c);
}
