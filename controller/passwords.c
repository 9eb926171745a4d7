/* SPDX-License-Identifier: MIT */
#include "passwords.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "id.h"
#include "macro.h"

#define SALT_LEN 16
#define HASH_LEN 32
#define R_PARAM  8
#define P_PARAM  1

static int scrypt_derive(const char *password, const unsigned char *salt, size_t salt_len,
                         unsigned log_n, unsigned r, unsigned p, unsigned char *out, size_t out_len)
{
        EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
        if (!kdf)
                return -ENOSYS;
        EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
        EVP_KDF_free(kdf);
        if (!ctx)
                return -ENOMEM;

        uint64_t n = UINT64_C(1) << log_n;
        uint32_t r32 = r, p32 = p;
        /* N*r*128 bytes plus slack: OpenSSL's default maxmem (32 MiB) is too small for ln>=15. */
        uint64_t maxmem = n * r * 128 * 2 + (1 << 20);
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)password,
                                              strlen(password)),
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len),
            OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
            OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r32),
            OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p32),
            OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
            OSSL_PARAM_construct_end(),
        };
        int ok = EVP_KDF_derive(ctx, out, out_len, params);
        EVP_KDF_CTX_free(ctx);
        return ok == 1 ? 0 : -EIO;
}

static int b64url_decode(const char *in, unsigned char *out, size_t out_size, size_t *ret_len)
{
        static const char alphabet[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        unsigned acc = 0;
        int bits = 0;
        size_t o = 0;
        for (const char *c = in; *c; c++) {
                const char *pos = strchr(alphabet, *c);
                if (!pos)
                        return -EINVAL;
                acc = (acc << 6) | (unsigned)(pos - alphabet);
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        if (o >= out_size)
                                return -ENOBUFS;
                        out[o++] = (unsigned char)(acc >> bits);
                        acc &= (1u << bits) - 1;
                }
        }
        *ret_len = o;
        return 0;
}

int password_hash(const char *password, unsigned log_n, char **ret)
{
        unsigned char salt[SALT_LEN], hash[HASH_LEN];
        char salt_b64[32], hash_b64[64];
        int r;

        if (log_n < 10 || log_n > 22)
                return -EINVAL;
        if (RAND_bytes(salt, sizeof(salt)) != 1)
                return -EIO;
        r = scrypt_derive(password, salt, sizeof(salt), log_n, R_PARAM, P_PARAM, hash,
                          sizeof(hash));
        if (r < 0)
                return r;
        base64url_encode(salt, sizeof(salt), salt_b64, sizeof(salt_b64));
        base64url_encode(hash, sizeof(hash), hash_b64, sizeof(hash_b64));
        OPENSSL_cleanse(hash, sizeof(hash));
        if (asprintf(ret, "$scrypt$ln=%u,r=%u,p=%u$%s$%s", log_n, R_PARAM, P_PARAM, salt_b64,
                     hash_b64) < 0)
                return -ENOMEM;
        return 0;
}

int password_verify(const char *password, const char *encoded)
{
        unsigned log_n, r_param, p_param;
        char salt_b64[64], hash_b64[128];
        unsigned char salt[48], expected[64], actual[64];
        size_t salt_len, hash_len;
        int n = 0, r;

        if (sscanf(encoded, "$scrypt$ln=%u,r=%u,p=%u$%63[^$]$%127[^$]%n", &log_n, &r_param,
                   &p_param, salt_b64, hash_b64, &n) != 5 ||
            encoded[n] != '\0')
                return -EINVAL;
        if (log_n < 10 || log_n > 22 || r_param < 1 || r_param > 32 || p_param < 1 || p_param > 16)
                return -EINVAL;
        if (b64url_decode(salt_b64, salt, sizeof(salt), &salt_len) < 0 ||
            b64url_decode(hash_b64, expected, sizeof(expected), &hash_len) < 0 || hash_len < 16)
                return -EINVAL;
        r = scrypt_derive(password, salt, salt_len, log_n, r_param, p_param, actual, hash_len);
        if (r < 0)
                return r;
        r = CRYPTO_memcmp(actual, expected, hash_len) == 0;
        OPENSSL_cleanse(actual, sizeof(actual));
        return r;
}
