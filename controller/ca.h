/* SPDX-License-Identifier: MIT */
#pragma once

/* The controller's small certificate authority for node identity: an EC
 * P-256 key and a self-signed CA certificate under <state_dir>/ca/ (key file
 * 0600), created at first start. It signs each node's CSR with the node id
 * as the subject CN (whatever the CSR asked for), issues the agent link's
 * server certificate, and checks what an agent presents on the link: the
 * chain, the node id inside, and a signature made with the node's key. */

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct Ca Ca;

#define CA_SERIAL_MAX     64 /* hex digits + NUL */
#define CA_NODE_CERT_DAYS 365

/* Loads <dir>/ca.key and <dir>/ca.crt, or creates both (dir 0700, key 0600). */
int ca_open(const char *dir, Ca **ret);
void ca_free(Ca *ca);
DEFINE_TRIVIAL_CLEANUP_FUNC(Ca *, ca_free);

/* The CA certificate, PEM. */
const char *ca_pem(const Ca *ca);

/* Signs a PEM CSR for node_id: the CSR's own signature must verify and its key
 * must be EC P-256 (-EBADMSG: not a CSR or bad signature; -EKEYREJECTED: key
 * type). Subject: CN=<node_id>; a random serial (hex into serial); validity
 * days. *ret_pem is malloc'ed. */
int ca_sign_csr(const Ca *ca, const char *csr_pem, const char *node_id, unsigned days,
                char serial[static CA_SERIAL_MAX], int64_t *ret_not_after_usec, char **ret_pem);

/* A fresh key and a certificate for the link listener (CN and SAN = host). */
int ca_issue_server_cert(const Ca *ca, const char *host, char **ret_cert_pem, char **ret_key_pem);

/* Checks a PEM certificate presented by an agent: it chains to this CA, it is
 * valid now and it is a node certificate (CN nod_...). Fills node_id and serial.
 * -EBADMSG: unparsable; -EKEYREJECTED: not ours, expired or not a node's. */
int ca_verify_node_cert(const Ca *ca, const char *cert_pem, char node_id[static 64],
                        char serial[static CA_SERIAL_MAX]);

/* Verifies an ECDSA-SHA256 (DER) signature over data with the key of the PEM
 * certificate. 0 when it verifies, -EKEYREJECTED when not, -EBADMSG when unparsable. */
int ca_verify_signature(const char *cert_pem, const void *data, size_t len, const void *sig,
                        size_t sig_len);

/* Helpers the tests and the test peer use too: a new P-256 key as PEM, and a
 * CSR for it with the given CN. */
int ca_new_key_pem(char **ret_key_pem);
int ca_make_csr(const char *key_pem, const char *cn, char **ret_csr_pem);
/* ECDSA-SHA256 signature (DER) with a PEM private key; *ret malloc'ed. */
int ca_sign_data(const char *key_pem, const void *data, size_t len, unsigned char **ret,
                 size_t *ret_len);
