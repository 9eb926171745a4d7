/* SPDX-License-Identifier: MIT */
#include "id.h"

#include <errno.h>
#include <string.h>

#include <openssl/rand.h>

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int base64url_encode(const unsigned char *in, size_t n, char *out, size_t outsize)
{
        size_t need = (n * 4 + 2) / 3 + 1, o = 0;
        if (outsize < need)
                return -ENOBUFS;
        for (size_t i = 0; i < n; i += 3) {
                unsigned v = (unsigned)in[i] << 16;
                if (i + 1 < n)
                        v |= (unsigned)in[i + 1] << 8;
                if (i + 2 < n)
                        v |= in[i + 2];
                out[o++] = b64url[(v >> 18) & 63];
                out[o++] = b64url[(v >> 12) & 63];
                if (i + 1 < n)
                        out[o++] = b64url[(v >> 6) & 63];
                if (i + 2 < n)
                        out[o++] = b64url[v & 63];
        }
        out[o] = '\0';
        return (int)o;
}

int random_token(size_t nbytes, char *out, size_t outsize)
{
        unsigned char raw[64];
        if (nbytes > sizeof(raw))
                return -EINVAL;
        if (RAND_bytes(raw, (int)nbytes) != 1)
                return -EIO;
        int r = base64url_encode(raw, nbytes, out, outsize);
        OPENSSL_cleanse(raw, sizeof(raw));
        return r < 0 ? r : 0;
}

/* Prefixes are short lower-case words, so the '_' after one is unambiguous. */
static bool prefix_ok(const char *prefix)
{
        size_t pl = strlen(prefix);
        if (pl == 0 || pl > ID_PREFIX_MAX)
                return false;
        for (const char *c = prefix; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
                        return false;
        return true;
}

int id_new(const char *prefix, char buf[static ID_MAX])
{
        if (!prefix_ok(prefix))
                return -EINVAL;
        size_t pl = strlen(prefix);
        memcpy(buf, prefix, pl);
        buf[pl] = '_';
        /* 16 bytes -> 22 characters. */
        return random_token(16, buf + pl + 1, ID_MAX - pl - 1);
}

bool id_valid(const char *prefix, const char *s)
{
        if (!s || !prefix_ok(prefix))
                return false;
        size_t pl = strlen(prefix);
        if (strncmp(s, prefix, pl) != 0 || s[pl] != '_')
                return false;
        const char *r = s + pl + 1;
        if (strlen(r) != ID_RANDOM_CHARS)
                return false;
        for (; *r; r++)
                if (!strchr(b64url, *r))
                        return false;
        /* The last character carries 2 bits of data and 4 zero bits. */
        const char *last = strchr(b64url, s[pl + ID_RANDOM_CHARS]);
        return ((last - b64url) & 0x0f) == 0;
}
