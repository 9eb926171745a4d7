/* SPDX-License-Identifier: MIT */
/* Numbered schema migrations. Append only: a released migration is never
 * edited; a change is a new entry with the next number. Each runs in its own
 * transaction together with the PRAGMA user_version bump. */
#include "db.h"

const Migration db_migrations[] = {
    {
        .version = 1,
        .name = "users_sessions_audit",
        .sql = "CREATE TABLE users ("
               "  id TEXT PRIMARY KEY,"
               "  email TEXT NOT NULL UNIQUE,"
               "  name TEXT NOT NULL,"
               "  password_hash TEXT,"
               "  roles INTEGER NOT NULL DEFAULT 1," /* bit set, see users.h */
               "  balance_micros INTEGER NOT NULL DEFAULT 0,"
               "  created_at INTEGER NOT NULL,"
               "  updated_at INTEGER NOT NULL"
               ") STRICT;"
               "CREATE TABLE sessions ("
               "  id TEXT PRIMARY KEY,"
               "  user_id TEXT NOT NULL REFERENCES users(id),"
               "  created_at INTEGER NOT NULL,"
               "  expires_at INTEGER NOT NULL,"
               "  revoked_at INTEGER,"
               "  revoke_reason TEXT,"
               "  client_addr TEXT"
               ") STRICT;"
               "CREATE INDEX sessions_user ON sessions(user_id);"
               "CREATE TABLE access_tokens ("
               "  token_hash BLOB PRIMARY KEY,"
               "  session_id TEXT NOT NULL REFERENCES sessions(id),"
               "  expires_at INTEGER NOT NULL"
               ") STRICT, WITHOUT ROWID;"
               "CREATE INDEX access_tokens_session ON access_tokens(session_id);"
               "CREATE TABLE refresh_tokens ("
               "  token_hash BLOB PRIMARY KEY,"
               "  session_id TEXT NOT NULL REFERENCES sessions(id),"
               "  expires_at INTEGER NOT NULL,"
               "  spent_at INTEGER"
               ") STRICT, WITHOUT ROWID;"
               "CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);"
               "CREATE TABLE audit_logs ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  at INTEGER NOT NULL,"
               "  actor_id TEXT,"
               "  action TEXT NOT NULL,"
               "  target_type TEXT,"
               "  target_id TEXT,"
               "  reason TEXT,"
               "  details TEXT NOT NULL DEFAULT '{}'"
               ") STRICT;"
               "CREATE INDEX audit_logs_action ON audit_logs(action, seq);",
    },
    {
        .version = 2,
        .name = "oidc_states_user_identities",
        .sql = "CREATE TABLE oidc_states ("
               "  state_hash BLOB PRIMARY KEY," /* SHA-256 of the state */
               "  binder_hash BLOB NOT NULL,"   /* SHA-256 of the browser cookie */
               "  provider TEXT NOT NULL,"
               "  nonce TEXT NOT NULL,"
               "  code_verifier TEXT NOT NULL,"
               "  redirect_uri TEXT NOT NULL,"
               "  created_at INTEGER NOT NULL,"
               "  expires_at INTEGER NOT NULL,"
               "  used_at INTEGER"
               ") STRICT, WITHOUT ROWID;"
               "CREATE INDEX oidc_states_expires ON oidc_states(expires_at);"
               "CREATE TABLE user_identities ("
               "  issuer TEXT NOT NULL,"
               "  subject TEXT NOT NULL,"
               "  user_id TEXT NOT NULL REFERENCES users(id),"
               "  email TEXT,"
               "  created_at INTEGER NOT NULL,"
               "  last_login_at INTEGER,"
               "  PRIMARY KEY (issuer, subject)"
               ") STRICT, WITHOUT ROWID;"
               "CREATE INDEX user_identities_user ON user_identities(user_id);",
    },
    {
        .version = 3,
        .name = "nodes_agent_link",
        /* Owned by nodes.c (nodes, bootstrap_tokens, node_certificates,
         * controller_epoch), node-commands.c (node_commands) and discoveries.c
         * (discoveries, node_resource_slots). */
        .sql = "CREATE TABLE nodes ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  name TEXT NOT NULL,"
               "  state TEXT NOT NULL,"
               "  offline_from TEXT," /* the state to return to when the link is back */
               "  online INTEGER NOT NULL DEFAULT 0,"
               "  last_seen_at INTEGER,"
               "  simulated INTEGER NOT NULL DEFAULT 0,"
               "  fingerprint TEXT," /* of the approved slot map */
               "  agent_version TEXT,"
               "  approved_discovery_id TEXT,"
               "  created_by TEXT,"
               "  created_at INTEGER NOT NULL,"
               "  updated_at INTEGER NOT NULL"
               ") STRICT;"
               "CREATE TABLE bootstrap_tokens ("
               "  token_hash BLOB PRIMARY KEY," /* SHA-256 of the token */
               "  node_id TEXT NOT NULL REFERENCES nodes(id),"
               "  created_at INTEGER NOT NULL,"
               "  expires_at INTEGER NOT NULL,"
               "  used_at INTEGER"
               ") STRICT, WITHOUT ROWID;"
               "CREATE INDEX bootstrap_tokens_node ON bootstrap_tokens(node_id);"
               "CREATE TABLE node_certificates ("
               "  serial TEXT PRIMARY KEY," /* hex, as in the certificate */
               "  node_id TEXT NOT NULL REFERENCES nodes(id),"
               "  issued_at INTEGER NOT NULL,"
               "  not_after INTEGER NOT NULL,"
               "  revoked_at INTEGER"
               ") STRICT, WITHOUT ROWID;"
               "CREATE INDEX node_certificates_node ON node_certificates(node_id);"
               "CREATE TABLE node_commands ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  node_id TEXT NOT NULL REFERENCES nodes(id),"
               "  type TEXT NOT NULL,"
               "  body TEXT NOT NULL DEFAULT '{}',"
               "  state TEXT NOT NULL," /* pending, sent, done, failed */
               "  created_at INTEGER NOT NULL,"
               "  sent_at INTEGER,"
               "  finished_at INTEGER,"
               "  reply TEXT"
               ") STRICT;"
               "CREATE INDEX node_commands_open ON node_commands(node_id, state, seq);"
               "CREATE TABLE discoveries ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  node_id TEXT NOT NULL REFERENCES nodes(id),"
               "  command_id TEXT NOT NULL,"
               "  state TEXT NOT NULL," /* running, completed, failed */
               "  document TEXT,"
               "  fingerprint TEXT,"
               "  ok INTEGER,"
               "  changes TEXT," /* vs the approved map, JSON */
               "  error TEXT,"
               "  requested_by TEXT,"
               "  created_at INTEGER NOT NULL,"
               "  finished_at INTEGER"
               ") STRICT;"
               "CREATE INDEX discoveries_node ON discoveries(node_id, seq);"
               "CREATE TABLE node_resource_slots ("
               "  id TEXT PRIMARY KEY,"
               "  node_id TEXT NOT NULL REFERENCES nodes(id),"
               "  discovery_id TEXT NOT NULL,"
               "  slot_key TEXT NOT NULL," /* the discovery's slot id, slot-0000:3b:00.0 */
               "  gpus TEXT NOT NULL,"     /* JSON array of PCI addresses */
               "  nic TEXT,"
               "  vf_index INTEGER,"
               "  nvme TEXT,"
               "  numa_node INTEGER,"
               "  state TEXT NOT NULL," /* available, quarantined, ... */
               "  approved_by TEXT,"
               "  approved_at INTEGER NOT NULL,"
               "  UNIQUE (node_id, slot_key)"
               ") STRICT;"
               "CREATE TABLE controller_epoch ("
               "  id INTEGER PRIMARY KEY CHECK (id = 1),"
               "  epoch INTEGER NOT NULL"
               ") STRICT;"
               "INSERT INTO controller_epoch (id, epoch) VALUES (1, 0);",
    },
    {
        .version = 4,
        .name = "catalog_allocations_tasks_events",
        /* Owned by catalog.c (skus, images, networks), ssh-keys.c (ssh_keys),
         * allocations.c (allocations, allocation_slots, the slot columns
         * added here), tasks.c (tasks) and events.c (events). */
        .sql = "CREATE TABLE skus ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  name TEXT NOT NULL,"
               "  gpu_model TEXT NOT NULL,"
               "  gpu_memory_gb INTEGER NOT NULL,"
               "  pci_ids TEXT NOT NULL,"    /* JSON array of "vvvv:dddd", lower case */
               "  gpu_counts TEXT NOT NULL," /* JSON array of ascending integers */
               "  price_per_gpu_hour_micros INTEGER NOT NULL,"
               "  topology TEXT NOT NULL," /* node, numa, switch */
               "  created_at INTEGER NOT NULL,"
               "  updated_at INTEGER NOT NULL,"
               "  deleted_at INTEGER"
               ") STRICT;"
               "CREATE UNIQUE INDEX skus_name ON skus(name) WHERE deleted_at IS NULL;"
               "CREATE TABLE images ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  name TEXT NOT NULL,"
               "  description TEXT NOT NULL DEFAULT '',"
               "  source TEXT NOT NULL DEFAULT ''," /* what the runtime hook boots */
               "  ssh_user TEXT NOT NULL DEFAULT 'ubuntu',"
               "  created_at INTEGER NOT NULL,"
               "  updated_at INTEGER NOT NULL,"
               "  deleted_at INTEGER"
               ") STRICT;"
               "CREATE UNIQUE INDEX images_name ON images(name) WHERE deleted_at IS NULL;"
               "CREATE TABLE networks ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  name TEXT NOT NULL,"
               "  description TEXT NOT NULL DEFAULT '',"
               "  vlan INTEGER NOT NULL," /* 0 = untagged, else 1..4094 */
               "  mac_policy TEXT NOT NULL DEFAULT 'generated'," /* generated | hardware */
               "  spoofchk INTEGER NOT NULL DEFAULT 1,"
               "  trust INTEGER NOT NULL DEFAULT 0,"
               "  created_at INTEGER NOT NULL,"
               "  updated_at INTEGER NOT NULL,"
               "  deleted_at INTEGER"
               ") STRICT;"
               "CREATE UNIQUE INDEX networks_name ON networks(name) WHERE deleted_at IS NULL;"
               "CREATE TABLE ssh_keys ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  user_id TEXT NOT NULL REFERENCES users(id),"
               "  name TEXT NOT NULL,"
               "  public_key TEXT NOT NULL," /* one OpenSSH line: type base64 [comment] */
               "  key_type TEXT NOT NULL,"
               "  fingerprint TEXT NOT NULL," /* SHA256:... as ssh-keygen -l prints it */
               "  created_at INTEGER NOT NULL,"
               "  deleted_at INTEGER"
               ") STRICT;"
               "CREATE UNIQUE INDEX ssh_keys_user_fp ON ssh_keys(user_id, fingerprint) "
               "  WHERE deleted_at IS NULL;"
               "CREATE TABLE allocations ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  user_id TEXT NOT NULL REFERENCES users(id),"
               "  state TEXT NOT NULL,"
               "  sku_id TEXT NOT NULL,"
               "  gpu_count INTEGER NOT NULL,"
               "  node_id TEXT,"
               "  image_id TEXT NOT NULL,"
               "  network_id TEXT NOT NULL,"
               "  ssh_key_ids TEXT NOT NULL DEFAULT '[]'," /* JSON array */
               "  storage TEXT,"                          /* JSON, as asked */
               "  hourly_cost_micros INTEGER NOT NULL,"
               "  currency TEXT NOT NULL DEFAULT 'usd',"
               "  failure_reason TEXT,"
               "  release_failed_reason TEXT,"
               "  billing_stopped INTEGER NOT NULL DEFAULT 0,"
               /* Metering (billing): charged time runs from billing_started_at
                * (the moment the allocation became active) to billing_ended_at
                * (release requested, release failed, force release). */
               "  billing_started_at INTEGER,"
               "  billing_ended_at INTEGER,"
               "  connection TEXT," /* JSON {host, port, user} once active */
               "  mac TEXT,"        /* the VF MAC given to the tenant */
               "  idempotency_key TEXT,"
               "  request_hash BLOB," /* SHA-256 of the launch body */
               "  created_at INTEGER NOT NULL,"
               "  updated_at INTEGER NOT NULL,"
               "  released_at INTEGER,"
               "  UNIQUE (user_id, idempotency_key)"
               ") STRICT;"
               "CREATE INDEX allocations_user ON allocations(user_id, seq);"
               "CREATE INDEX allocations_state ON allocations(state, seq);"
               "CREATE TABLE allocation_slots ("
               "  allocation_id TEXT NOT NULL REFERENCES allocations(id),"
               "  slot_id TEXT NOT NULL REFERENCES node_resource_slots(id),"
               "  state TEXT NOT NULL DEFAULT 'held'," /* held, returned, quarantined */
               "  PRIMARY KEY (allocation_id, slot_id)"
               ") STRICT, WITHOUT ROWID;"
               "CREATE INDEX allocation_slots_slot ON allocation_slots(slot_id);"
               "ALTER TABLE node_resource_slots ADD COLUMN allocation_id TEXT;"
               "ALTER TABLE node_resource_slots ADD COLUMN gpu_pci_ids TEXT;" /* JSON array */
               "ALTER TABLE node_resource_slots ADD COLUMN switch TEXT;"
               "ALTER TABLE node_resource_slots ADD COLUMN state_reason TEXT;"
               "ALTER TABLE node_resource_slots ADD COLUMN updated_at INTEGER;"
               "CREATE TABLE tasks ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  allocation_id TEXT NOT NULL REFERENCES allocations(id),"
               "  kind TEXT NOT NULL,"  /* provision, release */
               "  state TEXT NOT NULL," /* running, succeeded, failed */
               "  command_id TEXT,"     /* the node command carrying it */
               "  steps TEXT NOT NULL DEFAULT '[]'," /* JSON [{name,state,started_at,...}] */
               "  error TEXT,"
               "  deadline_at INTEGER,"
               "  created_at INTEGER NOT NULL,"
               "  updated_at INTEGER NOT NULL,"
               "  finished_at INTEGER"
               ") STRICT;"
               "CREATE INDEX tasks_allocation ON tasks(allocation_id, seq);"
               "CREATE INDEX tasks_running ON tasks(state, deadline_at);"
               "CREATE TABLE events ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  at INTEGER NOT NULL,"
               "  type TEXT NOT NULL,"
               "  subject_id TEXT,"
               "  data TEXT NOT NULL DEFAULT '{}'"
               ") STRICT;"
               "CREATE INDEX events_type ON events(type, seq);",
    },
    {
        .version = 5,
        .name = "ledger_metering_payments",
        /* Owned by ledger.c (ledger_*), metering.c (metering_state,
         * allocation_meters, allocation_usage, billing_alerts), payments.c (payment_sessions,
         * stripe_events) and refunds.c (refunds). users.balance_micros (migration
         * 1) is superseded by the ledger and no longer read or written. */
        .sql = "CREATE TABLE ledger_accounts ("
               "  id TEXT PRIMARY KEY," /* user:usr_... or platform:<name> */
               "  user_id TEXT REFERENCES users(id),"
               "  balance_micros INTEGER NOT NULL DEFAULT 0," /* cache, kept by a trigger */
               "  created_at INTEGER NOT NULL"
               ") STRICT, WITHOUT ROWID;"
               "CREATE TABLE ledger_transactions ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  at INTEGER NOT NULL,"
               "  kind TEXT NOT NULL," /* payment, grant, usage, provider_refund, ... */
               "  idempotency_key TEXT UNIQUE,"
               "  user_id TEXT,"
               "  ref_type TEXT,"
               "  ref_id TEXT,"
               "  actor_id TEXT,"
               "  memo TEXT"
               ") STRICT;"
               "CREATE INDEX ledger_transactions_user ON ledger_transactions(user_id, seq);"
               "CREATE TABLE ledger_entries ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  txn_id TEXT NOT NULL REFERENCES ledger_transactions(id),"
               "  account_id TEXT NOT NULL," /* ledger_accounts(id), made by the trigger */
               "  amount_micros INTEGER NOT NULL CHECK (amount_micros != 0),"
               "  at INTEGER NOT NULL"
               ") STRICT;"
               "CREATE INDEX ledger_entries_account ON ledger_entries(account_id, seq);"
               "CREATE INDEX ledger_entries_txn ON ledger_entries(txn_id);"
               /* The balance cache moves with every entry, in its transaction;
                * an account is made by its first entry. */
               "CREATE TRIGGER ledger_entries_balance AFTER INSERT ON ledger_entries BEGIN"
               "  INSERT INTO ledger_accounts (id, user_id, balance_micros, created_at) VALUES "
               "  (NEW.account_id, CASE WHEN NEW.account_id LIKE 'user:%' THEN "
               "  substr(NEW.account_id, 6) END, NEW.amount_micros, NEW.at) "
               "  ON CONFLICT (id) DO UPDATE SET balance_micros = balance_micros + "
               "  excluded.balance_micros;"
               "END;"
               "CREATE TRIGGER ledger_entries_immutable_u BEFORE UPDATE ON ledger_entries BEGIN"
               "  SELECT RAISE(ABORT, 'ledger entries are immutable');"
               "END;"
               "CREATE TRIGGER ledger_entries_immutable_d BEFORE DELETE ON ledger_entries BEGIN"
               "  SELECT RAISE(ABORT, 'ledger entries are immutable');"
               "END;"
               "CREATE TRIGGER ledger_transactions_immutable_u BEFORE UPDATE ON "
               "  ledger_transactions BEGIN"
               "  SELECT RAISE(ABORT, 'ledger transactions are immutable');"
               "END;"
               "CREATE TRIGGER ledger_transactions_immutable_d BEFORE DELETE ON "
               "  ledger_transactions BEGIN"
               "  SELECT RAISE(ABORT, 'ledger transactions are immutable');"
               "END;"
               "CREATE TABLE ledger_holds ("
               "  allocation_id TEXT PRIMARY KEY,"
               "  user_id TEXT NOT NULL,"
               "  amount_micros INTEGER NOT NULL,"
               "  captured_micros INTEGER NOT NULL DEFAULT 0," /* usage posted against it */
               "  state TEXT NOT NULL," /* pending, posted, voided */
               "  created_at INTEGER NOT NULL,"
               "  updated_at INTEGER NOT NULL"
               ") STRICT, WITHOUT ROWID;"
               "CREATE INDEX ledger_holds_user ON ledger_holds(user_id, state);"
               /* Metering. Every tick charges every open meter up to the same
                * instant, the watermark, so how far a meter is charged follows
                * from the watermark and the allocation's own times: no write per
                * allocation per tick. A meter opens (by trigger) in the
                * transaction that starts the allocation's billing and copies
                * what metering needs, so a tick reads this table alone. */
               "CREATE TABLE metering_state ("
               "  id INTEGER PRIMARY KEY CHECK (id = 1),"
               "  watermark INTEGER NOT NULL" /* usec: every synced open meter is charged to it */
               ") STRICT;"
               "INSERT INTO metering_state (id, watermark) VALUES (1, 0);"
               "CREATE TABLE allocation_meters ("
               "  allocation_id TEXT PRIMARY KEY,"
               "  user_id TEXT NOT NULL,"
               "  hourly_cost_micros INTEGER NOT NULL,"
               "  started_at INTEGER NOT NULL,"   /* billing_started_at */
               "  ended_at INTEGER,"              /* billing_ended_at */
               "  stopped INTEGER NOT NULL,"      /* billing_stopped */
               "  active INTEGER NOT NULL,"       /* state = 'active' */
               "  synced INTEGER NOT NULL DEFAULT 0," /* charged by a tick: follows the watermark */
               "  closed INTEGER NOT NULL DEFAULT 0," /* charged to its end, done */
               "  charged_to INTEGER NOT NULL"    /* position while not synced, and once closed */
               ") STRICT, WITHOUT ROWID;"
               /* The tick's one read: open meters in owner order, covered. */
               "CREATE INDEX allocation_meters_open ON allocation_meters(user_id, allocation_id, "
               "  hourly_cost_micros, started_at, ended_at, stopped, active, synced, charged_to, "
               "  closed) "
               "  WHERE closed = 0;"
               "CREATE TRIGGER allocations_meter_open_i AFTER INSERT ON allocations "
               "  WHEN NEW.billing_started_at IS NOT NULL BEGIN"
               "  INSERT INTO allocation_meters (allocation_id, user_id, hourly_cost_micros, "
               "  started_at, ended_at, stopped, active, charged_to) VALUES (NEW.id, NEW.user_id, "
               "  NEW.hourly_cost_micros, NEW.billing_started_at, NEW.billing_ended_at, "
               "  NEW.billing_stopped, NEW.state = 'active', NEW.billing_started_at) "
               "  ON CONFLICT (allocation_id) DO NOTHING;"
               "END;"
               "CREATE TRIGGER allocations_meter_open_u AFTER UPDATE OF billing_started_at "
               "  ON allocations WHEN NEW.billing_started_at IS NOT NULL BEGIN"
               "  INSERT INTO allocation_meters (allocation_id, user_id, hourly_cost_micros, "
               "  started_at, ended_at, stopped, active, charged_to) VALUES (NEW.id, NEW.user_id, "
               "  NEW.hourly_cost_micros, NEW.billing_started_at, NEW.billing_ended_at, "
               "  NEW.billing_stopped, NEW.state = 'active', NEW.billing_started_at) "
               "  ON CONFLICT (allocation_id) DO NOTHING;"
               "END;"
               /* An end stamped before the watermark (a clock step) cannot undo
                * what a tick charged: it is moved up to the watermark. */
               "CREATE TRIGGER allocations_meter_follow AFTER UPDATE OF billing_ended_at, "
               "  billing_stopped, state ON allocations BEGIN"
               "  UPDATE allocation_meters SET ended_at = CASE WHEN NEW.billing_ended_at IS NULL "
               "  THEN NULL WHEN synced = 1 THEN MAX(NEW.billing_ended_at, (SELECT watermark FROM "
               "  metering_state)) ELSE MAX(NEW.billing_ended_at, started_at) END, "
               "  stopped = NEW.billing_stopped, active = NEW.state = 'active' "
               "  WHERE allocation_id = NEW.id AND closed = 0;"
               "END;"
               /* How far each meter is charged, and for how much: a charge is
                * whole seconds at the hourly price, floor(hourly * s / 3600),
                * computed so that it cannot overflow. */
               "CREATE VIEW allocation_usage AS SELECT allocation_id, user_id, "
               "  hourly_cost_micros, started_at, charged_to, "
               "  hourly_cost_micros / 3600 * ((charged_to - started_at) / 1000000) + "
               "  hourly_cost_micros % 3600 * ((charged_to - started_at) / 1000000) / 3600 "
               "  AS charged_micros FROM (SELECT m.allocation_id, m.user_id, "
               "  m.hourly_cost_micros, m.started_at, CASE WHEN m.closed = 1 OR m.synced = 0 "
               "  THEN m.charged_to ELSE MAX(m.started_at, MIN(COALESCE(m.ended_at, s.watermark), "
               "  s.watermark)) END AS charged_to FROM allocation_meters m, metering_state s);"
               "CREATE TABLE billing_alerts ("
               "  user_id TEXT PRIMARY KEY,"
               "  level INTEGER NOT NULL DEFAULT 0," /* thresholds crossed so far */
               "  exhausted_at INTEGER,"             /* balance at or below zero since */
               "  updated_at INTEGER NOT NULL"
               ") STRICT, WITHOUT ROWID;"
               "CREATE TABLE payment_sessions ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  user_id TEXT NOT NULL REFERENCES users(id),"
               "  amount_micros INTEGER NOT NULL,"
               "  currency TEXT NOT NULL DEFAULT 'usd',"
               "  state TEXT NOT NULL," /* pending, completed, expired, failed */
               "  provider TEXT NOT NULL DEFAULT 'stripe',"
               "  provider_session_id TEXT UNIQUE," /* cs_... */
               "  payment_intent TEXT,"
               "  checkout_url TEXT,"
               "  failure_reason TEXT,"
               "  refunded_micros INTEGER NOT NULL DEFAULT 0,"
               "  created_at INTEGER NOT NULL,"
               "  updated_at INTEGER NOT NULL,"
               "  completed_at INTEGER"
               ") STRICT;"
               "CREATE INDEX payment_sessions_user ON payment_sessions(user_id, seq);"
               "CREATE INDEX payment_sessions_intent ON payment_sessions(payment_intent);"
               "CREATE TABLE stripe_events ("
               "  id TEXT PRIMARY KEY," /* evt_..., Stripe's */
               "  type TEXT NOT NULL,"
               "  created INTEGER,"
               "  payment_session_id TEXT,"
               "  outcome TEXT NOT NULL,"
               "  received_at INTEGER NOT NULL"
               ") STRICT, WITHOUT ROWID;"
               "CREATE TABLE refunds ("
               "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
               "  id TEXT NOT NULL UNIQUE,"
               "  user_id TEXT NOT NULL REFERENCES users(id),"
               "  payment_id TEXT NOT NULL REFERENCES payment_sessions(id),"
               "  amount_micros INTEGER NOT NULL,"
               "  currency TEXT NOT NULL DEFAULT 'usd',"
               "  kind TEXT NOT NULL,"  /* provider_refund, internal_credit */
               "  state TEXT NOT NULL," /* pending, succeeded, failed */
               "  reason TEXT NOT NULL,"
               "  provider_refund_id TEXT UNIQUE," /* re_... */
               "  failure_reason TEXT,"
               "  created_at INTEGER NOT NULL,"
               "  updated_at INTEGER NOT NULL"
               ") STRICT;"
               "CREATE INDEX refunds_user ON refunds(user_id, seq);"
               "CREATE INDEX refunds_payment ON refunds(payment_id);",
    },
    {
        .version = 6,
        .name = "terminal_tokens",
        /* Owned by console-tokens.c: single-use console tokens, stored as
         * SHA-256 hashes, bound to a user and an allocation. */
        .sql = "CREATE TABLE terminal_tokens ("
               "  token_hash BLOB PRIMARY KEY,"
               "  user_id TEXT NOT NULL REFERENCES users(id),"
               "  allocation_id TEXT NOT NULL REFERENCES allocations(id),"
               "  created_at INTEGER NOT NULL,"
               "  expires_at INTEGER NOT NULL,"
               "  used_at INTEGER"
               ") STRICT, WITHOUT ROWID;"
               "CREATE INDEX terminal_tokens_expiry ON terminal_tokens(expires_at);",
    },
    {
        .version = 7,
        .name = "allocation_guards",
        /* Owned by allocations.c and tasks.c. A slot is held by at most one
         * allocation at a time, whatever the code above does (the launch's
         * guarded UPDATE is the first line, this the second); replies find
         * their task by node command. */
        .sql = "CREATE UNIQUE INDEX allocation_slots_held ON allocation_slots(slot_id) "
               "  WHERE state = 'held';"
               "CREATE INDEX tasks_command ON tasks(command_id);",
    },
    {
        .version = 8,
        .name = "usage_posting_held_totals",
        /* Owned by metering.c and ledger.c. Metered usage is posted to the
         * ledger per owner now and then (at an end, on a staggered schedule),
         * not every tick: a meter remembers how much of it is posted, and a
         * balance read subtracts the rest (metering_unposted). An account
         * caches what its pending holds reserve before metered usage counts
         * against them (held_micros: the uncaptured part, kept by triggers
         * like balance_micros), so a launch reads one row instead of summing
         * the holds. Up to this migration every tick posted all it charged. */
        .sql = "ALTER TABLE allocation_meters ADD COLUMN posted_micros INTEGER NOT NULL "
               "  DEFAULT 0;"
               "UPDATE allocation_meters SET posted_micros = (SELECT u.charged_micros FROM "
               "  allocation_usage u WHERE u.allocation_id = allocation_meters.allocation_id);"
               "DROP INDEX allocation_meters_open;"
               "CREATE INDEX allocation_meters_open ON allocation_meters(user_id, allocation_id, "
               "  hourly_cost_micros, started_at, ended_at, stopped, active, synced, charged_to, "
               "  posted_micros, closed) "
               "  WHERE closed = 0;"
               "ALTER TABLE ledger_accounts ADD COLUMN held_micros INTEGER NOT NULL DEFAULT 0;"
               "INSERT INTO ledger_accounts (id, user_id, held_micros, created_at) "
               "  SELECT 'user:' || user_id, user_id, SUM(MAX(amount_micros - captured_micros, 0)), "
               "  MIN(created_at) FROM ledger_holds WHERE state = 'pending' GROUP BY user_id "
               "  ON CONFLICT (id) DO UPDATE SET held_micros = excluded.held_micros;"
               /* What a hold reserves: its uncaptured part while pending. */
               "CREATE TRIGGER ledger_holds_held_i AFTER INSERT ON ledger_holds "
               "  WHEN NEW.state = 'pending' AND NEW.amount_micros > NEW.captured_micros BEGIN"
               "  INSERT INTO ledger_accounts (id, user_id, held_micros, created_at) VALUES "
               "  ('user:' || NEW.user_id, NEW.user_id, NEW.amount_micros - NEW.captured_micros, "
               "  NEW.created_at) ON CONFLICT (id) DO UPDATE SET held_micros = held_micros + "
               "  excluded.held_micros;"
               "END;"
               "CREATE TRIGGER ledger_holds_held_u AFTER UPDATE OF amount_micros, "
               "  captured_micros, state ON ledger_holds WHEN "
               "  (CASE WHEN NEW.state = 'pending' THEN MAX(NEW.amount_micros - "
               "  NEW.captured_micros, 0) ELSE 0 END) != (CASE WHEN OLD.state = 'pending' THEN "
               "  MAX(OLD.amount_micros - OLD.captured_micros, 0) ELSE 0 END) BEGIN"
               "  INSERT INTO ledger_accounts (id, user_id, held_micros, created_at) VALUES "
               "  ('user:' || NEW.user_id, NEW.user_id, (CASE WHEN NEW.state = 'pending' THEN "
               "  MAX(NEW.amount_micros - NEW.captured_micros, 0) ELSE 0 END) - (CASE WHEN "
               "  OLD.state = 'pending' THEN MAX(OLD.amount_micros - OLD.captured_micros, 0) "
               "  ELSE 0 END), NEW.updated_at) ON CONFLICT (id) DO UPDATE SET held_micros = "
               "  held_micros + excluded.held_micros;"
               "END;"
               "CREATE TRIGGER ledger_holds_owner_fixed BEFORE UPDATE OF user_id ON ledger_holds "
               "  WHEN NEW.user_id IS NOT OLD.user_id BEGIN"
               "  SELECT RAISE(ABORT, 'a hold belongs to one user');"
               "END;",
    },
};

const size_t db_n_migrations = sizeof(db_migrations) / sizeof(db_migrations[0]);
