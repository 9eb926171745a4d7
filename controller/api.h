/* SPDX-License-Identifier: MIT */
#pragma once

/* Every API handler, grouped by the file (API area) that implements it. */

#include "http.h"

/* api-health.c */
int api_health(Request *r);
int api_ready(Request *r);

/* api-auth.c */
int api_auth_signup(Request *r);
int api_auth_login(Request *r);
int api_auth_refresh(Request *r);
int api_auth_logout(Request *r);
int api_me(Request *r);

/* api-oidc.c */
int api_oidc_authorize(Request *r);
int api_oidc_exchange(Request *r);

/* api-nodes.c */
int api_nodes_list(Request *r);
int api_nodes_create(Request *r);
int api_nodes_get(Request *r);
int api_nodes_delete(Request *r);
int api_nodes_slots(Request *r);
int api_nodes_discovery(Request *r);
int api_nodes_candidate(Request *r);
int api_nodes_approve(Request *r);

/* api-audit.c */
int api_audit_list(Request *r);

/* api-allocations.c */
int api_allocations_quote(Request *r);
int api_allocations_create(Request *r);
int api_allocations_list(Request *r);
int api_allocations_get(Request *r);
int api_allocations_release(Request *r);
int api_tasks_get(Request *r);
int api_admin_allocations_list(Request *r);
int api_admin_allocations_force_release(Request *r);
int api_admin_slots_verify(Request *r);

/* api-agent.c */
int api_agent_enroll(Request *r);

/* api-catalog.c */
int api_catalog_skus(Request *r);
int api_catalog_images(Request *r);
int api_catalog_networks(Request *r);
int api_admin_skus_list(Request *r);
int api_admin_skus_create(Request *r);
int api_admin_skus_get(Request *r);
int api_admin_skus_update(Request *r);
int api_admin_skus_delete(Request *r);
int api_admin_images_list(Request *r);
int api_admin_images_create(Request *r);
int api_admin_images_get(Request *r);
int api_admin_images_update(Request *r);
int api_admin_images_delete(Request *r);
int api_admin_networks_list(Request *r);
int api_admin_networks_create(Request *r);
int api_admin_networks_get(Request *r);
int api_admin_networks_update(Request *r);
int api_admin_networks_delete(Request *r);

/* api-ssh-keys.c */
int api_ssh_keys_list(Request *r);
int api_ssh_keys_add(Request *r);
int api_ssh_keys_delete(Request *r);

/* api-config.c */
int api_config(Request *r);

/* api-events.c */
int api_events_list(Request *r);

/* api-console.c */
int api_terminal_token(Request *r);
int api_terminal(Request *r);

/* api-billing.c */
int api_billing_balance(Request *r);
int api_billing_checkout(Request *r);
int api_billing_webhook_stripe(Request *r);
int api_billing_usage(Request *r);
int api_billing_payments(Request *r);
int api_billing_refunds_list(Request *r);
int api_billing_refunds_create(Request *r);

/* api-admin-billing.c */
int api_admin_user_credits(Request *r);
int api_admin_payment_sessions(Request *r);
int api_admin_users(Request *r);
