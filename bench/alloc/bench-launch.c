/* SPDX-License-Identifier: MIT */
/* Launches accepted durably per second: the controller's own launch path
 * (provisioner.c group commit around allocations_launch()) on its event
 * loop, against a real database file in WAL mode with synchronous=FULL as
 * the controller opens it, with NODES online nodes of 8 approved slots.
 * Each loop iteration PER_ITERATION launches arrive (as the HTTP requests of
 * one iteration would); the check handle writes them in one transaction and
 * calls each one's completion after the commit, which is when the API
 * answers 202. A launch here is the whole transaction: idempotency lookup,
 * prechecks (placement, ledger balance), the allocation and its state event,
 * slot reservations, allocation_slots, the ledger hold, the assign command
 * and the provision task. Not included: HTTP parsing, authentication and
 * the catalog reads of the handler. One-GPU launches from 100 tenants until
 * LAUNCHES are accepted.
 * Usage: bench-launch [NODES=1000] [LAUNCHES=6000] [PER_ITERATION=64] */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "allocations.h"
#include "catalog.h"
#include "db.h"
#include "ledger.h"
#include "log.h"
#include "macro.h"
#include "placement.h"
#include "provisioner.h"
#include "server.h"
#include "settings.h"

#define USERS 100

static struct {
        Server s;
        unsigned launches, per_iteration, submitted, done, ok;
        Sku sku;
        Image image;
        Network network;
        uv_idle_t idle;
        double t_first, t_last;
        double cpu_first, cpu_last;
} B;

/* This process's user + system CPU time: steadier than wall time on a
 * machine other work shares. */
static double cpu_ms(void)
{
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static double now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int exec(Db *db, const char *sql)
{
        char *err = NULL;
        int rc = sqlite3_exec(db_handle(db), sql, NULL, NULL, &err);
        if (rc != SQLITE_OK) {
                fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
                sqlite3_free(err);
                return -1;
        }
        return 0;
}

static void user_id(unsigned u, char ret[static ID_MAX])
{
        snprintf(ret, ID_MAX, "usr_bench%012uAAAAA", u);
        ret[4 + 21] = 'A';
}

static int populate(Db *db, unsigned nodes)
{
        DbTxn txn = {0};
        if (db_begin(db, &txn) < 0)
                return -1;
        for (unsigned u = 0; u < USERS; u++) {
                char id[ID_MAX], sql[512];
                user_id(u, id);
                snprintf(sql, sizeof(sql),
                         "INSERT INTO users (id, email, name, created_at, updated_at) VALUES "
                         "('%s', 'bench-%u@example.com', 'Bench', 1, 1)",
                         id, u);
                if (exec(db, sql) < 0)
                        return -1;
                LedgerPosting p = {.kind = LEDGER_KIND_GRANT, .user_id = id};
                if (ledger_credit_user(db, &p, LEDGER_GRANTS, 1000000000000LL, NULL) < 0)
                        return -1;
        }
        for (unsigned n = 0; n < nodes; n++) {
                char sql[1024];
                snprintf(sql, sizeof(sql),
                         "INSERT INTO nodes (id, name, state, online, created_at, updated_at) "
                         "VALUES ('nod_bench%012uAAAAA', 'bench-%u', 'active', 1, 1, 1)",
                         n, n);
                if (exec(db, sql) < 0)
                        return -1;
                for (unsigned i = 0; i < 8; i++) {
                        snprintf(sql, sizeof(sql),
                                 "INSERT INTO node_resource_slots (id, node_id, discovery_id, "
                                 "slot_key, gpus, nic, vf_index, nvme, numa_node, state, "
                                 "approved_at, gpu_pci_ids, switch, updated_at) VALUES "
                                 "('slt_b%05u%u', 'nod_bench%012uAAAAA', 'dsc_b', "
                                 "'slot-%u', '[\"0000:%02x:00.0\"]', '0000:a%u:00.0', %u, NULL, "
                                 "%u, 'available', 1, '[\"10de:2330\"]', 'sw%u-%u', 1)",
                                 n, i, n, i, 0x10 + i, i / 4, i, i / 4, n, i / 2);
                        if (exec(db, sql) < 0)
                                return -1;
                }
        }
        CatalogFieldError err;
        json_t *sku =
            json_pack("{s:s, s:s, s:i, s:[s], s:[i,i,i,i], s:I, s:s}", "name", "h100", "gpu_model",
                      "H100", "gpu_memory_gb", 80, "pci_ids", "10de:2330", "gpu_counts", 1, 2, 4, 8,
                      "price_per_gpu_hour_micros", (json_int_t)2000000, "topology", "node");
        json_t *img = json_pack("{s:s}", "name", "ubuntu");
        json_t *net = json_pack("{s:s, s:i}", "name", "tenant", "vlan", 100);
        int r = catalog_sku_create(db, sku, &B.sku, &err);
        if (r >= 0)
                r = catalog_image_create(db, img, &B.image, &err);
        if (r >= 0)
                r = catalog_network_create(db, net, &B.network, &err);
        json_decref(sku);
        json_decref(img);
        json_decref(net);
        if (r < 0) {
                fprintf(stderr, "catalog: %s %s\n", err.field, err.message);
                return -1;
        }
        return db_commit(&txn);
}

static void copy_request(LaunchRequest *q, unsigned n)
{
        *q = (LaunchRequest){.gpu_count = 1};
        user_id(n % USERS, q->user_id);
        snprintf(q->idempotency_key, sizeof(q->idempotency_key), "bench-%u", n);
        for (size_t i = 0; i < sizeof(q->request_hash); i++)
                q->request_hash[i] = (uint8_t)(n >> (8 * (i % 4)));
        /* The catalog rows as the handler reads them. */
        (void)catalog_sku_get(B.s.db, B.sku.id, &q->sku);
        (void)catalog_image_get(B.s.db, B.image.id, &q->image);
        (void)catalog_network_get(B.s.db, B.network.id, &q->network);
        q->ssh_key_ids = json_array();
        q->ssh_keys = json_array();
}

static void on_done(Server *s, void *userdata, const LaunchResult *res)
{
        (void)s;
        (void)userdata;
        B.done++;
        B.ok += res->ok;
        if (!res->ok && B.done - B.ok <= 3)
                fprintf(stderr, "refused: %s %s\n", error_code_to_string(res->code), res->message);
        if (B.done == B.launches) {
                B.t_last = now_ms();
                B.cpu_last = cpu_ms();
                uv_stop(B.s.loop);
        }
}

static void on_idle(uv_idle_t *h)
{
        if (B.submitted == 0) {
                B.t_first = now_ms();
                B.cpu_first = cpu_ms();
        }
        for (unsigned i = 0; i < B.per_iteration && B.submitted < B.launches; i++) {
                LaunchRequest q;
                copy_request(&q, B.submitted++);
                if (provisioner_launch(B.s.provisioner, &q, on_done, NULL, NULL) < 0)
                        abort();
        }
        if (B.submitted == B.launches)
                uv_idle_stop(h);
}

int main(int argc, char **argv)
{
        unsigned nodes = argc > 1 ? (unsigned)atoi(argv[1]) : 1000;
        B.launches = argc > 2 ? (unsigned)atoi(argv[2]) : 6000;
        B.per_iteration = argc > 3 ? (unsigned)atoi(argv[3]) : 64;
        log_set_level(LOG_LEVEL_WARNING);
        char dir[] = "/tmp/bench-launch-XXXXXX", path[64];
        if (!mkdtemp(dir))
                return 1;
        snprintf(path, sizeof(path), "%s/gpuslice.db", dir);
        static uv_loop_t loop;
        uv_loop_init(&loop);
        B.s.loop = &loop;
        if (controller_config_new(&B.s.config) < 0 || db_open(path, &B.s.db) < 0 ||
            populate(B.s.db, nodes) < 0 || placement_new(&B.s.placement) < 0 ||
            placement_load(B.s.placement, B.s.db) < 0 ||
            provisioner_start(&B.s, &B.s.provisioner) < 0)
                return 1;
        uv_idle_init(&loop, &B.idle);
        uv_idle_start(&B.idle, on_idle);
        uv_run(&loop, UV_RUN_DEFAULT);

        double ms = B.t_last - B.t_first;
        long long held = 0;
        {
                sqlite3_stmt *st = NULL;
                sqlite3_prepare_v2(db_handle(B.s.db),
                                   "SELECT count(*) FROM allocation_slots WHERE state = 'held'", -1,
                                   &st, NULL);
                if (st && sqlite3_step(st) == SQLITE_ROW)
                        held = sqlite3_column_int64(st, 0);
                sqlite3_finalize(st);
        }
        printf("launch: %u nodes x 8 slots, %u launches of 1 GPU, %u per loop iteration\n", nodes,
               B.launches, B.per_iteration);
        printf("  accepted %u (slots held %lld) in %.0f ms: %.0f launches/s durable; CPU %.0f us "
               "per launch (%.0f/s if it had a core to itself)\n",
               B.ok, held, ms, B.ok / (ms / 1000.0), (B.cpu_last - B.cpu_first) * 1000 / B.ok,
               B.ok / ((B.cpu_last - B.cpu_first) / 1000.0));
        provisioner_stop(B.s.provisioner);
        placement_free(B.s.placement);
        db_close(B.s.db);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        return system(cmd) == 0 && B.ok == B.launches ? 0 : 1;
}
