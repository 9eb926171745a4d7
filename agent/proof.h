/* SPDX-License-Identifier: MIT */
#pragma once

/* The agent link's identity proof (docs/agent-link.md, "Identity"): the node
 * key signs "gpuslice-link-v1\0" || nonce || node_id (ECDSA P-256, SHA-256,
 * DER), so a pipe proves which node certificate speaks on it even though
 * nng 1.5 cannot tell whose TLS certificate verified. */

#include <stddef.h>

#include <openssl/evp.h>

#define PROOF_CONTEXT     "gpuslice-link-v1"
#define PROOF_NONCE_BYTES 32

/* Reads a PEM private key (an EC P-256 key). 0 or -errno (logged). */
int proof_load_key(const char *path, EVP_PKEY **ret);
/* Reads a whole PEM file into a malloc'ed string. 0 or -errno (logged). */
int proof_read_pem(const char *path, char **ret);

/* The bytes that are signed: context (with its NUL), nonce, node id. */
int proof_message(const void *nonce, size_t nonce_len, const char *node_id, unsigned char **ret,
                  size_t *ret_len);

/* DER signature over proof_message(); *ret is malloc'ed. */
int proof_sign(EVP_PKEY *key, const void *nonce, size_t nonce_len, const char *node_id,
               unsigned char **ret, size_t *ret_len);
/* 0 when sig verifies with the public key of cert_pem, -EBADMSG when it does
 * not, -EINVAL for an unreadable certificate. What the controller checks. */
int proof_verify(const char *cert_pem, const void *nonce, size_t nonce_len, const char *node_id,
                 const void *sig, size_t sig_len);
