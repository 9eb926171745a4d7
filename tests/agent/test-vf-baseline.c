/* SPDX-License-Identifier: MIT */
/* The record of a VF's own MAC: written at first sight, never replaced by a
 * later sight, the baseline teardown restores (zero without a record), and
 * the MAC the agent is setting never taken for the VF's own. Its use by the
 * slot steps is in test-simulated-ops.c (the same code as slot_assign()'s),
 * on a real kernel in tests/vm. */

#include <jansson.h>

#include "hostops-test.h"
#include "vf-baseline.h"

#define T(name) Test(vf_baseline, name, .init = tree_init, .fini = tree_fini, .timeout = 30)

#define PF "0000:d5:00.0"

static char state[512];

static const char *state_dir(void)
{
        snprintf(state, sizeof(state), "%s/state", hroot);
        return state;
}

static void mac(const char *s, uint8_t ret[6])
{
        cr_assert_eq(vf_mac_parse(s, ret), 0, "%s", s);
}

static const char *fmt(const uint8_t m[6])
{
        static char buf[4][18];
        static int i;
        char *b = buf[i++ % 4];
        vf_mac_format(m, b);
        return b;
}

static VfConfig tenant(const char *m)
{
        VfConfig c = {.spoofchk = true, .link_state = VF_LINK_STATE_ENABLE};
        mac(m, c.mac);
        return c;
}

T(the_first_sight_is_recorded_and_a_later_one_never_replaces_it)
{
        uint8_t hw[6], tenant_mac[6], got[6];
        mac("00:5a:d5:00:00:01", hw);
        mac("02:11:22:33:44:55", tenant_mac);
        VfConfig want = tenant("02:11:22:33:44:55");

        cr_expect_eq(vf_baseline_recorded(state_dir(), PF, 1), 0);
        cr_expect_eq(vf_baseline_load(state_dir(), PF, 1, got), -ENOENT);
        cr_expect_eq(vf_baseline_first_sight(state_dir(), PF, 1, hw, &want), 1, "recorded");
        cr_expect_eq(vf_baseline_recorded(state_dir(), PF, 1), 1);
        cr_assert_eq(vf_baseline_load(state_dir(), PF, 1, got), 0);
        cr_expect_str_eq(fmt(got), "00:5a:d5:00:00:01");

        /* Later the VF carries a tenant's MAC: that sight changes nothing. */
        VfConfig other = tenant("02:99:99:99:99:99");
        cr_expect_eq(vf_baseline_first_sight(state_dir(), PF, 1, tenant_mac, &other), 0);
        cr_assert_eq(vf_baseline_load(state_dir(), PF, 1, got), 0);
        cr_expect_str_eq(fmt(got), "00:5a:d5:00:00:01", "never overwritten");

        /* Per VF: another index of the PF, another PF. */
        cr_expect_eq(vf_baseline_recorded(state_dir(), PF, 0), 0);
        cr_expect_eq(vf_baseline_recorded(state_dir(), "0000:d6:00.0", 1), 0);

        /* The file: under <state_dir>/vf-baselines, 0600, what it says. */
        struct stat st;
        const char *path = tpath("state/vf-baselines/" PF "-vf1.json");
        cr_assert_eq(stat(path, &st), 0, "%s", path);
        cr_expect_eq(st.st_mode & 0777, 0600);
        json_t *o = json_load_file(path, 0, NULL);
        cr_assert(o);
        cr_expect_str_eq(json_string_value(json_object_get(o, "pf")), PF);
        cr_expect_eq(json_integer_value(json_object_get(o, "vf_index")), 1);
        cr_expect_str_eq(json_string_value(json_object_get(o, "mac")), "00:5a:d5:00:00:01");
        cr_expect(json_is_string(json_object_get(o, "recorded_at")));
        json_decref(o);
        cr_expect_eq(stat(tpath("state/vf-baselines"), &st), 0);
        cr_expect_eq(st.st_mode & 0777, 0700);
}

T(a_zero_first_sight_is_recorded_as_zero)
{
        uint8_t zero[6] = {0}, got[6];
        VfConfig want = tenant("02:11:22:33:44:55");
        cr_expect_eq(vf_baseline_first_sight(state_dir(), PF, 2, zero, &want), 1);
        cr_assert_eq(vf_baseline_load(state_dir(), PF, 2, got), 0);
        cr_expect(vf_mac_is_zero(got));
        VfConfig base;
        cr_expect_eq(vf_baseline_config(state_dir(), PF, 2, &base), 0);
        cr_expect(vf_mac_is_zero(base.mac));
}

T(teardown_gets_the_recorded_mac_in_the_baseline_else_zero)
{
        uint8_t hw[6];
        VfConfig base, parked;
        mac("00:5a:d5:00:00:03", hw);
        vf_config_baseline(&parked);

        cr_expect_eq(vf_baseline_config(state_dir(), PF, 3, &base), -ENOENT, "no record");
        cr_expect(vf_mac_is_zero(base.mac));
        cr_expect_null(vf_config_diff(&parked, &base), "the baseline as before records existed");

        VfConfig keep = {.keep_mac = true};
        cr_expect_eq(vf_baseline_first_sight(state_dir(), PF, 3, hw, &keep), 1);
        cr_expect_eq(vf_baseline_config(state_dir(), PF, 3, &base), 0);
        cr_expect_str_eq(fmt(base.mac), "00:5a:d5:00:00:03");
        memcpy(parked.mac, hw, 6);
        cr_expect_null(vf_config_diff(&parked, &base),
                       "VLAN, spoofchk, trust, link as the baseline, the VF's own MAC");
}

/* An assign re-run after a crash that lost the record (an older agent, a
 * lost state directory) finds the VF with the MAC it is setting: that one
 * is the tenant's, not the VF's own. */
T(the_mac_being_set_is_never_recorded_as_the_vfs_own)
{
        uint8_t seen[6];
        mac("02:11:22:33:44:55", seen);
        VfConfig want = tenant("02:11:22:33:44:55");
        cr_expect_eq(vf_baseline_first_sight(state_dir(), PF, 4, seen, &want), 0);
        cr_expect_eq(vf_baseline_recorded(state_dir(), PF, 4), 0, "nothing recorded");
        VfConfig base;
        cr_expect_eq(vf_baseline_config(state_dir(), PF, 4, &base), -ENOENT);
        cr_expect(vf_mac_is_zero(base.mac), "teardown falls back to zero");

        /* A "hardware" assignment keeps the VF's MAC: what it sees is its own. */
        VfConfig keep = {.keep_mac = true};
        mac("02:11:22:33:44:55", keep.mac);
        cr_expect_eq(vf_baseline_first_sight(state_dir(), PF, 4, seen, &keep), 1);
}

T(an_unreadable_record_is_kept_and_teardown_falls_back_to_zero)
{
        uint8_t hw[6], got[6];
        mac("00:5a:d5:00:00:05", hw);
        tdir("state/vf-baselines");
        tput("state/vf-baselines/" PF "-vf5.json", "{\"pf\": \"" PF "\", \"vf_index\": 6, "
                                                   "\"mac\": \"00:5a:d5:00:00:06\"}");
        cr_expect_eq(vf_baseline_load(state_dir(), PF, 5, got), -EBADMSG, "another VF's");
        tput("state/vf-baselines/" PF "-vf5.json", "not json");
        cr_expect_eq(vf_baseline_load(state_dir(), PF, 5, got), -EBADMSG);
        cr_expect_eq(vf_baseline_recorded(state_dir(), PF, 5), 1);
        VfConfig want = tenant("02:11:22:33:44:55");
        cr_expect_eq(vf_baseline_first_sight(state_dir(), PF, 5, hw, &want), 0, "not replaced");
        cr_expect_str_eq(tget("state/vf-baselines/" PF "-vf5.json"), "not json");
        VfConfig base;
        cr_expect_eq(vf_baseline_config(state_dir(), PF, 5, &base), -EBADMSG);
        cr_expect(vf_mac_is_zero(base.mac));
}

T(bad_names_never_become_paths)
{
        uint8_t hw[6] = {0, 0x5a, 0, 0, 0, 1};
        char *p = NULL;
        cr_expect_eq(vf_baseline_path(state_dir(), "../../etc", 0, &p), -EINVAL);
        cr_expect_eq(vf_baseline_path(state_dir(), "d5:00.0", 0, &p), -EINVAL);
        cr_expect_eq(vf_baseline_path(NULL, PF, 0, &p), -EINVAL, "no state directory");
        cr_expect_eq(vf_baseline_first_sight(NULL, PF, 0, hw, NULL), -EINVAL);
        cr_expect_eq(vf_baseline_recorded(state_dir(), "../x", 0), -EINVAL);
        cr_assert_eq(vf_baseline_path("/s", PF, 7, &p), 0);
        cr_expect_str_eq(p, "/s/vf-baselines/" PF "-vf7.json");
        free(p);
}
