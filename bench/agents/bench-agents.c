/* SPDX-License-Identifier: MIT */
/* Many simulated agents in one process against one controller
 * (docs/performance.md, "Agent link at scale"; bench/agents/run.sh drives it).
 *
 * Phases, each with a deadline:
 *  1. enroll: per agent a fresh P-256 key and CSR, POST /api/v1/admin/nodes,
 *     POST /api/v1/agent/enroll (libcurl, --enroll-threads keep-alive
 *     connections). Every agent holds its own CA-signed certificate.
 *  2. connect: per agent its own nng pair1 socket, tls+tcp dialer and TLS
 *     config (its own certificate and key, mutual TLS). It answers
 *     link.challenge with link.auth (its key's signature over the nonce, as
 *     agent/proof.c does) and link.hello, and heartbeats every --interval
 *     seconds from the moment it is welcomed, at a random phase per agent
 *     (a timing wheel of 10 ms slots), so the heartbeats spread evenly.
 *     At most --max-inflight agents are between dial and welcome at once.
 *  3. settle, then measure: the controller's utime+stime (/proc/PID/stat)
 *     over --window seconds, its VmRSS sampled every second and VmHWM; what
 *     the agents saw in the window (disconnects, errors, acks); and, at the
 *     end, how many nodes the API lists as online.
 * The result is one line "result key=value ..." on stdout; progress on stderr.
 *
 *   bench-agents --url URL (--token ADMIN_TOKEN | --email E --password P) --agents N
 *                --controller-pid PID
 *                [--interval 5] [--settle 15] [--window 60] [--enroll-threads 4]
 *                [--max-inflight 128] [--enroll-deadline S] [--connect-deadline S]
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/transport/tls/tls.h>

#include "ca.h"
#include "proto.h"

#define WHEEL_SLOT_MS 10
#define LINK_DOMAIN   "gpuslice-link-v1"

typedef struct Agent {
        char node_id[64];
        char *cert_pem, *key_pem;
        EVP_PKEY *key;
        nng_socket sock;
        nng_dialer dialer;
        nng_tls_config *tls;
        nng_aio *rx;
        atomic_bool welcomed;
        atomic_llong last_ack_ms; /* 0: none yet */
        unsigned slot;            /* heartbeat phase on the wheel */
        uint64_t seq, hb_seq;
        int next_in_slot;
} Agent;

static struct {
        const char *url, *token, *email, *password;
        int n, interval_s, settle_s, window_s, enroll_threads, max_inflight;
        int enroll_deadline_s, connect_deadline_s;
        long controller_pid;
} opt = {.n = 1000,
         .interval_s = 5,
         .settle_s = 15,
         .window_s = 60,
         .enroll_threads = 4,
         .max_inflight = 128,
         .enroll_deadline_s = 900,
         .connect_deadline_s = 900};

static Agent *agents;
static char *ca_pem_str, *endpoint;
static pthread_mutex_t setup_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int next_enroll, n_enrolled, enroll_failed;
static atomic_int n_welcomed;
/* counters; the window's share is the difference of two snapshots */
static atomic_long c_welcomes, c_errors, c_disconnects, c_connects, c_heartbeats, c_acks,
    c_send_fail;
static atomic_bool stop_wheel;

static long long now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_s(void)
{
        return (double)now_ms() / 1000.0;
}

/* ---- HTTP ---- */

typedef struct Buf {
        char *data;
        size_t len;
} Buf;

static size_t on_body(char *p, size_t size, size_t n, void *u)
{
        Buf *b = u;
        char *d = realloc(b->data, b->len + size * n + 1);
        if (!d)
                return 0;
        memcpy(d + b->len, p, size * n);
        b->len += size * n;
        d[b->len] = '\0';
        b->data = d;
        return size * n;
}

/* GET when body is NULL; returns the parsed JSON answer and the status. */
static json_t *http_json(CURL *c, const char *url, const char *token, const char *body,
                         long *status)
{
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        char auth[512];
        Buf b = {0};
        if (token) {
                snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
                h = curl_slist_append(h, auth);
        }
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        if (body)
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        else
                curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        CURLcode rc = curl_easy_perform(c);
        *status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
        curl_slist_free_all(h);
        json_t *j = rc == CURLE_OK && b.data ? json_loads(b.data, 0, NULL) : NULL;
        if (!j && b.data)
                fprintf(stderr, "HTTP %ld from %s: %.300s\n", *status, url, b.data);
        else if (rc != CURLE_OK)
                fprintf(stderr, "HTTP error from %s: %s\n", url, curl_easy_strerror(rc));
        free(b.data);
        return j;
}

static EVP_PKEY *key_from_pem(const char *pem)
{
        BIO *b = BIO_new_mem_buf(pem, -1);
        EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        return k;
}

static int enroll_one(CURL *c, int i)
{
        Agent *a = &agents[i];
        char url[512], body[128];
        long st;
        _cleanup_free_ char *csr = NULL;
        if (ca_new_key_pem(&a->key_pem) < 0 || ca_make_csr(a->key_pem, "bench-host", &csr) < 0 ||
            !(a->key = key_from_pem(a->key_pem)))
                return -ENOMEM;

        snprintf(url, sizeof(url), "%s/api/v1/admin/nodes", opt.url);
        snprintf(body, sizeof(body), "{\"name\":\"bench-%d\",\"simulated\":true}", i);
        json_t *j = http_json(c, url, opt.token, body, &st);
        const char *tok = json_string_value(json_object_get(j, "bootstrap_token"));
        if (st != 201 || !tok) {
                fprintf(stderr, "create node %d: HTTP %ld\n", i, st);
                json_decref(j);
                return -EIO;
        }
        json_t *eb = json_pack("{s:s, s:s, s:{s:b, s:s}}", "bootstrap_token", tok, "csr_pem", csr,
                               "facts", "simulated", 1, "agent_version", "bench-agents");
        json_decref(j);
        _cleanup_free_ char *ebs = json_dumps(eb, JSON_COMPACT);
        json_decref(eb);
        snprintf(url, sizeof(url), "%s/api/v1/agent/enroll", opt.url);
        json_t *ej = http_json(c, url, NULL, ebs, &st);
        const char *nid = json_string_value(json_object_get(ej, "node_id"));
        const char *cert = json_string_value(json_object_get(ej, "certificate_pem"));
        if (st != 200 || !nid || !cert || strlen(nid) >= sizeof(a->node_id)) {
                fprintf(stderr, "enroll %d: HTTP %ld\n", i, st);
                json_decref(ej);
                return -EIO;
        }
        memcpy(a->node_id, nid, strlen(nid) + 1);
        a->cert_pem = strdup(cert);
        pthread_mutex_lock(&setup_lock);
        if (!ca_pem_str) {
                ca_pem_str = strdup(json_string_value(json_object_get(ej, "ca_pem")));
                endpoint = strdup(json_string_value(json_object_get(ej, "agent_endpoint")));
        }
        pthread_mutex_unlock(&setup_lock);
        json_decref(ej);
        return a->cert_pem ? 0 : -ENOMEM;
}

static void *enroll_thread(void *arg)
{
        double deadline = *(double *)arg;
        CURL *c = curl_easy_init();
        for (;;) {
                int i = atomic_fetch_add(&next_enroll, 1);
                if (i >= opt.n || atomic_load(&enroll_failed) || now_s() > deadline)
                        break;
                if (enroll_one(c, i) < 0) {
                        atomic_store(&enroll_failed, 1);
                        break;
                }
                atomic_fetch_add(&n_enrolled, 1);
        }
        curl_easy_cleanup(c);
        return NULL;
}

/* ---- the link ---- */

static void send_msg(Agent *a, const char *type, ProtoWriter *w)
{
        _cleanup_free_ void *buf = NULL;
        size_t len;
        char id[32];
        snprintf(id, sizeof(id), "msg_b%llu", (unsigned long long)++a->seq);
        const ProtoHeader hd = {.type = type, .id = id, .node = a->node_id, .epoch = 1};
        if (proto_encode_writer(&hd, w, &buf, &len) < 0 ||
            nng_send(a->sock, buf, len, NNG_FLAG_NONBLOCK) != 0)
                atomic_fetch_add(&c_send_fail, 1);
}

static void answer_challenge(Agent *a, ProtoEnvelope *env)
{
        const void *nonce;
        size_t nl, idl = strlen(a->node_id);
        uint8_t msg[sizeof(LINK_DOMAIN) + 64 + 64];
        if (proto_get_bin(&env->body, "nonce", PROTO_REQUIRED, 64, &nonce, &nl, NULL) < 0)
                return;
        memcpy(msg, LINK_DOMAIN, sizeof(LINK_DOMAIN)); /* with its NUL */
        memcpy(msg + sizeof(LINK_DOMAIN), nonce, nl);
        memcpy(msg + sizeof(LINK_DOMAIN) + nl, a->node_id, idl);
        unsigned char sig[128];
        size_t sl = sizeof(sig);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        bool ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, a->key) == 1 &&
                  EVP_DigestSign(md, sig, &sl, msg, sizeof(LINK_DOMAIN) + nl + idl) == 1;
        EVP_MD_CTX_free(md);
        if (!ok)
                return;
        ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "certificate_pem", a->cert_pem);
        proto_write_key(&w, "signature");
        proto_write_bin(&w, sig, sl);
        proto_write_end(&w);
        send_msg(a, "link.auth", &w);
        proto_writer_done(&w);

        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "agent_version", "bench-agents/1");
        proto_write_kv_str(&w, "fingerprint", "");
        proto_write_kv_bool(&w, "simulated", true);
        proto_write_key(&w, "applied");
        proto_write_array_begin(&w);
        proto_write_end(&w);
        proto_write_end(&w);
        send_msg(a, "link.hello", &w);
        proto_writer_done(&w);
}

static void on_rx(void *arg)
{
        Agent *a = arg;
        int rv = nng_aio_result(a->rx);
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
                return;
        if (rv == 0) {
                nng_msg *m = nng_aio_get_msg(a->rx);
                ProtoEnvelope *env = NULL;
                if (proto_decode(nng_msg_body(m), nng_msg_len(m), &env, NULL) == 0) {
                        if (streq(env->type, "link.heartbeat_ack")) {
                                atomic_fetch_add(&c_acks, 1);
                                atomic_store(&a->last_ack_ms, now_ms());
                        } else if (streq(env->type, "link.challenge"))
                                answer_challenge(a, env);
                        else if (streq(env->type, "link.welcome")) {
                                atomic_fetch_add(&c_welcomes, 1);
                                atomic_store(&a->last_ack_ms, now_ms());
                                if (!atomic_exchange(&a->welcomed, true))
                                        atomic_fetch_add(&n_welcomed, 1);
                        } else if (streq(env->type, "link.error")) {
                                char code[64] = "";
                                (void)proto_get_str(&env->body, "code", PROTO_OPTIONAL, code,
                                                    sizeof(code), NULL);
                                if (atomic_fetch_add(&c_errors, 1) < 10)
                                        fprintf(stderr, "link.error for %s: %s\n", a->node_id,
                                                code);
                                if (atomic_exchange(&a->welcomed, false))
                                        atomic_fetch_sub(&n_welcomed, 1);
                        }
                        proto_envelope_free(env);
                }
                nng_msg_free(m);
        }
        nng_recv_aio(a->sock, a->rx);
}

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
        Agent *a = arg;
        if (ev == NNG_PIPE_EV_ADD_POST) {
                atomic_fetch_add(&c_connects, 1);
                return;
        }
        atomic_fetch_add(&c_disconnects, 1);
        if (atomic_exchange(&a->welcomed, false))
                atomic_fetch_sub(&n_welcomed, 1);
}

static int agent_dial(Agent *a)
{
        int rv;
        if ((rv = nng_pair1_open(&a->sock)) != 0 ||
            (rv = nng_socket_set_int(a->sock, NNG_OPT_SENDBUF, 8)) != 0 ||
            (rv = nng_socket_set_ms(a->sock, NNG_OPT_RECONNMINT, 500)) != 0 ||
            (rv = nng_socket_set_ms(a->sock, NNG_OPT_RECONNMAXT, 30000)) != 0 ||
            (rv = nng_socket_set_size(a->sock, NNG_OPT_RECVMAXSZ, PROTO_MAX_MESSAGE)) != 0 ||
            (rv = nng_tls_config_alloc(&a->tls, NNG_TLS_MODE_CLIENT)) != 0 ||
            (rv = nng_tls_config_own_cert(a->tls, a->cert_pem, a->key_pem, NULL)) != 0 ||
            (rv = nng_tls_config_ca_chain(a->tls, ca_pem_str, NULL)) != 0 ||
            (rv = nng_tls_config_server_name(a->tls, "127.0.0.1")) != 0 ||
            (rv = nng_tls_config_auth_mode(a->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
            (rv = nng_pipe_notify(a->sock, NNG_PIPE_EV_ADD_POST, on_pipe, a)) != 0 ||
            (rv = nng_pipe_notify(a->sock, NNG_PIPE_EV_REM_POST, on_pipe, a)) != 0 ||
            (rv = nng_aio_alloc(&a->rx, on_rx, a)) != 0 ||
            (rv = nng_dialer_create(&a->dialer, a->sock, endpoint)) != 0 ||
            (rv = nng_dialer_set_ptr(a->dialer, NNG_OPT_TLS_CONFIG, a->tls)) != 0) {
                fprintf(stderr, "%s: nng setup failed: %s\n", a->node_id, nng_strerror(rv));
                return -EIO;
        }
        nng_recv_aio(a->sock, a->rx);
        if ((rv = nng_dialer_start(a->dialer, NNG_FLAG_NONBLOCK)) != 0) {
                fprintf(stderr, "%s: dial failed: %s\n", a->node_id, nng_strerror(rv));
                return -EIO;
        }
        return 0;
}

/* The heartbeat wheel: one slot per WHEEL_SLOT_MS over the interval, each agent
 * in the slot of its random phase. A welcomed agent's first heartbeat leaves
 * when the wheel next reaches its slot, then one every interval. */
static int *wheel_head;
static unsigned wheel_slots;

static void *wheel_thread(void *arg)
{
        long long t0 = now_ms();
        uint64_t tick = 0;
        while (!atomic_load(&stop_wheel)) {
                long long due = t0 + (long long)tick * WHEEL_SLOT_MS;
                long long wait = due - now_ms();
                if (wait > 0) {
                        usleep((useconds_t)(wait * 1000));
                        continue;
                }
                unsigned s = (unsigned)(tick % wheel_slots);
                for (int i = wheel_head[s]; i >= 0; i = agents[i].next_in_slot) {
                        Agent *a = &agents[i];
                        if (!atomic_load(&a->welcomed))
                                continue;
                        ProtoWriter w;
                        proto_writer_init(&w);
                        proto_write_map_begin(&w);
                        proto_write_kv_uint(&w, "seq", ++a->hb_seq);
                        proto_write_kv_uint(&w, "sent_at_ms", (uint64_t)now_ms());
                        proto_write_end(&w);
                        send_msg(a, "link.heartbeat", &w);
                        proto_writer_done(&w);
                        atomic_fetch_add(&c_heartbeats, 1);
                }
                tick++;
        }
        return NULL;
}

/* ---- the controller, from /proc ---- */

static int proc_cpu_ticks(long pid, unsigned long long *ret)
{
        char path[64], buf[4096];
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')'); /* comm may hold spaces */
        unsigned long long ut, st;
        if (!p ||
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
                return -EBADMSG;
        *ret = ut + st;
        return 0;
}

/* CPU ticks by thread name (the loop, nng's pollers and task threads). */
#define THREAD_KINDS 8
typedef struct ThreadCpu {
        char comm[THREAD_KINDS][32];
        unsigned long long ticks[THREAD_KINDS];
        int n;
} ThreadCpu;

static void proc_thread_cpu(long pid, ThreadCpu *t)
{
        char path[320];
        *t = (ThreadCpu){0};
        snprintf(path, sizeof(path), "/proc/%ld/task", pid);
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                char buf[1024];
                snprintf(path, sizeof(path), "/proc/%ld/task/%s/stat", pid, de->d_name);
                FILE *f = fopen(path, "re");
                if (!f)
                        continue;
                size_t n = fread(buf, 1, sizeof(buf) - 1, f);
                fclose(f);
                buf[n] = '\0';
                char *open = strchr(buf, '('), *close = strrchr(buf, ')');
                unsigned long long ut, st;
                if (!open || !close || close - open - 1 >= 32 ||
                    sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                           &st) != 2)
                        continue;
                char comm[32];
                memcpy(comm, open + 1, (size_t)(close - open - 1));
                comm[close - open - 1] = '\0';
                int k;
                for (k = 0; k < t->n && !streq(t->comm[k], comm); k++)
                        ;
                if (k == t->n) {
                        if (t->n == THREAD_KINDS)
                                continue;
                        snprintf(t->comm[t->n++], 32, "%s", comm);
                }
                t->ticks[k] += ut + st;
        }
        if (d)
                closedir(d);
}

static long proc_status_kb(long pid, const char *field)
{
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%ld/status", pid);
        FILE *f = fopen(path, "re");
        long v = -1;
        size_t fl = strlen(field);
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
                        v = strtol(line + fl + 1, NULL, 10);
                        break;
                }
        fclose(f);
        return v;
}

static void loadavg(char *buf, size_t size)
{
        FILE *f = fopen("/proc/loadavg", "re");
        double a = 0, b = 0, c = 0;
        if (f) {
                if (fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
                        a = b = c = 0;
                fclose(f);
        }
        snprintf(buf, size, "%.2f/%.2f/%.2f", a, b, c);
}

/* Pages through GET /admin/nodes; counts the bench's nodes online. */
static int count_online(int *ret_online, int *ret_total)
{
        CURL *c = curl_easy_init();
        char url[600], cursor[64] = "";
        int online = 0, total = 0;
        for (;;) {
                long st;
                snprintf(url, sizeof(url), "%s/api/v1/admin/nodes?limit=200%s%s", opt.url,
                         *cursor ? "&cursor=" : "", cursor);
                json_t *j = http_json(c, url, opt.token, NULL, &st);
                json_t *items = json_object_get(j, "items");
                if (st != 200 || !json_is_array(items)) {
                        json_decref(j);
                        curl_easy_cleanup(c);
                        return -EIO;
                }
                size_t i;
                json_t *it;
                json_array_foreach(items, i, it)
                {
                        total++;
                        online += json_is_true(json_object_get(it, "online"));
                }
                const char *next = json_string_value(json_object_get(j, "next_cursor"));
                snprintf(cursor, sizeof(cursor), "%s", next ? next : "");
                json_decref(j);
                if (!*cursor)
                        break;
        }
        curl_easy_cleanup(c);
        *ret_online = online;
        *ret_total = total;
        return 0;
}

/* POST /auth/personal/login: the admin's access token. */
static int login(void)
{
        CURL *c = curl_easy_init();
        char url[512];
        long st;
        snprintf(url, sizeof(url), "%s/api/v1/auth/personal/login", opt.url);
        json_t *b = json_pack("{s:s, s:s}", "email", opt.email, "password", opt.password);
        _cleanup_free_ char *body = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        json_t *j = http_json(c, url, NULL, body, &st);
        curl_easy_cleanup(c);
        const char *t = json_string_value(json_object_get(j, "access_token"));
        opt.token = t ? strdup(t) : NULL;
        json_decref(j);
        if (!opt.token) {
                fprintf(stderr, "login failed: HTTP %ld\n", st);
                return -EACCES;
        }
        return 0;
}

static void usage(void)
{
        fprintf(stderr,
                "usage: bench-agents --url URL (--token ADMIN_TOKEN | --email E --password P)\n"
                "       --agents N --controller-pid PID\n"
                "       [--interval 5] [--settle 15] [--window 60] [--enroll-threads 4]\n"
                "       [--max-inflight 128] [--enroll-deadline 900] [--connect-deadline 900]\n");
}

int main(int argc, char **argv)
{
        for (int i = 1; i < argc; i++) {
                const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                int *ip = streq(k, "--agents")             ? &opt.n
                          : streq(k, "--interval")         ? &opt.interval_s
                          : streq(k, "--settle")           ? &opt.settle_s
                          : streq(k, "--window")           ? &opt.window_s
                          : streq(k, "--enroll-threads")   ? &opt.enroll_threads
                          : streq(k, "--max-inflight")     ? &opt.max_inflight
                          : streq(k, "--enroll-deadline")  ? &opt.enroll_deadline_s
                          : streq(k, "--connect-deadline") ? &opt.connect_deadline_s
                                                           : NULL;
                if (!v) {
                        usage();
                        return 2;
                }
                if (ip)
                        *ip = atoi(v);
                else if (streq(k, "--url"))
                        opt.url = v;
                else if (streq(k, "--token"))
                        opt.token = v;
                else if (streq(k, "--email"))
                        opt.email = v;
                else if (streq(k, "--password"))
                        opt.password = v;
                else if (streq(k, "--controller-pid"))
                        opt.controller_pid = atol(v);
                else {
                        usage();
                        return 2;
                }
                i++;
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        if (!opt.token && opt.url && opt.email && opt.password && login() < 0)
                return 1;
        if (!opt.url || !opt.token || opt.n < 1 || opt.controller_pid <= 0 || opt.interval_s < 1 ||
            opt.enroll_threads < 1 || opt.max_inflight < 1) {
                usage();
                return 2;
        }
        agents = calloc((size_t)opt.n, sizeof(Agent));
        wheel_slots = (unsigned)opt.interval_s * 1000 / WHEEL_SLOT_MS;
        wheel_head = malloc(wheel_slots * sizeof(int));
        if (!agents || !wheel_head)
                return 1;
        for (unsigned s = 0; s < wheel_slots; s++)
                wheel_head[s] = -1;
        srandom((unsigned)getpid() ^ (unsigned)now_ms());
        for (int i = 0; i < opt.n; i++) {
                agents[i].slot = (unsigned)random() % wheel_slots;
                agents[i].next_in_slot = wheel_head[agents[i].slot];
                wheel_head[agents[i].slot] = i;
        }

        /* 1. enroll */
        double t0 = now_s(), deadline = t0 + opt.enroll_deadline_s;
        pthread_t *th = calloc((size_t)opt.enroll_threads, sizeof(pthread_t));
        for (int i = 0; i < opt.enroll_threads; i++)
                pthread_create(&th[i], NULL, enroll_thread, &deadline);
        for (int last = -1; atomic_load(&next_enroll) < opt.n && !atomic_load(&enroll_failed) &&
                            now_s() <= deadline;) {
                if ((int)(now_s() - t0) / 10 != last) {
                        last = (int)(now_s() - t0) / 10;
                        fprintf(stderr, "enrolled %d/%d after %.0f s\n", atomic_load(&n_enrolled),
                                opt.n, now_s() - t0);
                }
                usleep(100000);
        }
        for (int i = 0; i < opt.enroll_threads; i++)
                pthread_join(th[i], NULL);
        free(th);
        double enroll_s = now_s() - t0;
        if (atomic_load(&n_enrolled) < opt.n) {
                fprintf(stderr, "enrollment stopped: %d of %d enrolled in %.1f s\n",
                        atomic_load(&n_enrolled), opt.n, enroll_s);
                return 1;
        }
        fprintf(stderr, "enrolled %d nodes in %.1f s; dialing %s\n", opt.n, enroll_s, endpoint);

        /* 2. connect, heartbeating from each welcome on */
        pthread_t wheel;
        pthread_create(&wheel, NULL, wheel_thread, NULL);
        t0 = now_s();
        deadline = t0 + opt.connect_deadline_s;
        int last = -1;
        for (int i = 0; i < opt.n; i++) {
                if (agent_dial(&agents[i]) < 0)
                        return 1;
                /* A bounded number of handshakes in flight: a fleet does not
                 * arrive within one millisecond either. */
                while (i + 1 - atomic_load(&n_welcomed) > opt.max_inflight && now_s() < deadline)
                        usleep(1000);
                if ((int)(now_s() - t0) / 10 != last) {
                        last = (int)(now_s() - t0) / 10;
                        fprintf(stderr, "dialed %d, welcomed %d after %.0f s\n", i + 1,
                                atomic_load(&n_welcomed), now_s() - t0);
                }
        }
        while (atomic_load(&n_welcomed) < opt.n && now_s() < deadline) {
                if ((int)(now_s() - t0) / 10 != last) {
                        last = (int)(now_s() - t0) / 10;
                        fprintf(stderr, "welcomed %d/%d after %.0f s\n", atomic_load(&n_welcomed),
                                opt.n, now_s() - t0);
                }
                usleep(20000);
        }
        double online_s = now_s() - t0;
        int welcomed = atomic_load(&n_welcomed);
        fprintf(stderr, "%d of %d welcomed in %.1f s (%ld disconnects, %ld errors so far)\n",
                welcomed, opt.n, online_s, atomic_load(&c_disconnects), atomic_load(&c_errors));
        if (welcomed < opt.n) {
                printf("result agents=%d welcomed=%d online_s=%.1f enroll_s=%.1f "
                       "error=connect_deadline\n",
                       opt.n, welcomed, online_s, enroll_s);
                fflush(stdout);
                _exit(1);
        }

        /* 3. settle, then the window */
        sleep((unsigned)opt.settle_s);
        long hz = sysconf(_SC_CLK_TCK);
        unsigned long long cpu0, cpu1;
        char load0[64], load1[64];
        long w0 = atomic_load(&c_welcomes), e0 = atomic_load(&c_errors),
             d0 = atomic_load(&c_disconnects), h0 = atomic_load(&c_heartbeats),
             a0 = atomic_load(&c_acks), f0 = atomic_load(&c_send_fail);
        loadavg(load0, sizeof(load0));
        if (proc_cpu_ticks(opt.controller_pid, &cpu0) < 0) {
                fprintf(stderr, "cannot read /proc/%ld/stat\n", opt.controller_pid);
                _exit(1);
        }
        ThreadCpu tc0, tc1;
        proc_thread_cpu(opt.controller_pid, &tc0);
        long long m0 = now_ms();
        long rss_max = 0;
        double rss_sum = 0;
        int rss_n = 0;
        while (now_ms() - m0 < (long long)opt.window_s * 1000) {
                long rss = proc_status_kb(opt.controller_pid, "VmRSS");
                if (rss > rss_max)
                        rss_max = rss;
                rss_sum += (double)rss;
                rss_n++;
                usleep(1000000);
        }
        if (proc_cpu_ticks(opt.controller_pid, &cpu1) < 0)
                _exit(1);
        long long m1 = now_ms();
        proc_thread_cpu(opt.controller_pid, &tc1);
        loadavg(load1, sizeof(load1));
        long hwm = proc_status_kb(opt.controller_pid, "VmHWM");
        long rss_end = proc_status_kb(opt.controller_pid, "VmRSS");
        long threads = proc_status_kb(opt.controller_pid, "Threads");
        long w1 = atomic_load(&c_welcomes), e1 = atomic_load(&c_errors),
             d1 = atomic_load(&c_disconnects), h1 = atomic_load(&c_heartbeats),
             a1 = atomic_load(&c_acks), f1 = atomic_load(&c_send_fail);
        /* Agents without an ack for a heartbeat timeout would have redialled. */
        int stale = 0;
        long long now = now_ms();
        for (int i = 0; i < opt.n; i++)
                if (now - atomic_load(&agents[i].last_ack_ms) > 15000)
                        stale++;
        int api_online = -1, api_total = -1;
        if (count_online(&api_online, &api_total) < 0)
                fprintf(stderr, "cannot list nodes over the API\n");
        double cpu_pct = (double)(cpu1 - cpu0) / (double)hz / ((double)(m1 - m0) / 1000.0) * 100;
        printf("result agents=%d welcomed_end=%d api_online=%d api_nodes=%d enroll_s=%.1f "
               "online_s=%.1f window_s=%.1f cpu_pct=%.1f rss_mb=%.1f rss_max_mb=%.1f "
               "rss_avg_mb=%.1f hwm_mb=%.1f threads=%ld heartbeats=%ld acks=%ld send_fail=%ld "
               "welcomes=%ld "
               "errors=%ld disconnects=%ld stale_acks=%d load_start=%s load_end=%s "
               "bench_rss_mb=%.1f\n",
               opt.n, atomic_load(&n_welcomed), api_online, api_total, enroll_s, online_s,
               (double)(m1 - m0) / 1000.0, cpu_pct, (double)rss_end / 1024.0,
               (double)rss_max / 1024.0, rss_n ? rss_sum / rss_n / 1024.0 : 0.0,
               (double)hwm / 1024.0, threads, h1 - h0, a1 - a0, f1 - f0, w1 - w0, e1 - e0, d1 - d0,
               stale, load0, load1, (double)proc_status_kb(getpid(), "VmRSS") / 1024.0);
        fprintf(stderr, "controller CPU by thread in the window (%% of one core):");
        for (int k = 0; k < tc1.n; k++) {
                unsigned long long before = 0;
                for (int j = 0; j < tc0.n; j++)
                        if (streq(tc0.comm[j], tc1.comm[k]))
                                before = tc0.ticks[j];
                fprintf(stderr, " %s=%.1f", tc1.comm[k],
                        (double)(tc1.ticks[k] - before) / (double)hz /
                            ((double)(m1 - m0) / 1000.0) * 100);
        }
        fprintf(stderr, "\n");
        fflush(stdout);
        /* The controller is stopped next; tearing down N sockets one by one
         * would only measure nng's close path. */
        atomic_store(&stop_wheel, true);
        _exit(0);
}
