/* SPDX-License-Identifier: MIT */
/* passwords.c: scrypt hashing, verification, and the encoded form. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passwords.h"

TestSuite(passwords, .timeout = 60);

Test(passwords, hash_then_verify_round_trip)
{
        char *h = NULL;
        cr_assert_eq(password_hash("correct horse battery", 10, &h), 0);
        cr_assert(strncmp(h, "$scrypt$ln=10,r=8,p=1$", 22) == 0, "encoded form: %s", h);
        cr_assert_eq(password_verify("correct horse battery", h), 1);
        free(h);
}

Test(passwords, wrong_password_does_not_verify)
{
        char *h = NULL;
        cr_assert_eq(password_hash("correct horse battery", 10, &h), 0);
        cr_assert_eq(password_verify("correct horse batterY", h), 0);
        cr_assert_eq(password_verify("", h), 0);
        cr_assert_eq(password_verify("correct horse battery ", h), 0);
        free(h);
}

Test(passwords, same_password_hashes_differently_each_time)
{
        char *a = NULL, *b = NULL;
        cr_assert_eq(password_hash("same password", 10, &a), 0);
        cr_assert_eq(password_hash("same password", 10, &b), 0);
        cr_assert_str_neq(a, b, "the salt must be random");
        cr_assert_eq(password_verify("same password", a), 1);
        cr_assert_eq(password_verify("same password", b), 1);
        free(a);
        free(b);
}

Test(passwords, cost_parameter_is_written_and_honoured)
{
        char *h = NULL;
        cr_assert_eq(password_hash("pw-for-cost", 11, &h), 0);
        cr_assert(strncmp(h, "$scrypt$ln=11,r=8,p=1$", 22) == 0, "%s", h);
        cr_assert_eq(password_verify("pw-for-cost", h), 1);
        /* Change only the recorded cost: verification must derive with the
         * recorded parameters, so the same salt and hash no longer match. */
        char *other = strdup(h);
        other[12] = '2'; /* ln=11 -> ln=12 */
        cr_assert(strncmp(other, "$scrypt$ln=12,", 14) == 0, "%s", other);
        cr_assert_eq(password_verify("pw-for-cost", other), 0);
        /* likewise r and p */
        char *r_changed = strdup(h);
        r_changed[16] = '4'; /* r=8 -> r=4 */
        cr_assert(strstr(r_changed, ",r=4,"), "%s", r_changed);
        cr_assert_eq(password_verify("pw-for-cost", r_changed), 0);
        free(r_changed);
        free(other);
        free(h);
}

Test(passwords, cost_out_of_range_is_refused)
{
        char *h = NULL;
        cr_assert_eq(password_hash("pw", 9, &h), -EINVAL);
        cr_assert_eq(password_hash("pw", 23, &h), -EINVAL);
        cr_assert_null(h);
}

Test(passwords, long_and_unicode_passwords)
{
        char *long_pw = malloc(PASSWORD_MAX_LEN + 1);
        memset(long_pw, 'x', PASSWORD_MAX_LEN);
        long_pw[PASSWORD_MAX_LEN] = '\0';
        char *h = NULL;
        cr_assert_eq(password_hash(long_pw, 10, &h), 0);
        cr_assert_eq(password_verify(long_pw, h), 1);
        long_pw[PASSWORD_MAX_LEN - 1] = 'y';
        cr_assert_eq(password_verify(long_pw, h), 0);
        free(h);
        free(long_pw);

        cr_assert_eq(password_hash("pässwörd ✓ 密码", 10, &h), 0);
        cr_assert_eq(password_verify("pässwörd ✓ 密码", h), 1);
        cr_assert_eq(password_verify("passwörd ✓ 密码", h), 0);
        free(h);
}

Test(passwords, malformed_encodings_are_rejected_not_matched)
{
        /* a valid salt and hash to splice into broken frames */
        char *good = NULL;
        cr_assert_eq(password_hash("pw123456", 10, &good), 0);
        const char *salt = strchr(good + 9, '$') + 1;
        const char *hash = strchr(salt, '$') + 1;
        char salt_only[64];
        snprintf(salt_only, sizeof(salt_only), "%.*s", (int)(hash - salt - 1), salt);

        char buf[16][256];
        const char *bad[] = {
            "",
            "plain text",
            "$scrypt$",
            "$bcrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$",
            "$scrypt$ln=10,r=8,p=1$$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=10,r=8,p=1$AAAA!AAAAAAAAAAAAAAAAA$"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAA+"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAA", /* hash too short */
            "$scrypt$ln=9,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=23,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=10,r=0,p=1$AAAAAAAAAAAAAAAAAAAAAA$"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=10,r=8,p=17$AAAAAAAAAAAAAAAAAAAAAA$"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=-1,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$"
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int r = password_verify("pw123456", bad[i]);
                cr_assert_lt(r, 0, "malformed hash #%zu accepted (%d): %s", i, r, bad[i]);
        }
        /* the real salt and hash with trailing garbage, or a '$' too many */
        snprintf(buf[0], sizeof(buf[0]), "%s$", good);
        snprintf(buf[1], sizeof(buf[1]), "%sX$extra", good);
        snprintf(buf[2], sizeof(buf[2]), "$scrypt$ln=10,r=8,p=1$%s$%s$", salt_only, hash);
        for (int i = 0; i < 3; i++)
                cr_assert_lt(password_verify("pw123456", buf[i]), 0, "accepted: %s", buf[i]);
        /* and the untouched one still verifies */
        cr_assert_eq(password_verify("pw123456", good), 1);
        free(good);
}
