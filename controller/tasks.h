/* SPDX-License-Identifier: MIT */
#pragma once

/* Tasks: the visible progress of one piece of work on an allocation
 * (kind "provision" or "release"), as GET /api/v1/tasks/{id} shows it:
 * state running|succeeded|failed and steps [{name, state, started_at,
 * finished_at, error}]. A running task has a deadline; the provisioner ends
 * the ones that pass it. Every function writes inside the caller's
 * transaction. */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "id.h"
#include "timeutil.h"

typedef struct Db Db;

#define TASK_PROVISION "provision"
#define TASK_RELEASE   "release"

/* Step states: pending, running, succeeded, failed, skipped. */

typedef struct Task {
        char id[ID_MAX];
        char allocation_id[ID_MAX];
        char user_id[ID_MAX]; /* the allocation's owner */
        char kind[16];
        char state[16]; /* running, succeeded, failed */
        char command_id[ID_MAX];
        json_t *steps; /* as stored: times in usec */
        char *error;
        usec_t deadline_at, created_at, updated_at, finished_at;
} Task;

void task_done(Task *t);
/* The API object (timestamps RFC 3339). */
json_t *task_to_json(const Task *t);

/* A running task with the named steps, all pending, then `first_done` of
 * them marked succeeded (the work the creating transaction already did) and
 * the next one running. */
int task_create(Db *db, const char *allocation_id, const char *kind, const char *const *steps,
                size_t n_steps, size_t first_done, usec_t deadline_at, const char *command_id,
                char ret_id[static ID_MAX]);
int task_get(Db *db, const char *id, Task *ret);
/* -ENOENT when no task carries that node command. */
int task_get_by_command(Db *db, const char *command_id, Task *ret);
/* The allocation's newest task id into ret_id ("" when it has none). */
int task_latest_for_allocation(Db *db, const char *allocation_id, char ret_id[static ID_MAX]);

/* Sets one step's state (stamping started_at when it starts, finished_at
 * when it ends) and error (may be NULL). -ENOENT for an unknown step. */
int task_step_set(Task *t, const char *step, const char *state, const char *error);
/* Appends a step (the agent's own steps, as it reported them). */
int task_step_append(Task *t, const char *name, const char *state, usec_t started_at,
                     usec_t finished_at, const char *error);
/* Ends the task: succeeded (ok) or failed with error; steps still pending
 * become skipped, a running one takes the outcome. Writes the row. */
int task_finish(Db *db, Task *t, bool ok, const char *error);
/* Writes the steps (and updated_at) of a task still running. */
int task_save_steps(Db *db, Task *t);

/* Running tasks whose deadline passed, oldest first, at most max ids. */
int tasks_overdue(Db *db, usec_t now, char (*ret_ids)[ID_MAX], size_t max, size_t *ret_n);
/* Every running task's deadline becomes at least `at` (after a restart the
 * agents get time to reconnect and answer). Returns how many moved. */
int tasks_defer_deadlines(Db *db, usec_t at);
