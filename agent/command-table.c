/* SPDX-License-Identifier: MIT */
#include "command-table.h"

#include <jansson.h>

#include "alloc-ops.h"
#include "inventory.h"
#include "json-proto.h"
#include "log.h"
#include "macro.h"

typedef struct CommandJob CommandJob;

typedef struct CommandSpec {
        const char *type;
        /* The body's fields, when its one argument is the first (a string). */
        const ProtoField *fields;
        size_t n_fields;
        /* Safe to apply again when the agent stopped half way (read-only
         * commands, and commands whose every step is idempotent). */
        bool rerun_if_interrupted;
        /* Or: reads the whole body into job->args on the loop thread, before
         * anything is journaled or applied; -EPROTO with *reason refuses the
         * command (invalid_request) with nothing touched. */
        int (*parse)(const ProtoValue *body, void **ret_args, char **reason);
        void (*free_args)(void *args);
        /* Runs on a worker thread; fills job->reply. */
        void (*apply)(CommandJob *job);
} CommandSpec;

struct CommandJob {
        uv_work_t work;
        Daemon *daemon;
        const CommandSpec *spec;
        char id[PROTO_ID_MAX + 1];
        char arg[PROTO_ID_MAX + 1]; /* the command's one argument (discovery_id) */
        void *args;                 /* what spec->parse read */
        /* Journal assignment changes (key, value; "" removes), applied on the
         * loop thread with the reply. */
        char **assignments;
        void *reply;
        size_t reply_len;
};

static void job_free(CommandJob *job)
{
        if (!job)
                return;
        if (job->args && job->spec->free_args)
                job->spec->free_args(job->args);
        strv_free(job->assignments);
        free(job->reply);
        free(job);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(CommandJob *, job_free);

static int copy_body(ProtoWriter *w, void **ret, size_t *ret_len)
{
        const void *p;
        size_t n;
        int r = proto_writer_data(w, &p, &n);
        if (r < 0)
                return r;
        *ret = malloc(n);
        if (!*ret)
                return -ENOMEM;
        memcpy(*ret, p, n);
        *ret_len = n;
        return 0;
}

int command_reply_body(const char *command_id, bool ok, const char *error_code,
                       const char *error_message, void **ret, size_t *ret_len)
{
        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "command_id", command_id);
        proto_write_kv_bool(&w, "ok", ok);
        proto_write_key(&w, "result");
        proto_write_nil(&w);
        proto_write_key(&w, "error");
        if (ok)
                proto_write_nil(&w);
        else {
                proto_write_map_begin(&w);
                proto_write_kv_str(&w, "code", error_code);
                proto_write_kv_str(&w, "message", error_message);
                proto_write_end(&w);
        }
        proto_write_end(&w);
        return copy_body(&w, ret, ret_len);
}

/* ---- command.discover ---- */

static const ProtoField discover_fields[] = {
    {"discovery_id", PROTO_TYPE_STR, PROTO_REQUIRED, PROTO_ID_MAX},
};

static void apply_discover(CommandJob *job)
{
        /* Test hook: widens the window in which a test can kill the agent mid-discovery. */
        const char *delay = getenv("GPUSLICE_TEST_DISCOVERY_DELAY_MS");
        if (delay)
                usleep((useconds_t)strtoul(delay, NULL, 10) * 1000);

        json_t *doc = NULL;
        char fp[FINGERPRINT_MAX];
        int r = host_discover(&job->daemon->host, &doc, fp);
        if (r < 0) {
                _cleanup_free_ char *msg = NULL;
                if (asprintf(&msg, "discovery of %s failed: %s",
                             job->daemon->host.simulate ? "the simulated host" : "the host",
                             strerror(-r)) < 0)
                        msg = NULL;
                (void)command_reply_body(job->id, false, "discovery_failed",
                                         msg ? msg : "discovery failed", &job->reply,
                                         &job->reply_len);
                return;
        }

        _cleanup_(proto_writer_done) ProtoWriter w;
        proto_writer_init(&w);
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "command_id", job->id);
        proto_write_kv_bool(&w, "ok", true);
        proto_write_key(&w, "result");
        proto_write_map_begin(&w);
        proto_write_kv_str(&w, "discovery_id", job->arg);
        proto_write_key(&w, "discovery");
        json_to_proto(&w, doc);
        proto_write_end(&w);
        proto_write_key(&w, "error");
        proto_write_nil(&w);
        proto_write_end(&w);
        json_decref(doc);
        r = copy_body(&w, &job->reply, &job->reply_len);
        if (r < 0) {
                log_error_errno(r, "Cannot encode the discovery document");
                (void)command_reply_body(job->id, false, "discovery_failed",
                                         "the discovery document does not fit a message",
                                         &job->reply, &job->reply_len);
        }
}

/* ---- command.allocation.assign, command.allocation.release ---- */

static int parse_assign(const ProtoValue *body, void **ret, char **reason)
{
        return alloc_request_parse(ALLOC_ASSIGN, body, (AllocRequest **)ret, reason);
}

static int parse_release(const ProtoValue *body, void **ret, char **reason)
{
        return alloc_request_parse(ALLOC_RELEASE, body, (AllocRequest **)ret, reason);
}

static void free_alloc_request(void *p)
{
        alloc_request_free(p);
}

static void apply_allocation(CommandJob *job)
{
        const AllocRequest *req = job->args;
        AllocResult res;
        int r = req->kind == ALLOC_ASSIGN ? alloc_assign(job->daemon->alloc, req, &res)
                                          : alloc_release(job->daemon->alloc, req, &res);
        if (r < 0) {
                alloc_result_done(&res);
                log_error_errno(r, "Cannot apply the allocation command | allocation_id=%s: %m",
                                req->allocation_id);
                (void)command_reply_body(job->id, false, "internal_error", strerror(-r),
                                         &job->reply, &job->reply_len);
                return;
        }
        /* What link.hello reports: the slots this node holds for allocations. */
        for (size_t i = 0; i < res.n_slots && r >= 0; i++)
                if (res.slots[i].attempted && res.slots[i].error == 0) {
                        r = strv_push(&job->assignments, res.slots[i].slot_id);
                        if (r >= 0)
                                r = strv_push(&job->assignments,
                                              req->kind == ALLOC_ASSIGN ? req->allocation_id : "");
                }
        if (r < 0 || alloc_reply_body(job->id, &res, &job->reply, &job->reply_len) < 0) {
                free(job->reply);
                job->reply = NULL;
                (void)command_reply_body(job->id, false, "internal_error",
                                         "the result does not fit a message", &job->reply,
                                         &job->reply_len);
        }
        alloc_result_done(&res);
}

static const CommandSpec command_table[] = {
    {.type = "command.discover",
     .fields = discover_fields,
     .n_fields = ELEMENTSOF(discover_fields),
     .rerun_if_interrupted = true,
     .apply = apply_discover},
    {.type = "command.allocation.assign",
     .rerun_if_interrupted = true, /* every step is idempotent */
     .parse = parse_assign,
     .free_args = free_alloc_request,
     .apply = apply_allocation},
    {.type = "command.allocation.release",
     .rerun_if_interrupted = true,
     .parse = parse_release,
     .free_args = free_alloc_request,
     .apply = apply_allocation},
};

/* ---- dispatch ---- */

static bool in_flight(Daemon *d, const char *id)
{
        for (char **i = d->in_flight; i && *i; i++)
                if (streq(*i, id))
                        return true;
        return false;
}

static void in_flight_remove(Daemon *d, const char *id)
{
        size_t n = strv_length(d->in_flight);
        for (size_t i = 0; i < n; i++)
                if (streq(d->in_flight[i], id)) {
                        free(d->in_flight[i]);
                        memmove(&d->in_flight[i], &d->in_flight[i + 1], (n - i) * sizeof(char *));
                        return;
                }
}

static void send_reply(Daemon *d, const char *id, const void *body, size_t len)
{
        int r = link_send_body(d->link, "reply", body, len);
        if (r == -ENOTCONN)
                log_info("Reply kept in the journal until the controller asks again | "
                         "command_id=%s",
                         id);
        else if (r >= 0)
                log_info("Replied | command_id=%s", id);
}

/* Journals and sends a reply decided on the loop thread (refusals). */
static void finish_now(Daemon *d, const ProtoEnvelope *env, const char *code, const char *msg)
{
        _cleanup_free_ void *body = NULL;
        size_t len;
        log_warning("Refused a command | type=%s id=%s code=%s reason=\"%s\"", env->type, env->id,
                    code, msg);
        if (command_reply_body(env->id, false, code, msg, &body, &len) < 0)
                return (void)log_oom();
        if (journal_begin(d->journal, env->id, env->type, env->epoch) >= 0)
                (void)journal_finish(d->journal, env->id, body, len);
        send_reply(d, env->id, body, len);
}

static void job_work(uv_work_t *w)
{
        CommandJob *job = w->data;
        job->spec->apply(job);
}

static void job_done(uv_work_t *w, int status)
{
        _cleanup_(job_freep) CommandJob *job = w->data;
        Daemon *d = job->daemon;
        for (char **a = job->assignments; a && a[0] && a[1]; a += 2) {
                int r = journal_set_assignment(d->journal, a[0], a[1][0] ? a[1] : NULL);
                if (r < 0)
                        log_warning_errno(r, "Cannot record the assignment of %s: %m", a[0]);
        }
        if (!job->reply) {
                log_oom();
                (void)command_reply_body(job->id, false, "internal_error", "out of memory",
                                         &job->reply, &job->reply_len);
        }
        if (job->reply) {
                int r = journal_finish(d->journal, job->id, job->reply, job->reply_len);
                if (r < 0)
                        log_error_errno(r,
                                        "Cannot journal a reply; a repeat of this command "
                                        "would be applied again | command_id=%s",
                                        job->id);
                log_info("Applied | type=%s command_id=%s", job->spec->type, job->id);
                if (!d->stopping)
                        send_reply(d, job->id, job->reply, job->reply_len);
        }
        in_flight_remove(d, job->id);
}

void command_dispatch(Daemon *d, const ProtoEnvelope *env)
{
        JournalState st;
        _cleanup_free_ void *stored = NULL;
        size_t stored_len = 0;
        int r;

        if (in_flight(d, env->id)) {
                log_info("Command already being applied; its reply follows | id=%s", env->id);
                return;
        }
        r = journal_lookup(d->journal, env->id, &st, &stored, &stored_len);
        if (r < 0)
                return; /* logged; the controller sends it again */
        if (st == JOURNAL_DONE) {
                log_info("Command already applied; sending the stored reply | type=%s id=%s",
                         env->type, env->id);
                send_reply(d, env->id, stored, stored_len);
                return;
        }

        const CommandSpec *spec = NULL;
        for (size_t i = 0; i < ELEMENTSOF(command_table); i++)
                if (streq(command_table[i].type, env->type))
                        spec = &command_table[i];
        if (!spec)
                return finish_now(d, env, "unknown_command",
                                  "this agent does not know the command");
        if (st == JOURNAL_STARTED && !spec->rerun_if_interrupted)
                return finish_now(d, env, "interrupted",
                                  "the agent stopped while applying this command; it is not "
                                  "applied again automatically");
        if (st == JOURNAL_STARTED)
                log_info("Command was interrupted by a restart; applying it again (it is "
                         "read-only or idempotent) | type=%s id=%s",
                         env->type, env->id);

        _cleanup_free_ char *reason = NULL;
        _cleanup_(job_freep) CommandJob *job = calloc(1, sizeof(*job));
        if (!job)
                return (void)log_oom();
        job->daemon = d;
        job->spec = spec;
        snprintf(job->id, sizeof(job->id), "%s", env->id);
        if (spec->parse) {
                r = spec->parse(&env->body, &job->args, &reason);
                if (r == -ENOMEM)
                        return (void)log_oom();
                if (r < 0)
                        return finish_now(d, env, "invalid_request",
                                          reason ? reason : "invalid body");
        } else {
                if (proto_check_fields(&env->body, spec->fields, spec->n_fields, &reason) < 0)
                        return finish_now(d, env, "invalid_request",
                                          reason ? reason : "invalid body");
                if (spec->n_fields > 0 &&
                    proto_get_str(&env->body, spec->fields[0].name, PROTO_REQUIRED, job->arg,
                                  sizeof(job->arg), &reason) < 0)
                        return finish_now(d, env, "invalid_request",
                                          reason ? reason : "invalid body");
        }

        r = journal_begin(d->journal, env->id, env->type, env->epoch);
        if (r < 0)
                return;
        if (strv_push(&d->in_flight, env->id) < 0)
                return (void)log_oom();
        log_info("Applying | type=%s id=%s epoch=%llu", env->type, env->id,
                 (unsigned long long)env->epoch);
        job->work.data = job;
        r = uv_queue_work(d->loop, &job->work, job_work, job_done);
        if (r < 0) {
                in_flight_remove(d, env->id);
                log_error("Cannot queue a command: %s", uv_strerror(r));
                return;
        }
        TAKE_PTR(job);
}
