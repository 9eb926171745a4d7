/* SPDX-License-Identifier: MIT */
#include "settings.h"

#include "macro.h"

const ConfigKey agent_settings[] = {
    {"controller_url", CONFIG_STRING, NULL, 0, 0,
     "the controller's API base URL (where the node enrolled)"},
    {"agent_endpoint", CONFIG_STRING, NULL, 0, 0,
     "tls+tcp://HOST:PORT the agent dials (the enroll response's agent_endpoint)"},
    {"node_id", CONFIG_STRING, NULL, 0, 0, "this node's id (nod_...), from enrollment"},
    {"key_file", CONFIG_STRING, "/etc/gpuslice/node.key", 0, 0,
     "the node's private key (PEM, never leaves the host)"},
    {"cert_file", CONFIG_STRING, "/etc/gpuslice/node.crt", 0, 0,
     "the node's certificate (PEM), signed by the controller's CA"},
    {"ca_file", CONFIG_STRING, "/etc/gpuslice/ca.crt", 0, 0,
     "the controller's CA certificate (PEM); the controller's server certificate must chain to it"},
    {"server_name", CONFIG_STRING, NULL, 0, 0,
     "name the controller's certificate must carry (default: the endpoint's host)"},
    {"state_dir", CONFIG_STRING, "/var/lib/gpuslice-agent", 0, 0,
     "directory for the journal of applied commands and assignments"},
    {"sysfs_root", CONFIG_STRING, NULL, 0, 0,
     "discover from a sysfs snapshot rooted here instead of the live host"},
    {"hwloc_xml", CONFIG_STRING, NULL, 0, 0,
     "discover from this hwloc XML export instead of the live host"},
    {"simulate", CONFIG_BOOL, "false", 0, 0,
     "run against a simulated host made from simulate_topology (touches nothing real)"},
    {"simulate_topology", CONFIG_STRING, NULL, 0, 0,
     "hwloc XML the simulated host is made from (default: the LLNL Tioga topology installed "
     "with the agent)"},
    {"heartbeat_interval_s", CONFIG_INT, "5", 1, 3600,
     "seconds between heartbeats until the controller's welcome says otherwise"},
    {"heartbeat_timeout_s", CONFIG_INT, "15", 1, 3600,
     "redial when no heartbeat ack (or challenge/welcome) arrives for this long"},
    {"log_level", CONFIG_STRING, "info", 0, 0, "error, warning, info or debug"},
    {"hook", CONFIG_STRING, NULL, 0, 0,
     "runtime hook (a file in hook_dir) that runs an allocation's workload (default: none, "
     "so no workload is started; with --simulate the shipped simulated-shell)"},
    {"hook_dir", CONFIG_STRING, NULL, 0, 0,
     "directory of runtime hooks (default: /etc/gpuslice/hooks; with --simulate the hooks "
     "shipped with the agent)"},
    {"runtime_dir", CONFIG_STRING, NULL, 0, 0,
     "where each allocation gets a directory its hook owns (default: state_dir/runtime)"},
    {"public_address", CONFIG_STRING, NULL, 0, 0,
     "host name or address tenants reach this node at over SSH when the hook names none "
     "(default: the host name)"},
    {"gpu_host_driver", CONFIG_STRING, NULL, 0, 0,
     "driver GPUs go back to after a teardown (default: they stay on vfio-pci)"},
    {"step_timeout_s", CONFIG_INT, "30", 1, 3600,
     "bound of one host step of a slot (a sysfs write, a reset, a bind)"},
    {"hook_timeout_s", CONFIG_INT, "300", 1, 3600, "bound of one run of the runtime hook"},
    {"wipe_timeout_s", CONFIG_INT, "3600", 1, 86400, "bound of one NVMe drive's wipe"},
};

const size_t agent_n_settings = ELEMENTSOF(agent_settings);

int agent_config_new(Config **ret)
{
        /* GPUSLICE_AGENT_LISTEN is the controller's agent_listen (the contract
         * names controller keys GPUSLICE_<KEY>): not ours to refuse when both
         * daemons share an environment, as under scripts/run.sh. */
        return config_new(agent_settings, agent_n_settings, "GPUSLICE_AGENT_",
                          "GPUSLICE_AGENT_LISTEN=", ret);
}
