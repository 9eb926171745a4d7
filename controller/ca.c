/* SPDX-License-Identifier: MIT */
/* The node CA, OpenSSL 3 only (EVP_PKEY, X509, X509_REQ; no deprecated EC_KEY). */
#include "ca.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "log.h"

struct Ca {
        EVP_PKEY *key;
        X509 *cert;
        X509_STORE *store;
        char *pem;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_REQ *, X509_REQ_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE_CTX *, X509_STORE_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_INTEGER *, ASN1_INTEGER_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIGNUM *, BN_free);

static char *bio_to_string(BIO *b)
{
        char *data;
        long n = BIO_get_mem_data(b, &data);
        if (n < 0)
                return NULL;
        char *s = malloc((size_t)n + 1);
        if (!s)
                return NULL;
        memcpy(s, data, (size_t)n);
        s[n] = '\0';
        return s;
}

static char *cert_to_pem(X509 *x)
{
        _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
        if (!b || PEM_write_bio_X509(b, x) != 1)
                return NULL;
        return bio_to_string(b);
}

static EVP_PKEY *new_p256(void)
{
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

int ca_new_key_pem(char **ret)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = new_p256();
        _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
        if (!k || !b || PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1)
                return -ENOMEM;
        *ret = bio_to_string(b);
        return *ret ? 0 : -ENOMEM;
}

static EVP_PKEY *key_from_pem(const char *pem)
{
        _cleanup_(BIO_freep) BIO *b = BIO_new_mem_buf(pem, -1);
        return b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
}

static X509 *cert_from_pem(const char *pem)
{
        _cleanup_(BIO_freep) BIO *b = BIO_new_mem_buf(pem, -1);
        return b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
}

static int set_cn(X509_NAME *name, const char *cn)
{
        return X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
                                          -1, 0) == 1
                   ? 0
                   : -EINVAL;
}

static int add_ext(X509 *issuer, X509 *x, int nid, const char *value)
{
        X509V3_CTX ctx;
        X509V3_set_ctx_nodb(&ctx);
        X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
        if (!ext)
                return -EINVAL;
        int ok = X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        return ok == 1 ? 0 : -EINVAL;
}

/* 16 random bytes, top bit clear so the INTEGER stays positive. */
static int random_serial(X509 *x, char serial[static CA_SERIAL_MAX])
{
        unsigned char raw[16];
        if (RAND_bytes(raw, sizeof(raw)) != 1)
                return -EIO;
        raw[0] &= 0x7f;
        raw[0] |= 0x01; /* no leading zero byte: the hex form is stable */
        _cleanup_(BN_freep) BIGNUM *bn = BN_bin2bn(raw, sizeof(raw), NULL);
        if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
                return -ENOMEM;
        char *hex = BN_bn2hex(bn);
        if (!hex)
                return -ENOMEM;
        snprintf(serial, CA_SERIAL_MAX, "%s", hex);
        OPENSSL_free(hex);
        return 0;
}

static int serial_of(X509 *x, char serial[static CA_SERIAL_MAX])
{
        _cleanup_(BN_freep) BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(x), NULL);
        if (!bn)
                return -EBADMSG;
        char *hex = BN_bn2hex(bn);
        if (!hex)
                return -ENOMEM;
        int r = strlen(hex) < CA_SERIAL_MAX ? 0 : -EBADMSG;
        if (r == 0)
                snprintf(serial, CA_SERIAL_MAX, "%s", hex);
        OPENSSL_free(hex);
        return r;
}

static int create_ca(EVP_PKEY **ret_key, X509 **ret_cert)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = new_p256();
        _cleanup_(X509_freep) X509 *x = X509_new();
        char serial[CA_SERIAL_MAX];
        if (!k || !x)
                return -ENOMEM;
        X509_set_version(x, X509_VERSION_3);
        if (random_serial(x, serial) < 0)
                return -EIO;
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), 20L * 365 * 86400);
        X509_set_pubkey(x, k);
        if (set_cn(X509_get_subject_name(x), "gpuslice node CA") < 0)
                return -EINVAL;
        X509_set_issuer_name(x, X509_get_subject_name(x));
        if (add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
            add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
            add_ext(x, x, NID_subject_key_identifier, "hash") < 0)
                return -EINVAL;
        if (X509_sign(x, k, EVP_sha256()) <= 0)
                return -EIO;
        *ret_key = TAKE_PTR(k);
        *ret_cert = TAKE_PTR(x);
        return 0;
}

static int write_private(const char *path, const char *data, mode_t mode)
{
        _cleanup_free_ char *tmp = NULL;
        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        size_t len = strlen(data);
        if (write(fd, data, len) != (ssize_t)len || fsync(fd) < 0)
                return -EIO;
        if (fchmod(fd, mode) < 0)
                return -errno;
        return rename(tmp, path) < 0 ? -errno : 0;
}

static char *slurp(const char *path)
{
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        char buf[16384];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        return strdup(buf);
}

int ca_open(const char *dir, Ca **ret)
{
        _cleanup_free_ char *key_path = NULL, *cert_path = NULL;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(-errno, "cannot create the CA directory | path=%s", dir);
        if (asprintf(&key_path, "%s/ca.key", dir) < 0 || asprintf(&cert_path, "%s/ca.crt", dir) < 0)
                return -ENOMEM;

        Ca *ca = calloc(1, sizeof(*ca));
        if (!ca)
                return -ENOMEM;
        _cleanup_(ca_freep) Ca *owned = ca;
        _cleanup_free_ char *key_pem = slurp(key_path), *cert_pem = slurp(cert_path);
        if (key_pem && cert_pem) {
                ca->key = key_from_pem(key_pem);
                ca->cert = cert_from_pem(cert_pem);
                if (!ca->key || !ca->cert || X509_check_private_key(ca->cert, ca->key) != 1)
                        return log_error_errno(-EBADMSG,
                                               "the CA key and certificate do not load or match "
                                               "| dir=%s",
                                               dir);
        } else if (key_pem || cert_pem) {
                return log_error_errno(-ENOENT, "half a CA: ca.key and ca.crt go together | dir=%s",
                                       dir);
        } else {
                int r = create_ca(&ca->key, &ca->cert);
                if (r < 0)
                        return log_error_errno(r, "cannot create the node CA");
                _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
                if (!b || PEM_write_bio_PrivateKey(b, ca->key, NULL, NULL, 0, NULL, NULL) != 1)
                        return -ENOMEM;
                _cleanup_free_ char *kp = bio_to_string(b);
                _cleanup_free_ char *cp = cert_to_pem(ca->cert);
                if (!kp || !cp)
                        return -ENOMEM;
                r = write_private(key_path, kp, 0600);
                if (r >= 0)
                        r = write_private(cert_path, cp, 0644);
                explicit_bzero(kp, strlen(kp));
                if (r < 0)
                        return log_error_errno(r, "cannot write the node CA | dir=%s", dir);
                log_info("created the node CA | dir=%s", dir);
        }
        ca->pem = cert_to_pem(ca->cert);
        ca->store = X509_STORE_new();
        if (!ca->pem || !ca->store || X509_STORE_add_cert(ca->store, ca->cert) != 1)
                return -ENOMEM;
        *ret = TAKE_PTR(owned);
        return 0;
}

void ca_free(Ca *ca)
{
        if (!ca)
                return;
        EVP_PKEY_free(ca->key);
        X509_free(ca->cert);
        X509_STORE_free(ca->store);
        free(ca->pem);
        free(ca);
}

const char *ca_pem(const Ca *ca)
{
        return ca->pem;
}

static bool is_p256(EVP_PKEY *k)
{
        char group[64];
        size_t len = 0;
        if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC)
                return false;
        if (EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           &len) != 1)
                return false;
        return streq(group, "prime256v1") || streq(group, "P-256");
}

static int issue(const Ca *ca, EVP_PKEY *pub, const char *cn, const char *san, bool server,
                 unsigned days, char serial[static CA_SERIAL_MAX], int64_t *ret_not_after,
                 char **ret_pem)
{
        _cleanup_(X509_freep) X509 *x = X509_new();
        if (!x)
                return -ENOMEM;
        X509_set_version(x, X509_VERSION_3);
        int r = random_serial(x, serial);
        if (r < 0)
                return r;
        time_t now = time(NULL);
        X509_time_adj_ex(X509_getm_notBefore(x), 0, -300, &now);
        X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, &now);
        X509_set_pubkey(x, pub);
        if (set_cn(X509_get_subject_name(x), cn) < 0)
                return -EINVAL;
        X509_set_issuer_name(x, X509_get_subject_name(ca->cert));
        if (add_ext(ca->cert, x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
            add_ext(ca->cert, x, NID_key_usage, "critical,digitalSignature") < 0 ||
            add_ext(ca->cert, x, NID_ext_key_usage, server ? "serverAuth" : "clientAuth") < 0 ||
            add_ext(ca->cert, x, NID_authority_key_identifier, "keyid:always") < 0)
                return -EINVAL;
        if (san && add_ext(ca->cert, x, NID_subject_alt_name, san) < 0)
                return -EINVAL;
        if (X509_sign(x, ca->key, EVP_sha256()) <= 0)
                return -EIO;
        if (ret_not_after)
                *ret_not_after = ((int64_t)now + (int64_t)days * 86400) * 1000000;
        *ret_pem = cert_to_pem(x);
        return *ret_pem ? 0 : -ENOMEM;
}

int ca_sign_csr(const Ca *ca, const char *csr_pem, const char *node_id, unsigned days,
                char serial[static CA_SERIAL_MAX], int64_t *ret_not_after_usec, char **ret_pem)
{
        _cleanup_(BIO_freep) BIO *b = BIO_new_mem_buf(csr_pem, -1);
        if (!b)
                return -ENOMEM;
        _cleanup_(X509_REQ_freep) X509_REQ *req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
        if (!req)
                return -EBADMSG;
        EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
        if (!pub)
                return -EBADMSG;
        /* Proof that the requester holds the key it asks us to certify. */
        if (X509_REQ_verify(req, pub) != 1)
                return -EBADMSG;
        if (!is_p256(pub))
                return -EKEYREJECTED;
        /* The subject the CSR asked for is ignored: the node id is ours to say. */
        return issue(ca, pub, node_id, NULL, false, days, serial, ret_not_after_usec, ret_pem);
}

int ca_issue_server_cert(const Ca *ca, const char *host, char **ret_cert_pem, char **ret_key_pem)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = new_p256();
        if (!k)
                return -ENOMEM;
        char serial[CA_SERIAL_MAX], san[300];
        /* An IP address goes into the CN only: mbedTLS (nng's TLS) matches a
         * server name against SAN DNS entries when a SAN is present and has no
         * IP SAN matching, so a SAN would hide the CN. */
        bool is_ip = strspn(host, "0123456789.") == strlen(host) || strchr(host, ':');
        snprintf(san, sizeof(san), "DNS:%s", host);
        _cleanup_free_ char *cert = NULL;
        int r = issue(ca, k, host, is_ip ? NULL : san, true, 825, serial, NULL, &cert);
        if (r < 0)
                return r;
        _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
        if (!b || PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1)
                return -ENOMEM;
        char *key = bio_to_string(b);
        if (!key)
                return -ENOMEM;
        *ret_cert_pem = TAKE_PTR(cert);
        *ret_key_pem = key;
        return 0;
}

int ca_verify_node_cert(const Ca *ca, const char *cert_pem, char node_id[static 64],
                        char serial[static CA_SERIAL_MAX])
{
        _cleanup_(X509_freep) X509 *x = cert_from_pem(cert_pem);
        if (!x)
                return -EBADMSG;
        _cleanup_(X509_STORE_CTX_freep) X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        if (!ctx || X509_STORE_CTX_init(ctx, ca->store, x, NULL) != 1)
                return -ENOMEM;
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        if (X509_verify_cert(ctx) != 1)
                return -EKEYREJECTED;
        char cn[80];
        int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
        if (n <= 0 || n >= 64 || !startswith(cn, "nod_"))
                return -EKEYREJECTED;
        memcpy(node_id, cn, (size_t)n + 1);
        return serial_of(x, serial);
}

int ca_verify_signature(const char *cert_pem, const void *data, size_t len, const void *sig,
                        size_t sig_len)
{
        _cleanup_(X509_freep) X509 *x = cert_from_pem(cert_pem);
        if (!x)
                return -EBADMSG;
        EVP_PKEY *pub = X509_get0_pubkey(x);
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!pub || !md)
                return -EBADMSG;
        if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) != 1)
                return -EBADMSG;
        return EVP_DigestVerify(md, sig, sig_len, data, len) == 1 ? 0 : -EKEYREJECTED;
}

int ca_make_csr(const char *key_pem, const char *cn, char **ret)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = key_from_pem(key_pem);
        _cleanup_(X509_REQ_freep) X509_REQ *req = X509_REQ_new();
        if (!k || !req)
                return -EINVAL;
        X509_REQ_set_version(req, 0);
        if (set_cn(X509_REQ_get_subject_name(req), cn) < 0)
                return -EINVAL;
        X509_REQ_set_pubkey(req, k);
        if (X509_REQ_sign(req, k, EVP_sha256()) <= 0)
                return -EIO;
        _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
        if (!b || PEM_write_bio_X509_REQ(b, req) != 1)
                return -ENOMEM;
        *ret = bio_to_string(b);
        return *ret ? 0 : -ENOMEM;
}

int ca_sign_data(const char *key_pem, const void *data, size_t len, unsigned char **ret,
                 size_t *ret_len)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = key_from_pem(key_pem);
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!k || !md)
                return -EINVAL;
        size_t n = 0;
        if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) != 1 ||
            EVP_DigestSign(md, NULL, &n, data, len) != 1)
                return -EIO;
        unsigned char *sig = malloc(n);
        if (!sig)
                return -ENOMEM;
        if (EVP_DigestSign(md, sig, &n, data, len) != 1) {
                free(sig);
                return -EIO;
        }
        *ret = sig;
        *ret_len = n;
        return 0;
}
