/* SPDX-License-Identifier: MIT */
/* Typed ids and tokens: their format, their randomness, and id_valid()
 * refusing anything that id_new() would not have produced. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "id.h"
#include "macro.h"

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

Test(id, new_id_has_prefix_underscore_and_22_url_safe_characters, .timeout = 30)
{
        char id[ID_MAX];
        cr_assert_eq(id_new("usr", id), 0);
        cr_assert_eq(strlen(id), 3 + 1 + ID_RANDOM_CHARS, "\"%s\"", id);
        cr_assert(startswith(id, "usr_"), "\"%s\"", id);
        cr_assert_eq(strspn(id + 4, b64url), (size_t)ID_RANDOM_CHARS, "\"%s\"", id);
        cr_assert(id_valid("usr", id), "\"%s\"", id);
        cr_assert_not(id_valid("ses", id));
}

Test(id, longest_prefix_fits_the_buffer, .timeout = 30)
{
        char id[ID_MAX];
        cr_assert_eq(id_new("abcdefgh", id), 0);
        cr_assert_eq(strlen(id), ID_MAX - 1);
        cr_assert(id_valid("abcdefgh", id));
}

Test(id, bad_prefixes_are_refused, .timeout = 30)
{
        static const char *const bad[] = {"", "abcdefghi", "Usr", "u_r", "u-r", "us r", "usé"};
        char id[ID_MAX], forged[64];
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                cr_assert_eq(id_new(bad[i], id), -EINVAL, "prefix \"%s\"", bad[i]);
                /* Nor does an id with such a prefix pass as valid. */
                snprintf(forged, sizeof(forged), "%s_AAAAAAAAAAAAAAAAAAAAAA", bad[i]);
                cr_assert_not(id_valid(bad[i], forged), "\"%s\"", forged);
        }
}

static int strcmp_ptr(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

Test(id, ids_are_unique_and_always_valid, .timeout = 30)
{
        enum { N = 20000 };
        char(*ids)[ID_MAX] = calloc(N, ID_MAX);
        char **sorted = calloc(N, sizeof(char *));
        unsigned first_char_seen[64] = {0};
        for (size_t i = 0; i < N; i++) {
                cr_assert_eq(id_new("alc", ids[i]), 0);
                cr_assert(id_valid("alc", ids[i]), "\"%s\"", ids[i]);
                first_char_seen[strchr(b64url, ids[i][4]) - b64url]++;
                sorted[i] = ids[i];
        }
        qsort(sorted, N, sizeof(char *), strcmp_ptr);
        for (size_t i = 1; i < N; i++)
                cr_assert_str_neq(sorted[i - 1], sorted[i], "duplicate id");
        /* 20000 draws over 64 symbols: each first character shows up (a stuck
         * or biased generator would not). */
        for (size_t i = 0; i < 64; i++)
                cr_assert_gt(first_char_seen[i], 150, "'%c' seen %u times", b64url[i],
                             first_char_seen[i]);
        free(sorted);
        free(ids);
}

Test(id, id_valid_refuses_wrong_prefix_length_and_charset, .timeout = 30)
{
        char id[ID_MAX], bad[64];
        cr_assert_eq(id_new("nod", id), 0);
        const char *rnd = id + 4;

        cr_assert(id_valid("nod", id));
        cr_assert_not(id_valid("no", id), "a shorter prefix is not a match");
        cr_assert_not(id_valid("node", id));
        cr_assert_not(id_valid("nod", NULL));
        cr_assert_not(id_valid("nod", ""));
        cr_assert_not(id_valid("nod", "nod_"));

        snprintf(bad, sizeof(bad), "nod%s", rnd); /* no underscore */
        cr_assert_not(id_valid("nod", bad));
        snprintf(bad, sizeof(bad), "nod-%s", rnd);
        cr_assert_not(id_valid("nod", bad));
        snprintf(bad, sizeof(bad), "NOD_%s", rnd);
        cr_assert_not(id_valid("nod", bad));
        snprintf(bad, sizeof(bad), "nod_%.21s", rnd); /* 21 characters */
        cr_assert_not(id_valid("nod", bad));
        snprintf(bad, sizeof(bad), "nod_%sA", rnd); /* 23 characters */
        cr_assert_not(id_valid("nod", bad));

        static const char not_url_safe[] = "+/=. \n";
        for (const char *c = not_url_safe; *c; c++) {
                snprintf(bad, sizeof(bad), "%s", id);
                bad[10] = *c;
                cr_assert_not(id_valid("nod", bad), "with '%c'", *c);
        }
}

Test(id, id_valid_refuses_a_last_character_with_unused_bits, .timeout = 30)
{
        /* 128 bits in 22 characters leave the last 4 bits zero: only 'A', 'Q',
         * 'g' and 'w' can end an id. */
        char id[ID_MAX];
        cr_assert_eq(id_new("usr", id), 0);
        size_t last = strlen(id) - 1;
        for (const char *c = b64url; *c; c++) {
                id[last] = *c;
                bool want = strchr("AQgw", *c) != NULL;
                cr_assert_eq(id_valid("usr", id), want, "ending in '%c'", *c);
        }
}

Test(id, base64url_known_vectors, .timeout = 30)
{
        static const struct {
                const char *in, *out;
        } v[] = {
            {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
            {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"},
        };
        char out[32];
        for (size_t i = 0; i < ELEMENTSOF(v); i++) {
                int n = base64url_encode((const unsigned char *)v[i].in, strlen(v[i].in), out,
                                         sizeof(out));
                cr_assert_eq(n, (int)strlen(v[i].out), "length for \"%s\"", v[i].out);
                cr_assert_str_eq(out, v[i].out);
        }
}

Test(id, base64url_refuses_a_short_buffer, .timeout = 30)
{
        char out[8];
        /* "foobar" needs 8 characters plus the NUL. */
        cr_assert_eq(base64url_encode((const unsigned char *)"foobar", 6, out, 8), -ENOBUFS);
        cr_assert_eq(base64url_encode((const unsigned char *)"fooba", 5, out, 8), 7);
        cr_assert_str_eq(out, "Zm9vYmE");
}

Test(id, random_tokens, .timeout = 30)
{
        char a[64], b[64];
        cr_assert_eq(random_token(32, a, sizeof(a)), 0);
        cr_assert_eq(random_token(32, b, sizeof(b)), 0);
        cr_assert_eq(strlen(a), 43);
        cr_assert_eq(strspn(a, b64url), 43);
        cr_assert_str_neq(a, b);
        cr_assert_eq(random_token(65, a, sizeof(a)), -EINVAL);
        cr_assert_eq(random_token(32, a, 43), -ENOBUFS);
}
