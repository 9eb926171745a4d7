/* SPDX-License-Identifier: MIT */
/* The journal turns at-least-once delivery into at-most-once application,
 * across restarts: states, stored replies, order of applied ids, pruning,
 * assignments, and a file that survives reopening. */

#include <criterion/criterion.h>
#include <sys/stat.h>

#include "agent-test.h"
#include "journal.h"

static char *dir;

static void setup(void)
{
        char tmpl[] = "/tmp/gpuslice-journal-XXXXXX";
        cr_assert(mkdtemp(tmpl));
        cr_assert(asprintf(&dir, "%s/state", tmpl) >= 0);
}

static void teardown(void)
{
        char *parent = strdup(dir);
        *strrchr(parent, '/') = 0;
        rm_rf(parent);
        free(parent);
        free(dir);
}

TestSuite(journal, .init = setup, .fini = teardown, .timeout = 30);

Test(journal, creates_a_private_state_dir_and_file)
{
        Journal *j = NULL;
        cr_assert_eq(journal_open(dir, &j), 0);
        struct stat st;
        cr_assert_eq(stat(dir, &st), 0);
        cr_expect_eq(st.st_mode & 0777, 0700);
        char *f;
        cr_assert(asprintf(&f, "%s/" JOURNAL_FILE, dir) >= 0);
        cr_assert_eq(stat(f, &st), 0);
        cr_expect_eq(st.st_mode & 0777, 0600);
        free(f);
        journal_close(j);
}

Test(journal, a_command_moves_from_new_to_started_to_done_with_its_reply)
{
        Journal *j = NULL;
        cr_assert_eq(journal_open(dir, &j), 0);
        JournalState st;
        void *reply = NULL;
        size_t len = 0;
        cr_assert_eq(journal_lookup(j, "cmd_1", &st, &reply, &len), 0);
        cr_expect_eq(st, JOURNAL_NEW);
        cr_assert_eq(journal_begin(j, "cmd_1", "command.discover", 7), 0);
        cr_assert_eq(journal_begin(j, "cmd_1", "command.discover", 7), 0, "begin is idempotent");
        cr_assert_eq(journal_lookup(j, "cmd_1", &st, NULL, NULL), 0);
        cr_expect_eq(st, JOURNAL_STARTED);
        cr_assert_eq(journal_finish(j, "cmd_1", "\x81\xa1k\x01", 4), 0);
        cr_assert_eq(journal_lookup(j, "cmd_1", &st, &reply, &len), 0);
        cr_expect_eq(st, JOURNAL_DONE);
        cr_assert_eq(len, 4);
        cr_expect_eq(memcmp(reply, "\x81\xa1k\x01", 4), 0);
        free(reply);
        cr_expect_eq(journal_begin(j, "cmd_1", "command.discover", 7), -EEXIST,
                     "a done command is never begun again");
        cr_expect_lt(journal_finish(j, "cmd_never", "\x80", 1), 0,
                     "finishing an unknown command fails");
        journal_close(j);
}

Test(journal, survives_a_restart)
{
        Journal *j = NULL;
        cr_assert_eq(journal_open(dir, &j), 0);
        cr_assert_eq(journal_begin(j, "cmd_done", "command.discover", 1), 0);
        cr_assert_eq(journal_finish(j, "cmd_done", "\x80", 1), 0);
        cr_assert_eq(journal_begin(j, "cmd_half", "command.discover", 1), 0);
        cr_assert_eq(journal_set_assignment(j, "slot-0000:c1:00.0", "alc_1"), 0);
        journal_close(j);

        cr_assert_eq(journal_open(dir, &j), 0);
        JournalState st;
        cr_assert_eq(journal_lookup(j, "cmd_done", &st, NULL, NULL), 0);
        cr_expect_eq(st, JOURNAL_DONE);
        cr_assert_eq(journal_lookup(j, "cmd_half", &st, NULL, NULL), 0);
        cr_expect_eq(st, JOURNAL_STARTED, "an interrupted command is known as interrupted");
        char **a = NULL;
        cr_assert_eq(journal_assignments(j, &a), 0);
        cr_assert_eq(strv_length(a), 2);
        cr_expect_str_eq(a[0], "slot-0000:c1:00.0");
        cr_expect_str_eq(a[1], "alc_1");
        strv_free(a);
        journal_close(j);
}

Test(journal, applied_lists_done_ids_most_recent_first_and_bounded)
{
        Journal *j = NULL;
        cr_assert_eq(journal_open(dir, &j), 0);
        for (int i = 0; i < 5; i++) {
                char id[16];
                snprintf(id, sizeof(id), "cmd_%d", i);
                cr_assert_eq(journal_begin(j, id, "command.discover", 1), 0);
                cr_assert_eq(journal_finish(j, id, "\x80", 1), 0);
        }
        cr_assert_eq(journal_begin(j, "cmd_open", "command.discover", 1), 0);
        char **l = NULL;
        cr_assert_eq(journal_applied(j, 3, &l), 0);
        cr_assert_eq(strv_length(l), 3);
        cr_expect_str_eq(l[0], "cmd_4");
        cr_expect_str_eq(l[1], "cmd_3");
        cr_expect_str_eq(l[2], "cmd_2");
        strv_free(l);
        cr_assert_eq(journal_applied(j, 100, &l), 0);
        cr_expect_eq(strv_length(l), 5, "started commands are not applied");
        strv_free(l);
        journal_close(j);
}

Test(journal, keeps_only_the_newest_done_commands)
{
        Journal *j = NULL;
        cr_assert_eq(journal_open(dir, &j), 0);
        journal_set_keep(j, 50);
        for (int i = 0; i < 50 + 10; i++) {
                char id[16];
                snprintf(id, sizeof(id), "cmd_%d", i);
                cr_assert_eq(journal_begin(j, id, "command.discover", 1), 0);
                cr_assert_eq(journal_finish(j, id, "\x80", 1), 0);
        }
        JournalState st;
        cr_assert_eq(journal_lookup(j, "cmd_0", &st, NULL, NULL), 0);
        cr_expect_eq(st, JOURNAL_NEW, "the oldest were pruned");
        char last[16];
        snprintf(last, sizeof(last), "cmd_%d", 50 + 9);
        cr_assert_eq(journal_lookup(j, last, &st, NULL, NULL), 0);
        cr_expect_eq(st, JOURNAL_DONE);
        char **l = NULL;
        cr_assert_eq(journal_applied(j, 100000, &l), 0);
        cr_expect_eq(strv_length(l), 50);
        strv_free(l);
        journal_close(j);
}

Test(journal, assignments_set_replace_and_remove)
{
        Journal *j = NULL;
        cr_assert_eq(journal_open(dir, &j), 0);
        cr_assert_eq(journal_set_assignment(j, "b", "1"), 0);
        cr_assert_eq(journal_set_assignment(j, "a", "2"), 0);
        cr_assert_eq(journal_set_assignment(j, "b", "3"), 0);
        cr_assert_eq(journal_set_assignment(j, "a", NULL), 0);
        char **a = NULL;
        cr_assert_eq(journal_assignments(j, &a), 0);
        cr_assert_eq(strv_length(a), 2);
        cr_expect_str_eq(a[0], "b");
        cr_expect_str_eq(a[1], "3");
        strv_free(a);
        journal_close(j);
}

Test(journal, an_unusable_state_dir_is_an_error)
{
        Journal *j = NULL;
        cr_expect_lt(journal_open("/proc/gpuslice-no-such/state", &j), 0);
        cr_expect_null(j);
}
