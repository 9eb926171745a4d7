/* SPDX-License-Identifier: MIT */
#pragma once

/* The agent's journal: a small SQLite file (WAL) under state_dir that makes
 * "delivered at least once" into "applied at most once" across restarts.
 * For each command id it keeps the state (started, done) and, once done, the
 * reply body that was sent, so a command that arrives again is answered from
 * the journal instead of being applied again. It also keeps the node's
 * current assignments (key -> value) that link.hello reports. */

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define JOURNAL_FILE          "journal.sqlite"
#define JOURNAL_KEEP_DONE     4096 /* done commands kept; older ones are pruned */
#define JOURNAL_HELLO_APPLIED 256

typedef struct Journal Journal;

typedef enum {
        JOURNAL_NEW,     /* never seen */
        JOURNAL_STARTED, /* begun but not finished: the agent stopped while applying it */
        JOURNAL_DONE,    /* applied; the stored reply answers a repeat */
} JournalState;

/* How many done commands to keep (default JOURNAL_KEEP_DONE). */
void journal_set_keep(Journal *j, unsigned keep);

/* Opens (creating) state_dir/journal.sqlite; state_dir is created 0700 when
 * missing. 0 or -errno (logged). */
int journal_open(const char *state_dir, Journal **ret);
void journal_close(Journal *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(Journal *, journal_close);

/* The state of a command id; for JOURNAL_DONE also its stored reply body
 * (malloc'ed msgpack map, may be NULL when ret_reply is NULL). */
int journal_lookup(Journal *j, const char *id, JournalState *ret_state, void **ret_reply,
                   size_t *ret_len);
/* Marks id as started (kept as is when already started). -EEXIST when done. */
int journal_begin(Journal *j, const char *id, const char *type, uint64_t epoch);
/* Stores the reply and marks id done, in one transaction. */
int journal_finish(Journal *j, const char *id, const void *reply, size_t len);

/* Up to max done command ids, most recently finished first (NULL-terminated,
 * free with strv_free). */
int journal_applied(Journal *j, size_t max, char ***ret);

/* Sets (value != NULL) or removes an assignment. */
int journal_set_assignment(Journal *j, const char *key, const char *value);
/* All assignments as a NULL-terminated list key, value, key, value, ... */
int journal_assignments(Journal *j, char ***ret);
