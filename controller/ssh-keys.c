/* SPDX-License-Identifier: MIT */
#include "ssh-keys.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>

#include "db.h"
#include "json-util.h"
#include "log.h"
#include "macro.h"

/* ---- the wire format (RFC 4251 section 5) ---- */

typedef struct Reader {
        const unsigned char *p;
        size_t left;
} Reader;

/* A length-prefixed string; -EBADMSG when the blob ends first. */
static int read_string(Reader *r, const unsigned char **ret, size_t *ret_len)
{
        if (r->left < 4)
                return -EBADMSG;
        uint32_t n = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 |
                     (uint32_t)r->p[3];
        if (n > r->left - 4)
                return -EBADMSG;
        *ret = r->p + 4;
        *ret_len = n;
        r->p += 4 + n;
        r->left -= 4 + n;
        return 0;
}

static bool string_is(const unsigned char *s, size_t n, const char *want)
{
        return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* An mpint that must be positive: no sign bit, no superfluous leading zero
 * (as OpenSSH's sshbuf_get_bignum2 requires). Its bit length into *ret_bits. */
static int mpint_positive_bits(const unsigned char *s, size_t n, unsigned *ret_bits)
{
        if (n == 0 || (s[0] & 0x80))
                return -EINVAL;
        if (s[0] == 0 && (n == 1 || !(s[1] & 0x80)))
                return -EINVAL;
        BIGNUM *bn = BN_bin2bn(s, (int)n, NULL);
        if (!bn)
                return -ENOMEM;
        *ret_bits = (unsigned)BN_num_bits(bn);
        BN_free(bn);
        return 0;
}

typedef struct KeyType {
        const char *name;
        const char *curve;   /* ECDSA: the curve name inside the blob */
        int nid;             /* ECDSA: OpenSSL's curve */
        unsigned curve_bits; /* ECDSA */
        bool security_key;   /* sk-*: an application string follows the key */
} KeyType;

static const KeyType key_types[] = {
    {"ssh-ed25519", NULL, 0, 0, false},
    {"ssh-rsa", NULL, 0, 0, false},
    {"ecdsa-sha2-nistp256", "nistp256", NID_X9_62_prime256v1, 256, false},
    {"ecdsa-sha2-nistp384", "nistp384", NID_secp384r1, 384, false},
    {"ecdsa-sha2-nistp521", "nistp521", NID_secp521r1, 521, false},
    {"sk-ssh-ed25519@openssh.com", NULL, 0, 0, true},
    {"sk-ecdsa-sha2-nistp256@openssh.com", "nistp256", NID_X9_62_prime256v1, 256, true},
};

static const KeyType *key_type_find(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++)
                if (streq(key_types[i].name, name))
                        return &key_types[i];
        return NULL;
}

/* Checks that an uncompressed point lies on the curve. */
static bool ec_point_valid(int nid, const unsigned char *q, size_t n)
{
        EC_GROUP *g = EC_GROUP_new_by_curve_name(nid);
        EC_POINT *pt = g ? EC_POINT_new(g) : NULL;
        bool ok =
            pt && EC_POINT_oct2point(g, pt, q, n, NULL) == 1 && !EC_POINT_is_at_infinity(g, pt);
        EC_POINT_free(pt);
        EC_GROUP_free(g);
        return ok;
}

/* Parses the decoded blob of a key of type t. */
static int parse_blob(const KeyType *t, const unsigned char *blob, size_t len, unsigned *ret_bits,
                      const char **reason)
{
        Reader r = {blob, len};
        const unsigned char *s;
        size_t n;

        if (len >= 14 && memcmp(blob, "openssh-key-v1", 14) == 0) {
                *reason = "private_key"; /* the base64 body of a private key file */
                return -EINVAL;
        }
        if (read_string(&r, &s, &n) < 0)
                goto truncated;
        if (!string_is(s, n, t->name)) {
                *reason = "type_mismatch";
                return -EINVAL;
        }
        if (streq(t->name, "ssh-rsa")) {
                unsigned e_bits, n_bits;
                if (read_string(&r, &s, &n) < 0)
                        goto truncated;
                /* e: odd, at least 3 (OpenSSH refuses smaller). */
                if (mpint_positive_bits(s, n, &e_bits) < 0 || e_bits < 2 || !(s[n - 1] & 1))
                        goto bad;
                if (read_string(&r, &s, &n) < 0)
                        goto truncated;
                if (mpint_positive_bits(s, n, &n_bits) < 0 || n_bits > 16384)
                        goto bad;
                if (n_bits < SSH_KEY_RSA_MIN_BITS) {
                        *reason = "rsa_too_small";
                        return -EINVAL;
                }
                *ret_bits = n_bits;
        } else if (t->curve) {
                if (read_string(&r, &s, &n) < 0)
                        goto truncated;
                if (!string_is(s, n, t->curve)) {
                        *reason = "curve_mismatch";
                        return -EINVAL;
                }
                if (read_string(&r, &s, &n) < 0)
                        goto truncated;
                size_t coord = (t->curve_bits + 7) / 8;
                if (n != 1 + 2 * coord || s[0] != 0x04 || !ec_point_valid(t->nid, s, n))
                        goto bad;
                *ret_bits = t->curve_bits;
        } else {
                if (read_string(&r, &s, &n) < 0)
                        goto truncated;
                if (n != 32)
                        goto bad;
                *ret_bits = 256;
        }
        if (t->security_key) {
                if (read_string(&r, &s, &n) < 0)
                        goto truncated;
                if (n == 0)
                        goto bad; /* the FIDO application ("ssh:...") */
        }
        if (r.left != 0)
                goto bad;
        return 0;
truncated:
        *reason = "truncated";
        return -EINVAL;
bad:
        *reason = "bad_key_data";
        return -EINVAL;
}

/* Decodes standard base64 with OpenSSL's EVP decoder; padding as OpenSSH
 * writes it is required. */
static int base64_decode(const char *in, size_t len, unsigned char **ret, size_t *ret_len)
{
        if (len == 0 || len % 4 != 0)
                return -EINVAL;
        for (size_t i = 0; i < len; i++)
                if (!(isalnum((unsigned char)in[i]) || in[i] == '+' || in[i] == '/' ||
                      (in[i] == '=' && i >= len - 2)))
                        return -EINVAL;
        if (in[len - 2] == '=' && in[len - 1] != '=')
                return -EINVAL;
        unsigned char *out = malloc(len / 4 * 3 + 3);
        EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
        if (!out || !ctx) {
                free(out);
                EVP_ENCODE_CTX_free(ctx);
                return -ENOMEM;
        }
        int n = 0, m = 0;
        EVP_DecodeInit(ctx);
        int r = EVP_DecodeUpdate(ctx, out, &n, (const unsigned char *)in, (int)len);
        if (r >= 0 && EVP_DecodeFinal(ctx, out + n, &m) == 1) {
                EVP_ENCODE_CTX_free(ctx);
                *ret = out;
                *ret_len = (size_t)(n + m);
                return 0;
        }
        EVP_ENCODE_CTX_free(ctx);
        free(out);
        return -EINVAL;
}

static char *base64_encode(const unsigned char *in, size_t n)
{
        char *out = malloc(4 * ((n + 2) / 3) + 1);
        if (out)
                EVP_EncodeBlock((unsigned char *)out, in, (int)n);
        return out;
}

int ssh_fingerprint_sha256(const unsigned char *blob, size_t len,
                           char ret[static SSH_FINGERPRINT_MAX])
{
        unsigned char h[SHA256_DIGEST_LENGTH];
        SHA256(blob, len, h);
        unsigned char b64[48];
        int n = EVP_EncodeBlock(b64, h, sizeof(h));
        while (n > 0 && b64[n - 1] == '=')
                n--;
        snprintf(ret, SSH_FINGERPRINT_MAX, "SHA256:%.*s", n, (const char *)b64);
        return 0;
}

void ssh_public_key_done(SshPublicKey *k)
{
        if (!k)
                return;
        free(k->type);
        free(k->line);
        free(k->comment);
        *k = (SshPublicKey){0};
}

static bool looks_private(const char *s)
{
        return strstr(s, "-----BEGIN") || strstr(s, "PRIVATE KEY") ||
               strstr(s, "PuTTY-User-Key-File") || strstr(s, "---- BEGIN SSH2");
}

#define REFUSE(why)                                                                                \
        do {                                                                                       \
                *ret_reason = (why);                                                               \
                return -EINVAL;                                                                    \
        } while (0)

int ssh_public_key_parse(const char *line, SshPublicKey *ret, const char **ret_reason)
{
        const char *dummy;
        if (!ret_reason)
                ret_reason = &dummy;
        *ret_reason = NULL;
        if (!line)
                REFUSE("empty");
        /* First, before anything that might echo it: a private key is never
         * parsed, logged or kept. */
        if (looks_private(line))
                REFUSE("private_key");
        size_t len = strlen(line);
        if (len > SSH_KEY_LINE_MAX)
                REFUSE("too_long");
        while (len > 0 && isspace((unsigned char)line[len - 1]))
                len--;
        while (len > 0 && isspace((unsigned char)*line)) {
                line++;
                len--;
        }
        if (len == 0)
                REFUSE("empty");
        for (size_t i = 0; i < len; i++) {
                if (line[i] == '\n' || line[i] == '\r')
                        REFUSE("multiple_lines");
                if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
                        REFUSE("bad_comment");
        }

        /* The trimmed line, NUL-terminated: type, base64, optional comment. */
        _cleanup_free_ char *buf = strndup(line, len);
        if (!buf)
                return -ENOMEM;
        size_t tlen = strcspn(buf, " \t");
        buf[tlen] = '\0';
        const KeyType *t = key_type_find(buf);
        if (!t)
                REFUSE("unsupported_type");
        if (tlen == len)
                REFUSE("truncated"); /* a type and nothing else */
        const char *b = buf + tlen + 1;
        b += strspn(b, " \t");
        size_t blen = strcspn(b, " \t");
        const char *c = b + blen;
        c += strspn(c, " \t");
        size_t clen = strlen(c);

        _cleanup_free_ unsigned char *blob = NULL;
        size_t n_blob = 0;
        int r = base64_decode(b, blen, &blob, &n_blob);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                REFUSE("bad_base64");
        unsigned bits = 0;
        r = parse_blob(t, blob, n_blob, &bits, ret_reason);
        if (r < 0)
                return r;

        _cleanup_free_ char *b64 = base64_encode(blob, n_blob);
        _cleanup_free_ char *type = strdup(t->name);
        _cleanup_free_ char *comment = clen > 0 ? strdup(c) : NULL;
        if (!b64 || !type || (clen > 0 && !comment))
                return -ENOMEM;
        char *normal = NULL;
        if (asprintf(&normal, "%s %s%s%s", type, b64, comment ? " " : "", strempty(comment)) < 0)
                return -ENOMEM;
        *ret = (SshPublicKey){
            .type = TAKE_PTR(type),
            .line = normal,
            .comment = TAKE_PTR(comment),
            .bits = bits,
        };
        ssh_fingerprint_sha256(blob, n_blob, ret->fingerprint);
        return 0;
}

/* ---- the ssh_keys table ---- */

void ssh_key_done(SshKey *k)
{
        if (!k)
                return;
        free(k->name);
        free(k->public_key);
        free(k->key_type);
        free(k->fingerprint);
        *k = (SshKey){0};
}

json_t *ssh_key_to_json(const SshKey *k)
{
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "id", k->id, "name", k->name, "type",
                         k->key_type, "fingerprint", k->fingerprint, "public_key", k->public_key,
                         "created_at", json_timestamp(k->created_at));
}

#define KEY_COLUMNS "seq, id, user_id, name, public_key, key_type, fingerprint, created_at "

static int key_from_row(sqlite3_stmt *s, SshKey *ret)
{
        _cleanup_(ssh_key_done) SshKey k = {0};
        k.seq = sqlite3_column_int64(s, 0);
        snprintf(k.id, sizeof(k.id), "%s", strempty(db_column_text(s, 1)));
        snprintf(k.user_id, sizeof(k.user_id), "%s", strempty(db_column_text(s, 2)));
        k.name = strdup(strempty(db_column_text(s, 3)));
        k.public_key = strdup(strempty(db_column_text(s, 4)));
        k.key_type = strdup(strempty(db_column_text(s, 5)));
        k.fingerprint = strdup(strempty(db_column_text(s, 6)));
        if (!k.name || !k.public_key || !k.key_type || !k.fingerprint)
                return -ENOMEM;
        k.created_at = (usec_t)sqlite3_column_int64(s, 7);
        *ret = k;
        k = (SshKey){0};
        return 0;
}

/* A key name: 1..SSH_KEY_NAME_MAX bytes, no control characters, not blank. */
static bool key_name_valid(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > SSH_KEY_NAME_MAX)
                return false;
        bool blank = true;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if (*p < 0x20 || *p == 0x7f)
                        return false;
                if (!isspace(*p))
                        blank = false;
        }
        return !blank;
}

static int count_user_keys(Db *db, const char *user_id, long long *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT COUNT(*) FROM ssh_keys WHERE user_id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, user_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        *ret = sqlite3_column_int64(s, 0);
        return 0;
}

int ssh_keys_add(Db *db, const char *user_id, const char *line, const char *name, SshKey *ret,
                 const char **ret_reason)
{
        const char *dummy;
        if (!ret_reason)
                ret_reason = &dummy;
        *ret_reason = NULL;
        _cleanup_(ssh_public_key_done) SshPublicKey k = {0};
        int r = ssh_public_key_parse(line, &k, ret_reason);
        if (r < 0)
                return r;
        _cleanup_free_ char *auto_name = NULL;
        if (name) {
                if (!key_name_valid(name))
                        REFUSE("bad_name");
        } else if (k.comment && key_name_valid(k.comment))
                name = k.comment;
        else {
                long long n;
                r = count_user_keys(db, user_id, &n);
                if (r < 0)
                        return r;
                if (asprintf(&auto_name, "key-%lld", n + 1) < 0)
                        return -ENOMEM;
                name = auto_name;
        }

        char id[ID_MAX];
        r = id_new("key", id);
        if (r < 0)
                return r;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "INSERT INTO ssh_keys (id, user_id, name, public_key, key_type, "
                        "fingerprint, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 4, k.line, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 5, k.type, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 6, k.fingerprint, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 7, (sqlite3_int64)now_usec());
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc); /* -EEXIST: the (user, fingerprint) index */
        return ret ? ssh_keys_get(db, user_id, id, ret) : 0;
}

int ssh_keys_list(Db *db, const char *user_id, long long after_seq, int limit,
                  int (*fn)(const SshKey *k, void *userdata), void *userdata)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " KEY_COLUMNS "FROM ssh_keys WHERE user_id = ? AND deleted_at IS "
                        "NULL AND seq > ? ORDER BY seq LIMIT ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 2, after_seq);
        sqlite3_bind_int(s, 3, limit > 0 ? limit : -1);
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                _cleanup_(ssh_key_done) SshKey k = {0};
                int r = key_from_row(s, &k);
                if (r < 0)
                        return r;
                r = fn(&k, userdata);
                if (r != 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

int ssh_keys_get(Db *db, const char *user_id, const char *id, SshKey *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT " KEY_COLUMNS "FROM ssh_keys WHERE id = ? AND user_id = ? AND "
                        "deleted_at IS NULL");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, strempty(id), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, strempty(user_id), -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        return key_from_row(s, ret);
}

int ssh_keys_delete(Db *db, const char *user_id, const char *id)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE ssh_keys SET deleted_at = ? WHERE id = ? AND user_id = ? AND "
                        "deleted_at IS NULL");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)now_usec());
        sqlite3_bind_text(s, 2, strempty(id), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, strempty(user_id), -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        return sqlite3_changes(db_handle(db)) > 0 ? 0 : -ENOENT;
}

int ssh_keys_public_lines(Db *db, const char *user_id, json_t *key_ids, json_t **ret_lines)
{
        if (!json_is_array(key_ids))
                return -EINVAL;
        _cleanup_(json_decrefp) json_t *lines = json_array();
        if (!lines)
                return -ENOMEM;
        size_t i;
        json_t *v;
        json_array_foreach(key_ids, i, v)
        {
                if (!json_is_string(v))
                        return -EINVAL;
                _cleanup_(ssh_key_done) SshKey k = {0};
                int r = ssh_keys_get(db, user_id, json_string_value(v), &k);
                if (r == -ENOENT) {
                        const char *kid = json_string_value(v);
                        log_info("SSH key is not the user's | user_id=%s key_id=%s", user_id,
                                 id_valid("key", kid) ? kid : "(not a key id)");
                        return r;
                }
                if (r < 0)
                        return r;
                if (json_array_append_new(lines, json_string(k.public_key)) < 0)
                        return -ENOMEM;
        }
        *ret_lines = TAKE_PTR(lines);
        return 0;
}
