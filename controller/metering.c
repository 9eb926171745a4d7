/* SPDX-License-Identifier: MIT */
#include "metering.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "config.h"
#include "db.h"
#include "events.h"
#include "id.h"
#include "ledger.h"
#include "log.h"
#include "provisioner.h"
#include "server.h"

#define USEC_PER_HOUR (3600 * USEC_PER_SEC)

int metering_parse_thresholds(const char *s, MeteringPolicy *p)
{
        p->n_thresholds = 0;
        if (!s)
                return 0;
        const char *q = s;
        while (*q) {
                while (*q == ' ' || *q == ',')
                        q++;
                if (!*q)
                        break;
                char *end;
                errno = 0;
                long long v = strtoll(q, &end, 10);
                if (end == q || errno || v <= 0 || v > 100000 ||
                    p->n_thresholds >= METERING_MAX_THRESHOLDS)
                        return -EINVAL;
                if (p->n_thresholds > 0 && v >= p->thresholds_h[p->n_thresholds - 1])
                        return -EINVAL;
                p->thresholds_h[p->n_thresholds++] = v;
                q = end;
                while (*q == ' ')
                        q++;
                if (*q && *q != ',')
                        return -EINVAL;
        }
        return 0;
}

void metering_tick_done(MeteringTick *t)
{
        for (size_t i = 0; i < t->n_release; i++)
                free(t->release[i]);
        free(t->release);
        *t = (MeteringTick){0};
}

int metering_user_had_allocation(Db *db, const char *user_id, bool *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT EXISTS (SELECT 1 FROM allocations WHERE user_id = ?)");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, user_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        *ret = sqlite3_column_int(s, 0) != 0;
        return 0;
}

int metering_burn_rate(Db *db, const char *user_id, int64_t *ret)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "SELECT COALESCE(SUM(hourly_cost_micros), 0) FROM allocations WHERE user_id = ? "
                "AND state = 'active' AND billing_started_at IS NOT NULL AND "
                "billing_ended_at IS NULL AND billing_stopped = 0");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, user_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        *ret = sqlite3_column_int64(s, 0);
        return 0;
}

/* What is due for `secs` whole seconds at `hourly`: floor(hourly * secs /
 * 3600), computed from the start each time so that the interval charges add
 * up to exactly the charge for the whole time (no rounding drift), and split
 * so that it cannot overflow (the same formula as the allocation_usage view). */
int64_t metering_due(int64_t hourly, int64_t secs)
{
        return hourly / 3600 * secs + hourly % 3600 * secs / 3600;
}

typedef struct Meter {
        char allocation_id[ID_MAX];
        char user_id[ID_MAX];
        int64_t hourly;
        usec_t started, ended;
        usec_t charged_to; /* where the last tick left it */
        int64_t posted;    /* of its charges, what is posted to the ledger */
        bool has_end, stopped, active, synced;
        bool running; /* active, billing neither ended nor stopped */
        /* This tick: */
        usec_t to;      /* charged up to after it */
        int64_t due;    /* due(to): all it is charged after this tick */
        int64_t charge; /* due(to) - due(charged_to) */
        bool close;
        bool post; /* its owner's usage is posted this tick */
        /* Its owner's, as the tick found them (read with the meter): */
        int64_t account; /* the posted balance */
        bool alerted;    /* a billing_alerts row */
        int level;
        usec_t exhausted_at;
} Meter;

/* One owner's running allocations seen in this tick. */
typedef struct Owner {
        char user_id[ID_MAX];
        int64_t burn;
        int64_t balance;  /* after this tick: posted before it less all charged since */
        const Meter *any; /* one of its meters: the account and alert state */
        size_t first, n;  /* range in the running[] list */
} Owner;

static int64_t due_at(const Meter *m, usec_t t)
{
        return metering_due(m->hourly, (int64_t)((t - m->started) / USEC_PER_SEC));
}

/* Where this tick takes the meter: up to now, never past billing_ended_at,
 * never past where billing stopped, never backwards. */
static void plan_meter(Meter *m, usec_t now)
{
        usec_t limit = m->has_end ? m->ended : (m->stopped ? m->charged_to : now);
        if (limit > now)
                limit = now;
        m->to = MAX(limit, m->charged_to);
        m->due = due_at(m, m->to);
        m->charge = m->due - due_at(m, m->charged_to);
        /* An ended meter closes once its end is reached: billing_ended_at may
         * lie ahead of now (a release stamped in the future, clock steps). */
        m->close = !m->running && (!m->has_end || m->ended <= now);
}

/* Where in the posting interval the owner's turn falls: the first four
 * characters of the id's random part read as a number in the ids' own
 * (ASCII) order, scaled to the interval. Random ids spread the turns evenly,
 * and the owners posted by one tick are neighbours in every index keyed by
 * owner (accounts, open meters, entries by account): a tick dirties a few
 * pages in each, not a page per owner. */
static usec_t owner_phase(const char *user_id, usec_t interval)
{
        static const char digits[] =
            "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
        const char *p = strchr(user_id, '_');
        p = p ? p + 1 : user_id;
        uint64_t v = 0;
        for (size_t i = 0; i < 4; i++) {
                /* Rank among the 64 id characters: 0..64 for any byte. */
                uint64_t rank = 0;
                if (*p) {
                        while (rank < 64 && digits[rank] < *p)
                                rank++;
                        p++;
                }
                v = v * 65 + rank;
        }
        return (usec_t)((unsigned __int128)v * interval / (65ULL * 65 * 65 * 65));
}

/* Whether the owner's turn to post came between the last tick and this one:
 * a point phase + k * interval in (watermark, now]. Stateless, so a tick
 * after a long pause posts every owner once. */
static bool owner_turn(const MeteringPolicy *p, const char *user_id, usec_t watermark, usec_t now)
{
        if (p->post_interval == 0)
                return true;
        usec_t shift = p->post_interval - owner_phase(user_id, p->post_interval);
        return (now + shift) / p->post_interval != (watermark + shift) / p->post_interval;
}

/* Decides, per owner, whether this tick posts their usage: every owner when
 * asked to, an owner one of whose meters closes (its end is posted with it),
 * an owner whose turn came. meters are sorted by owner. */
static void plan_posting(const MeteringPolicy *p, Meter *meters, size_t n, usec_t watermark,
                         usec_t now)
{
        for (size_t i = 0; i < n;) {
                size_t j = i;
                bool post = p->post_all;
                while (j < n && streq(meters[j].user_id, meters[i].user_id)) {
                        post = post || meters[j].close;
                        j++;
                }
                post = post || owner_turn(p, meters[i].user_id, watermark, now);
                for (; i < j; i++)
                        meters[i].post = post;
        }
}

/* The writes a meter needs beyond the ledger: none while it follows the
 * watermark and nothing of it is posted; one when it first does (synced),
 * when its usage is posted (posted_micros), when it closes (and its hold
 * closes). */
static int update_meter(Db *db, const Meter *m, MeteringTick *t)
{
        if (m->charge > 0) {
                t->charges++;
                t->charged_micros += m->charge;
        }
        int64_t posted = m->post ? m->due : m->posted;
        if (m->synced && !m->close && posted == m->posted)
                return 0;
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE allocation_meters SET synced = 1, closed = ?2, charged_to = ?3, "
                        "posted_micros = ?4 WHERE allocation_id = ?1");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, m->allocation_id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, m->close ? 1 : 0);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)m->to);
        sqlite3_bind_int64(s, 4, posted);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE)
                return db_errno(rc);
        if (m->close) {
                int r = ledger_hold_close(db, m->allocation_id);
                if (r < 0)
                        return r;
                t->closed++;
        }
        return 0;
}

/* One balanced ledger transaction for the tick: each owner posted this tick
 * is debited what was charged to their meters since their last posting,
 * platform:revenue credited the total. meters are sorted by owner. */
static int post_usage(Db *db, const Meter *meters, size_t n, usec_t now, MeteringTick *t)
{
        _cleanup_free_ LedgerLeg *legs = calloc(n + 1, sizeof(LedgerLeg));
        _cleanup_free_ char(*accts)[LEDGER_ACCOUNT_ID_MAX] = calloc(n + 1, LEDGER_ACCOUNT_ID_MAX);
        if (!legs || !accts)
                return -ENOMEM;
        size_t n_legs = 0;
        int64_t total = 0;
        for (size_t i = 0; i < n; i++) {
                int64_t amount = meters[i].due - meters[i].posted;
                if (!meters[i].post || amount <= 0)
                        continue;
                if (n_legs == 0 || !streq(accts[n_legs - 1] + STRLEN("user:"), meters[i].user_id)) {
                        ledger_user_account(meters[i].user_id, accts[n_legs]);
                        legs[n_legs] = (LedgerLeg){accts[n_legs], 0};
                        n_legs++;
                }
                legs[n_legs - 1].amount_micros -= amount;
                total += amount;
        }
        if (n_legs == 0)
                return 0;
        t->posted = n_legs;
        t->posted_micros = total;
        legs[n_legs++] = (LedgerLeg){LEDGER_REVENUE, total};
        char key[64];
        snprintf(key, sizeof(key), "usage:%" PRIu64, now);
        LedgerPosting p = {
            .kind = LEDGER_KIND_USAGE,
            .idempotency_key = key,
            .ref_type = "metering",
        };
        return ledger_post(db, &p, legs, n_legs, NULL);
}

static int set_watermark(Db *db, usec_t w)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "UPDATE metering_state SET watermark = ? WHERE id = 1");
        if (!s)
                return -EIO;
        sqlite3_bind_int64(s, 1, (sqlite3_int64)w);
        int rc = sqlite3_step(s);
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

static int add_release(MeteringTick *t, const char *id)
{
        char **a = reallocarray(t->release, t->n_release + 1, sizeof(char *));
        if (!a)
                return -ENOMEM;
        t->release = a;
        if (!(a[t->n_release] = strdup(id)))
                return -ENOMEM;
        t->n_release++;
        return 0;
}

/* Thresholds crossed: 0 (fine) .. n (below the lowest), n + 1 when used up. */
static int alert_level(const MeteringPolicy *p, int64_t balance, int64_t burn)
{
        if (balance <= 0)
                return (int)p->n_thresholds + 1;
        int level = 0;
        for (size_t i = 0; i < p->n_thresholds; i++)
                /* runway < threshold  <=>  balance < threshold * burn */
                if ((__int128)balance < (__int128)p->thresholds_h[i] * burn)
                        level = (int)i + 1;
        return level;
}

static int evaluate_owner(Db *db, const MeteringPolicy *p, const Owner *o, Meter *const *running,
                          usec_t now, MeteringTick *t)
{
        int64_t balance = o->balance;
        int old_level = o->any->level;
        bool have_row = o->any->alerted;
        usec_t exhausted_at = o->any->exhausted_at;
        int level = alert_level(p, balance, o->burn);

        usec_t new_exhausted = balance <= 0 ? (exhausted_at ? exhausted_at : now) : 0;
        int r;
        if (level > old_level) {
                bool used_up = level > (int)p->n_thresholds;
                json_t *data = json_pack(
                    "{s:s, s:I, s:s, s:I, s:o, s:o, s:b}", "user_id", o->user_id, "balance_micros",
                    (json_int_t)balance, "currency", "USD", "burn_rate_micros_per_hour",
                    (json_int_t)o->burn, "runway_hours",
                    o->burn > 0 ? json_real((double)balance / (double)o->burn) : json_null(),
                    "threshold_hours",
                    used_up ? json_null() : json_integer(p->thresholds_h[level - 1]), "exhausted",
                    used_up);
                if (used_up && data)
                        json_object_set_new(data, "release_after_s",
                                            json_integer((json_int_t)(p->grace / USEC_PER_SEC)));
                r = event_emit(db, "billing.low_balance", o->user_id, data, NULL);
                if (r < 0)
                        return r;
                t->events++;
                log_info("low balance | user=%s balance_micros=%" PRId64 " level=%d", o->user_id,
                         balance, level);
        }
        if (!have_row || level != old_level || new_exhausted != exhausted_at) {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db, "INSERT INTO billing_alerts (user_id, level, exhausted_at, updated_at) "
                        "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id) DO UPDATE SET "
                        "level = ?2, exhausted_at = ?3, updated_at = ?4");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, o->user_id, -1, SQLITE_STATIC);
                sqlite3_bind_int(s, 2, level);
                if (new_exhausted)
                        sqlite3_bind_int64(s, 3, (sqlite3_int64)new_exhausted);
                else
                        sqlite3_bind_null(s, 3);
                sqlite3_bind_int64(s, 4, (sqlite3_int64)now);
                int rc = sqlite3_step(s);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }

        if (new_exhausted && now - new_exhausted >= p->grace)
                for (size_t i = 0; i < o->n; i++) {
                        r = add_release(t, running[o->first + i]->allocation_id);
                        if (r < 0)
                                return r;
                }
        return 0;
}

int metering_run(Db *db, const MeteringPolicy *p, usec_t now, MeteringTick *ret)
{
        *ret = (MeteringTick){0};
        _cleanup_free_ Meter *meters = NULL;
        size_t n = 0, cap = 0;
        int r;

        usec_t t0 = now_mono_usec();
        _cleanup_txn_ DbTxn txn = {0};
        r = db_begin(db, &txn);
        if (r < 0)
                return r;

        usec_t watermark = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT watermark FROM metering_state WHERE id = 1");
                if (!s)
                        return -EIO;
                int rc = sqlite3_step(s);
                if (rc != SQLITE_ROW)
                        return db_errno(rc);
                watermark = (usec_t)sqlite3_column_int64(s, 0);
        }
        /* The clock went back (or a tick repeats): charge nothing, never twice. */
        if (now <= watermark)
                return 0;

        {
                /* Open meters, by owner, with what the owners' evaluation
                 * needs (their posted balance, their alert state): looked
                 * up here in one statement, not per owner. */
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db, "SELECT m.allocation_id, m.user_id, m.hourly_cost_micros, m.started_at, "
                        "m.ended_at, m.stopped, m.active, m.synced, m.charged_to, "
                        "m.posted_micros, COALESCE(a.balance_micros, 0), b.level, "
                        "b.exhausted_at FROM allocation_meters m LEFT JOIN ledger_accounts a "
                        "ON a.id = 'user:' || m.user_id LEFT JOIN billing_alerts b ON "
                        "b.user_id = m.user_id WHERE m.closed = 0 ORDER BY m.user_id");
                if (!s)
                        return -EIO;
                int rc;
                while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                        if (n == cap) {
                                cap = cap ? cap * 2 : 256;
                                Meter *m = reallocarray(meters, cap, sizeof(Meter));
                                if (!m)
                                        return -ENOMEM;
                                meters = m;
                        }
                        Meter *m = &meters[n++];
                        *m = (Meter){0};
                        snprintf(m->allocation_id, sizeof(m->allocation_id), "%s",
                                 db_column_text(s, 0));
                        snprintf(m->user_id, sizeof(m->user_id), "%s", db_column_text(s, 1));
                        m->hourly = MAX(sqlite3_column_int64(s, 2), 0);
                        m->started = (usec_t)sqlite3_column_int64(s, 3);
                        m->has_end = sqlite3_column_type(s, 4) != SQLITE_NULL;
                        m->ended = MAX((usec_t)sqlite3_column_int64(s, 4), m->started);
                        m->stopped = sqlite3_column_int(s, 5) != 0;
                        m->active = sqlite3_column_int(s, 6) != 0;
                        m->synced = sqlite3_column_int(s, 7) != 0;
                        /* A synced meter was charged by every tick up to the
                         * watermark (or its end); the others stand where they
                         * were left. */
                        usec_t pos = (usec_t)sqlite3_column_int64(s, 8);
                        if (m->synced)
                                pos = MAX(m->started,
                                          m->has_end ? MIN(m->ended, watermark) : watermark);
                        m->charged_to = MAX(pos, m->started);
                        m->posted = sqlite3_column_int64(s, 9);
                        m->account = sqlite3_column_int64(s, 10);
                        m->alerted = sqlite3_column_type(s, 11) != SQLITE_NULL;
                        m->level = sqlite3_column_int(s, 11);
                        m->exhausted_at = (usec_t)sqlite3_column_int64(s, 12);
                        m->running = m->active && !m->has_end && !m->stopped;
                        /* Left "active" without an end time: closed where it
                         * stands, never charged a guess. */
                        if (!m->active && !m->has_end && !m->stopped) {
                                log_warning("allocation left active without billing_ended_at; "
                                            "charged up to the last tick | allocation=%s",
                                            m->allocation_id);
                                m->stopped = true;
                        }
                        plan_meter(m, now);
                }
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        ret->meters = n;
        plan_posting(p, meters, n, watermark, now);
        usec_t t1 = now_mono_usec();
        ret->read_usec = t1 - t0;

        r = post_usage(db, meters, n, now, ret);
        if (r < 0)
                return log_error_errno(r, "cannot post usage");
        usec_t t2 = now_mono_usec();
        ret->post_usec = t2 - t1;

        _cleanup_free_ Meter **running = calloc(n ? n : 1, sizeof(Meter *));
        if (!running)
                return -ENOMEM;
        size_t n_running = 0;
        for (size_t i = 0; i < n; i++) {
                r = update_meter(db, &meters[i], ret);
                if (r < 0)
                        return r;
                if (meters[i].running)
                        running[n_running++] = &meters[i];
        }
        r = set_watermark(db, now);
        if (r < 0)
                return r;
        usec_t t3 = now_mono_usec();
        ret->record_usec = t3 - t2;

        /* Owners with something running (already in owner order): runway,
         * alerts, exhaustion. Their balance counts every open meter of
         * theirs, running or not; what this tick posted moved from the
         * meters to the account, so it is the same either way. */
        for (size_t i = 0, k = 0; i < n_running;) {
                Owner o = {.first = i};
                snprintf(o.user_id, sizeof(o.user_id), "%s", running[i]->user_id);
                while (k < n && strcmp(meters[k].user_id, o.user_id) < 0)
                        k++;
                o.any = &meters[k];
                o.balance = meters[k].account;
                for (; k < n && streq(meters[k].user_id, o.user_id); k++)
                        o.balance -= meters[k].due - meters[k].posted;
                while (i < n_running && streq(running[i]->user_id, o.user_id)) {
                        o.burn += running[i]->hourly;
                        o.n++;
                        i++;
                }
                r = evaluate_owner(db, p, &o, running, now, ret);
                if (r < 0)
                        return r;
        }
        usec_t t4 = now_mono_usec();
        ret->owners_usec = t4 - t3;
        r = db_commit(&txn);
        ret->commit_usec = now_mono_usec() - t4;
        return r;
}

int metering_unposted(Db *db, const char *user_id, int64_t *ret_unposted, int64_t *ret_on_holds)
{
        /* Per open meter: its charge at the watermark (the allocation_usage
         * formula), less what of it is posted; and the part of the charge
         * beyond its pending hold's captured amount, up to the hold's
         * uncaptured rest. */
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
            db, "SELECT COALESCE(SUM(c - posted_micros), 0), COALESCE(SUM(CASE WHEN "
                "h.amount_micros IS NULL THEN 0 ELSE MIN(MAX(c - h.captured_micros, 0), "
                "MAX(h.amount_micros - h.captured_micros, 0)) END), 0) FROM (SELECT "
                "allocation_id, posted_micros, hourly_cost_micros / 3600 * k + "
                "hourly_cost_micros % 3600 * k / 3600 AS c FROM (SELECT m.allocation_id, "
                "m.hourly_cost_micros, m.posted_micros, (CASE WHEN m.synced = 0 THEN "
                "m.charged_to ELSE MAX(m.started_at, MIN(COALESCE(m.ended_at, s.watermark), "
                "s.watermark)) END - m.started_at) / 1000000 AS k FROM allocation_meters m, "
                "metering_state s WHERE m.user_id = ?1 AND m.closed = 0)) x LEFT JOIN "
                "ledger_holds h ON h.allocation_id = x.allocation_id AND h.state = 'pending'");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, user_id, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return db_errno(rc);
        *ret_unposted = sqlite3_column_int64(s, 0);
        *ret_on_holds = sqlite3_column_int64(s, 1);
        return 0;
}

/* Usage per allocation and bucket, from the meters: a charged second counts
 * in the bucket its end falls in; what a bucket holds is the difference of
 * the cumulative charge at its edges, exactly what the ticks charged. */
int metering_usage(Db *db, const char *user_id, usec_t from, usec_t to, usec_t bucket,
                   MeteringUsageFn fn, void *userdata)
{
        _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
            db_stmt(db, "SELECT u.allocation_id, u.hourly_cost_micros, u.started_at, u.charged_to "
                        "FROM allocation_usage u WHERE u.user_id = ?1 AND u.started_at < ?3 AND "
                        "u.charged_to > ?2 ORDER BY u.started_at, u.allocation_id");
        if (!s)
                return -EIO;
        sqlite3_bind_text(s, 1, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)from);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)to);
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                Meter m = {.hourly = sqlite3_column_int64(s, 1),
                           .started = (usec_t)sqlite3_column_int64(s, 2)};
                usec_t charged_to = (usec_t)sqlite3_column_int64(s, 3);
                /* Whole seconds charged, and those whose end is before t. */
                int64_t k_max = (int64_t)((charged_to - m.started) / USEC_PER_SEC);
                const char *id = db_column_text(s, 0);
                usec_t b0 = MAX(from, m.started / bucket * bucket);
                for (usec_t b = b0; b < to && b < charged_to + bucket; b += bucket) {
                        int64_t lo =
                            b <= m.started ? 0 : (int64_t)((b - m.started - 1) / USEC_PER_SEC);
                        int64_t hi = b + bucket <= m.started
                                         ? 0
                                         : (int64_t)((b + bucket - m.started - 1) / USEC_PER_SEC);
                        lo = MIN(lo, k_max);
                        hi = MIN(hi, k_max);
                        if (hi <= lo)
                                continue;
                        int r = fn(id, b, metering_due(m.hourly, hi) - metering_due(m.hourly, lo),
                                   hi - lo, userdata);
                        if (r < 0)
                                return r;
                }
        }
        return rc == SQLITE_DONE ? 0 : db_errno(rc);
}

/* ---- the timer ---- */

struct Metering {
        Server *server;
        uv_timer_t timer;
        MeteringPolicy policy;
        bool closing;
};

int metering_release(Server *s, const char *allocation_id)
{
        /* The allocations code owns the allocation's state: -> releasing with
         * failure_reason insufficient_balance (what the user sees), billing
         * ends now, the node is told. */
        log_info("releasing an allocation out of funds | allocation=%s", allocation_id);
        return provisioner_release_for_billing(s, allocation_id, "insufficient_balance");
}

static void release_exhausted(Metering *m, const MeteringTick *t)
{
        for (size_t i = 0; i < t->n_release; i++) {
                /* The allocations code owns allocation state: see metering_release. */
                int r = metering_release(m->server, t->release[i]);
                if (r < 0)
                        log_warning_errno(r,
                                          "cannot release an allocation out of funds | "
                                          "allocation=%s",
                                          t->release[i]);
        }
}

int metering_tick_now(Metering *m)
{
        MeteringTick t;
        usec_t t0 = now_mono_usec();
        int r = metering_run(m->server->db, &m->policy, now_usec(), &t);
        if (r < 0) {
                metering_tick_done(&t);
                return log_error_errno(r, "metering tick failed");
        }
        if (t.charges || t.closed || t.events || t.n_release)
                log_info("metering tick | meters=%zu charges=%zu closed=%zu micros=%" PRId64
                         " posted_owners=%zu posted_micros=%" PRId64
                         " events=%zu release=%zu ms=%" PRIu64,
                         t.meters, t.charges, t.closed, t.charged_micros, t.posted, t.posted_micros,
                         t.events, t.n_release, (uint64_t)((now_mono_usec() - t0) / USEC_PER_MSEC));
        release_exhausted(m, &t);
        metering_tick_done(&t);
        return 0;
}

static void on_tick(uv_timer_t *timer)
{
        Metering *m = timer->data;
        if (m->server->shutting_down)
                return;
        (void)metering_tick_now(m);
}

int metering_start(Server *s, Metering **ret)
{
        Metering *m = calloc(1, sizeof(*m));
        if (!m)
                return log_oom();
        m->server = s;
        m->policy.grace =
            (usec_t)config_get_int(s->config, "billing_grace_period_s") * USEC_PER_SEC;
        const char *th = config_get(s->config, "low_balance_runway_hours");
        if (metering_parse_thresholds(th, &m->policy) < 0) {
                free(m);
                return log_error_errno(-EINVAL,
                                       "low_balance_runway_hours: expected descending positive "
                                       "hours, comma-separated (24,1) | value=%s",
                                       strempty(th));
        }
        m->policy.post_interval =
            (usec_t)config_get_int(s->config, "billing_post_interval_s") * USEC_PER_SEC;
        uint64_t interval = (uint64_t)config_get_int(s->config, "metering_interval_s") * 1000;
        uv_timer_init(s->loop, &m->timer);
        m->timer.data = m;
        uv_timer_start(&m->timer, on_tick, 0, interval);
        *ret = m;
        return 0;
}

static void on_closed(uv_handle_t *h)
{
        free(h->data);
}

void metering_stop(Metering *m)
{
        if (!m || m->closing)
                return;
        m->closing = true;
        uv_timer_stop(&m->timer);
        /* A last tick posts every owner's usage, so that the ledger of a
         * stopped controller holds every charge. Releases wait for the next
         * start (the exhaustion is recorded). */
        MeteringPolicy last = m->policy;
        last.post_all = true;
        MeteringTick t;
        int r = metering_run(m->server->db, &last, now_usec(), &t);
        if (r < 0)
                log_warning_errno(r, "the last metering tick failed; usage is posted at the next "
                                     "start");
        else
                log_info("metering stopped | posted_owners=%zu posted_micros=%" PRId64, t.posted,
                         t.posted_micros);
        metering_tick_done(&t);
        uv_close((uv_handle_t *)&m->timer, on_closed);
}
