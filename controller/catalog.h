/* SPDX-License-Identifier: MIT */
#pragma once

/* The catalog: SKUs (what a tenant can launch and at what price), images
 * (what the runtime hook boots, and the user the tenant logs in as) and
 * networks (the VLAN and MAC policy applied to a slot's VF). Admins manage
 * them; everyone signed in lists them. Deleting is soft (deleted_at), so an
 * allocation can still name the SKU it was launched with; a name is unique
 * among the rows not deleted.
 *
 * Validation lives here, not in the HTTP handler: the create and update
 * functions take the request's JSON object and refuse a bad field with
 * -EINVAL and a CatalogFieldError naming it, changing nothing. */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "id.h"
#include "timeutil.h"

typedef struct Db Db;

#define CATALOG_NAME_MAX        64
#define CATALOG_DESCRIPTION_MAX 1024
#define CATALOG_SOURCE_MAX      1024
#define SKU_GPU_MODEL_MAX       128
#define SKU_GPU_MEMORY_GB_MAX   4096
#define SKU_GPU_COUNT_MAX       64 /* GPUs in one allocation */
#define SKU_GPU_COUNTS_MAX      32 /* entries of gpu_counts (PLACEMENT_MAX_COUNTS) */
#define SKU_PCI_IDS_MAX         64
/* 1,000 USD per GPU-hour: far above any real price, low enough that
 * price * gpu_count * hours never overflows an int64 of micros. */
#define SKU_PRICE_MICROS_MAX INT64_C(1000000000)
#define IMAGE_SSH_USER_MAX   32
#define NETWORK_VLAN_MAX     4094

/* Which slots of one node may form an allocation of this SKU. */
#define SKU_TOPOLOGY_NODE   "node"   /* any slots of the node */
#define SKU_TOPOLOGY_NUMA   "numa"   /* slots on one NUMA node */
#define SKU_TOPOLOGY_SWITCH "switch" /* slots behind one PCIe switch */

#define NETWORK_MAC_GENERATED "generated" /* the controller picks a MAC per allocation */
#define NETWORK_MAC_HARDWARE  "hardware"  /* the VF keeps its own MAC */

typedef struct Sku {
        char id[ID_MAX]; /* "sku_..." */
        char *name;
        char *gpu_model;
        int gpu_memory_gb;
        char **pci_ids; /* "vvvv:dddd", lower case */
        size_t n_pci_ids;
        unsigned *gpu_counts; /* strictly ascending, 1..SKU_GPU_COUNT_MAX */
        size_t n_gpu_counts;
        int64_t price_per_gpu_hour_micros;
        char topology[8]; /* SKU_TOPOLOGY_* */
        usec_t created_at;
        usec_t updated_at;
        long long seq; /* list order */
} Sku;

typedef struct Image {
        char id[ID_MAX]; /* "img_..." */
        char *name;
        char *description;
        char *source; /* what the runtime hook boots (a path or URL it understands) */
        char *ssh_user;
        usec_t created_at;
        usec_t updated_at;
        long long seq;
} Image;

typedef struct Network {
        char id[ID_MAX]; /* "net_..." */
        char *name;
        char *description;
        int vlan;            /* 0: untagged, else 1..4094 */
        char mac_policy[16]; /* NETWORK_MAC_* */
        bool spoofchk;
        bool trust;
        usec_t created_at;
        usec_t updated_at;
        long long seq;
} Network;

/* Which field a create or update refused, and why (for details.field). */
typedef struct CatalogFieldError {
        char field[64]; /* the member's name ("body" when the body is not an object) */
        char message[160];
} CatalogFieldError;

void sku_done(Sku *s);
void image_done(Image *i);
void network_done(Network *n);

json_t *sku_to_json(const Sku *s);
json_t *image_to_json(const Image *i);
json_t *network_to_json(const Network *n);

/* True when pci_id ("10de:2330", any case) is one of the SKU's. */
bool sku_matches_pci_id(const Sku *s, const char *pci_id);
/* True when count is one of the SKU's gpu_counts. */
bool sku_allows_gpu_count(const Sku *s, unsigned count);

/* ---- SKUs ---- */

/* body: {name, gpu_model, gpu_memory_gb, pci_ids, gpu_counts,
 * price_per_gpu_hour_micros, topology}, all required. -EINVAL (err filled),
 * -EEXIST (a live SKU has the name). */
int catalog_sku_create(Db *db, json_t *body, Sku *ret, CatalogFieldError *err);
/* body: any subset of the create fields. -ENOENT, -EINVAL, -EEXIST. */
int catalog_sku_update(Db *db, const char *id, json_t *body, Sku *ret, CatalogFieldError *err);
/* Soft delete. -ENOENT when unknown or already deleted. */
int catalog_sku_delete(Db *db, const char *id);
/* -ENOENT for an unknown or deleted SKU. */
int catalog_sku_get(Db *db, const char *id, Sku *ret);
/* Live SKUs with seq > after_seq in seq order, at most limit (<= 0: all);
 * stops early and returns fn's value when it is non-zero. */
int catalog_skus_list(Db *db, long long after_seq, int limit,
                      int (*fn)(const Sku *s, void *userdata), void *userdata);
int catalog_skus_foreach(Db *db, int (*fn)(const Sku *s, void *userdata), void *userdata);

/* ---- images ---- */

/* body: {name (required), description, source, ssh_user (default "ubuntu")}. */
int catalog_image_create(Db *db, json_t *body, Image *ret, CatalogFieldError *err);
int catalog_image_update(Db *db, const char *id, json_t *body, Image *ret, CatalogFieldError *err);
int catalog_image_delete(Db *db, const char *id);
int catalog_image_get(Db *db, const char *id, Image *ret);
int catalog_images_list(Db *db, long long after_seq, int limit,
                        int (*fn)(const Image *i, void *userdata), void *userdata);

/* ---- networks ---- */

/* body: {name (required), description, vlan (required, 0..4094),
 * mac_policy ("generated"), spoofchk (true), trust (false)}. */
int catalog_network_create(Db *db, json_t *body, Network *ret, CatalogFieldError *err);
int catalog_network_update(Db *db, const char *id, json_t *body, Network *ret,
                           CatalogFieldError *err);
int catalog_network_delete(Db *db, const char *id);
int catalog_network_get(Db *db, const char *id, Network *ret);
int catalog_networks_list(Db *db, long long after_seq, int limit,
                          int (*fn)(const Network *n, void *userdata), void *userdata);

/* ---- validators (exposed for tests and other modules) ---- */

/* 1..CATALOG_NAME_MAX characters (UTF-8) without control characters, not all blank. */
bool catalog_name_valid(const char *s);
/* "vvvv:dddd" hex, either case. */
bool pci_id_valid(const char *s);
/* A POSIX-portable user name: [a-z_][a-z0-9_-]*, 1..IMAGE_SSH_USER_MAX. */
bool unix_user_name_valid(const char *s);
