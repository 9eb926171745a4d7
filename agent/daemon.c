/* SPDX-License-Identifier: MIT */
#include "daemon.h"

#include <signal.h>

#include "command-table.h"
#include "inventory.h"
#include "log.h"
#include "macro.h"
#include "version.h"

static int write_hello(void *userdata, ProtoWriter *w)
{
        Daemon *d = userdata;
        char **applied = NULL, **assignments = NULL;
        int r = journal_applied(d->journal, JOURNAL_HELLO_APPLIED, &applied);
        if (r < 0)
                return r;
        r = journal_assignments(d->journal, &assignments);
        if (r < 0) {
                strv_free(applied);
                return r;
        }
        proto_write_map_begin(w);
        proto_write_kv_str(w, "agent_version", GPUSLICE_VERSION);
        proto_write_kv_str(w, "fingerprint", d->fingerprint);
        proto_write_kv_bool(w, "simulated", d->host.simulate);
        proto_write_key(w, "applied");
        proto_write_array_begin(w);
        for (char **i = applied; *i; i++)
                proto_write_str(w, *i);
        proto_write_end(w);
        proto_write_key(w, "assignments");
        proto_write_map_begin(w);
        for (char **i = assignments; i[0] && i[1]; i += 2)
                proto_write_kv_str(w, i[0], i[1]);
        proto_write_end(w);
        r = proto_write_end(w);
        log_info("Saying hello | fingerprint=%s applied=%zu simulated=%s", d->fingerprint,
                 strv_length(applied), d->host.simulate ? "true" : "false");
        strv_free(applied);
        strv_free(assignments);
        return r;
}

static void on_command(void *userdata, const ProtoEnvelope *env)
{
        command_dispatch(userdata, env);
}

/* ---- console sessions (console.h) ---- */

static void on_console(void *userdata, const ProtoEnvelope *env)
{
        Daemon *d = userdata;
        if (d->consoles)
                consoles_message(d->consoles, env);
}

static void on_link_state(void *userdata, LinkState state)
{
        Daemon *d = userdata;
        if (state != LINK_READY && d->consoles)
                consoles_link_lost(d->consoles);
}

static int console_send(void *userdata, const char *type, const ProtoWriter *body)
{
        Daemon *d = userdata;
        return d->link ? link_send(d->link, type, body) : -ENOTCONN;
}

/* An allocation's console runs the runtime hook with the context its start
 * had: the first of its slots on this node (the journal's assignments), its
 * runtime directory, every slot id in GPUSLICE_SLOT_IDS. */
static int console_resolve(void *userdata, const char *allocation_id, ConsoleHook *ret)
{
        Daemon *d = userdata;
        const char *hook_dir, *hook, *runtime_dir;
        alloc_host_hook(d->alloc, &hook_dir, &hook, &runtime_dir);
        if (!hook || !hook_dir || !runtime_dir)
                return -ENOTSUP;
        char **assignments = NULL;
        int r = journal_assignments(d->journal, &assignments);
        if (r < 0)
                return r;
        _cleanup_free_ char *ids = NULL;
        const char *first = NULL;
        for (char **i = assignments; i[0] && i[1] && r >= 0; i += 2) {
                if (!streq(i[1], allocation_id))
                        continue;
                char *joined = NULL;
                if (asprintf(&joined, "%s%s%s", ids ? ids : "", ids ? " " : "", i[0]) < 0)
                        r = -ENOMEM;
                else {
                        free(ids);
                        ids = joined;
                        first = first ? first : i[0];
                }
        }
        if (r >= 0 && !first)
                r = -ENOENT;
        if (r >= 0 && (!(ret->hook_dir = strdup(hook_dir)) || !(ret->hook = strdup(hook)) ||
                       !(ret->slot_id = strdup(first)) ||
                       asprintf(&ret->runtime_dir, "%s/%s", runtime_dir, allocation_id) < 0 ||
                       !(ret->env = calloc(2, sizeof(char *))) ||
                       asprintf(&ret->env[0], "GPUSLICE_SLOT_IDS=%s", ids) < 0))
                r = -ENOMEM;
        strv_free(assignments);
        return r;
}

static void on_link_closed(void *userdata)
{
        Daemon *d = userdata;
        d->link = NULL;
}

static void on_signal(uv_signal_t *s, int signum)
{
        Daemon *d = s->data;
        if (d->stopping)
                return;
        log_info("Stopping | signal=%s", strsignal(signum));
        d->stopping = true;
        uv_signal_stop(&d->sigterm);
        uv_signal_stop(&d->sigint);
        uv_close((uv_handle_t *)&d->sigterm, NULL);
        uv_close((uv_handle_t *)&d->sigint, NULL);
        /* Console sessions end (their processes are killed and reaped). */
        consoles_close(TAKE_PTR(d->consoles), NULL, NULL);
        if (d->link)
                link_close(d->link, on_link_closed, d);
        /* Commands being applied finish (and are journaled) before the loop ends. */
}

int daemon_run(const Config *c)
{
        Daemon d = {.config = c};
        uv_loop_t loop;
        int r;

        r = host_source_from_config(c, &d.host);
        if (r < 0)
                return 2;
        r = host_fingerprint(&d.host, d.fingerprint);
        if (r < 0) {
                log_error_errno(r, "Cannot discover the host at start | source=%s",
                                d.host.simulate ? "simulated" : strempty(d.host.src.path));
                host_source_done(&d.host);
                return 2;
        }
        log_info("Host | simulated=%s source=%s fingerprint=%s", d.host.simulate ? "true" : "false",
                 d.host.simulate ? d.host.path : strempty(d.host.src.path), d.fingerprint);

        r = journal_open(config_get(c, "state_dir"), &d.journal);
        if (r < 0) {
                host_source_done(&d.host);
                return 1;
        }

        r = alloc_host_from_config(c, &d.host, &d.alloc);
        if (r < 0) {
                journal_close(d.journal);
                host_source_done(&d.host);
                return 2;
        }

        uv_loop_init(&loop);
        d.loop = &loop;
        const LinkOptions lo = {
            .endpoint = config_get(c, "agent_endpoint"),
            .node_id = config_get(c, "node_id"),
            .key_file = config_get(c, "key_file"),
            .cert_file = config_get(c, "cert_file"),
            .ca_file = config_get(c, "ca_file"),
            .server_name = config_get(c, "server_name"),
            .heartbeat_interval_s = (unsigned)config_get_int(c, "heartbeat_interval_s"),
            .heartbeat_timeout_s = (unsigned)config_get_int(c, "heartbeat_timeout_s"),
        };
        const LinkCallbacks cb = {.hello = write_hello,
                                  .command = on_command,
                                  .console = on_console,
                                  .state_changed = on_link_state,
                                  .userdata = &d};
        r = link_new(&loop, &lo, &cb, &d.link);
        if (r >= 0) {
                const ConsolesOptions co = {
                    .loop = &loop, .resolve = console_resolve, .send = console_send, .userdata = &d};
                r = consoles_new(&co, &d.consoles);
                if (r < 0)
                        link_close(TAKE_PTR(d.link), NULL, NULL);
        }
        if (r < 0) {
                journal_close(d.journal);
                alloc_host_free(d.alloc);
                host_source_done(&d.host);
                uv_loop_close(&loop);
                return 2;
        }

        signal(SIGPIPE, SIG_IGN);
        uv_signal_init(&loop, &d.sigterm);
        uv_signal_init(&loop, &d.sigint);
        d.sigterm.data = d.sigint.data = &d;
        uv_signal_start(&d.sigterm, on_signal, SIGTERM);
        uv_signal_start(&d.sigint, on_signal, SIGINT);

        log_info("Agent running | version=%s node_id=%s endpoint=%s", GPUSLICE_VERSION,
                 config_get(c, "node_id"), config_get(c, "agent_endpoint"));
        link_start(d.link);
        uv_run(&loop, UV_RUN_DEFAULT);

        r = uv_loop_close(&loop);
        if (r < 0)
                log_warning("The event loop still had handles at exit: %s", uv_strerror(r));
        journal_close(d.journal);
        alloc_host_free(d.alloc);
        host_source_done(&d.host);
        strv_free(d.in_flight);
        log_info("Stopped");
        return 0;
}
