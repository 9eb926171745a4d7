/* SPDX-License-Identifier: MIT */
/* stripe-signature.c: the Stripe-Signature scheme. The vectors below were made
 * by Stripe's own library (npm stripe 23.1.0,
 * stripe.webhooks.generateTestHeaderString); the integration test
 * (test-billing.c) signs live with it as well. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "stripe-signature.h"

TestSuite(stripe_signature, .timeout = 30);

static const char P1[] = "{\"id\":\"evt_1\"}";
static const char H1[] =
    "t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925";
static const char S1[] = "whsec_test";
static const char P2[] = "{\"id\":\"evt_2\",\"name\":\"J\xc3\xbcrgen \xe2\x98\x83\"}\n";
static const char H2[] =
    "t=1764255600,v1=60635e10598df372ad97eef3008144d26b5ca3d4d7c815fffb08a31abbffb65d";
static const char S2[] = "whsec_5bR3nq0rUWzWJ2PAfq8rlhQFb2SgYq9p";

static int verify(const char *h, const char *payload, const char *secret, long long now)
{
        return stripe_signature_verify(h, payload, strlen(payload), secret, now, 300);
}

Test(stripe_signature, vectors_from_stripes_library_verify)
{
        cr_assert_eq(verify(H1, P1, S1, 1700000000), 0);
        cr_assert_eq(verify(H2, P2, S2, 1764255600), 0);
        cr_assert_eq(stripe_signature_verify(
                         "t=1,v1=1e8199df46f7393ec2afd920565ff6f97199d225560a56f46736eb6c67e11275",
                         "", 0, "whsec_empty", 1, 300),
                     0);
}

Test(stripe_signature, compute_matches_stripes_library)
{
        char hex[STRIPE_SIGNATURE_HEX_LEN + 1];
        cr_assert_eq(stripe_signature_compute(S2, 1764255600, P2, strlen(P2), hex), 0);
        cr_assert_str_eq(hex, H2 + strlen("t=1764255600,v1="));
}

Test(stripe_signature, tolerance_is_300_seconds_either_way)
{
        cr_assert_eq(verify(H1, P1, S1, 1700000000 + 300), 0);
        cr_assert_eq(verify(H1, P1, S1, 1700000000 + 301), -ETIMEDOUT);
        cr_assert_eq(verify(H1, P1, S1, 1700000000 - 300), 0);
        cr_assert_eq(verify(H1, P1, S1, 1700000000 - 301), -ETIMEDOUT);
}

Test(stripe_signature, wrong_secret_or_altered_body_is_rejected)
{
        cr_assert_eq(verify(H1, P1, "whsec_other", 1700000000), -EKEYREJECTED);
        cr_assert_eq(verify(H1, "{\"id\":\"evt_2\"}", S1, 1700000000), -EKEYREJECTED);
        /* Truncated by one byte. */
        cr_assert_eq(stripe_signature_verify(H1, P1, strlen(P1) - 1, S1, 1700000000, 300),
                     -EKEYREJECTED);
        /* The timestamp is signed: moving it breaks the signature. */
        cr_assert_eq(verify("t=1700000001,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f"
                            "3942d632925",
                            P1, S1, 1700000000),
                     -EKEYREJECTED);
}

Test(stripe_signature, any_matching_v1_is_enough)
{
        char h[512];
        snprintf(h, sizeof(h), "t=1700000000,v1=%064d,v1=%s,v0=abc", 0,
                 H1 + strlen("t=1700000000,v1="));
        cr_assert_eq(verify(h, P1, S1, 1700000000), 0);
        snprintf(h, sizeof(h), "v1=%s, t=1700000000", H1 + strlen("t=1700000000,v1="));
        cr_assert_eq(verify(h, P1, S1, 1700000000), 0, "order and spaces do not matter");
        /* Upper-case hex is the same signature. */
        snprintf(h, sizeof(h),
                 "t=1700000000,v1=C89214B5B5DA833DAED6F0B8C5BB6BD58CEA9022BD80CCC78"
                 "230F3942D632925");
        cr_assert_eq(verify(h, P1, S1, 1700000000), 0);
}

Test(stripe_signature, malformed_headers_are_refused)
{
        const char *bad[] = {
            "",
            "t=1700000000",
            "v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925",
            "t=abc,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925",
            "t=-5,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925",
            "t=1700000000,t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3"
            "942d632925",
            "t=1700000000,v0=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925",
            "garbage",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_assert_eq(verify(bad[i], P1, S1, 1700000000), -EBADMSG, "accepted: %s", bad[i]);
        cr_assert_eq(stripe_signature_verify(NULL, P1, strlen(P1), S1, 1700000000, 300), -EBADMSG);
        cr_assert_eq(verify(H1, P1, "", 1700000000), -EBADMSG);
        /* A v1 that is not a SHA-256 in hex cannot match. */
        cr_assert_eq(verify("t=1700000000,v1=c89214b5", P1, S1, 1700000000), -EKEYREJECTED);
        cr_assert_eq(verify("t=1700000000,v1=zz9214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f"
                            "3942d632925",
                            P1, S1, 1700000000),
                     -EKEYREJECTED);
}

Test(stripe_signature, too_many_signatures_or_a_huge_header_is_refused)
{
        char h[4096] = "t=1700000000";
        for (int i = 0; i < 9; i++)
                strcat(h, ",v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925");
        cr_assert_eq(verify(h, P1, S1, 1700000000), -EBADMSG);
        static char huge[STRIPE_SIGNATURE_HEADER_MAX + 64];
        memset(huge, ' ', sizeof(huge) - 1);
        memcpy(huge, H1, strlen(H1));
        cr_assert_eq(verify(huge, P1, S1, 1700000000), -EBADMSG);
}
