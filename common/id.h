/* SPDX-License-Identifier: MIT */
#pragma once

/* Typed, opaque ids: "<prefix>_" followed by 22 URL-safe base64 characters
 * encoding 128 random bits (usr_Xq3..., alc_..., nod_...). */

#include <stdbool.h>
#include <stddef.h>

#define ID_RANDOM_CHARS 22
#define ID_PREFIX_MAX   8
#define ID_MAX          (ID_PREFIX_MAX + 1 + ID_RANDOM_CHARS + 1)

/* Writes a new id into buf (at least ID_MAX bytes). The prefix is 1..8
 * characters of [a-z0-9]. Returns 0 or -errno. */
int id_new(const char *prefix, char buf[static ID_MAX]);
/* True when s is "<prefix>_" followed by exactly 22 URL-safe base64 characters. */
bool id_valid(const char *prefix, const char *s);

/* Random bytes from OpenSSL's CSPRNG, as URL-safe base64 without padding.
 * out needs ceil(4n/3)+1 bytes; nbytes is at most 64. Used for tokens. */
int random_token(size_t nbytes, char *out, size_t outsize);
/* URL-safe base64 (no padding) of arbitrary bytes. Returns the length
 * written, or -ENOBUFS when out is too small. */
int base64url_encode(const unsigned char *in, size_t n, char *out, size_t outsize);
