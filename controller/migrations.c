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
               "  state_hash BLOB PRIMARY KEY,"  /* SHA-256 of the state */
               "  binder_hash BLOB NOT NULL,"    /* SHA-256 of the browser cookie */
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
};

const size_t db_n_migrations = sizeof(db_migrations) / sizeof(db_migrations[0]);
