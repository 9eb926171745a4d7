/* SPDX-License-Identifier: MIT */
#include "stripe-signature.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"

/* More v1 values than this is not a key roll but an attempt to make us
 * compute many comparisons. */
#define MAX_SIGNATURES 8

static int hmac_raw(const char *secret, int64_t t, const void *payload, size_t len,
                    unsigned char out[static 32])
{
        char prefix[32];
        int n = snprintf(prefix, sizeof(prefix), "%" PRId64 ".", t);
        if (n < 0 || (size_t)n >= sizeof(prefix))
                return -EINVAL;

        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (!mac)
                return -ENOMEM;
        EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
        EVP_MAC_free(mac);
        if (!ctx)
                return -ENOMEM;
        char digest[] = "SHA256";
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string("digest", digest, 0),
            OSSL_PARAM_construct_end(),
        };
        size_t outlen = 0;
        bool ok = EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) == 1 &&
                  EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)n) == 1 &&
                  (len == 0 || EVP_MAC_update(ctx, payload, len) == 1) &&
                  EVP_MAC_final(ctx, out, &outlen, 32) == 1 && outlen == 32;
        EVP_MAC_CTX_free(ctx);
        return ok ? 0 : -EIO;
}

int stripe_signature_compute(const char *secret, int64_t t, const void *payload, size_t len,
                             char hex[static STRIPE_SIGNATURE_HEX_LEN + 1])
{
        unsigned char raw[32];
        int r = hmac_raw(secret, t, payload, len, raw);
        if (r < 0)
                return r;
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < 32; i++) {
                hex[2 * i] = digits[raw[i] >> 4];
                hex[2 * i + 1] = digits[raw[i] & 0xf];
        }
        hex[STRIPE_SIGNATURE_HEX_LEN] = '\0';
        return 0;
}

static int hex_nibble(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* 64 hex digits -> 32 bytes; false for anything else. */
static bool hex_decode32(const char *s, size_t len, unsigned char out[static 32])
{
        if (len != STRIPE_SIGNATURE_HEX_LEN)
                return false;
        for (size_t i = 0; i < 32; i++) {
                int hi = hex_nibble(s[2 * i]), lo = hex_nibble(s[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return false;
                out[i] = (unsigned char)(hi << 4 | lo);
        }
        return true;
}

static bool parse_timestamp(const char *s, size_t len, int64_t *ret)
{
        if (len == 0 || len > 12) /* seconds until the year 33658 */
                return false;
        int64_t v = 0;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (s[i] - '0');
        }
        *ret = v;
        return true;
}

int stripe_signature_verify(const char *header, const void *payload, size_t len, const char *secret,
                            int64_t now_s, int64_t tolerance_s)
{
        if (!header || !secret || !*secret || (!payload && len > 0))
                return -EBADMSG;
        size_t hlen = strlen(header);
        if (hlen == 0 || hlen > STRIPE_SIGNATURE_HEADER_MAX)
                return -EBADMSG;

        int64_t t = -1;
        unsigned char sigs[MAX_SIGNATURES][32];
        size_t n_sigs = 0;
        bool malformed_v1 = false;

        /* "k=v" items separated by commas; whitespace around items tolerated. */
        const char *p = header, *end = header + hlen;
        while (p < end) {
                const char *comma = memchr(p, ',', (size_t)(end - p));
                const char *item_end = comma ? comma : end;
                const char *a = p, *b = item_end;
                while (a < b && (*a == ' ' || *a == '\t'))
                        a++;
                while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                        b--;
                const char *eq = memchr(a, '=', (size_t)(b - a));
                if (eq) {
                        size_t klen = (size_t)(eq - a), vlen = (size_t)(b - eq - 1);
                        const char *v = eq + 1;
                        if (klen == 1 && a[0] == 't') {
                                if (t >= 0 || !parse_timestamp(v, vlen, &t))
                                        return -EBADMSG; /* two t's, or not a number */
                        } else if (klen == 2 && a[0] == 'v' && a[1] == '1') {
                                if (n_sigs >= MAX_SIGNATURES)
                                        return -EBADMSG;
                                if (hex_decode32(v, vlen, sigs[n_sigs]))
                                        n_sigs++;
                                else
                                        malformed_v1 = true;
                        }
                }
                p = item_end + 1;
        }
        if (t < 0 || (n_sigs == 0 && !malformed_v1))
                return -EBADMSG;
        if (n_sigs == 0)
                return -EKEYREJECTED; /* v1 present, but not a SHA-256 in hex */

        unsigned char expected[32];
        int r = hmac_raw(secret, t, payload, len, expected);
        if (r < 0)
                return r;
        /* Compare against every candidate, no early exit. */
        int match = 0;
        for (size_t i = 0; i < n_sigs; i++)
                match |= CRYPTO_memcmp(expected, sigs[i], 32) == 0;
        OPENSSL_cleanse(expected, sizeof(expected));
        if (!match)
                return -EKEYREJECTED;
        int64_t skew = now_s - t;
        if (skew > tolerance_s || skew < -tolerance_s)
                return -ETIMEDOUT;
        return 0;
}
