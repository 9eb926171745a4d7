/* SPDX-License-Identifier: MIT */
/* command.allocation.assign and command.allocation.release through the real
 * daemon: the real `gpuslice-agent run --simulate` process against the test
 * controller end (link-peer.h), its simulated host under the state directory
 * and the real shipped hook (hooks/simulated-shell). Assignment and release
 * with per-slot results, each fault of the faults file giving its contract
 * reason, a retry once the fault is gone, a hang bounded by the step
 * timeout, a repeated command id answered from the journal, a restart in the
 * middle of an assignment, and bad bodies refused with nothing touched. */

#include <jansson.h>

#include "agent-proc.h"
#include "json-proto.h"

static AgentProc ap;

static void setup(void)
{
        /* A short step timeout keeps the hang test short; the hook gets a
         * generous one (sh on a loaded machine). */
        agent_proc_setup(&ap, "step_timeout_s = 1\nhook_timeout_s = 60\n");
}

static void teardown(void)
{
        agent_proc_teardown(&ap);
}

/* One timeout for every test (criterion 2.4.1 leaks when they differ). */
TestSuite(alloc, .init = setup, .fini = teardown, .timeout = 240);

/* Slots of the simulated Tioga host (its discovery's slot map). */
#define SLOT_D1                                                                                    \
        "{\"slot_id\":\"slt_d1\",\"slot_key\":\"slot-0000:d1:00.0\",\"gpus\":[\"0000:d1:00.0\"],"  \
        "\"nic\":\"0000:d5:00.0\",\"vf_index\":0,\"nvme\":\"0000:9a:00.0\","                       \
        "\"mac\":\"02:00:00:00:00:01\"}"
#define SLOT_D6                                                                                    \
        "{\"slot_id\":\"slt_d6\",\"slot_key\":\"slot-0000:d6:00.0\",\"gpus\":[\"0000:d6:00.0\"],"  \
        "\"nic\":\"0000:d5:00.0\",\"vf_index\":1,\"nvme\":\"0000:9b:00.0\","                       \
        "\"mac\":\"02:00:00:00:00:02\"}"
#define SLOT_C1                                                                                    \
        "{\"slot_id\":\"slt_c1\",\"slot_key\":\"slot-0000:c1:00.0\",\"gpus\":[\"0000:c1:00.0\"],"  \
        "\"nic\":\"0000:c5:00.0\",\"vf_index\":0,\"nvme\":null,\"mac\":\"02:00:00:00:00:03\"}"
#define SSH_KEY                                                                                    \
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl t@x"

static char *assign_body(const char *alloc, const char *slots)
{
        char *b;
        cr_assert(
            asprintf(&b,
                     "{\"allocation_id\":\"%s\",\"image\":{\"id\":\"img_1\",\"name\":\"Ubuntu "
                     "24.04\",\"source\":\"https://images.example/ubuntu.qcow2\","
                     "\"ssh_user\":\"ubuntu\"},\"network\":{\"id\":\"net_1\",\"vlan\":100,"
                     "\"spoofchk\":true,\"trust\":false},\"ssh_keys\":[\"" SSH_KEY
                     "\"],\"slots\":[%s]}",
                     alloc, slots) >= 0);
        return b;
}

static char *release_body(const char *alloc, const char *slots)
{
        char *b;
        cr_assert(asprintf(&b, "{\"allocation_id\":\"%s\",\"slots\":[%s]}", alloc, slots) >= 0);
        return b;
}

static void send_json(const char *type, const char *id, const char *text)
{
        json_error_t e;
        json_t *v = json_loads(text, 0, &e);
        cr_assert(v, "test body is JSON: %s (%s)", e.text, text);
        ProtoWriter w;
        proto_writer_init(&w);
        cr_assert_eq(json_to_proto(&w, v), 0);
        peer_send(&ap.peer, type, id, &w);
        proto_writer_done(&w);
        json_decref(v);
}

/* msgpack -> JSON, to read replies with jansson. */
static json_t *to_json(const msgpack_object *o)
{
        switch (o->type) {
        case MSGPACK_OBJECT_NIL:
                return json_null();
        case MSGPACK_OBJECT_BOOLEAN:
                return json_boolean(o->via.boolean);
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                return json_integer((json_int_t)o->via.u64);
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                return json_integer(o->via.i64);
        case MSGPACK_OBJECT_STR:
                return json_stringn(o->via.str.ptr, o->via.str.size);
        case MSGPACK_OBJECT_ARRAY: {
                json_t *a = json_array();
                for (uint32_t i = 0; i < o->via.array.size; i++)
                        json_array_append_new(a, to_json(&o->via.array.ptr[i]));
                return a;
        }
        case MSGPACK_OBJECT_MAP: {
                json_t *m = json_object();
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        const msgpack_object_kv *kv = &o->via.map.ptr[i];
                        /* memcpy: the key may end the message, without a NUL after it. */
                        char *k = calloc(1, kv->key.via.str.size + 1);
                        memcpy(k, kv->key.via.str.ptr, kv->key.via.str.size);
                        json_object_set_new(m, k, to_json(&kv->val));
                        free(k);
                }
                return m;
        }
        default:
                cr_assert_fail("unexpected msgpack type %d in a reply", o->type);
        }
        return NULL;
}

/* Sends the command and returns its reply body as JSON. */
static json_t *command(const char *type, const char *id, const char *body)
{
        send_json(type, id, body);
        ProtoEnvelope *r = agent_proc_recv_reply(&ap, PEER_WAIT_MS);
        cr_assert(r, "a reply to %s arrives", id);
        json_t *j = to_json(r->body.obj);
        proto_envelope_free(r);
        cr_assert_str_eq(json_string_value(json_object_get(j, "command_id")), id);
        return j;
}

static json_t *assign(const char *id, const char *alloc, const char *slots)
{
        _cleanup_free_ char *b = assign_body(alloc, slots);
        return command("command.allocation.assign", id, b);
}

static json_t *release(const char *id, const char *alloc, const char *slots)
{
        _cleanup_free_ char *b = release_body(alloc, slots);
        return command("command.allocation.release", id, b);
}

static const char *error_code(json_t *reply)
{
        return json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
}

static json_t *slot_result(json_t *reply, size_t i)
{
        json_t *s = json_array_get(json_object_get(json_object_get(reply, "result"), "slots"), i);
        cr_assert(s, "result.slots[%zu]", i);
        return s;
}

static const char *str_at(json_t *o, const char *key)
{
        return json_string_value(json_object_get(o, key));
}

static void expect_ok(json_t *reply)
{
        cr_expect(json_is_true(json_object_get(reply, "ok")), "ok (error: %s: %s)",
                  error_code(reply),
                  json_string_value(json_object_get(json_object_get(reply, "error"), "message")));
        cr_expect(json_is_null(json_object_get(reply, "error")));
}

static void expect_failed(json_t *reply, const char *code)
{
        cr_expect(json_is_false(json_object_get(reply, "ok")));
        cr_expect_str_eq(error_code(reply), code);
}

/* The simulated host's record of a slot. */
static json_t *sim_slot(const char *slot_id)
{
        char p[512];
        snprintf(p, sizeof(p), "%s/simulated-host/slots/%s.json", ap.state_dir, slot_id);
        json_error_t e;
        json_t *j = json_load_file(p, 0, &e);
        cr_assert(j, "%s: %s", p, e.text);
        return j;
}

static bool sim_slot_exists(const char *slot_id)
{
        char p[512];
        snprintf(p, sizeof(p), "%s/simulated-host/slots/%s.json", ap.state_dir, slot_id);
        return access(p, F_OK) == 0;
}

static void faults(const char *text)
{
        char p[512];
        snprintf(p, sizeof(p), "%s/simulated-host/faults", ap.state_dir);
        if (!text) {
                cr_assert(unlink(p) == 0 || errno == ENOENT);
                return;
        }
        FILE *f = fopen(p, "we");
        cr_assert(f, "%s: %m", p);
        fputs(text, f);
        fclose(f);
}

static char *runtime_path(const char *alloc, const char *rel)
{
        char *p;
        cr_assert(asprintf(&p, "%s/runtime/%s%s%s", ap.state_dir, alloc, rel ? "/" : "",
                           rel ? rel : "") >= 0);
        return p;
}

static char *read_file(const char *path)
{
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        char *buf = NULL;
        size_t n = 0;
        if (getdelim(&buf, &n, '\0', f) < 0) {
                free(buf);
                buf = strdup("");
        }
        fclose(f);
        return buf;
}

static void start(void)
{
        agent_proc_spawn(&ap, NULL);
        ProtoEnvelope *hello = agent_proc_handshake(&ap);
        proto_envelope_free(hello);
}

static void expect_step_names(json_t *slot, const char *const *names)
{
        json_t *steps = json_object_get(slot, "steps");
        size_t n = 0;
        while (names[n])
                n++;
        cr_assert_eq(json_array_size(steps), n, "%zu steps for %s", json_array_size(steps),
                     str_at(slot, "slot_id"));
        for (size_t i = 0; i < n; i++) {
                json_t *st = json_array_get(steps, i);
                cr_expect_str_eq(str_at(st, "name"), names[i]);
                cr_expect(json_is_true(json_object_get(st, "ok")));
                cr_expect(json_is_null(json_object_get(st, "error")));
                cr_expect(json_is_integer(json_object_get(st, "ms")));
                cr_expect(strstr(str_at(st, "detail"), "simulated"),
                          "the detail says simulated: %s", str_at(st, "detail"));
        }
}

Test(alloc, assign_then_release_an_allocation_of_two_slots)
{
        start();
        json_t *r = assign("cmd_a1", "alc_one", SLOT_D1 "," SLOT_D6);
        expect_ok(r);
        json_t *res = json_object_get(r, "result");
        cr_expect_str_eq(str_at(res, "allocation_id"), "alc_one");

        static const char *const assign_steps[] = {"create_vfs", "configure_vf", "bind_vf",
                                                   "bind_nvme",  "bind_gpu",     NULL};
        json_t *s0 = slot_result(r, 0), *s1 = slot_result(r, 1);
        cr_expect_str_eq(str_at(s0, "slot_id"), "slt_d1");
        cr_expect(json_is_true(json_object_get(s0, "ok")));
        cr_expect(json_is_null(json_object_get(s0, "reason")));
        cr_expect_str_eq(str_at(s0, "vf_address"), "0000:d5:00.1");
        cr_expect_str_eq(str_at(s1, "vf_address"), "0000:d5:00.2");
        cr_expect(json_is_null(json_object_get(s0, "wipe_method")), "assign wipes nothing");
        cr_expect_str_eq(str_at(s0, "mac"), "02:00:00:00:00:01", "the MAC in force");
        cr_expect_str_eq(str_at(s1, "mac"), "02:00:00:00:00:02");
        expect_step_names(s0, assign_steps);
        expect_step_names(s1, assign_steps);

        json_t *wl = json_object_get(res, "workload");
        cr_expect(json_is_true(json_object_get(wl, "ok")));
        cr_expect(json_is_null(json_object_get(wl, "reason")));
        json_t *conn = json_object_get(res, "connection");
        cr_assert(json_is_object(conn), "the hook's start names the connection");
        cr_expect_str_eq(str_at(conn, "host"), "127.0.0.1");
        cr_expect_str_eq(str_at(conn, "user"), "ubuntu");
        json_int_t port = json_integer_value(json_object_get(conn, "port"));
        cr_expect(port >= 22000 && port < 23000, "port %lld", (long long)port);

        /* The simulated host holds what the real one would. */
        json_t *d1 = sim_slot("slt_d1");
        cr_expect_str_eq(str_at(d1, "state"), "assigned");
        cr_expect_str_eq(str_at(d1, "allocation_id"), "alc_one");
        cr_expect(json_is_true(json_object_get(d1, "simulated")));
        json_t *vf = json_object_get(d1, "vf");
        cr_expect_str_eq(str_at(vf, "mac"), "02:00:00:00:00:01");
        cr_expect_eq(json_integer_value(json_object_get(vf, "vlan")), 100);
        cr_expect(json_is_true(json_object_get(vf, "spoofchk")));
        cr_expect(json_is_false(json_object_get(vf, "trust")));
        cr_expect_str_eq(str_at(vf, "driver"), "vfio-pci");
        cr_expect_str_eq(str_at(json_object_get(d1, "nvme"), "driver"), "vfio-pci");
        cr_expect_str_eq(
            str_at(json_object_get(json_object_get(d1, "gpus"), "0000:d1:00.0"), "driver"),
            "vfio-pci");
        json_decref(d1);

        /* The hook's workspace, with the tenant's key. */
        _cleanup_free_ char *keys = runtime_path("alc_one", "workspace/.ssh/authorized_keys");
        _cleanup_free_ char *readme = runtime_path("alc_one", "workspace/README");
        _cleanup_free_ char *state = runtime_path("alc_one", "state");
        _cleanup_free_ char *k = read_file(keys), *rd = read_file(readme), *st = read_file(state);
        cr_expect(k && strstr(k, SSH_KEY), "authorized_keys holds the key");
        cr_expect(rd && strstr(rd, "alc_one") && strstr(rd, "slt_d1 slt_d6"),
                  "the README names the allocation and its slots");
        cr_expect(st && streq(st, "running\n"));
        json_decref(r);

        r = release("cmd_r1", "alc_one", SLOT_D1 "," SLOT_D6);
        expect_ok(r);
        static const char *const teardown_steps[] = {
            "reset", "reset", "reset", "wipe_nvme", "reset_vf_config", "rebind", "rebind", NULL};
        for (size_t i = 0; i < 2; i++) {
                json_t *s = slot_result(r, i);
                cr_expect(json_is_true(json_object_get(s, "ok")));
                cr_expect_str_eq(str_at(s, "wipe_method"), "simulated");
                expect_step_names(s, teardown_steps);
        }
        cr_expect(json_is_null(json_object_get(json_object_get(r, "result"), "connection")));
        d1 = sim_slot("slt_d1");
        cr_expect_str_eq(str_at(d1, "state"), "available");
        cr_expect(json_is_null(json_object_get(d1, "allocation_id")));
        vf = json_object_get(d1, "vf");
        cr_expect_str_eq(str_at(vf, "mac"), "00:5a:d5:00:00:00",
                         "the baseline: the VF's own MAC, as first seen, back");
        cr_expect_eq(json_integer_value(json_object_get(vf, "vlan")), 0);
        cr_expect_str_eq(str_at(vf, "link_state"), "disable");
        cr_expect(json_is_null(json_object_get(vf, "driver")), "the VF is parked");
        json_t *nvme = json_object_get(d1, "nvme");
        cr_expect_str_eq(str_at(nvme, "driver"), "nvme");
        cr_expect_str_eq(str_at(nvme, "wipe_method"), "simulated");
        cr_expect(json_is_true(json_object_get(nvme, "wiped")));
        json_decref(d1);
        _cleanup_free_ char *rt = runtime_path("alc_one", NULL);
        cr_expect(access(rt, F_OK) < 0, "the runtime directory is gone after the release");
        json_decref(r);

        /* Released twice (a new command id): every step is idempotent. */
        r = release("cmd_r2", "alc_one", SLOT_D1 "," SLOT_D6);
        expect_ok(r);
        json_decref(r);
        cr_expect(agent_proc_log_contains(&ap, "Simulated host: slot assigned"));
        cr_expect(agent_proc_log_contains(&ap, "simulated=true"));
}

static void expect_slot_failed(json_t *slot, const char *reason, const char *step)
{
        cr_expect(json_is_false(json_object_get(slot, "ok")));
        cr_expect_str_eq(str_at(slot, "reason"), reason);
        json_t *steps = json_object_get(slot, "steps");
        json_t *last = json_array_get(steps, json_array_size(steps) - 1);
        cr_assert(last, "the failed step is reported");
        cr_expect_str_eq(str_at(last, "name"), step);
        cr_expect(json_is_false(json_object_get(last, "ok")));
        cr_expect(json_is_string(json_object_get(last, "error")));
        cr_expect(strstr(str_at(last, "detail"), "simulated fault"), "%s", str_at(last, "detail"));
}

Test(alloc, each_injected_fault_gives_its_contract_reason_and_a_retry_succeeds_without_it)
{
        start();
        static const struct {
                const char *fault, *reason, *step;
        } assign_faults[] = {
            {"create_vfs", "vf_create_failed", "create_vfs"},
            {"configure_vf", "vf_config_failed", "configure_vf"},
            {"bind_vf", "vf_bind_failed", "bind_vf"},
            {"bind_nvme", "nvme_bind_failed", "bind_nvme"},
            {"bind_gpu", "gpu_bind_failed", "bind_gpu"},
        };
        char id[64];
        for (size_t i = 0; i < ELEMENTSOF(assign_faults); i++) {
                /* Each on its own PF so create_vfs meets a PF without VFs. */
                faults(assign_faults[i].fault);
                snprintf(id, sizeof(id), "cmd_f%zu", i);
                json_t *r = assign(id, "alc_faulty", SLOT_D1 "," SLOT_C1);
                expect_failed(r, assign_faults[i].reason);
                expect_slot_failed(slot_result(r, 0), assign_faults[i].reason,
                                   assign_faults[i].step);
                json_t *later = slot_result(r, 1);
                cr_expect(json_is_false(json_object_get(later, "ok")));
                cr_expect_str_eq(str_at(later, "reason"), "not_attempted");
                json_t *wl = json_object_get(json_object_get(r, "result"), "workload");
                cr_expect_str_eq(str_at(wl, "reason"), "not_attempted");
                cr_expect(
                    json_is_null(json_object_get(json_object_get(r, "result"), "connection")));
                json_decref(r);
                if (i == 0) {
                        /* create_vfs failed: the PF has no VFs, so the retry creates them. */
                        faults(NULL);
                        r = assign("cmd_f0_retry", "alc_faulty", SLOT_D1 "," SLOT_C1);
                        expect_ok(r);
                        json_decref(r);
                }
        }

        /* The workload's start fails: every slot was assigned, the reply fails. */
        faults("start_workload\n");
        json_t *r = assign("cmd_fw", "alc_faulty", SLOT_D1 "," SLOT_C1);
        expect_failed(r, "workload_start_failed");
        cr_expect(json_is_true(json_object_get(slot_result(r, 0), "ok")));
        cr_expect(json_is_true(json_object_get(slot_result(r, 1), "ok")));
        json_t *wl = json_object_get(json_object_get(r, "result"), "workload");
        cr_expect(json_is_false(json_object_get(wl, "ok")));
        cr_expect_str_eq(str_at(wl, "reason"), "workload_start_failed");
        json_decref(r);

        /* The fault is gone: the same allocation assigned again succeeds. */
        faults("# nothing\n\n");
        r = assign("cmd_fw_retry", "alc_faulty", SLOT_D1 "," SLOT_C1);
        expect_ok(r);
        json_decref(r);

        /* Release: a failing slot does not stop the other's teardown. Only
         * slt_d1 has a drive, so only it meets the wipe fault. */
        faults("wipe_nvme\n");
        r = release("cmd_rf1", "alc_faulty", SLOT_D1 "," SLOT_C1);
        expect_failed(r, "nvme_wipe_failed");
        expect_slot_failed(slot_result(r, 0), "nvme_wipe_failed", "wipe_nvme");
        cr_expect(json_is_null(json_object_get(slot_result(r, 0), "wipe_method")));
        cr_expect(json_is_true(json_object_get(slot_result(r, 1), "ok")), "slt_c1 is torn down");
        cr_expect_str_eq(str_at(slot_result(r, 1), "wipe_method"), "none");
        json_decref(r);
        json_t *d1 = sim_slot("slt_d1"), *c1 = sim_slot("slt_c1");
        cr_expect_str_eq(str_at(d1, "state"), "teardown_failed");
        cr_expect_str_eq(str_at(d1, "failed_step"), "wipe_nvme");
        cr_expect(json_is_false(json_object_get(json_object_get(d1, "nvme"), "wiped")));
        cr_expect_str_eq(str_at(c1, "state"), "available");
        json_decref(d1);
        json_decref(c1);

        /* A rule for one slot only, and the reset fault. */
        faults("reset@slt_c1\n");
        r = release("cmd_rf2", "alc_faulty", SLOT_D1 "," SLOT_C1);
        expect_failed(r, "reset_failed");
        cr_expect(json_is_true(json_object_get(slot_result(r, 0), "ok")), "slt_d1 is clean now");
        cr_expect_str_eq(str_at(slot_result(r, 0), "wipe_method"), "simulated");
        expect_slot_failed(slot_result(r, 1), "reset_failed", "reset");
        json_decref(r);

        /* The workload's stop fails: nothing is torn down. */
        faults("stop_workload\n");
        r = release("cmd_rf3", "alc_faulty", SLOT_D1 "," SLOT_C1);
        expect_failed(r, "workload_stop_failed");
        for (size_t i = 0; i < 2; i++) {
                cr_expect(json_is_false(json_object_get(slot_result(r, i), "ok")));
                cr_expect_str_eq(str_at(slot_result(r, i), "reason"), "workload_stop_failed");
                cr_expect_eq(json_array_size(json_object_get(slot_result(r, i), "steps")), 0);
        }
        json_decref(r);

        /* Every fault removed: the retry cleans both slots. */
        faults(NULL);
        r = release("cmd_rf4", "alc_faulty", SLOT_D1 "," SLOT_C1);
        expect_ok(r);
        json_decref(r);
        d1 = sim_slot("slt_d1");
        cr_expect_str_eq(str_at(d1, "state"), "available");
        json_decref(d1);
        cr_expect(agent_proc_log_contains(&ap, "Simulated host: injected fault"));
}

Test(alloc, a_hang_fails_at_the_step_timeout)
{
        start();
        faults("hang:bind_gpu\n");
        json_t *r = assign("cmd_h1", "alc_hang", SLOT_C1);
        expect_failed(r, "gpu_bind_failed");
        json_t *s = slot_result(r, 0);
        json_t *steps = json_object_get(s, "steps");
        json_t *last = json_array_get(steps, json_array_size(steps) - 1);
        cr_expect_str_eq(str_at(last, "name"), "bind_gpu");
        cr_expect_str_eq(str_at(last, "error"), strerror(ETIMEDOUT));
        /* It waited for the step timeout (1 s), at least. */
        cr_expect_geq(json_integer_value(json_object_get(last, "ms")), 999);
        cr_expect(strstr(str_at(last, "detail"), "hang:bind_gpu"));
        json_decref(r);
}

static void expect_hello_assignment(const ProtoEnvelope *hello, const char *slot, const char *alloc)
{
        ProtoValue m;
        char v[128] = "";
        cr_assert_eq(proto_get_map(&hello->body, "assignments", PROTO_REQUIRED, 0, &m, NULL), 1);
        int r = proto_get_str(&m, slot, PROTO_OPTIONAL, v, sizeof(v), NULL);
        if (alloc) {
                cr_expect_eq(r, 1, "hello.assignments has %s", slot);
                cr_expect_str_eq(v, alloc);
        } else
                cr_expect_eq(r, 0, "hello.assignments lacks %s", slot);
}

Test(alloc, a_repeated_command_id_is_answered_from_the_journal)
{
        start();
        _cleanup_free_ char *b = assign_body("alc_j", SLOT_C1);
        send_json("command.allocation.assign", "cmd_j1", b);
        ProtoEnvelope *r1 = agent_proc_recv_reply(&ap, PEER_WAIT_MS);
        cr_assert(r1);
        json_t *c1 = sim_slot("slt_c1");
        _cleanup_free_ char *stamp = strdup(str_at(c1, "assigned_at"));
        json_decref(c1);

        /* A fault now would fail a second application: the stored reply shows
         * it was not applied again. */
        faults("bind_gpu\n");
        send_json("command.allocation.assign", "cmd_j1", b);
        ProtoEnvelope *r2 = agent_proc_recv_reply(&ap, PEER_WAIT_MS);
        cr_assert(r2, "the repeat is answered");
        cr_expect_eq(r1->body.obj->via.map.size, r2->body.obj->via.map.size);
        json_t *j1 = to_json(r1->body.obj), *j2 = to_json(r2->body.obj);
        cr_expect(json_equal(j1, j2), "the same stored reply");
        expect_ok(j2);
        json_decref(j1);
        json_decref(j2);
        proto_envelope_free(r1);
        proto_envelope_free(r2);
        cr_expect(
            agent_proc_log_contains(&ap, "Command already applied; sending the stored reply"));
        c1 = sim_slot("slt_c1");
        cr_expect_str_eq(str_at(c1, "assigned_at"), stamp, "the slot was not assigned again");
        json_decref(c1);
        faults(NULL);

        /* After a restart hello lists the command and the assignment. */
        kill(ap.pid, SIGTERM);
        cr_assert_neq(agent_proc_wait(&ap, PEER_WAIT_MS), -1);
        agent_proc_spawn(&ap, NULL);
        ProtoEnvelope *hello = agent_proc_handshake(&ap);
        cr_expect(hello_applied_contains(hello, "cmd_j1"));
        expect_hello_assignment(hello, "slt_c1", "alc_j");
        proto_envelope_free(hello);

        json_t *r = release("cmd_j2", "alc_j", SLOT_C1);
        expect_ok(r);
        json_decref(r);
        kill(ap.pid, SIGTERM);
        cr_assert_neq(agent_proc_wait(&ap, PEER_WAIT_MS), -1);
        agent_proc_spawn(&ap, NULL);
        hello = agent_proc_handshake(&ap);
        expect_hello_assignment(hello, "slt_c1", NULL);
        proto_envelope_free(hello);
}

Test(alloc, bad_bodies_are_refused_with_nothing_touched)
{
        start();
        static const struct {
                const char *type, *body, *field;
        } bad[] = {
            {"command.allocation.assign", "{\"allocation_id\":\"alc_b\"}", "image"},
            {"command.allocation.assign",
             "{\"allocation_id\":\"../etc\",\"image\":{},\"network\":{},\"ssh_keys\":[],"
             "\"slots\":[]}",
             "allocation_id"},
            {"command.release", "{}", NULL},
            {"command.allocation.release", "{\"allocation_id\":\"alc_b\",\"slots\":[]}", "slots"},
            {"command.allocation.release",
             "{\"allocation_id\":\"alc_b\",\"slots\":[" SLOT_C1 "],\"extra\":1}", "extra"},
            {"command.allocation.release",
             "{\"allocation_id\":\"alc_b\",\"slots\":[{\"slot_id\":\"slt_x\",\"slot_key\":\"k\","
             "\"gpus\":[\"0000:C1:00.0\"],\"nic\":null,\"vf_index\":null,\"nvme\":null}]}",
             "gpus[0]"},
            {"command.allocation.release",
             "{\"allocation_id\":\"alc_b\",\"slots\":[{\"slot_id\":\"slt_x\",\"slot_key\":\"k\","
             "\"gpus\":[\"0000:c1:00.0\"],\"nic\":\"0000:c5:00.0\",\"vf_index\":null,"
             "\"nvme\":null}]}",
             "vf_index"},
            {"command.allocation.release",
             "{\"allocation_id\":\"alc_b\",\"slots\":[" SLOT_C1 "," SLOT_C1 "]}", "twice"},
        };
        char id[32];
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                snprintf(id, sizeof(id), "cmd_bad%zu", i);
                json_t *r = command(bad[i].type, id, bad[i].body);
                cr_expect(json_is_false(json_object_get(r, "ok")), "%s refused", bad[i].body);
                cr_expect(json_is_null(json_object_get(r, "result")));
                if (bad[i].field) {
                        cr_expect_str_eq(error_code(r), "invalid_request");
                        const char *msg = json_string_value(
                            json_object_get(json_object_get(r, "error"), "message"));
                        cr_expect(msg && strstr(msg, bad[i].field), "'%s' names %s", msg,
                                  bad[i].field);
                } else
                        cr_expect_str_eq(error_code(r), "unknown_command");
                json_decref(r);
        }

        /* Assign bodies that break one rule each. */
        static const struct {
                const char *from, *to, *field;
        } edits[] = {
            {"\"vlan\":100", "\"vlan\":4095", "vlan"},
            {"\"vlan\":100", "\"vlan\":-1", "vlan"},
            {"\"ssh_user\":\"ubuntu\"", "\"ssh_user\":\"root; rm\"", "ssh_user"},
            {"\"mac\":\"02:00:00:00:00:03\"", "\"mac\":\"01:00:5e:00:00:01\"", "mac"},
            {",\"mac\":\"02:00:00:00:00:03\"", "", "mac"}, /* missing: refused; nil: kept */
            {"\"mac\":\"02:00:00:00:00:03\"", "\"mac\":\"00:00:00:00:00:00\"", "mac"},
            {"\"mac\":\"02:00:00:00:00:03\"", "\"mac\":false", "mac"},
            {"t@x", "t@x\\nssh-rsa AAAA evil", "ssh_keys[0]"},
            {"\"spoofchk\":true", "\"spoofchk\":1", "spoofchk"},
            {"\"slot_id\":\"slt_c1\"", "\"slot_id\":\"slt/../x\"", "slot_id"},
        };
        for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
                _cleanup_free_ char *good = assign_body("alc_b", SLOT_C1);
                char *at = strstr(good, edits[i].from);
                cr_assert(at, "edit %zu applies", i);
                char *b;
                cr_assert(asprintf(&b, "%.*s%s%s", (int)(at - good), good, edits[i].to,
                                   at + strlen(edits[i].from)) >= 0);
                snprintf(id, sizeof(id), "cmd_edit%zu", i);
                json_t *r = command("command.allocation.assign", id, b);
                expect_failed(r, "invalid_request");
                const char *msg =
                    json_string_value(json_object_get(json_object_get(r, "error"), "message"));
                cr_expect(msg && strstr(msg, edits[i].field), "'%s' names %s", msg, edits[i].field);
                json_decref(r);
                free(b);
        }

        /* Nothing of the simulated host changed, no hook ran. */
        cr_expect(!sim_slot_exists("slt_c1"));
        cr_expect(!sim_slot_exists("slt_x"));
        char p[512];
        snprintf(p, sizeof(p), "%s/simulated-host/nics/0000:c5:00.0.json", ap.state_dir);
        cr_expect(access(p, F_OK) < 0, "no VF was created");
        _cleanup_free_ char *rt = runtime_path("alc_b", NULL);
        cr_expect(access(rt, F_OK) < 0, "no runtime directory");

        /* And the good body still works. */
        json_t *r = assign("cmd_good", "alc_b", SLOT_C1);
        expect_ok(r);
        json_decref(r);
}

/* SLOT_C1 and SLOT_D1 with a nil MAC: the network's "hardware" policy. */
#define SLOT_C1_HW                                                                                 \
        "{\"slot_id\":\"slt_c1\",\"slot_key\":\"slot-0000:c1:00.0\",\"gpus\":[\"0000:c1:00.0\"],"  \
        "\"nic\":\"0000:c5:00.0\",\"vf_index\":0,\"nvme\":null,\"mac\":null}"
#define SLOT_D1_HW                                                                                 \
        "{\"slot_id\":\"slt_d1\",\"slot_key\":\"slot-0000:d1:00.0\",\"gpus\":[\"0000:d1:00.0\"],"  \
        "\"nic\":\"0000:d5:00.0\",\"vf_index\":0,\"nvme\":\"0000:9a:00.0\",\"mac\":null}"
#define SLOT_D6_HW                                                                                 \
        "{\"slot_id\":\"slt_d6\",\"slot_key\":\"slot-0000:d6:00.0\",\"gpus\":[\"0000:d6:00.0\"],"  \
        "\"nic\":\"0000:d5:00.0\",\"vf_index\":1,\"nvme\":\"0000:9b:00.0\",\"mac\":null}"

Test(alloc, a_nil_mac_keeps_the_vfs_own_and_the_result_reports_it)
{
        start();
        json_t *r = assign("cmd_h1", "alc_hw", SLOT_C1_HW "," SLOT_D1_HW);
        expect_ok(r);
        /* The simulated VFs' hardware MACs (simulated_vf_hardware_mac). */
        cr_expect_str_eq(str_at(slot_result(r, 0), "mac"), "00:5a:c5:00:00:00");
        cr_expect_str_eq(str_at(slot_result(r, 1), "mac"), "00:5a:d5:00:00:00");
        json_t *step = json_array_get(json_object_get(slot_result(r, 0), "steps"), 1);
        cr_expect_str_eq(str_at(step, "name"), "configure_vf");
        cr_expect(strstr(str_at(step, "detail"), "00:5a:c5:00:00:00 (hardware)"), "%s",
                  str_at(step, "detail"));
        json_decref(r);
        json_t *c1 = sim_slot("slt_c1");
        json_t *vf = json_object_get(c1, "vf");
        cr_expect_str_eq(str_at(vf, "mac"), "00:5a:c5:00:00:00");
        cr_expect_eq(json_integer_value(json_object_get(vf, "vlan")), 100, "VLAN set all the same");
        cr_expect(json_is_true(json_object_get(vf, "spoofchk")));
        cr_expect(json_is_false(json_object_get(vf, "trust")));
        cr_expect_str_eq(str_at(vf, "link_state"), "enable");
        json_decref(c1);

        /* A release may name the MAC as nil too; the baseline puts the VF's
         * own MAC (recorded at first sight) back. */
        r = release("cmd_h2", "alc_hw", SLOT_C1_HW "," SLOT_D1_HW);
        expect_ok(r);
        cr_expect_null(json_object_get(slot_result(r, 0), "mac"), "assign only");
        json_decref(r);
        c1 = sim_slot("slt_c1");
        cr_expect_str_eq(str_at(json_object_get(c1, "vf"), "mac"), "00:5a:c5:00:00:00");
        json_decref(c1);

        /* The next tenant with a generated MAC on the same VF gets it, and
         * the one after, on a "hardware" network, the VF's own again. */
        r = assign("cmd_h3", "alc_gen", SLOT_C1);
        expect_ok(r);
        cr_expect_str_eq(str_at(slot_result(r, 0), "mac"), "02:00:00:00:00:03");
        json_decref(r);
        r = release("cmd_h4", "alc_gen", SLOT_C1);
        expect_ok(r);
        json_decref(r);
        r = assign("cmd_h4a", "alc_hw2", SLOT_C1_HW);
        expect_ok(r);
        cr_expect_str_eq(str_at(slot_result(r, 0), "mac"), "00:5a:c5:00:00:00");
        json_decref(r);
        r = release("cmd_h4b", "alc_hw2", SLOT_C1_HW);
        expect_ok(r);
        json_decref(r);

        /* A VF its PF gives no MAC (never configured before) fails the
         * assignment with a clear reason. */
        char p[512];
        snprintf(p, sizeof(p), "%s/simulated-host/nics/0000:d5:00.0.json", ap.state_dir);
        json_t *nic = json_load_file(p, 0, NULL);
        cr_assert(nic);
        json_object_set_new(nic, "hardware_macs", json_pack("{s:s}", "1", "00:00:00:00:00:00"));
        cr_assert_eq(json_dump_file(nic, p, 0), 0);
        json_decref(nic);
        r = assign("cmd_h5", "alc_nomac", SLOT_D6_HW);
        expect_failed(r, "vf_config_failed");
        json_t *s0 = slot_result(r, 0);
        cr_expect_str_eq(str_at(s0, "reason"), "vf_config_failed");
        cr_expect(json_is_null(json_object_get(s0, "mac")));
        const char *msg =
            json_string_value(json_object_get(json_object_get(r, "error"), "message"));
        cr_expect(msg && strstr(msg, "configure_vf") && strstr(msg, "no hardware MAC"), "%s", msg);
        json_decref(r);
}

Test(alloc, killed_mid_assign_the_agent_applies_it_again_after_a_restart)
{
        start();
        /* The assignment hangs in its last slot step; the agent dies there. */
        faults("hang:bind_gpu\n");
        _cleanup_free_ char *b = assign_body("alc_k", SLOT_C1);
        send_json("command.allocation.assign", "cmd_k1", b);
        cr_assert(WAIT_UNTIL(agent_proc_log_contains(&ap, "injected fault"), PEER_WAIT_MS));
        agent_proc_kill9(&ap);
        json_t *c1 = sim_slot("slt_c1");
        cr_expect_str_eq(str_at(c1, "state"), "assigning", "left half done");
        json_decref(c1);

        faults(NULL);
        agent_proc_spawn(&ap, NULL);
        ProtoEnvelope *hello = agent_proc_handshake(&ap);
        cr_expect(!hello_applied_contains(hello, "cmd_k1"));
        proto_envelope_free(hello);
        json_t *r = command("command.allocation.assign", "cmd_k1", b); /* resent */
        expect_ok(r);
        json_decref(r);
        cr_expect(agent_proc_log_contains(&ap, "interrupted by a restart"));
        c1 = sim_slot("slt_c1");
        cr_expect_str_eq(str_at(c1, "state"), "assigned");
        json_decref(c1);
}
