/* SPDX-License-Identifier: MIT */
#pragma once

/* The audit log: who did what to which object, and why. Rows are written in
 * the same transaction as the change they record. */

#include <jansson.h>

typedef struct Db Db;

/* details (may be NULL) is stolen: callers pass json_pack(...) inline. */
int audit_log(Db *db, const char *actor_id, const char *action, const char *target_type,
              const char *target_id, const char *reason, json_t *details);
