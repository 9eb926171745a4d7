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
};

const size_t db_n_migrations = sizeof(db_migrations) / sizeof(db_migrations[0]);
