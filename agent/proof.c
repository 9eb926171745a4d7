/* SPDX-License-Identifier: MIT */
#include "proof.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "log.h"
#include "macro.h"

static void bio_freep(BIO **b)
{
        if (*b)
                BIO_free(*b);
}
static void pkey_freep(EVP_PKEY **k)
{
        if (*k)
                EVP_PKEY_free(*k);
}
static void md_ctx_freep(EVP_MD_CTX **c)
{
        if (*c)
                EVP_MD_CTX_free(*c);
}
static void x509_freep(X509 **x)
{
        if (*x)
                X509_free(*x);
}

int proof_read_pem(const char *path, char **ret)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return log_error_errno(errno, "Cannot open | path=%s: %m", path);
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        _cleanup_fclose_ FILE *mem = open_memstream(&buf, &size);
        if (!mem)
                return log_oom();
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
                if (fwrite(chunk, 1, n, mem) != n)
                        return log_oom();
        if (ferror(f))
                return log_error_errno(-EIO, "Cannot read | path=%s", path);
        if (fclose(TAKE_PTR(mem)) != 0)
                return log_oom();
        if (size == 0 || !strstr(buf, "-----BEGIN "))
                return log_error_errno(-EBADMSG, "Not a PEM file | path=%s", path);
        *ret = TAKE_PTR(buf);
        return 0;
}

int proof_load_key(const char *path, EVP_PKEY **ret)
{
        _cleanup_free_ char *pem = NULL;
        int r = proof_read_pem(path, &pem);
        if (r < 0)
                return r;
        _cleanup_(bio_freep) BIO *b = BIO_new_mem_buf(pem, -1);
        if (!b)
                return log_oom();
        EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        if (!k)
                return log_error_errno(-EBADMSG, "Cannot parse the node key | path=%s", path);
        if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC) {
                EVP_PKEY_free(k);
                return log_error_errno(-EINVAL, "The node key is not an EC key | path=%s", path);
        }
        *ret = k;
        return 0;
}

int proof_message(const void *nonce, size_t nonce_len, const char *node_id, unsigned char **ret,
                  size_t *ret_len)
{
        size_t ctx_len = sizeof(PROOF_CONTEXT); /* with its NUL */
        size_t id_len = strlen(node_id);
        unsigned char *m = malloc(ctx_len + nonce_len + id_len);
        if (!m)
                return -ENOMEM;
        memcpy(m, PROOF_CONTEXT, ctx_len);
        memcpy(m + ctx_len, nonce, nonce_len);
        memcpy(m + ctx_len + nonce_len, node_id, id_len);
        *ret = m;
        *ret_len = ctx_len + nonce_len + id_len;
        return 0;
}

int proof_sign(EVP_PKEY *key, const void *nonce, size_t nonce_len, const char *node_id,
               unsigned char **ret, size_t *ret_len)
{
        _cleanup_free_ unsigned char *msg = NULL;
        size_t msg_len;
        int r = proof_message(nonce, nonce_len, node_id, &msg, &msg_len);
        if (r < 0)
                return log_oom();

        _cleanup_(md_ctx_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (!ctx)
                return log_oom();
        size_t sig_len = 0;
        if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
            EVP_DigestSign(ctx, NULL, &sig_len, msg, msg_len) != 1)
                return log_error_errno(-EIO, "Cannot sign the link proof | openssl=\"%s\"",
                                       ERR_error_string(ERR_get_error(), NULL));
        _cleanup_free_ unsigned char *sig = malloc(sig_len);
        if (!sig)
                return log_oom();
        if (EVP_DigestSign(ctx, sig, &sig_len, msg, msg_len) != 1)
                return log_error_errno(-EIO, "Cannot sign the link proof | openssl=\"%s\"",
                                       ERR_error_string(ERR_get_error(), NULL));
        *ret = TAKE_PTR(sig);
        *ret_len = sig_len;
        return 0;
}

int proof_verify(const char *cert_pem, const void *nonce, size_t nonce_len, const char *node_id,
                 const void *sig, size_t sig_len)
{
        _cleanup_(bio_freep) BIO *b = BIO_new_mem_buf(cert_pem, -1);
        if (!b)
                return -ENOMEM;
        _cleanup_(x509_freep) X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (!x)
                return -EINVAL;
        _cleanup_(pkey_freep) EVP_PKEY *pub = X509_get_pubkey(x);
        if (!pub)
                return -EINVAL;
        _cleanup_free_ unsigned char *msg = NULL;
        size_t msg_len;
        if (proof_message(nonce, nonce_len, node_id, &msg, &msg_len) < 0)
                return -ENOMEM;
        _cleanup_(md_ctx_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) != 1)
                return -EINVAL;
        int ok = EVP_DigestVerify(ctx, sig, sig_len, msg, msg_len);
        ERR_clear_error();
        return ok == 1 ? 0 : -EBADMSG;
}
