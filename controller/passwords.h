/* SPDX-License-Identifier: MIT */
#pragma once

/* Password hashing with scrypt (OpenSSL EVP_KDF), a memory-hard KDF. The
 * encoded form carries its parameters so they can be raised later:
 *   $scrypt$ln=15,r=8,p=1$<salt, base64url>$<hash, base64url>
 * Both functions are CPU- and memory-heavy by design: call them off the event
 * loop (async.h). */

#include <stdbool.h>

#define PASSWORD_MIN_LEN 8
#define PASSWORD_MAX_LEN 1024

/* log_n: log2 of scrypt's N (14..20). Returns 0 and a malloc'ed string. */
int password_hash(const char *password, unsigned log_n, char **ret);
/* 1 when the password matches, 0 when not, -errno for a malformed hash.
 * The comparison is constant-time. */
int password_verify(const char *password, const char *encoded);
