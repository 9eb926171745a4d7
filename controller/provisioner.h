/* SPDX-License-Identifier: MIT */
#pragma once

/* The provisioner drives allocations on the event loop:
 *  - launches: the launches that arrive in one loop iteration are written in
 *    one SQLite transaction (group commit: one fsync for the batch, each
 *    launch in its own savepoint so a failing one takes nothing else with
 *    it), and each is answered after that commit;
 *  - replies: the agent link hands it every reply to a
 *    command.allocation.* inside the reply's transaction;
 *  - deadlines: a timer ends the tasks whose deadline passed (agent_timeout);
 *  - restart: at start every running task gets time for its node to come
 *    back (its command is resent at the node's hello), pending allocations
 *    (never placed) fail, and the placement index is loaded.
 * After each commit it tells the placement index and flushes the node's new
 * commands to the agent link. */

#include <jansson.h>
#include <stdbool.h>

#include "allocations.h"
#include "timeutil.h"

typedef struct Server Server;
typedef struct Provisioner Provisioner;
typedef struct LaunchTicket LaunchTicket;

int provisioner_start(Server *s, Provisioner **ret);
/* Answers the launches still queued, stops the timers. */
void provisioner_stop(Provisioner *p);

/* Called once per launch, after the batch committed (or failed: then
 * res->ok is false with ERR_UNAVAILABLE). res is valid during the call. */
typedef void (*LaunchDoneFn)(Server *s, void *userdata, const LaunchResult *res);

/* Queues a launch (q is taken over) for the batch of this loop iteration. */
int provisioner_launch(Provisioner *p, LaunchRequest *q, LaunchDoneFn done, void *userdata,
                       LaunchTicket **ret_ticket);
/* The requester went away: done will not be called. */
void provisioner_launch_cancel(LaunchTicket *t);
/* Runs the queued batch now (tests, benchmarks, shutdown). */
void provisioner_flush_launches(Provisioner *p);

/* Deadlines for new tasks, from the settings. */
usec_t provisioner_provision_deadline(Server *s);
usec_t provisioner_release_deadline(Server *s);

/* Inside the agent link's reply transaction: a reply to a
 * command.allocation.* command. */
int provisioner_on_reply(Server *s, const char *node_id, const char *command_id, bool ok,
                         json_t *body);
/* After a transaction that changed a node's slots or status committed: the
 * placement index re-reads the node. */
void provisioner_node_changed(Server *s, const char *node_id);
/* node_changed plus sending the node's new commands now. */
void provisioner_node_commands(Server *s, const char *node_id);

/* Billing ends an allocation (balance used up): its own transaction. */
int provisioner_release_for_billing(Server *s, const char *allocation_id, const char *reason);

/* Runs the deadline check now (tests). */
void provisioner_check_deadlines(Provisioner *p);
