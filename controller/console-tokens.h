/* SPDX-License-Identifier: MIT */
#pragma once

/* Terminal tokens: the credential of GET /api/v1/terminal. A browser cannot
 * put an Authorization header on a WebSocket, so the signed-in client first
 * asks for a token (POST /api/v1/allocations/{id}/terminal-token) and puts it
 * in the URL. Each token is random, stored only as its SHA-256 hash, bound
 * to one user and one allocation, valid for at most a minute and good for
 * one redemption. Owns the terminal_tokens table (migration 6). */

#include <stdint.h>

#include "db.h"
#include "id.h"
#include "timeutil.h"

#define TERMINAL_TOKEN_PREFIX "gst_"
#define TERMINAL_TOKEN_MAX    64

/* Stores a new token for user_id and allocation_id, valid ttl_s seconds from
 * now; writes the token itself (it exists nowhere else) and its expiry. */
int terminal_token_create(Db *db, const char *user_id, const char *allocation_id, unsigned ttl_s,
                          char token[static TERMINAL_TOKEN_MAX], usec_t *ret_expires_at);

/* Spends a token at time now. 0 with its user and allocation; -ENOENT
 * (unknown), -EALREADY (already spent), -EKEYEXPIRED (expired), -EIO. One
 * statement marks it spent, so two redemptions can never both succeed. */
int terminal_token_redeem(Db *db, const char *token, usec_t now, char user_id[static ID_MAX],
                          char allocation_id[static ID_MAX]);

/* Forgets tokens that expired before `before` (spent or not): they can only
 * be refused, and an unknown token is refused just the same. */
int terminal_tokens_prune(Db *db, usec_t before);
