/* SPDX-License-Identifier: MIT */
#pragma once

/* The events outbox: things that happened which other systems (notifications,
 * billing exports) consume in order, read by cursor at GET /api/v1/admin/events.
 * An event is written in the same transaction as the change it announces, so
 * a committed change always has its event and a rolled back one never does.
 * Types are "<area>.<what>" ("provisioning.force_release_requested",
 * "allocation.state_changed", "billing.low_balance"). */

#include <jansson.h>

typedef struct Db Db;

/* data (may be NULL) is stolen. The event's id ("evt_...") goes into ret_id
 * when it is not NULL. */
int event_emit(Db *db, const char *type, const char *subject_id, json_t *data, char *ret_id);

/* Events with seq > after_seq in seq order (the outbox order), at most limit,
 * optionally only of one type and/or one subject. fn gets each as the API
 * shows it, {id, at, type, subject_id, data} (borrowed), and its seq; a
 * non-zero return stops the walk and is returned. */
int events_list(Db *db, long long after_seq, int limit, const char *type, const char *subject_id,
                int (*fn)(long long seq, json_t *event, void *userdata), void *userdata);
