/* SPDX-License-Identifier: MIT */
#pragma once

/* The simulated host's host operations: what `gpuslice-agent run --simulate`
 * does instead of slot_assign()/slot_teardown(). The same steps in the same
 * order, with the same reports and contract reasons, carried out on files in
 * a private directory, <state_dir>/simulated-host/, instead of sysfs and
 * rtnetlink (nothing on the machine is read or changed):
 *
 *   nics/<pf>.json         a NIC PF: total_vfs (SIMULATE_NIC_TOTAL_VFS), num_vfs,
 *                          hardware_macs (optional, see simulated_vf_hardware_mac)
 *   slots/<slot_id>.json   a slot: its functions and their bound drivers, the
 *                          VF config, the NVMe wipe method ("simulated"),
 *                          resets, state, timestamps
 *   faults                 fault injection, read by every step when it runs
 *
 * The VFs' own MACs are recorded where slot_assign() records them,
 * <spec->state_dir>/vf-baselines (vf-baseline.h), by the same code.
 *
 * faults holds one rule per line ('#' starts a comment):
 *
 *   <step>                 the step fails (its contract reason, e.g.
 *                          wipe_nvme -> nvme_wipe_failed)
 *   hang:<step>            the step sleeps until its timeout, then fails
 *                          with -ETIMEDOUT
 *   <rule>@<id>            only for that slot id or allocation id
 *
 * with <step> a slot_step_name() (create_vfs, configure_vf, bind_vf,
 * bind_nvme, bind_gpu, start_workload, stop_workload, reset, wipe_nvme,
 * reset_vf_config, rebind). The file is read again by each step, so removing
 * a line makes the next retry succeed. Every log line says simulated. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "slot-ops.h"

#define SIMULATED_HOST_DIR "simulated-host"

typedef struct SimulatedHost SimulatedHost;

/* Opens (creating, 0700) <state_dir>/simulated-host. */
int simulated_host_open(const char *state_dir, SimulatedHost **ret);
void simulated_host_free(SimulatedHost *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(SimulatedHost *, simulated_host_free);

const char *simulated_host_dir(const SimulatedHost *h);

/* slot_assign() and slot_teardown() on the simulated host. spec->hook must
 * be NULL (the runtime hook runs for real, outside the slot steps);
 * spec->root and spec->nic_ifname are not used. Not thread-safe: callers
 * serialize. */
int simulated_slot_assign(SimulatedHost *h, const SlotSpec *spec, SlotReport *rep);
int simulated_slot_teardown(SimulatedHost *h, const SlotSpec *spec, SlotReport *rep);

/* The fault rule for step, if any, applied: 0 when none matches id1 or id2
 * (either may be NULL); otherwise the injected failure, after sleeping
 * timeout_ms for a hang (-ETIMEDOUT), with a sentence in detail. For steps
 * that run outside the slot steps (the workload hook). */
int simulated_fault(SimulatedHost *h, SlotStep step, const char *id1, const char *id2,
                    unsigned timeout_ms, char *detail, size_t detail_len);

/* The name a simulated PF's netdev gets: "sim-enp<bus>s<dev>f<fn>". */
int simulated_nic_ifname(const char *pf, char **ret);

/* The simulated VF index of pf: its PCI address (after the PF's functions). */
int simulated_vf_address(const char *pf, unsigned index, char buf[static 16]);

/* The hardware MAC a simulated VF has (a network's "hardware" MAC policy
 * keeps it): 00:5a:<bus>:<dev << 3 | fn>:00:<index> of its PF, unless
 * nics/<pf>.json names another in "hardware_macs": {"<index>": "aa:..."}
 * (a zero one makes the assignment fail, as on a PF that gives VFs none).
 * It is what the VF reports until a MAC is set on it; from then on, as on a
 * real PF, the last MAC set (the zero one too). Teardown sets the MAC first
 * seen (vf-baseline.h), so the hardware MAC comes back after a "generated"
 * allocation. */
int simulated_vf_hardware_mac(const char *pf, unsigned index, uint8_t ret[6]);

/* The runtime hooks shipped with the agent (hooks/ of the source tree):
 * beside the binary in the build tree (../hooks), under ../libexec/gpuslice/
 * hooks of an installed binary, then the configured hook directory.
 * Malloc'ed path, or -ENOENT. */
int simulated_default_hook_dir(char **ret);

#define SIMULATED_DEFAULT_HOOK "simulated-shell"
