/* SPDX-License-Identifier: MIT */
/* A user's SSH public keys: GET|POST /api/v1/access/ssh-keys and
 * DELETE /api/v1/access/ssh-keys/{id}. Every user sees and changes only their
 * own keys; another user's key id is 404, as if it did not exist. A refused
 * key is never echoed back (it might be a private key pasted by mistake). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "api-list.h"
#include "api.h"
#include "audit.h"
#include "db.h"
#include "log.h"
#include "server.h"
#include "ssh-keys.h"

typedef struct ListCtx {
        json_t *items;
        long long last_seq;
} ListCtx;

static int list_one(const SshKey *k, void *userdata)
{
        ListCtx *c = userdata;
        c->last_seq = k->seq;
        return json_array_append_new(c->items, ssh_key_to_json(k)) < 0 ? -ENOMEM : 0;
}

int api_ssh_keys_list(Request *r)
{
        int limit;
        long long after;
        if (api_list_params(r, API_LIST_MAX_LIMIT, &limit, &after) < 0)
                return 0;
        ListCtx c = {.items = json_array()};
        int ret = ssh_keys_list(r->server->db, r->auth.user_id, after, limit, list_one, &c);
        if (ret < 0) {
                json_decref(c.items);
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot list SSH keys now");
        }
        return api_list_reply(r, c.items, c.last_seq, limit);
}

/* What a refusal reason means, for the message (the code is details.reason). */
static const char *reason_message(const char *reason)
{
        static const struct {
                const char *reason, *message;
        } table[] = {
            {"private_key", "this is a private key: paste the public key (the .pub file) only; "
                            "the private key was not stored"},
            {"empty", "public_key is empty"},
            {"multiple_lines", "public_key must be exactly one key line"},
            {"too_long", "public_key is too long"},
            {"unsupported_type",
             "the key type is not supported (ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa, "
             "sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com)"},
            {"bad_base64", "the key data is not valid base64"},
            {"truncated", "the key data ends too early"},
            {"type_mismatch", "the key data is of another type than the line says"},
            {"curve_mismatch", "the key's curve does not match its type"},
            {"bad_key_data", "the key data is not a valid public key"},
            {"rsa_too_small", "RSA keys must have at least 2048 bits"},
            {"bad_comment", "the key line contains control characters"},
            {"bad_name", "name must be 1 to 100 characters without control characters"},
        };
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (streq(table[i].reason, reason))
                        return table[i].message;
        return "not an OpenSSH public key";
}

static const JsonField add_fields[] = {
    {"public_key", JSON_FIELD_STRING, true, 1, SSH_KEY_LINE_MAX},
    {"name", JSON_FIELD_STRING, false, 1, SSH_KEY_NAME_MAX},
};

int api_ssh_keys_add(Request *r)
{
        Db *db = r->server->db;
        json_t *body;
        if (http_read_json(r, add_fields, ELEMENTSOF(add_fields), &body) < 0)
                return 0;
        _cleanup_(json_decrefp) json_t *b = body;
        const char *reason = NULL;
        _cleanup_(ssh_key_done) SshKey k = {0};
        _cleanup_txn_ DbTxn txn = {0};
        int ret = db_begin(db, &txn);
        if (ret >= 0)
                ret = ssh_keys_add(db, r->auth.user_id, json_field_string(b, "public_key"),
                                   json_field_string(b, "name"), &k, &reason);
        if (ret >= 0)
                ret = audit_log(db, r->auth.user_id, "ssh_key.add", "ssh_key", k.id, NULL,
                                json_pack("{s:s, s:s, s:s}", "name", k.name, "type", k.key_type,
                                          "fingerprint", k.fingerprint));
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret == -EINVAL && reason)
                return http_reply_error(r, ERR_INVALID_SSH_KEY,
                                        json_pack("{s:s, s:s}", "field",
                                                  streq(reason, "bad_name") ? "name" : "public_key",
                                                  "reason", reason),
                                        "%s", reason_message(reason));
        if (ret == -EEXIST)
                return http_reply_error(r, ERR_SSH_KEY_EXISTS, NULL, "you already added this key");
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot add the key now");
        log_info("SSH key added | user_id=%s key_id=%s type=%s fingerprint=%s", r->auth.user_id,
                 k.id, k.key_type, k.fingerprint);
        char loc[128];
        snprintf(loc, sizeof(loc), "/api/v1/access/ssh-keys/%s", k.id);
        http_add_header(r, "location", loc);
        return http_reply_json(r, 201, ssh_key_to_json(&k));
}

int api_ssh_keys_delete(Request *r)
{
        Db *db = r->server->db;
        const char *id = http_param(r, 0);
        _cleanup_txn_ DbTxn txn = {0};
        int ret = id_valid("key", id) ? db_begin(db, &txn) : -ENOENT;
        if (ret >= 0)
                ret = ssh_keys_delete(db, r->auth.user_id, id);
        if (ret >= 0)
                ret = audit_log(db, r->auth.user_id, "ssh_key.delete", "ssh_key", id, NULL, NULL);
        if (ret >= 0)
                ret = db_commit(&txn);
        if (ret == -ENOENT)
                return http_reply_error(r, ERR_NOT_FOUND, NULL, "no such SSH key");
        if (ret < 0)
                return http_reply_error(r, ERR_UNAVAILABLE, NULL, "cannot delete the key now");
        return http_reply_empty(r, 204);
}
