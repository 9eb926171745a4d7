/* SPDX-License-Identifier: MIT */
/* ssh-keys.c: OpenSSH public key lines parsed from their wire format,
 * fingerprints exactly as ssh-keygen prints them (fixed vectors, and every
 * key type against the installed ssh-keygen), private keys and malformed
 * blobs refused, and the per-user ssh_keys table. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "db.h"
#include "harness.h"
#include "ssh-keys.h"
#include "users.h"

TestSuite(ssh_keys, .timeout = 60);

/* ---- helpers ---- */

static void expect_refused(const char *line, const char *want_reason)
{
        SshPublicKey k = {0};
        const char *reason = NULL;
        int r = ssh_public_key_parse(line, &k, &reason);
        cr_assert_eq(r, -EINVAL, "accepted (%d): %.80s", r, line);
        cr_assert_not_null(reason, "no reason for %.80s", line);
        cr_assert_str_eq(reason, want_reason, "%.80s", line);
        cr_assert_null(k.line, "a refused key must leave nothing behind");
}

/* Decodes the base64 of the line's second field. */
static unsigned char *blob_of(const char *line, size_t *ret_len)
{
        const char *b = strchr(line, ' ') + 1;
        size_t n = strcspn(b, " ");
        unsigned char *out = malloc(n);
        cr_assert(out);
        int len = EVP_DecodeBlock(out, (const unsigned char *)b, (int)n);
        cr_assert_geq(len, 0);
        /* EVP_DecodeBlock counts the padding as zero bytes */
        if (n >= 1 && b[n - 1] == '=')
                len--;
        if (n >= 2 && b[n - 2] == '=')
                len--;
        *ret_len = (size_t)len;
        return out;
}

static char *line_of(const char *type, const unsigned char *blob, size_t n)
{
        char *b64 = malloc(4 * ((n + 2) / 3) + 1);
        cr_assert(b64);
        EVP_EncodeBlock((unsigned char *)b64, blob, (int)n);
        char *line = xasprintf("%s %s", type, b64);
        free(b64);
        return line;
}

static void put_string(unsigned char **p, const void *s, size_t n)
{
        (*p)[0] = (unsigned char)(n >> 24);
        (*p)[1] = (unsigned char)(n >> 16);
        (*p)[2] = (unsigned char)(n >> 8);
        (*p)[3] = (unsigned char)n;
        memcpy(*p + 4, s, n);
        *p += 4 + n;
}

/* ---- fixed vectors (made once with ssh-keygen -t ... and ssh-keygen -lf) ---- */

static const struct {
        const char *line, *fingerprint, *type;
        unsigned bits;
} vectors[] = {
    {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILhIZpWk1EytCrSgupXIasSleuV1kwZ8aDcd71EJzpfL "
     "vector-ed25519",
     "SHA256:Px1ygUz9qlLoWYWLaiY+SsbjtqfzDUGO9mt2KJzU8ts", "ssh-ed25519", 256},
    {"ecdsa-sha2-nistp256 "
     "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBGXyJhjdiwx7cUMsyJCGLyy8qoU3L6vVm0uUE3iU"
     "3M2edrnJ+mWBivkvW3jmLVyY8e3VCAEABlGA5y3UCM96crY= vector-ecdsa",
     "SHA256:pkVliIJvHFTdNQxxWHn0S5ACb1za76rXRhY9X00yQVs", "ecdsa-sha2-nistp256", 256},
    {"ecdsa-sha2-nistp384 "
     "AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBPD9HHKxjE/VBNGUCnbEBKqhinepf753CQWq2Kle"
     "nREvhc2U5FSkqJMo90ga3Wpieb2yrQMGBP02ChNnYo/7p+SeH10/FsIvDSJlynPZHsD2TCG5LsJj4nnSAKU/eW2urA== "
     "vector-ecdsa",
     "SHA256:mYd30S/zBaMxY3pugYprm54txj0jjKnGv5R9LdZNHH4", "ecdsa-sha2-nistp384", 384},
    {"ecdsa-sha2-nistp521 "
     "AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBADKqfmPoy91RxBrX7WiWNT4eT15yeRfB2sAZ+h+"
     "0+pvZ5alXMgnSgg67Q0NOVl6kad53+C74P4yadyiacy4APG+7AEdYLHoElWklPcYSloLVLkJHcz0blYmbVJ3WbnYlykyo"
     "bIP7kuzth+A+422RI9AK7z5R9/ELuaVndfyaeL4DTX1hQ== vector-ecdsa",
     "SHA256:PN6IyhfdEVT1xdU1GcIjJUhOJ7PaKeh8ASJdRC/saZc", "ecdsa-sha2-nistp521", 521},
    {"ssh-rsa "
     "AAAAB3NzaC1yc2EAAAADAQABAAABAQCokDK2Yl9eD2TvXS/hJguP1dKNKxwwULLg2Dq1W5HDEbUr1LzRTXrIsuf3f/8G"
     "mDmrH0/XPfpcM/WUYTBAOmuZW+yqa8Z72mNp4NXM5vgeE9q4cEmLh5cEXVPiGJK4e8ofQRx5TNvZafpTIO8LflRFNyZG"
     "QJjWa0f0F6qb14I1f23Tfv2MEYW+3gn4NNPQ5ujzP/4XRbYHybaqMtdMrbwBAJYPWM3sz+6wBWx20tiKsVtGAmVcBSVF"
     "V2dfdh335F5LxAbimIcTGzJyKRUOBfiDDRsRdFDiW+FPOlCOPOsUdJBqlZddVFCiQFrtNyq5sg1RQFETQMxfq7p2g4Ov"
     "tf2T vector-rsa",
     "SHA256:9BW1bzzICYw5RnAy4lZt3mxKUFf573dPwmvejoJJcOs", "ssh-rsa", 2048},
    {"sk-ssh-ed25519@openssh.com "
     "AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAILhIZpWk1EytCrSgupXIasSleuV1kwZ8aDcd71EJzpfLAAAA"
     "BHNzaDo= vector-sk",
     "SHA256:0yJyoi0l0ybEroKyMRbnt0Zrv/MU7Qw2ujpg9xRhkhQ", "sk-ssh-ed25519@openssh.com", 256},
    {"sk-ecdsa-sha2-nistp256@openssh.com "
     "AAAAInNrLWVjZHNhLXNoYTItbmlzdHAyNTZAb3BlbnNzaC5jb20AAAAIbmlzdHAyNTYAAABBBGXyJhjdiwx7cUMsyJCG"
     "Lyy8qoU3L6vVm0uUE3iU3M2edrnJ+mWBivkvW3jmLVyY8e3VCAEABlGA5y3UCM96crYAAAAEc3NoOg== vector-sk",
     "SHA256:jTZwkY86mZEAC8kp/3Ijg29L5wDK1Gz11ew8cVG26YU", "sk-ecdsa-sha2-nistp256@openssh.com",
     256},
};

static const char rsa1024[] =
    "ssh-rsa "
    "AAAAB3NzaC1yc2EAAAADAQABAAAAgQC+hi0VXo+UeHRGuJ7Md9ySQcHiTrBGp7uBfod5QQru41Yo4DwGF6ktvVCLity9LR"
    "o26RvHcjLZ5xb4f4WLamAofRk7e5DSqNwENBmhl6rGUNvS1Q98/wMwGV4XwJwpb5wHKPjA9ot6eQEvIyo0wXWU98ApEw/"
    "AGswzmHq7TGNxBQ== vector-rsa";

Test(ssh_keys, fingerprints_match_the_known_vectors)
{
        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                SshPublicKey k = {0};
                const char *reason = NULL;
                int r = ssh_public_key_parse(vectors[i].line, &k, &reason);
                cr_assert_eq(r, 0, "vector %zu refused: %s", i, reason ? reason : "?");
                cr_assert_str_eq(k.fingerprint, vectors[i].fingerprint, "vector %zu", i);
                cr_assert_str_eq(k.type, vectors[i].type);
                cr_assert_eq(k.bits, vectors[i].bits, "vector %zu: %u bits", i, k.bits);
                cr_assert_str_eq(k.line, vectors[i].line, "an already normal line stays as is");
                cr_assert_not_null(k.comment);
                ssh_public_key_done(&k);
        }
}

Test(ssh_keys, lines_are_normalised)
{
        /* Surrounding blanks, a tab between the fields, no comment. */
        SshPublicKey k = {0};
        cr_assert_eq(
            ssh_public_key_parse("  \tssh-ed25519\tAAAAC3NzaC1lZDI1NTE5AAAAILhIZpWk1EytCrSg"
                                 "upXIasSleuV1kwZ8aDcd71EJzpfL\r\n",
                                 &k, NULL),
            0);
        cr_assert_str_eq(k.line, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILhIZpWk1EytCrSgupXIasSleuV1"
                                 "kwZ8aDcd71EJzpfL");
        cr_assert_null(k.comment);
        cr_assert_str_eq(k.fingerprint, vectors[0].fingerprint);
        ssh_public_key_done(&k);

        /* A comment with spaces is kept whole. */
        cr_assert_eq(
            ssh_public_key_parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILhIZpWk1EytCrSgupXIa"
                                 "sSleuV1kwZ8aDcd71EJzpfL  Ada's laptop (2026)  ",
                                 &k, NULL),
            0);
        cr_assert_str_eq(k.comment, "Ada's laptop (2026)");
        ssh_public_key_done(&k);
}

Test(ssh_keys, rsa_below_2048_bits_is_refused)
{
        expect_refused(rsa1024, "rsa_too_small");
}

/* A private key pasted by mistake: refused, whatever its wrapping. The
 * markers are split so that secret scanners do not flag this file. */
Test(ssh_keys, private_keys_are_refused)
{
        const char *begin = "-----BEGIN OPENSSH "
                            "PRIVATE KEY-----";
        char *openssh = xasprintf("%s\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAA"
                                  "\n-----END OPENSSH PRIVATE KEY-----\n",
                                  begin);
        expect_refused(openssh, "private_key");
        free(openssh);
        expect_refused("-----BEGIN RSA "
                       "PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
                       "private_key");
        expect_refused("-----BEGIN "
                       "PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----",
                       "private_key");
        expect_refused("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n", "private_key");
        /* The base64 body of a private key file behind a public key's type. */
        expect_refused("ssh-ed25519 b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB",
                       "private_key");
}

Test(ssh_keys, malformed_lines_are_refused)
{
        const char *ed = vectors[0].line;
        expect_refused("", "empty");
        expect_refused(" \t\n", "empty");
        expect_refused("ssh-ed25519", "truncated");
        expect_refused("ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4Ed", "unsupported_type");
        expect_refused(
            "SSH-ED25519 AAAAC3NzaC1lZDI1NTE5AAAAILhIZpWk1EytCrSgupXIasSleuV1kwZ8aDcd71EJ"
            "zpfL",
            "unsupported_type");
        /* authorized_keys options in front of the type are not a key line */
        expect_refused("no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILhIZpWk1EytCrSgupXIasSleuV1kwZ8"
                       "aDcd71EJzpfL",
                       "unsupported_type");
        char *two = xasprintf("%s\n%s", ed, vectors[1].line);
        expect_refused(two, "multiple_lines");
        free(two);
        expect_refused(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILhIZpWk1EytCrSgupXIasSleuV1kwZ8aDcd71EJ"
            "zpfL bell\a",
            "bad_comment");
        /* bad base64: a foreign character, a length that is not a multiple
         * of 4, padding in the middle */
        expect_refused(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILhIZpWk1EytCrSgupXIasSleuV1kwZ8aDcd71EJ"
            "zp*L",
            "bad_base64");
        expect_refused(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILhIZpWk1EytCrSgupXIasSleuV1kwZ8aDcd71EJ"
            "zpf",
            "bad_base64");
        expect_refused(
            "ssh-ed25519 AAAAC3Nz=C1lZDI1NTE5AAAAILhIZpWk1EytCrSgupXIasSleuV1kwZ8aDcd71EJ"
            "zpfL",
            "bad_base64");
        expect_refused("ssh-ed25519 ====", "bad_base64");
        char big[SSH_KEY_LINE_MAX + 64];
        memset(big, 'A', sizeof(big) - 1);
        memcpy(big, "ssh-rsa ", 8);
        big[sizeof(big) - 1] = '\0';
        expect_refused(big, "too_long");
}

Test(ssh_keys, blobs_that_are_not_the_key_they_claim)
{
        size_t n;
        /* every vector cut short at every length is refused as truncated */
        for (size_t v = 0; v < ELEMENTSOF(vectors); v++) {
                unsigned char *blob = blob_of(vectors[v].line, &n);
                for (size_t cut = 1; cut < n; cut++) {
                        char *line = line_of(vectors[v].type, blob, cut);
                        SshPublicKey k = {0};
                        const char *reason = NULL;
                        cr_assert_eq(ssh_public_key_parse(line, &k, &reason), -EINVAL,
                                     "vector %zu cut at %zu accepted", v, cut);
                        cr_assert(streq(reason, "truncated") || streq(reason, "bad_key_data") ||
                                      streq(reason, "type_mismatch") ||
                                      streq(reason, "curve_mismatch") ||
                                      streq(reason, "rsa_too_small"),
                                  "vector %zu cut at %zu: %s", v, cut, reason);
                        free(line);
                }
                /* cut inside the first length or right after the type: truncated */
                char *line = line_of(vectors[v].type, blob, 3);
                expect_refused(line, "truncated");
                free(line);
                size_t tlen = 4 + strlen(vectors[v].type);
                line = line_of(vectors[v].type, blob, tlen);
                expect_refused(line, "truncated");
                free(line);
                /* a byte too many */
                unsigned char *more = malloc(n + 1);
                memcpy(more, blob, n);
                more[n] = 0;
                line = line_of(vectors[v].type, more, n + 1);
                expect_refused(line, "bad_key_data");
                free(line);
                free(more);
                free(blob);
        }

        /* the line says RSA, the blob is ed25519 */
        unsigned char *ed = blob_of(vectors[0].line, &n);
        char *line = line_of("ssh-rsa", ed, n);
        expect_refused(line, "type_mismatch");
        free(line);
        /* an ed25519 key of 31 bytes */
        unsigned char buf[256], *p = buf;
        put_string(&p, "ssh-ed25519", 11);
        put_string(&p, ed + 19, 31);
        line = line_of("ssh-ed25519", buf, (size_t)(p - buf));
        expect_refused(line, "bad_key_data");
        free(line);
        free(ed);

        /* ECDSA: the curve inside the blob does not match the type */
        unsigned char *ec = blob_of(vectors[1].line, &n); /* nistp256 */
        p = buf;
        put_string(&p, "ecdsa-sha2-nistp384", 19);
        put_string(&p, "nistp256", 8);
        put_string(&p, ec + 4 + 19 + 4 + 8 + 4, 65);
        line = line_of("ecdsa-sha2-nistp384", buf, (size_t)(p - buf));
        expect_refused(line, "curve_mismatch");
        free(line);
        /* a point that is not on the curve */
        p = buf;
        put_string(&p, "ecdsa-sha2-nistp256", 19);
        put_string(&p, "nistp256", 8);
        unsigned char q[65];
        memcpy(q, ec + 4 + 19 + 4 + 8 + 4, 65);
        q[64] ^= 1;
        put_string(&p, q, 65);
        line = line_of("ecdsa-sha2-nistp256", buf, (size_t)(p - buf));
        expect_refused(line, "bad_key_data");
        free(line);
        /* a compressed point (OpenSSH writes uncompressed ones only) */
        p = buf;
        put_string(&p, "ecdsa-sha2-nistp256", 19);
        put_string(&p, "nistp256", 8);
        q[0] = 0x02;
        put_string(&p, q, 33);
        line = line_of("ecdsa-sha2-nistp256", buf, (size_t)(p - buf));
        expect_refused(line, "bad_key_data");
        free(line);
        free(ec);

        /* RSA with a negative modulus (sign bit set, no leading zero) */
        unsigned char *rsa = blob_of(vectors[4].line, &n);
        /* layout: string type(7), mpint e(3), mpint n(257 with a leading 0) */
        size_t n_off = 4 + 7 + 4 + 3;
        cr_assert_eq(rsa[n_off + 4], 0x00);
        p = buf;
        unsigned char big[600], *bp = big;
        memcpy(bp, rsa, n_off);
        bp += n_off;
        put_string(&bp, rsa + n_off + 5, 256); /* drop the leading zero */
        line = line_of("ssh-rsa", big, (size_t)(bp - big));
        expect_refused(line, "bad_key_data");
        free(line);
        /* an even public exponent */
        memcpy(big, rsa, n);
        big[4 + 7 + 4 + 2] = 0x00; /* e = 0x010000 */
        line = line_of("ssh-rsa", big, n);
        expect_refused(line, "bad_key_data");
        free(line);
        free(rsa);

        /* sk-ssh-ed25519 without its application string */
        unsigned char *sk = blob_of(vectors[5].line, &n);
        line = line_of("sk-ssh-ed25519@openssh.com", sk, n - 8);
        expect_refused(line, "truncated");
        free(line);
        free(sk);
}

/* ---- against the installed ssh-keygen ---- */

static bool have_ssh_keygen(void)
{
        return access("/usr/bin/ssh-keygen", X_OK) == 0 || system("command -v ssh-keygen "
                                                                  ">/dev/null 2>&1") == 0;
}

static char *run(const char *cmd)
{
        FILE *f = popen(cmd, "r");
        cr_assert(f, "popen %s", cmd);
        char buf[4096];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        int st = pclose(f);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: exit %d", cmd, st);
        return strdup(buf);
}

Test(ssh_keys, fingerprints_match_ssh_keygen)
{
        if (!have_ssh_keygen())
                cr_skip_test("ssh-keygen is not installed (scripts/install-deps.sh installs "
                             "openssh-client)");
        char *dir = tmpdir_new("ssh-keygen");
        const char *specs[][2] = {{"ed25519", ""},     {"ecdsa", "-b 256"}, {"ecdsa", "-b 384"},
                                  {"ecdsa", "-b 521"}, {"rsa", "-b 2048"},  {"rsa", "-b 3072"},
                                  {"rsa", "-b 4096"}};
        for (size_t i = 0; i < ELEMENTSOF(specs); i++) {
                char *key = xasprintf("%s/k%zu", dir, i);
                char *gen = xasprintf("ssh-keygen -q -t %s %s -N '' -C 'test key %zu' -f %s "
                                      "</dev/null >/dev/null 2>&1",
                                      specs[i][0], specs[i][1], i, key);
                cr_assert_eq(system(gen), 0, "%s", gen);
                char *pubpath = xasprintf("%s.pub", key);
                char *pub = read_file(pubpath);
                cr_assert(pub);
                char *cmd = xasprintf("ssh-keygen -lf %s", pubpath);
                char *out = run(cmd);
                /* "256 SHA256:... test key 0 (ED25519)" */
                unsigned bits = 0;
                char fp[128];
                cr_assert_eq(sscanf(out, "%u %127s", &bits, fp), 2, "%s", out);

                SshPublicKey k = {0};
                const char *reason = NULL;
                cr_assert_eq(ssh_public_key_parse(pub, &k, &reason), 0, "%s %s refused: %s",
                             specs[i][0], specs[i][1], reason ? reason : "?");
                cr_assert_str_eq(k.fingerprint, fp, "%s %s", specs[i][0], specs[i][1]);
                cr_assert_eq(k.bits, bits, "%s %s", specs[i][0], specs[i][1]);
                char *comment = xasprintf("test key %zu", i);
                cr_assert_str_eq(k.comment, comment);
                free(comment);

                /* its private half is refused */
                char *priv = read_file(key);
                cr_assert(priv);
                expect_refused(priv, "private_key");

                ssh_public_key_done(&k);
                free(priv);
                free(out);
                free(cmd);
                free(pub);
                free(pubpath);
                free(gen);
                free(key);
        }
        /* ssh-keygen's own refusal of small RSA keys is not ours to test;
         * a 1024-bit key it makes is refused here */
        char *key = xasprintf("%s/small", dir);
        char *gen =
            xasprintf("ssh-keygen -q -t rsa -b 1024 -N '' -f %s </dev/null >/dev/null 2>&1", key);
        if (system(gen) == 0) {
                char *pubpath = xasprintf("%s.pub", key);
                char *pub = read_file(pubpath);
                expect_refused(pub, "rsa_too_small");
                free(pub);
                free(pubpath);
        }
        free(gen);
        free(key);
        tmpdir_remove(dir);
        free(dir);
}

Test(ssh_keys, fingerprint_of_a_raw_blob)
{
        char fp[SSH_FINGERPRINT_MAX];
        /* SHA-256 of the empty string, base64 without padding */
        cr_assert_eq(ssh_fingerprint_sha256((const unsigned char *)"", 0, fp), 0);
        cr_assert_str_eq(fp, "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
}

/* ---- the table ---- */

static char *dir;
static Db *db;
static char alice[ID_MAX], bob[ID_MAX];

static void db_setup(void)
{
        dir = tmpdir_new("ssh-keys");
        char path[4096];
        snprintf(path, sizeof(path), "%s/gpuslice.db", dir);
        cr_assert_eq(db_open(path, &db), 0);
        User u = {0};
        cr_assert_eq(users_insert(db, "alice@example.com", "Alice", "$h", ROLE_USER, &u), 0);
        snprintf(alice, sizeof(alice), "%s", u.id);
        user_done(&u);
        cr_assert_eq(users_insert(db, "bob@example.com", "Bob", "$h", ROLE_USER, &u), 0);
        snprintf(bob, sizeof(bob), "%s", u.id);
        user_done(&u);
}

static void db_teardown(void)
{
        db_close(db);
        db = NULL;
        tmpdir_remove(dir);
        free(dir);
}

static long long count_keys(void)
{
        sqlite3_stmt *s = NULL;
        cr_assert_eq(
            sqlite3_prepare_v2(db_handle(db), "SELECT COUNT(*) FROM ssh_keys", -1, &s, NULL),
            SQLITE_OK);
        cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
        long long n = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return n;
}

static int collect(const SshKey *k, void *userdata)
{
        json_array_append_new(userdata, json_string(k->id));
        return 0;
}

Test(ssh_keys, add_list_delete_per_user, .init = db_setup, .fini = db_teardown)
{
        SshKey a = {0}, b = {0}, c = {0};
        const char *reason = NULL;
        /* named after the comment */
        cr_assert_eq(ssh_keys_add(db, alice, vectors[0].line, NULL, &a, &reason), 0);
        cr_assert(id_valid("key", a.id), "%s", a.id);
        cr_assert_str_eq(a.name, "vector-ed25519");
        cr_assert_str_eq(a.fingerprint, vectors[0].fingerprint);
        cr_assert_str_eq(a.key_type, "ssh-ed25519");
        cr_assert_str_eq(a.public_key, vectors[0].line);
        /* an explicit name wins */
        cr_assert_eq(ssh_keys_add(db, alice, vectors[1].line, "work laptop", &b, &reason), 0);
        cr_assert_str_eq(b.name, "work laptop");
        /* no comment, no name: key-N */
        char *anon = ssh_test_public_key(7, NULL);
        cr_assert_eq(ssh_keys_add(db, alice, anon, NULL, &c, &reason), 0);
        free(anon);
        cr_assert_str_eq(c.name, "key-3");

        /* the same key again: -EEXIST, nothing added; for another user it is fine */
        long long before = count_keys();
        cr_assert_eq(ssh_keys_add(db, alice, vectors[0].line, "again", NULL, &reason), -EEXIST);
        cr_assert_eq(count_keys(), before);
        cr_assert_eq(ssh_keys_add(db, bob, vectors[0].line, NULL, NULL, &reason), 0);

        /* refusals store nothing */
        before = count_keys();
        cr_assert_eq(ssh_keys_add(db, alice, rsa1024, NULL, NULL, &reason), -EINVAL);
        cr_assert_str_eq(reason, "rsa_too_small");
        cr_assert_eq(ssh_keys_add(db, alice, vectors[2].line, "bad\nname", NULL, &reason), -EINVAL);
        cr_assert_str_eq(reason, "bad_name");
        cr_assert_eq(ssh_keys_add(db, alice, vectors[2].line, "   ", NULL, &reason), -EINVAL);
        cr_assert_eq(count_keys(), before);

        /* lists are per user, in order, paged by seq */
        json_t *ids = json_array();
        cr_assert_eq(ssh_keys_list(db, alice, 0, 0, collect, ids), 0);
        cr_assert_eq(json_array_size(ids), 3);
        cr_assert_str_eq(json_string_value(json_array_get(ids, 0)), a.id);
        cr_assert_str_eq(json_string_value(json_array_get(ids, 2)), c.id);
        json_array_clear(ids);
        cr_assert_eq(ssh_keys_list(db, alice, a.seq, 1, collect, ids), 0);
        cr_assert_eq(json_array_size(ids), 1);
        cr_assert_str_eq(json_string_value(json_array_get(ids, 0)), b.id);
        json_array_clear(ids);
        cr_assert_eq(ssh_keys_list(db, bob, 0, 0, collect, ids), 0);
        cr_assert_eq(json_array_size(ids), 1);
        json_decref(ids);

        /* another user's key does not exist for bob */
        SshKey g = {0};
        cr_assert_eq(ssh_keys_get(db, bob, a.id, &g), -ENOENT);
        cr_assert_eq(ssh_keys_delete(db, bob, a.id), -ENOENT);
        cr_assert_eq(ssh_keys_get(db, alice, a.id, &g), 0);
        ssh_key_done(&g);

        /* the public lines, in the order asked */
        json_t *want = json_pack("[s, s]", c.id, a.id), *lines = NULL;
        cr_assert_eq(ssh_keys_public_lines(db, alice, want, &lines), 0);
        cr_assert_eq(json_array_size(lines), 2);
        cr_assert_str_eq(json_string_value(json_array_get(lines, 0)), c.public_key);
        cr_assert_str_eq(json_string_value(json_array_get(lines, 1)), a.public_key);
        json_decref(lines);
        lines = NULL;
        cr_assert_eq(ssh_keys_public_lines(db, bob, want, &lines), -ENOENT);
        cr_assert_null(lines);
        json_decref(want);
        want = json_pack("[i]", 5);
        cr_assert_eq(ssh_keys_public_lines(db, alice, want, &lines), -EINVAL);
        json_decref(want);
        want = json_array();
        cr_assert_eq(ssh_keys_public_lines(db, alice, want, &lines), 0);
        cr_assert_eq(json_array_size(lines), 0);
        json_decref(lines);
        json_decref(want);

        /* delete: gone from lists and lookups; the key may be added again */
        cr_assert_eq(ssh_keys_delete(db, alice, a.id), 0);
        cr_assert_eq(ssh_keys_delete(db, alice, a.id), -ENOENT);
        cr_assert_eq(ssh_keys_get(db, alice, a.id, &g), -ENOENT);
        want = json_pack("[s]", a.id);
        cr_assert_eq(ssh_keys_public_lines(db, alice, want, &lines), -ENOENT);
        json_decref(want);
        cr_assert_eq(ssh_keys_add(db, alice, vectors[0].line, NULL, NULL, &reason), 0);

        json_t *j = ssh_key_to_json(&b);
        cr_assert_str_eq(json_string_value(json_object_get(j, "fingerprint")), b.fingerprint);
        cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "ecdsa-sha2-nistp256");
        cr_assert(json_is_string(json_object_get(j, "created_at")));
        json_decref(j);
        ssh_key_done(&a);
        ssh_key_done(&b);
        ssh_key_done(&c);
}
