/* SPDX-License-Identifier: MIT */
#pragma once

/* A user's SSH public keys, installed into the allocations they launch.
 * A key is accepted only as one OpenSSH public key line whose base64 blob
 * really is a key of the type the line names (the wire format is parsed, not
 * pattern-matched); RSA keys must have at least 2048 bits. Anything that
 * looks like a private key is refused and never stored nor echoed. The
 * fingerprint is what `ssh-keygen -l` prints: "SHA256:" and the unpadded
 * standard base64 of the blob's SHA-256. */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "id.h"
#include "timeutil.h"

typedef struct Db Db;

#define SSH_KEY_LINE_MAX     16384 /* an RSA 16384-bit key line is about 2.8 KB */
#define SSH_KEY_NAME_MAX     100
#define SSH_KEY_RSA_MIN_BITS 2048
#define SSH_FINGERPRINT_MAX  (7 + 43 + 1) /* "SHA256:" + 43 base64 chars */

/* A parsed, validated public key line. */
typedef struct SshPublicKey {
        char *type;    /* "ssh-ed25519", ... */
        char *line;    /* normalised: "type base64[ comment]" */
        char *comment; /* NULL when the line has none */
        char fingerprint[SSH_FINGERPRINT_MAX];
        unsigned bits; /* RSA modulus bits, 256 for ed25519, curve bits for ECDSA */
} SshPublicKey;

void ssh_public_key_done(SshPublicKey *k);

/* Parses one OpenSSH public key line. -EINVAL with *ret_reason (a static
 * machine-readable string: "private_key", "empty", "multiple_lines",
 * "unsupported_type", "bad_base64", "truncated", "type_mismatch",
 * "bad_key_data", "rsa_too_small", "curve_mismatch", "too_long") on refusal. */
int ssh_public_key_parse(const char *line, SshPublicKey *ret, const char **ret_reason);

/* "SHA256:..." of a raw key blob. */
int ssh_fingerprint_sha256(const unsigned char *blob, size_t len,
                           char ret[static SSH_FINGERPRINT_MAX]);

typedef struct SshKey {
        char id[ID_MAX]; /* "key_..." */
        char user_id[ID_MAX];
        char *name;
        char *public_key; /* the normalised line */
        char *key_type;
        char *fingerprint;
        usec_t created_at;
        long long seq;
} SshKey;

void ssh_key_done(SshKey *k);
json_t *ssh_key_to_json(const SshKey *k);

/* Adds a key for user_id. name may be NULL (then the line's comment, else
 * "key-N"). -EINVAL with *ret_reason as for ssh_public_key_parse (or
 * "bad_name"), -EEXIST when the user already has this key. */
int ssh_keys_add(Db *db, const char *user_id, const char *line, const char *name, SshKey *ret,
                 const char **ret_reason);
/* The user's live keys with seq > after_seq in seq order, at most limit. */
int ssh_keys_list(Db *db, const char *user_id, long long after_seq, int limit,
                  int (*fn)(const SshKey *k, void *userdata), void *userdata);
/* -ENOENT when the key is not the user's (or already deleted). */
int ssh_keys_get(Db *db, const char *user_id, const char *id, SshKey *ret);
int ssh_keys_delete(Db *db, const char *user_id, const char *id);

/* The public key lines of key_ids (a JSON array of key id strings), in that
 * order, as a new JSON array of strings in *ret_lines. -ENOENT when any id is
 * not a live key of user_id (logged with the id), -EINVAL when key_ids is not
 * an array of strings. */
int ssh_keys_public_lines(Db *db, const char *user_id, json_t *key_ids, json_t **ret_lines);
