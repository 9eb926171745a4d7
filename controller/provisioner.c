/* SPDX-License-Identifier: MIT */
#include "provisioner.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "agent-link.h"
#include "db.h"
#include "log.h"
#include "macro.h"
#include "placement.h"
#include "server.h"
#include "tasks.h"

#define DEADLINE_CHECK_MS 1000
#define BATCH_MAX         1024
#define OVERDUE_MAX       64
#define RESEND_INTERVAL   (5 * USEC_PER_SEC)

struct LaunchTicket {
        LaunchRequest request;
        LaunchDoneFn done;
        void *userdata; /* NULL once cancelled */
        bool cancelled;
        LaunchResult result;
        LaunchTicket *next;
};

struct Provisioner {
        Server *server;
        uv_check_t check; /* runs the batch after the loop's I/O callbacks */
        uv_timer_t deadlines;
        bool check_active;
        LaunchTicket *head, *tail;
        size_t queued;
};

usec_t provisioner_provision_deadline(Server *s)
{
        return now_usec() + (usec_t)config_get_int(s->config, "provision_timeout_s") * USEC_PER_SEC;
}

usec_t provisioner_release_deadline(Server *s)
{
        return now_usec() + (usec_t)config_get_int(s->config, "release_timeout_s") * USEC_PER_SEC;
}

void provisioner_node_changed(Server *s, const char *node_id)
{
        if (!node_id || !node_id[0])
                return;
        int r = placement_node_reload(s->placement, s->db, node_id);
        if (r < 0)
                log_warning_errno(r, "cannot refresh the placement index | node=%s", node_id);
}

/* Sends the node's new commands; marking them sent is one transaction, not
 * an fsync per command. */
static void send_new_commands(Server *s, const char *const *node_ids, size_t n)
{
        _cleanup_txn_ DbTxn txn = {0};
        int r = db_begin(s->db, &txn);
        for (size_t i = 0; i < n; i++)
                agent_link_send_new_commands(s->link, node_ids[i]);
        if (r >= 0)
                r = db_commit(&txn);
        if (r < 0)
                log_warning_errno(r, "cannot record the commands sent | nodes=%zu", n);
}

void provisioner_node_commands(Server *s, const char *node_id)
{
        if (!node_id || !node_id[0])
                return;
        provisioner_node_changed(s, node_id);
        if (agent_link_node_online(s->link, node_id, NULL))
                send_new_commands(s, &node_id, 1);
}

/* ---- launches ---- */

static int savepoint(Db *db, const char *sql)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(db, sql);
        if (!s)
                return -EIO;
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static void result_unavailable(LaunchResult *res)
{
        launch_result_done(res);
        *res = (LaunchResult){.code = ERR_UNAVAILABLE};
        snprintf(res->message, sizeof(res->message), "cannot take the launch now; retry it");
}

/* One launch inside the batch's transaction, in a savepoint of its own. */
static void launch_one(Provisioner *p, LaunchTicket *t, usec_t deadline)
{
        Server *s = p->server;
        int r = 0;
        for (int attempt = 0; attempt < 2; attempt++) {
                r = savepoint(s->db, "SAVEPOINT launch");
                if (r < 0)
                        break;
                r = allocations_launch(s->db, s->placement, &t->request, deadline, &t->result);
                if (r >= 0) {
                        r = savepoint(s->db, "RELEASE launch");
                        if (r >= 0)
                                return;
                        launch_result_untake(s->placement, &t->result);
                }
                (void)savepoint(s->db, "ROLLBACK TO launch");
                (void)savepoint(s->db, "RELEASE launch");
                if (r != -EAGAIN)
                        break;
                /* A stale index: re-read the node (inside the transaction, so
                 * this batch's own reservations count) and place again. */
                log_warning("placement index was stale; node reloaded | node=%s",
                            t->result.pick.node_id);
                provisioner_node_changed(s, t->result.pick.node_id);
                launch_result_done(&t->result);
        }
        log_warning_errno(r, "launch failed | user=%s", t->request.user_id);
        result_unavailable(&t->result);
}

static void run_batch(Provisioner *p)
{
        Server *s = p->server;
        LaunchTicket *batch = p->head;
        size_t n = 0;
        LaunchTicket *last = NULL;
        for (LaunchTicket *t = batch; t && n < BATCH_MAX; t = t->next) {
                last = t;
                n++;
        }
        if (!batch)
                return;
        p->head = last->next;
        if (!p->head)
                p->tail = NULL;
        last->next = NULL;
        p->queued -= n;

        usec_t deadline = provisioner_provision_deadline(s);
        _cleanup_txn_ DbTxn txn = {0};
        int r = db_begin(s->db, &txn);
        if (r >= 0) {
                for (LaunchTicket *t = batch; t; t = t->next)
                        launch_one(p, t, deadline);
                r = db_commit(&txn);
        }
        if (r < 0) {
                log_warning_errno(r, "launch batch not committed | launches=%zu", n);
                db_rollback(&txn);
                for (LaunchTicket *t = batch; t; t = t->next) {
                        launch_result_untake(s->placement, &t->result);
                        if (t->result.node_id[0])
                                provisioner_node_changed(s, t->result.node_id);
                        result_unavailable(&t->result);
                }
        } else {
                /* Each node's new commands, once per node, in one transaction. */
                const char **nodes = calloc(n, sizeof(char *));
                size_t n_nodes = 0;
                for (LaunchTicket *t = batch; nodes && t; t = t->next) {
                        if (!t->result.ok || t->result.replayed || !t->result.node_id[0] ||
                            !agent_link_node_online(s->link, t->result.node_id, NULL))
                                continue;
                        bool seen = false;
                        for (size_t i = 0; i < n_nodes && !seen; i++)
                                seen = streq(nodes[i], t->result.node_id);
                        if (!seen)
                                nodes[n_nodes++] = t->result.node_id;
                }
                if (n_nodes > 0)
                        send_new_commands(s, nodes, n_nodes);
                free(nodes);
        }
        while (batch) {
                LaunchTicket *next = batch->next;
                if (!batch->cancelled && batch->done)
                        batch->done(s, batch->userdata, &batch->result);
                launch_request_done(&batch->request);
                launch_result_done(&batch->result);
                free(batch);
                batch = next;
        }
}

void provisioner_flush_launches(Provisioner *p)
{
        while (p->head)
                run_batch(p);
        if (p->check_active) {
                uv_check_stop(&p->check);
                p->check_active = false;
        }
}

static void on_check(uv_check_t *c)
{
        provisioner_flush_launches(c->data);
}

int provisioner_launch(Provisioner *p, LaunchRequest *q, LaunchDoneFn done, void *userdata,
                       LaunchTicket **ret_ticket)
{
        LaunchTicket *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->request = *q;
        *q = (LaunchRequest){0};
        t->done = done;
        t->userdata = userdata;
        if (p->tail)
                p->tail->next = t;
        else
                p->head = t;
        p->tail = t;
        p->queued++;
        if (!p->check_active) {
                uv_check_start(&p->check, on_check);
                p->check_active = true;
        }
        if (ret_ticket)
                *ret_ticket = t;
        return 0;
}

void provisioner_launch_cancel(LaunchTicket *t)
{
        if (t) {
                t->cancelled = true;
                t->userdata = NULL;
        }
}

/* ---- replies ---- */

int provisioner_on_reply(Server *s, const char *node_id, const char *command_id, bool ok,
                         json_t *body)
{
        _cleanup_(task_done) Task t = {0};
        int r = task_get_by_command(s->db, command_id, &t);
        if (r == -ENOENT) {
                log_warning("reply for an allocation command without a task | node=%s command=%s",
                            node_id, command_id);
                return 0;
        }
        if (r < 0)
                return r;
        r = allocations_on_reply(s->db, &t, ok, body, provisioner_release_deadline(s));
        if (r >= 0)
                log_info("allocation task progressed | allocation=%s task=%s kind=%s state=%s "
                         "ok=%s",
                         t.allocation_id, t.id, t.kind, t.state, ok ? "yes" : "no");
        return r;
}

/* ---- deadlines ---- */

void provisioner_check_deadlines(Provisioner *p)
{
        Server *s = p->server;
        char ids[OVERDUE_MAX][ID_MAX];
        size_t n = 0;
        int r = tasks_overdue(s->db, now_usec(), ids, OVERDUE_MAX, &n);
        if (r < 0) {
                log_warning_errno(r, "cannot read overdue tasks");
                return;
        }
        for (size_t i = 0; i < n; i++) {
                _cleanup_(task_done) Task t = {0};
                _cleanup_(allocation_done) Allocation a = {0};
                _cleanup_txn_ DbTxn txn = {0};
                r = db_begin(s->db, &txn);
                if (r >= 0)
                        r = task_get(s->db, ids[i], &t);
                if (r >= 0)
                        r = allocation_get(s->db, t.allocation_id, NULL, &a);
                if (r >= 0)
                        r = allocations_on_timeout(s->db, &t, provisioner_release_deadline(s));
                if (r >= 0)
                        r = db_commit(&txn);
                if (r < 0) {
                        log_warning_errno(r, "cannot end an overdue task | task=%s", ids[i]);
                        continue;
                }
                log_info("task deadline passed | task=%s kind=%s allocation=%s node=%s", t.id,
                         t.kind, t.allocation_id, a.node_id);
                provisioner_node_commands(s, a.node_id);
        }
}

/* nng's polyamorous pair1 socket may drop a message when a pipe's queue is
 * full, so a command sent and not answered goes again every
 * RESEND_INTERVAL; the agent's journal answers one it applied already. Only
 * the commands of running tasks are looked at (an indexed, short list). */
static void resend_unanswered(Provisioner *p)
{
        Server *s = p->server;
        char nodes[OVERDUE_MAX][ID_MAX];
        size_t n = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *st = db_stmt(
                    s->db, "SELECT DISTINCT c.node_id FROM tasks t JOIN node_commands c ON "
                           "c.id = t.command_id WHERE t.state = 'running' AND c.state = 'sent' "
                           "AND c.sent_at < ? LIMIT 64");
                if (!st)
                        return;
                sqlite3_bind_int64(st, 1, (sqlite3_int64)(now_usec() - RESEND_INTERVAL));
                while (n < ELEMENTSOF(nodes) && sqlite3_step(st) == SQLITE_ROW)
                        snprintf(nodes[n++], ID_MAX, "%s", strempty(db_column_text(st, 0)));
        }
        if (n == 0)
                return;
        _cleanup_txn_ DbTxn txn = {0};
        int r = db_begin(s->db, &txn);
        for (size_t i = 0; i < n; i++)
                if (agent_link_node_online(s->link, nodes[i], NULL)) {
                        log_info("resending unanswered commands | node=%s", nodes[i]);
                        agent_link_flush_commands(s->link, nodes[i]);
                }
        if (r >= 0)
                r = db_commit(&txn);
        if (r < 0)
                log_warning_errno(r, "cannot record resent commands | nodes=%zu", n);
}

static void on_deadlines(uv_timer_t *timer)
{
        provisioner_check_deadlines(timer->data);
        resend_unanswered(timer->data);
}

int provisioner_release_for_billing(Server *s, const char *allocation_id, const char *reason)
{
        char task_id[ID_MAX], node_id[ID_MAX] = "";
        AllocState state;
        _cleanup_txn_ DbTxn txn = {0};
        int r = db_begin(s->db, &txn);
        if (r >= 0)
                r = allocations_release(s->db, allocation_id, ALLOC_TRIGGER_BILLING, reason,
                                        provisioner_release_deadline(s), task_id, node_id, &state);
        if (r >= 0)
                r = db_commit(&txn);
        if (r < 0)
                return r;
        provisioner_node_commands(s, node_id);
        return 0;
}

/* ---- start / stop ---- */

/* After a restart: every running task gets at least the time a node needs
 * to reconnect (its agent redials within 30 s; the heartbeat timeout marks
 * the ones that do not), so nothing times out only because we were away. */
static int resume(Server *s)
{
        usec_t grace =
            ((usec_t)config_get_int(s->config, "heartbeat_timeout_s") + 30) * USEC_PER_SEC;
        _cleanup_txn_ DbTxn txn = {0};
        int deferred = 0, failed = 0;
        int r = db_begin(s->db, &txn);
        if (r >= 0)
                r = deferred = tasks_defer_deadlines(s->db, now_usec() + grace);
        if (r >= 0)
                r = failed = allocations_fail_pending(s->db);
        if (r >= 0)
                r = db_commit(&txn);
        if (r < 0)
                return log_error_errno(r, "cannot resume the allocation tasks");
        long long running = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *st =
                    db_stmt(s->db, "SELECT count(*) FROM tasks WHERE state = 'running'");
                if (st && sqlite3_step(st) == SQLITE_ROW)
                        running = sqlite3_column_int64(st, 0);
        }
        log_info("allocation tasks resumed | running=%lld deadlines_deferred=%d "
                 "pending_failed=%d",
                 running, deferred, failed);
        return 0;
}

int provisioner_start(Server *s, Provisioner **ret)
{
        int r = resume(s);
        if (r < 0)
                return r;
        Provisioner *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->server = s;
        uv_check_init(s->loop, &p->check);
        p->check.data = p;
        uv_timer_init(s->loop, &p->deadlines);
        p->deadlines.data = p;
        uv_timer_start(&p->deadlines, on_deadlines, DEADLINE_CHECK_MS, DEADLINE_CHECK_MS);
        *ret = p;
        return 0;
}

void provisioner_stop(Provisioner *p)
{
        if (!p)
                return;
        provisioner_flush_launches(p);
        uv_timer_stop(&p->deadlines);
        uv_close((uv_handle_t *)&p->check, NULL);
        uv_close((uv_handle_t *)&p->deadlines, NULL);
        uv_run(p->server->loop, UV_RUN_NOWAIT);
        free(p);
}
