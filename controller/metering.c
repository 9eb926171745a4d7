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

/* What is due for `secs` whole seconds at `hourly`: floor, computed from the
 * start each time so that the sum of the interval charges is exactly the
 * charge for the whole time (no rounding drift). */
static int64_t due_for(int64_t hourly, int64_t secs)
{
        /* hourly * secs fits: 1e12 micro-USD/h (a million dollars an hour)
         * for 9e6 s (104 days) is 9e18. Split to stay exact beyond that. */
        return hourly / 3600 * secs + hourly % 3600 * secs / 3600;
}

typedef struct Meter {
        char allocation_id[ID_MAX];
        char user_id[ID_MAX];
        int64_t hourly;
        usec_t started, ended, charged_to;
        int64_t charged_micros;
        bool has_end, stopped, running;
} Meter;

/* One owner's running allocations seen in this tick. */
typedef struct Owner {
        char user_id[ID_MAX];
        int64_t burn;
        size_t first, n; /* range in the running[] list */
} Owner;

static int charge_meter(Db *db, const Meter *m, usec_t now, MeteringTick *t)
{
        usec_t limit = m->has_end ? m->ended : (m->stopped ? m->charged_to : now);
        if (limit > now)
                limit = now;
        if (limit < m->started)
                limit = m->started;
        int64_t secs = (int64_t)((limit - m->started) / USEC_PER_SEC);
        usec_t up_to = m->started + (usec_t)secs * USEC_PER_SEC;
        int64_t due = due_for(m->hourly, secs);
        int64_t charge = due - m->charged_micros;
        /* An ended meter closes once its end is reached: billing_ended_at may
         * lie ahead of now (a release stamped in the future, clock steps). */
        bool close = !m->running && (!m->has_end || m->ended <= now);
        int r;

        if (charge > 0 && up_to > m->charged_to) {
                char key[64 + ID_MAX], txn[ID_MAX];
                snprintf(key, sizeof(key), "usage:%s:%" PRIu64, m->allocation_id, up_to);
                r = ledger_charge_usage(db, m->user_id, m->allocation_id, charge, key, txn);
                if (r < 0)
                        return log_error_errno(r, "cannot post usage | allocation=%s",
                                               m->allocation_id);
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "INSERT INTO allocation_charges (allocation_id, up_to, from_at, "
                                "user_id, amount_micros, txn_id, at) VALUES (?, ?, ?, ?, ?, ?, ?)");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, m->allocation_id, -1, SQLITE_STATIC);
                sqlite3_bind_int64(s, 2, (sqlite3_int64)up_to);
                sqlite3_bind_int64(s, 3, (sqlite3_int64)m->charged_to);
                sqlite3_bind_text(s, 4, m->user_id, -1, SQLITE_STATIC);
                sqlite3_bind_int64(s, 5, charge);
                sqlite3_bind_text(s, 6, txn, -1, SQLITE_STATIC);
                sqlite3_bind_int64(s, 7, (sqlite3_int64)now);
                int rc = sqlite3_step(s);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
                t->charges++;
                t->charged_micros += charge;
        } else if (!close)
                return 0; /* nothing new: no write */

        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "UPDATE allocation_meters SET charged_to = MAX(charged_to, ?), "
                                "charged_micros = MAX(charged_micros, ?), closed = ? "
                                "WHERE allocation_id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_int64(s, 1, (sqlite3_int64)up_to);
                sqlite3_bind_int64(s, 2, due);
                sqlite3_bind_int(s, 3, close ? 1 : 0);
                sqlite3_bind_text(s, 4, m->allocation_id, -1, SQLITE_STATIC);
                int rc = sqlite3_step(s);
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        if (close) {
                r = ledger_hold_close(db, m->allocation_id);
                if (r < 0)
                        return r;
                t->closed++;
        }
        return 0;
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
        int64_t balance;
        int r = ledger_balance_micros(db, o->user_id, &balance);
        if (r < 0)
                return r;
        int level = alert_level(p, balance, o->burn);

        int old_level = 0;
        bool have_row = false;
        usec_t exhausted_at = 0;
        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s =
                    db_stmt(db, "SELECT level, exhausted_at FROM billing_alerts WHERE user_id = ?");
                if (!s)
                        return -EIO;
                sqlite3_bind_text(s, 1, o->user_id, -1, SQLITE_STATIC);
                int rc = sqlite3_step(s);
                if (rc == SQLITE_ROW) {
                        have_row = true;
                        old_level = sqlite3_column_int(s, 0);
                        exhausted_at = (usec_t)sqlite3_column_int64(s, 1);
                } else if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }

        usec_t new_exhausted = balance <= 0 ? (exhausted_at ? exhausted_at : now) : 0;
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

static int cmp_running(const void *a, const void *b)
{
        const Meter *x = *(Meter *const *)a, *y = *(Meter *const *)b;
        return strcmp(x->user_id, y->user_id);
}

int metering_run(Db *db, const MeteringPolicy *p, usec_t now, MeteringTick *ret)
{
        *ret = (MeteringTick){0};
        _cleanup_free_ Meter *meters = NULL;
        size_t n = 0, cap = 0;
        int r;

        _cleanup_txn_ DbTxn txn = {0};
        r = db_begin(db, &txn);
        if (r < 0)
                return r;

        {
                _cleanup_(db_stmt_resetp) sqlite3_stmt *s = db_stmt(
                    db, "SELECT m.allocation_id, m.user_id, m.charged_to, m.charged_micros, "
                        "a.hourly_cost_micros, a.billing_started_at, a.billing_ended_at, "
                        "a.billing_stopped, a.state FROM allocation_meters m JOIN allocations a "
                        "ON a.id = m.allocation_id WHERE m.closed = 0");
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
                        m->charged_to = (usec_t)sqlite3_column_int64(s, 2);
                        m->charged_micros = sqlite3_column_int64(s, 3);
                        m->hourly = MAX(sqlite3_column_int64(s, 4), 0);
                        m->started = (usec_t)sqlite3_column_int64(s, 5);
                        m->has_end = sqlite3_column_type(s, 6) != SQLITE_NULL;
                        m->ended = (usec_t)sqlite3_column_int64(s, 6);
                        m->stopped = sqlite3_column_int(s, 7) != 0;
                        const char *state = db_column_text(s, 8);
                        /* Running: active, billing neither ended nor stopped. A
                         * meter of an allocation that left "active" without an end
                         * time is closed where it stands: never charge a guess. */
                        m->running = state && streq(state, "active") && !m->has_end && !m->stopped;
                        if (!m->running && !m->has_end && !m->stopped) {
                                log_warning("allocation left active without billing_ended_at; "
                                            "charged up to the last tick | allocation=%s state=%s",
                                            m->allocation_id, strempty(state));
                                m->stopped = true;
                        }
                }
                if (rc != SQLITE_DONE)
                        return db_errno(rc);
        }
        ret->meters = n;

        _cleanup_free_ Meter **running = calloc(n ? n : 1, sizeof(Meter *));
        if (!running)
                return -ENOMEM;
        size_t n_running = 0;
        for (size_t i = 0; i < n; i++) {
                r = charge_meter(db, &meters[i], now, ret);
                if (r < 0)
                        return r;
                if (meters[i].running)
                        running[n_running++] = &meters[i];
        }

        /* Owners with something running: runway, alerts, exhaustion. */
        qsort(running, n_running, sizeof(Meter *), cmp_running);
        for (size_t i = 0; i < n_running;) {
                Owner o = {.first = i};
                snprintf(o.user_id, sizeof(o.user_id), "%s", running[i]->user_id);
                while (i < n_running && streq(running[i]->user_id, o.user_id)) {
                        o.burn += running[i]->hourly;
                        o.n++;
                        i++;
                }
                r = evaluate_owner(db, p, &o, running, now, ret);
                if (r < 0)
                        return r;
        }

        r = db_commit(&txn);
        if (r < 0)
                return r;
        return 0;
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
        /* Wired to the allocations code's release once it exists; until then
         * the allocation keeps running (and accruing) and this is logged. */
        (void)s;
        log_warning("an allocation's owner is out of funds but no release path is wired | "
                    "allocation=%s",
                    allocation_id);
        return -ENOSYS;
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
        if (r < 0)
                return log_error_errno(r, "metering tick failed");
        if (t.charges || t.closed || t.events || t.n_release)
                log_info("metering tick | meters=%zu charges=%zu closed=%zu micros=%" PRId64
                         " events=%zu release=%zu ms=%" PRIu64,
                         t.meters, t.charges, t.closed, t.charged_micros, t.events, t.n_release,
                         (uint64_t)((now_mono_usec() - t0) / USEC_PER_MSEC));
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
        uv_close((uv_handle_t *)&m->timer, on_closed);
}
