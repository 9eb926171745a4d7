/* SPDX-License-Identifier: MIT */
/* The placement index.
 *
 * Slots are grouped three ways at once: per node, per (node, NUMA node) and
 * per (node, PCIe switch), each separately for every GPU class (the distinct
 * gpu_pci_ids of a slot, usually one vendor:device). A group knows how many
 * of its slots are free, and sits in a bucket list indexed by that number,
 * one set of buckets per (topology, class, schedulable or offline). Best fit
 * for n slots is then the first non-empty bucket at n or above: a walk of at
 * most the largest group size, independent of the number of nodes. Moving a
 * slot between free and taken moves its three groups between buckets in O(1).
 *
 * A SKU whose pci_ids cover more than one class (two GPU models sold as one)
 * could combine slots of different classes on one node; that rare case is
 * answered by a scan over the nodes instead. */
#include "placement.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "catalog.h"
#include "db.h"
#include "log.h"
#include "macro.h"

#define NONE UINT32_MAX

enum { LIST_NONE, LIST_ONLINE, LIST_OFFLINE, _LIST_MAX };

typedef struct PClass {
        char *key; /* the stored JSON text, canonical: ["10de:2330"] */
        char **pci_ids;
        size_t n_pci_ids;
} PClass;

typedef struct PSlot {
        char *id;
        char *key; /* slot_key: orders the slots of a node */
        uint32_t node, cls;
        int numa;
        int32_t sw; /* interned switch, -1 unknown */
        bool free, live;
        uint32_t group[_PLACEMENT_TOPOLOGY_MAX];
} PSlot;

typedef struct PGroup {
        uint8_t kind; /* PlacementTopology */
        uint8_t list; /* LIST_* it sits in */
        uint32_t cls, node;
        int64_t subkey; /* numa id, switch index, or -(slot+2) for a lone slot */
        uint32_t n_free;
        uint32_t n_slots;
        uint32_t prev, next; /* in its bucket */
} PGroup;

typedef struct PNode {
        char *id;
        PlacementNodeStatus status;
        uint32_t *slots; /* sorted by slot key */
        size_t n_slots, cap_slots;
        uint32_t *groups;
        size_t n_groups, cap_groups;
} PNode;

typedef struct Buckets {
        uint32_t *head; /* head[k]: first group with k free slots */
        uint32_t cap;
        uint32_t max; /* highest non-empty k, 0 when none */
} Buckets;

/* String -> index, open addressing; 0 empty, else index + 1. */
typedef struct Map {
        uint32_t *cells;
        size_t cap, n;
} Map;

struct Placement {
        PClass *classes;
        size_t n_classes;
        char **switches;
        size_t n_switches;
        Map switch_map;
        PSlot *slots;
        size_t n_slots, cap_slots;
        uint32_t free_slot_head; /* recycled slot entries (chained through node) */
        Map slot_map;
        PNode *nodes;
        size_t n_nodes, cap_nodes;
        Map node_map;
        PGroup *groups;
        size_t n_groups, cap_groups;
        /* buckets[kind][list] is an array indexed by class */
        Buckets *buckets[_PLACEMENT_TOPOLOGY_MAX][_LIST_MAX];
        size_t n_live_slots, n_free;
};

static const char *const topology_names[_PLACEMENT_TOPOLOGY_MAX] = {
    [PLACEMENT_TOPOLOGY_NODE] = "node",
    [PLACEMENT_TOPOLOGY_NUMA] = "numa",
    [PLACEMENT_TOPOLOGY_SWITCH] = "switch",
};

const char *placement_topology_to_string(PlacementTopology t)
{
        return (unsigned)t < _PLACEMENT_TOPOLOGY_MAX ? topology_names[t] : "invalid";
}

PlacementTopology placement_topology_from_string(const char *s)
{
        for (unsigned i = 0; s && i < _PLACEMENT_TOPOLOGY_MAX; i++)
                if (streq(s, topology_names[i]))
                        return (PlacementTopology)i;
        return _PLACEMENT_TOPOLOGY_INVALID;
}

int placement_rule_from_sku(const Sku *sku, PlacementRule *ret)
{
        PlacementTopology t = placement_topology_from_string(sku->topology);
        if (t < 0)
                return -EINVAL;
        *ret = (PlacementRule){
            .topology = t,
            .pci_ids = (const char *const *)sku->pci_ids,
            .n_pci_ids = sku->n_pci_ids,
        };
        return 0;
}

/* ---- growth helpers ---- */

static int grow(void **a, size_t *cap, size_t need, size_t size)
{
        if (need <= *cap)
                return 0;
        size_t n = MAX(need, MAX(*cap * 2, (size_t)16));
        void *m = realloc(*a, n * size);
        if (!m)
                return -ENOMEM;
        *a = m;
        *cap = n;
        return 0;
}

/* ---- string map ---- */

static uint64_t hash_str(const char *s)
{
        uint64_t h = 1469598103934665603ull;
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 1099511628211ull;
        return h;
}

typedef const char *(*KeyOf)(Placement *p, uint32_t idx);

static const char *slot_key_of(Placement *p, uint32_t i)
{
        return p->slots[i].id;
}
static const char *node_key_of(Placement *p, uint32_t i)
{
        return p->nodes[i].id;
}
static const char *switch_key_of(Placement *p, uint32_t i)
{
        return p->switches[i];
}

static uint32_t map_get(Placement *p, Map *m, KeyOf key_of, const char *key)
{
        if (m->cap == 0)
                return NONE;
        size_t mask = m->cap - 1;
        for (size_t i = hash_str(key) & mask;; i = (i + 1) & mask) {
                uint32_t c = m->cells[i];
                if (c == 0)
                        return NONE;
                if (streq(key_of(p, c - 1), key))
                        return c - 1;
        }
}

static int map_put(Placement *p, Map *m, KeyOf key_of, uint32_t idx);

static int map_rehash(Placement *p, Map *m, KeyOf key_of, size_t cap)
{
        Map old = *m;
        m->cells = calloc(cap, sizeof(uint32_t));
        if (!m->cells) {
                *m = old;
                return -ENOMEM;
        }
        m->cap = cap;
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
                if (old.cells[i])
                        (void)map_put(p, m, key_of, old.cells[i] - 1);
        free(old.cells);
        return 0;
}

static int map_put(Placement *p, Map *m, KeyOf key_of, uint32_t idx)
{
        if ((m->n + 1) * 2 > m->cap) {
                int r = map_rehash(p, m, key_of, m->cap ? m->cap * 2 : 64);
                if (r < 0)
                        return r;
        }
        size_t mask = m->cap - 1;
        const char *key = key_of(p, idx);
        for (size_t i = hash_str(key) & mask;; i = (i + 1) & mask) {
                if (m->cells[i] == 0) {
                        m->cells[i] = idx + 1;
                        m->n++;
                        return 0;
                }
                if (m->cells[i] == idx + 1)
                        return 0;
        }
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void map_del(Placement *p, Map *m, KeyOf key_of, const char *key)
{
        if (m->cap == 0)
                return;
        size_t mask = m->cap - 1, i = hash_str(key) & mask;
        for (;; i = (i + 1) & mask) {
                if (m->cells[i] == 0)
                        return;
                if (streq(key_of(p, m->cells[i] - 1), key))
                        break;
        }
        m->cells[i] = 0;
        m->n--;
        for (size_t j = (i + 1) & mask; m->cells[j]; j = (j + 1) & mask) {
                size_t home = hash_str(key_of(p, m->cells[j] - 1)) & mask;
                /* Move j back to i when home is not cyclically in (i, j]. */
                bool in = i <= j ? (home > i && home <= j) : (home > i || home <= j);
                if (!in) {
                        m->cells[i] = m->cells[j];
                        m->cells[j] = 0;
                        i = j;
                }
        }
}

/* ---- classes and switches ---- */

static int class_intern(Placement *p, const char *key, uint32_t *ret)
{
        if (!key)
                key = "[]";
        for (size_t i = 0; i < p->n_classes; i++)
                if (streq(p->classes[i].key, key)) {
                        *ret = (uint32_t)i;
                        return 0;
                }
        PClass *a = reallocarray(p->classes, p->n_classes + 1, sizeof(PClass));
        if (!a)
                return -ENOMEM;
        p->classes = a;
        PClass *c = &a[p->n_classes];
        *c = (PClass){.key = strdup(key)};
        if (!c->key)
                return -ENOMEM;
        _cleanup_(json_decrefp) json_t *ids = json_loads(key, 0, NULL);
        size_t i;
        json_t *v;
        c->pci_ids = calloc(json_array_size(ids) + 1, sizeof(char *));
        if (!c->pci_ids) {
                free(c->key);
                return -ENOMEM;
        }
        json_array_foreach(ids, i, v) if (json_is_string(v)) c->pci_ids[c->n_pci_ids++] =
            strdup(json_string_value(v));
        *ret = (uint32_t)p->n_classes++;
        /* Every bucket set gets a slot for the new class. */
        for (int k = 0; k < _PLACEMENT_TOPOLOGY_MAX; k++)
                for (int l = 0; l < _LIST_MAX; l++) {
                        Buckets *b = reallocarray(p->buckets[k][l], p->n_classes, sizeof(Buckets));
                        if (!b)
                                return -ENOMEM;
                        b[p->n_classes - 1] = (Buckets){0};
                        p->buckets[k][l] = b;
                }
        return 0;
}

static int switch_intern(Placement *p, const char *name, int32_t *ret)
{
        if (!name) {
                *ret = -1;
                return 0;
        }
        uint32_t i = map_get(p, &p->switch_map, switch_key_of, name);
        if (i != NONE) {
                *ret = (int32_t)i;
                return 0;
        }
        char **a = reallocarray(p->switches, p->n_switches + 1, sizeof(char *));
        if (!a)
                return -ENOMEM;
        p->switches = a;
        if (!(a[p->n_switches] = strdup(name)))
                return -ENOMEM;
        p->n_switches++;
        *ret = (int32_t)(p->n_switches - 1);
        return map_put(p, &p->switch_map, switch_key_of, (uint32_t)(p->n_switches - 1));
}

/* Every GPU of the class is one the rule sells. */
static bool class_matches(const PClass *c, const PlacementRule *rule)
{
        if (c->n_pci_ids == 0)
                return false;
        for (size_t i = 0; i < c->n_pci_ids; i++) {
                bool found = false;
                for (size_t j = 0; j < rule->n_pci_ids && !found; j++)
                        found = c->pci_ids[i] && strcasecmp(c->pci_ids[i], rule->pci_ids[j]) == 0;
                if (!found)
                        return false;
        }
        return true;
}

/* ---- buckets ---- */

static Buckets *buckets_of(Placement *p, const PGroup *g, uint8_t list)
{
        return &p->buckets[g->kind][list][g->cls];
}

static void bucket_unlink(Placement *p, uint32_t gi)
{
        PGroup *g = &p->groups[gi];
        if (g->list == LIST_NONE)
                return;
        Buckets *b = buckets_of(p, g, g->list);
        uint32_t k = g->n_free;
        if (g->prev != NONE)
                p->groups[g->prev].next = g->next;
        else
                b->head[k] = g->next;
        if (g->next != NONE)
                p->groups[g->next].prev = g->prev;
        g->prev = g->next = NONE;
        g->list = LIST_NONE;
        while (b->max > 0 && b->head[b->max] == NONE)
                b->max--;
}

static int bucket_link(Placement *p, uint32_t gi)
{
        PGroup *g = &p->groups[gi];
        PlacementNodeStatus st = p->nodes[g->node].status;
        uint8_t list = st == PLACEMENT_NODE_SCHEDULABLE ? LIST_ONLINE
                       : st == PLACEMENT_NODE_OFFLINE   ? LIST_OFFLINE
                                                        : LIST_NONE;
        if (list == LIST_NONE || g->n_free == 0)
                return 0;
        Buckets *b = buckets_of(p, g, list);
        uint32_t k = g->n_free;
        if (k >= b->cap) {
                uint32_t cap = MAX(k + 1, MAX(b->cap * 2, 16u));
                uint32_t *h = reallocarray(b->head, cap, sizeof(uint32_t));
                if (!h)
                        return -ENOMEM;
                for (uint32_t i = b->cap; i < cap; i++)
                        h[i] = NONE;
                b->head = h;
                b->cap = cap;
        }
        g->list = list;
        g->prev = NONE;
        g->next = b->head[k];
        if (g->next != NONE)
                p->groups[g->next].prev = gi;
        b->head[k] = gi;
        if (k > b->max)
                b->max = k;
        return 0;
}

static int group_adjust(Placement *p, uint32_t gi, int d_free, int d_slots)
{
        bucket_unlink(p, gi);
        PGroup *g = &p->groups[gi];
        g->n_free = (uint32_t)((int)g->n_free + d_free);
        g->n_slots = (uint32_t)((int)g->n_slots + d_slots);
        return bucket_link(p, gi);
}

static int64_t subkey_of(const PSlot *s, uint32_t si, PlacementTopology kind)
{
        switch (kind) {
        case PLACEMENT_TOPOLOGY_NUMA:
                return s->numa >= 0 ? s->numa : -(int64_t)si - 2;
        case PLACEMENT_TOPOLOGY_SWITCH:
                return s->sw >= 0 ? s->sw : -(int64_t)si - 2;
        default:
                return 0;
        }
}

static int group_find_or_add(Placement *p, uint32_t ni, PlacementTopology kind, uint32_t cls,
                             int64_t subkey, uint32_t *ret)
{
        PNode *n = &p->nodes[ni];
        for (size_t i = 0; i < n->n_groups; i++) {
                PGroup *g = &p->groups[n->groups[i]];
                if (g->kind == kind && g->cls == cls && g->subkey == subkey) {
                        *ret = n->groups[i];
                        return 0;
                }
        }
        if (grow((void **)&p->groups, &p->cap_groups, p->n_groups + 1, sizeof(PGroup)) < 0 ||
            grow((void **)&n->groups, &n->cap_groups, n->n_groups + 1, sizeof(uint32_t)) < 0)
                return -ENOMEM;
        uint32_t gi = (uint32_t)p->n_groups++;
        p->groups[gi] = (PGroup){.kind = (uint8_t)kind,
                                 .cls = cls,
                                 .node = ni,
                                 .subkey = subkey,
                                 .prev = NONE,
                                 .next = NONE};
        n->groups[n->n_groups++] = gi;
        *ret = gi;
        return 0;
}

/* ---- nodes ---- */

static int node_get_or_add(Placement *p, const char *id, uint32_t *ret)
{
        uint32_t i = map_get(p, &p->node_map, node_key_of, id);
        if (i != NONE) {
                *ret = i;
                return 0;
        }
        if (grow((void **)&p->nodes, &p->cap_nodes, p->n_nodes + 1, sizeof(PNode)) < 0)
                return -ENOMEM;
        PNode *n = &p->nodes[p->n_nodes];
        *n = (PNode){.status = PLACEMENT_NODE_EXCLUDED, .id = strdup(id)};
        if (!n->id)
                return -ENOMEM;
        i = (uint32_t)p->n_nodes++;
        *ret = i;
        return map_put(p, &p->node_map, node_key_of, i);
}

int placement_node_set(Placement *p, const char *node_id, PlacementNodeStatus status)
{
        uint32_t ni;
        int r = node_get_or_add(p, node_id, &ni);
        if (r < 0)
                return r;
        PNode *n = &p->nodes[ni];
        if (n->status == status)
                return 0;
        for (size_t i = 0; i < n->n_groups; i++)
                bucket_unlink(p, n->groups[i]);
        n->status = status;
        for (size_t i = 0; i < n->n_groups; i++)
                if ((r = bucket_link(p, n->groups[i])) < 0)
                        return r;
        return 0;
}

/* ---- slots ---- */

static void slot_detach(Placement *p, uint32_t si)
{
        PSlot *s = &p->slots[si];
        for (int k = 0; k < _PLACEMENT_TOPOLOGY_MAX; k++)
                (void)group_adjust(p, s->group[k], s->free ? -1 : 0, -1);
        PNode *n = &p->nodes[s->node];
        for (size_t i = 0; i < n->n_slots; i++)
                if (n->slots[i] == si) {
                        memmove(&n->slots[i], &n->slots[i + 1],
                                (n->n_slots - i - 1) * sizeof(uint32_t));
                        n->n_slots--;
                        break;
                }
        if (s->free)
                p->n_free--;
        p->n_live_slots--;
}

static int slot_attach(Placement *p, uint32_t si)
{
        PSlot *s = &p->slots[si];
        PNode *n = &p->nodes[s->node];
        int r;
        for (int k = 0; k < _PLACEMENT_TOPOLOGY_MAX; k++) {
                r = group_find_or_add(p, s->node, (PlacementTopology)k, s->cls,
                                      subkey_of(s, si, (PlacementTopology)k), &s->group[k]);
                if (r < 0)
                        return r;
                n = &p->nodes[s->node];
                if ((r = group_adjust(p, s->group[k], s->free ? 1 : 0, 1)) < 0)
                        return r;
        }
        if (grow((void **)&n->slots, &n->cap_slots, n->n_slots + 1, sizeof(uint32_t)) < 0)
                return -ENOMEM;
        size_t at = n->n_slots;
        while (at > 0 && strcmp(p->slots[n->slots[at - 1]].key, s->key) > 0)
                at--;
        memmove(&n->slots[at + 1], &n->slots[at], (n->n_slots - at) * sizeof(uint32_t));
        n->slots[at] = si;
        n->n_slots++;
        if (s->free)
                p->n_free++;
        p->n_live_slots++;
        return 0;
}

int placement_slot_put(Placement *p, const PlacementSlot *in)
{
        uint32_t ni, cls;
        int32_t sw;
        int r = node_get_or_add(p, in->node_id, &ni);
        if (r >= 0)
                r = class_intern(p, in->gpu_pci_ids, &cls);
        if (r >= 0)
                r = switch_intern(p, in->switch_id, &sw);
        if (r < 0)
                return r;
        uint32_t si = map_get(p, &p->slot_map, slot_key_of, in->id);
        if (si != NONE) {
                PSlot *s = &p->slots[si];
                slot_detach(p, si);
                free(s->key);
                s->key = NULL;
        } else {
                if (p->free_slot_head != NONE) {
                        si = p->free_slot_head;
                        p->free_slot_head = p->slots[si].node;
                } else {
                        if (grow((void **)&p->slots, &p->cap_slots, p->n_slots + 1, sizeof(PSlot)) <
                            0)
                                return -ENOMEM;
                        si = (uint32_t)p->n_slots++;
                }
                p->slots[si] = (PSlot){.id = strdup(in->id)};
                if (!p->slots[si].id)
                        return -ENOMEM;
                if ((r = map_put(p, &p->slot_map, slot_key_of, si)) < 0)
                        return r;
        }
        PSlot *s = &p->slots[si];
        s->key = strdup(in->slot_key ? in->slot_key : in->id);
        if (!s->key)
                return -ENOMEM;
        s->node = ni;
        s->cls = cls;
        s->numa = in->numa_node;
        s->sw = sw;
        s->free = in->free;
        s->live = true;
        return slot_attach(p, si);
}

int placement_slot_set_free(Placement *p, const char *slot_id, bool free_)
{
        uint32_t si = map_get(p, &p->slot_map, slot_key_of, slot_id);
        if (si == NONE)
                return -ENOENT;
        PSlot *s = &p->slots[si];
        if (s->free == free_)
                return 0;
        s->free = free_;
        p->n_free += free_ ? 1 : -1;
        for (int k = 0; k < _PLACEMENT_TOPOLOGY_MAX; k++) {
                int r = group_adjust(p, s->group[k], free_ ? 1 : -1, 0);
                if (r < 0)
                        return r;
        }
        return 0;
}

void placement_slot_remove(Placement *p, const char *slot_id)
{
        uint32_t si = map_get(p, &p->slot_map, slot_key_of, slot_id);
        if (si == NONE)
                return;
        slot_detach(p, si);
        map_del(p, &p->slot_map, slot_key_of, slot_id);
        PSlot *s = &p->slots[si];
        free(s->id);
        free(s->key);
        *s = (PSlot){.node = p->free_slot_head};
        p->free_slot_head = si;
}

/* ---- queries ---- */

/* The classes the rule matches: -1 none, -2 several, else the one. */
static int64_t rule_class(Placement *p, const PlacementRule *rule)
{
        int64_t found = -1;
        for (size_t i = 0; i < p->n_classes; i++)
                if (class_matches(&p->classes[i], rule)) {
                        if (found >= 0)
                                return -2;
                        found = (int64_t)i;
                }
        return found;
}

/* The slow path for a rule over several classes: counts per group key on
 * each node. Returns the best group (smallest free count >= want, or with
 * want == 0 the largest) as node and subkey. */
static uint32_t scan_groups(Placement *p, const PlacementRule *rule, uint8_t list, unsigned want,
                            uint32_t *ret_node, int64_t *ret_subkey)
{
        bool *match = calloc(p->n_classes + 1, sizeof(bool));
        if (!match)
                return 0;
        for (size_t i = 0; i < p->n_classes; i++)
                match[i] = class_matches(&p->classes[i], rule);
        uint32_t best = want ? UINT32_MAX : 0;
        int64_t keys[PLACEMENT_MAX_SLOTS];
        uint32_t counts[PLACEMENT_MAX_SLOTS];
        for (uint32_t ni = 0; ni < p->n_nodes; ni++) {
                PNode *n = &p->nodes[ni];
                uint8_t nl = n->status == PLACEMENT_NODE_SCHEDULABLE ? LIST_ONLINE
                             : n->status == PLACEMENT_NODE_OFFLINE   ? LIST_OFFLINE
                                                                     : LIST_NONE;
                if (nl != list)
                        continue;
                size_t nk = 0;
                for (size_t i = 0; i < n->n_slots; i++) {
                        PSlot *s = &p->slots[n->slots[i]];
                        if (!s->free || !match[s->cls])
                                continue;
                        int64_t key = subkey_of(s, n->slots[i], rule->topology);
                        size_t k = 0;
                        while (k < nk && keys[k] != key)
                                k++;
                        if (k == nk) {
                                if (nk == ELEMENTSOF(keys))
                                        continue;
                                keys[nk] = key;
                                counts[nk++] = 0;
                        }
                        counts[k]++;
                }
                for (size_t k = 0; k < nk; k++) {
                        bool better =
                            want ? (counts[k] >= want && counts[k] < best) : counts[k] > best;
                        if (better) {
                                best = counts[k];
                                *ret_node = ni;
                                *ret_subkey = keys[k];
                        }
                }
        }
        free(match);
        return best == UINT32_MAX ? 0 : best;
}

unsigned placement_max_group(Placement *p, const PlacementRule *rule, bool online)
{
        int64_t c = rule_class(p, rule);
        uint8_t list = online ? LIST_ONLINE : LIST_OFFLINE;
        if (c == -1 || rule->topology < 0 || rule->topology >= _PLACEMENT_TOPOLOGY_MAX)
                return 0;
        if (c >= 0)
                return p->buckets[rule->topology][list][c].max;
        uint32_t node;
        int64_t subkey;
        return scan_groups(p, rule, list, 0, &node, &subkey);
}

int placement_pick(Placement *p, const PlacementRule *rule, unsigned gpu_count, PlacementPick *ret)
{
        if (gpu_count == 0 || gpu_count > PLACEMENT_MAX_SLOTS || rule->topology < 0 ||
            rule->topology >= _PLACEMENT_TOPOLOGY_MAX)
                return -EINVAL;
        int64_t c = rule_class(p, rule);
        if (c == -1)
                return -ENOSPC;
        uint32_t ni;
        int64_t subkey;
        if (c >= 0) {
                Buckets *b = &p->buckets[rule->topology][LIST_ONLINE][c];
                uint32_t gi = NONE;
                for (uint32_t k = gpu_count; k <= b->max && gi == NONE; k++)
                        gi = b->head[k];
                if (gi == NONE)
                        return -ENOSPC;
                ni = p->groups[gi].node;
                subkey = p->groups[gi].subkey;
        } else if (scan_groups(p, rule, LIST_ONLINE, gpu_count, &ni, &subkey) == 0)
                return -ENOSPC;

        PNode *n = &p->nodes[ni];
        *ret = (PlacementPick){0};
        snprintf(ret->node_id, sizeof(ret->node_id), "%s", n->id);
        for (size_t i = 0; i < n->n_slots && ret->n_slots < gpu_count; i++) {
                PSlot *s = &p->slots[n->slots[i]];
                if (!s->free ||
                    (c >= 0 ? s->cls != (uint32_t)c : !class_matches(&p->classes[s->cls], rule)))
                        continue;
                if (subkey_of(s, n->slots[i], rule->topology) != subkey)
                        continue;
                snprintf(ret->slot_ids[ret->n_slots++], sizeof(ret->slot_ids[0]), "%s", s->id);
        }
        if (ret->n_slots != gpu_count) {
                log_error("placement index inconsistent | node=%s want=%u got=%zu", n->id,
                          gpu_count, ret->n_slots);
                return -EIO;
        }
        return 0;
}

int placement_rule_available_counts(Placement *p, const PlacementRule *rule, const unsigned *counts,
                                    size_t n, unsigned *ret_counts, size_t *ret_n)
{
        /* Every count up to the largest group fits in that group. */
        unsigned max = placement_max_group(p, rule, true);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
                if (counts[i] > 0 && counts[i] <= max)
                        ret_counts[k++] = counts[i];
        *ret_n = k;
        return 0;
}

int placement_available_counts(Placement *p, const Sku *sku, unsigned *ret_counts, size_t *ret_n)
{
        PlacementRule rule;
        *ret_n = 0;
        if (!p)
                return 0;
        int r = placement_rule_from_sku(sku, &rule);
        if (r < 0)
                return r;
        return placement_rule_available_counts(p, &rule, sku->gpu_counts,
                                               MIN(sku->n_gpu_counts, PLACEMENT_MAX_COUNTS),
                                               ret_counts, ret_n);
}

size_t placement_n_slots(Placement *p)
{
        return p->n_live_slots;
}

size_t placement_n_free(Placement *p)
{
        return p->n_free;
}

/* ---- lifetime ---- */

int placement_new(Placement **ret)
{
        Placement *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->free_slot_head = NONE;
        *ret = p;
        return 0;
}

static void placement_clear(Placement *p)
{
        for (size_t i = 0; i < p->n_classes; i++) {
                for (size_t j = 0; j < p->classes[i].n_pci_ids; j++)
                        free(p->classes[i].pci_ids[j]);
                free(p->classes[i].pci_ids);
                free(p->classes[i].key);
        }
        free(p->classes);
        for (size_t i = 0; i < p->n_switches; i++)
                free(p->switches[i]);
        free(p->switches);
        for (size_t i = 0; i < p->n_slots; i++) {
                free(p->slots[i].id);
                free(p->slots[i].key);
        }
        free(p->slots);
        for (size_t i = 0; i < p->n_nodes; i++) {
                free(p->nodes[i].id);
                free(p->nodes[i].slots);
                free(p->nodes[i].groups);
        }
        free(p->nodes);
        free(p->groups);
        for (int k = 0; k < _PLACEMENT_TOPOLOGY_MAX; k++)
                for (int l = 0; l < _LIST_MAX; l++) {
                        for (size_t c = 0; p->buckets[k][l] && c < p->n_classes; c++)
                                free(p->buckets[k][l][c].head);
                        free(p->buckets[k][l]);
                }
        free(p->slot_map.cells);
        free(p->node_map.cells);
        free(p->switch_map.cells);
        *p = (Placement){.free_slot_head = NONE};
}

Placement *placement_free(Placement *p)
{
        if (p) {
                placement_clear(p);
                free(p);
        }
        return NULL;
}

/* ---- from the database ---- */

#define NODE_STATUS_SQL                                                                            \
        "CASE WHEN n.state = 'active' AND n.online = 1 THEN 0 "                                    \
        "WHEN n.state = 'active' OR (n.state = 'offline' AND n.offline_from = 'active') THEN 1 "   \
        "ELSE 2 END"

static int slot_from_row(Placement *p, sqlite3_stmt *s)
{
        PlacementSlot slot = {
            .id = db_column_text(s, 0),
            .node_id = db_column_text(s, 1),
            .slot_key = db_column_text(s, 2),
            .gpu_pci_ids = db_column_text(s, 3),
            .numa_node = sqlite3_column_type(s, 4) == SQLITE_NULL ? -1 : sqlite3_column_int(s, 4),
            .switch_id = db_column_text(s, 5),
            .free = streq_ptr(db_column_text(s, 6), "available"),
        };
        if (!slot.id || !slot.node_id)
                return 0;
        return placement_slot_put(p, &slot);
}

int placement_load(Placement *p, Db *db)
{
        placement_clear(p);
        int rc;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT n.id, " NODE_STATUS_SQL " FROM nodes n");
                if (!s)
                        return -EIO;
                while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                        int r = placement_node_set(p, db_column_text(s, 0),
                                                   (PlacementNodeStatus)sqlite3_column_int(s, 1));
                        if (r < 0)
                                return r;
                }
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT id, node_id, slot_key, gpu_pci_ids, numa_node, switch, state "
                        "FROM node_resource_slots");
        if (!s)
                return -EIO;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                int r = slot_from_row(p, s);
                if (r < 0)
                        return r;
        }
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        log_info("placement index loaded | nodes=%zu slots=%zu free=%zu", p->n_nodes,
                 p->n_live_slots, p->n_free);
        return 0;
}

int placement_node_reload(Placement *p, Db *db, const char *node_id)
{
        if (!p)
                return 0;
        int rc, r;
        PlacementNodeStatus status = PLACEMENT_NODE_EXCLUDED;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT " NODE_STATUS_SQL " FROM nodes n WHERE n.id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, node_id, -1, SQLITE_TRANSIENT);
                rc = sqlite3_step(s);
                if (rc == SQLITE_ROW)
                        status = (PlacementNodeStatus)sqlite3_column_int(s, 0);
                else if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        /* Slots the database no longer has go; the rest are put again. */
        uint32_t ni;
        if ((r = node_get_or_add(p, node_id, &ni)) < 0)
                return r;
        size_t n_old = p->nodes[ni].n_slots;
        char **old = calloc(n_old + 1, sizeof(char *));
        if (!old)
                return -ENOMEM;
        for (size_t i = 0; i < n_old; i++)
                if (!(old[i] = strdup(p->slots[p->nodes[ni].slots[i]].id)))
                        r = -ENOMEM;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT 1 FROM node_resource_slots WHERE id = ? AND node_id = ?");
                if (!s)
                        r = -EIO;
                for (size_t i = 0; r >= 0 && i < n_old; i++) {
                        sqlite3_reset(s);
                        sqlite3_bind_text(s, 1, old[i], -1, SQLITE_TRANSIENT);
                        sqlite3_bind_text(s, 2, node_id, -1, SQLITE_TRANSIENT);
                        rc = sqlite3_step(s);
                        if (rc == SQLITE_DONE)
                                placement_slot_remove(p, old[i]);
                        else if (rc != SQLITE_ROW)
                                r = db_errno(rc);
                }
        }
        for (size_t i = 0; i < n_old; i++)
                free(old[i]);
        free(old);
        if (r < 0)
                return r;
        if ((r = placement_node_set(p, node_id, status)) < 0)
                return r;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT id, node_id, slot_key, gpu_pci_ids, numa_node, switch, state "
                        "FROM node_resource_slots WHERE node_id = ?");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, node_id, -1, SQLITE_TRANSIENT);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
                if ((r = slot_from_row(p, s)) < 0)
                        return r;
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}
