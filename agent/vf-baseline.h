/* SPDX-License-Identifier: MIT */
#pragma once

/* A VF's own MAC, as the agent first saw it, kept so that teardown can give
 * it back. Teardown parks a VF in its baseline (vf_config_baseline()); with
 * the zero MAC there, a NIC whose PF reports a firmware-assigned VF MAC
 * would lose it at the first release, and a network whose mac_policy is
 * "hardware" could use that VF only once. So the first time the agent
 * configures a VF, before it sets anything, it records the MAC the VF has
 * then (zero when the PF gives it none), and teardown restores that MAC.
 *
 * One small JSON file per VF, <state_dir>/vf-baselines/<pf>-vf<index>.json
 * ({pf, vf_index, mac, recorded_at}), keyed by the PF's PCI address (stable
 * across reboots, unlike its netdev name). A record is written once and
 * never replaced: it is written whole to a temporary file, synced, and
 * linked into place, which fails when one is there already; a later read
 * (the VF may carry a tenant's MAC by then) never overwrites it. Removing
 * the file (a replaced NIC) makes the next configuration learn it again.
 * Callers serialize (one allocation command at a time). */

#include <stdbool.h>
#include <stdint.h>

#include "vf-config.h"

#define VF_BASELINE_DIR "vf-baselines"

/* The record's path; -EINVAL for a PF that is not a canonical PCI address. */
int vf_baseline_path(const char *state_dir, const char *pf, unsigned index, char **ret);

/* The recorded MAC: 0, -ENOENT when none is recorded, -EBADMSG for a file
 * that is not a record of this VF. */
int vf_baseline_load(const char *state_dir, const char *pf, unsigned index, uint8_t ret[6]);

/* 1 when a record of the VF exists (readable or not), 0 when none, -errno:
 * whether the caller still has to read the VF for vf_baseline_first_sight(). */
int vf_baseline_recorded(const char *state_dir, const char *pf, unsigned index);

/* First sight of a VF about to be configured with want: records seen (the
 * MAC it has now) unless a record exists. 1 when recorded, 0 when one was
 * there already (kept as it is) or nothing is recorded because the VF
 * already carries want's MAC: then seen is a MAC the agent set itself before
 * it could record (an older agent, or a state directory that was lost), not
 * the VF's own, and teardown falls back to the zero MAC. -errno otherwise.
 * Creates state_dir and <state_dir>/vf-baselines (0700) when missing. */
int vf_baseline_first_sight(const char *state_dir, const char *pf, unsigned index,
                            const uint8_t seen[6], const VfConfig *want);

/* Teardown's target: vf_config_baseline() with the recorded MAC. 0, or
 * -ENOENT / -EBADMSG (logged) with the zero MAC, as before records existed. */
int vf_baseline_config(const char *state_dir, const char *pf, unsigned index, VfConfig *ret);
