/* SPDX-License-Identifier: MIT */
/* ca.c: the node CA is created once with a private key file, signs CSRs with
 * the node id as CN whatever the CSR asked, refuses bad CSRs and foreign
 * certificates, and checks signatures over the link challenge. */
#include <criterion/criterion.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ca.h"
#include "harness.h"

TestSuite(ca, .timeout = 60);

static Ca *open_ca(const char *dir)
{
        Ca *ca = NULL;
        cr_assert_eq(ca_open(dir, &ca), 0);
        return ca;
}

static char *sign_for(Ca *ca, const char *key_pem, const char *node_id)
{
        _cleanup_free_ char *csr = NULL;
        char *cert = NULL, serial[CA_SERIAL_MAX];
        int64_t na;
        cr_assert_eq(ca_make_csr(key_pem, "evil.example", &csr), 0);
        cr_assert_eq(ca_sign_csr(ca, csr, node_id, 365, serial, &na, &cert), 0);
        return cert;
}

Test(ca, is_created_once_with_a_private_key_and_reloaded)
{
        _cleanup_free_ char *dir = tmpdir_new("ca");
        char sub[512];
        snprintf(sub, sizeof(sub), "%s/ca", dir);
        Ca *a = open_ca(sub);
        _cleanup_free_ char *pem = strdup(ca_pem(a));
        ca_free(a);
        char key[600];
        snprintf(key, sizeof(key), "%s/ca.key", sub);
        struct stat st;
        cr_assert_eq(stat(key, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0600);
        Ca *b = open_ca(sub);
        cr_assert_str_eq(ca_pem(b), pem, "a restart keeps the same CA");
        ca_free(b);
        tmpdir_remove(dir);
}

Test(ca, signs_the_node_id_not_the_requested_subject_and_verifies_it)
{
        _cleanup_free_ char *dir = tmpdir_new("ca");
        Ca *ca = open_ca(dir);
        _cleanup_free_ char *key = NULL;
        cr_assert_eq(ca_new_key_pem(&key), 0);
        _cleanup_free_ char *cert = sign_for(ca, key, "nod_AAAAAAAAAAAAAAAAAAAAAA");
        char node[64], serial[CA_SERIAL_MAX];
        cr_assert_eq(ca_verify_node_cert(ca, cert, node, serial), 0);
        cr_assert_str_eq(node, "nod_AAAAAAAAAAAAAAAAAAAAAA");
        cr_assert_gt(strlen(serial), 8);

        /* a signature with the node key verifies; another key's does not */
        const char msg[] = "gpuslice-link-v1\0nonce";
        unsigned char *sig = NULL;
        size_t sig_len;
        cr_assert_eq(ca_sign_data(key, msg, sizeof(msg), &sig, &sig_len), 0);
        cr_assert_eq(ca_verify_signature(cert, msg, sizeof(msg), sig, sig_len), 0);
        cr_assert_eq(ca_verify_signature(cert, msg, sizeof(msg) - 1, sig, sig_len), -EKEYREJECTED);
        free(sig);
        _cleanup_free_ char *other = NULL;
        cr_assert_eq(ca_new_key_pem(&other), 0);
        cr_assert_eq(ca_sign_data(other, msg, sizeof(msg), &sig, &sig_len), 0);
        cr_assert_eq(ca_verify_signature(cert, msg, sizeof(msg), sig, sig_len), -EKEYREJECTED);
        free(sig);
        ca_free(ca);
        tmpdir_remove(dir);
}

Test(ca, refuses_foreign_certificates_and_bad_csrs)
{
        _cleanup_free_ char *d1 = tmpdir_new("ca"), *d2 = tmpdir_new("ca");
        Ca *ours = open_ca(d1), *theirs = open_ca(d2);
        _cleanup_free_ char *key = NULL;
        cr_assert_eq(ca_new_key_pem(&key), 0);
        _cleanup_free_ char *foreign = sign_for(theirs, key, "nod_AAAAAAAAAAAAAAAAAAAAAA");
        char node[64], serial[CA_SERIAL_MAX];
        cr_assert_eq(ca_verify_node_cert(ours, foreign, node, serial), -EKEYREJECTED);
        cr_assert_eq(ca_verify_node_cert(ours, "not a pem", node, serial), -EBADMSG);
        /* the server certificate is ours but no node's */
        _cleanup_free_ char *scert = NULL, *skey = NULL;
        cr_assert_eq(ca_issue_server_cert(ours, "127.0.0.1", &scert, &skey), 0);
        cr_assert_lt(ca_verify_node_cert(ours, scert, node, serial), 0);

        char *cert = NULL;
        int64_t na;
        cr_assert_eq(ca_sign_csr(ours,
                                 "-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END "
                                 "CERTIFICATE REQUEST-----\n",
                                 "nod_AAAAAAAAAAAAAAAAAAAAAA", 365, serial, &na, &cert),
                     -EBADMSG);
        /* an RSA key is not what nodes use */
        EVP_PKEY *rsa = EVP_RSA_gen(2048);
        BIO *b = BIO_new(BIO_s_mem());
        PEM_write_bio_PrivateKey(b, rsa, NULL, NULL, 0, NULL, NULL);
        char *data;
        long n = BIO_get_mem_data(b, &data);
        _cleanup_free_ char *rsa_pem = calloc(1, (size_t)n + 1);
        memcpy(rsa_pem, data, (size_t)n);
        BIO_free(b);
        EVP_PKEY_free(rsa);
        _cleanup_free_ char *csr = NULL;
        cr_assert_eq(ca_make_csr(rsa_pem, "x", &csr), 0);
        cr_assert_eq(ca_sign_csr(ours, csr, "nod_AAAAAAAAAAAAAAAAAAAAAA", 365, serial, &na, &cert),
                     -EKEYREJECTED);
        ca_free(ours);
        ca_free(theirs);
        tmpdir_remove(d1);
        tmpdir_remove(d2);
}
