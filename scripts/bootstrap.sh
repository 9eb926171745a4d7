#!/usr/bin/env bash
# Enrolls this host as a gpuslice GPU node (docs/operations.md, "Enroll a GPU host").
#
#   scripts/bootstrap.sh --controller URL --token TOKEN [--prefix DIR] [--dry-run] [--simulate]
#                        [--simulate-topology FILE] [--agent-bin PATH] [--cacert FILE] [--start]
#
# Run as root on the host. It checks what a slice node needs (IOMMU, vfio-pci,
# SR-IOV capable devices), makes the node's private key and a CSR with openssl
# (the key never leaves the host), enrolls at POST /api/v1/agent/enroll, writes
# the agent's config, key (0600) and certificates, then installs and starts
# gpuslice-agent.service. A second run on an enrolled host changes nothing.
#
#   --prefix DIR   install under DIR (DIR/etc/gpuslice/agent.conf, DIR/var/lib/
#                  gpuslice-agent), never call systemctl, and print the command
#                  that starts the agent; --start also starts it in the
#                  background (log DIR/var/log/gpuslice-agent.log, pid
#                  DIR/run/gpuslice-agent.pid)
#   --dry-run      run the checks and print every action without doing any
#                  (no network call, no file written)
#   --simulate     enroll a simulated host (no hardware checks; the agent runs
#                  --simulate on a real machine's topology, marked simulated)
#   --agent-bin    the gpuslice-agent binary (default $GPUSLICE_AGENT_BIN, else
#                  /usr/sbin/gpuslice-agent)
#   --cacert FILE  CA bundle that verifies an https controller URL
#
# Exit status: 0 enrolled (or already enrolled), 1 a check or the enrollment
# failed (the message says what to do next), 2 bad usage.
# For tests, BOOTSTRAP_SYS and BOOTSTRAP_PROC replace /sys and /proc in the checks.
set -euo pipefail

prog=bootstrap.sh
controller="" token="" prefix="" dry_run=0 simulate=0 start=0 topology="" cacert=""
agent_bin=${GPUSLICE_AGENT_BIN:-/usr/sbin/gpuslice-agent}
sys=${BOOTSTRAP_SYS:-/sys}
proc=${BOOTSTRAP_PROC:-/proc}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf '%s\n' "$*"; }
fail() { # fail "what went wrong" "what to do next"
        printf '%s: error: %s\n' "$prog" "$1" >&2
        [ -n "${2:-}" ] && printf '%s: next: %s\n' "$prog" "$2" >&2
        exit 1
}
usage_error() {
        printf '%s: %s\n' "$prog" "$1" >&2
        printf 'usage: %s --controller URL --token TOKEN [--prefix DIR] [--dry-run] [--simulate]\n' "$prog" >&2
        exit 2
}

while [ $# -gt 0 ]; do
        case $1 in
        --controller) [ $# -ge 2 ] || usage_error "--controller needs a URL"; controller=$2; shift 2 ;;
        --controller=*) controller=${1#*=}; shift ;;
        --token) [ $# -ge 2 ] || usage_error "--token needs a value"; token=$2; shift 2 ;;
        --token=*) token=${1#*=}; shift ;;
        --prefix) [ $# -ge 2 ] || usage_error "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --agent-bin) [ $# -ge 2 ] || usage_error "--agent-bin needs a path"; agent_bin=$2; shift 2 ;;
        --agent-bin=*) agent_bin=${1#*=}; shift ;;
        --simulate-topology) [ $# -ge 2 ] || usage_error "--simulate-topology needs a file"; topology=$2; shift 2 ;;
        --simulate-topology=*) topology=${1#*=}; shift ;;
        --cacert) [ $# -ge 2 ] || usage_error "--cacert needs a file"; cacert=$2; shift 2 ;;
        --cacert=*) cacert=${1#*=}; shift ;;
        --dry-run) dry_run=1; shift ;;
        --simulate) simulate=1; shift ;;
        --start) start=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
        esac
done
[ -n "$controller" ] || usage_error "--controller URL is required"
[ -n "$token" ] || usage_error "--token TOKEN is required (an admin gets one from POST /api/v1/admin/nodes)"
case $controller in
http://* | https://*) controller=${controller%/} ;;
*) usage_error "--controller must be an http:// or https:// URL, got '$controller'" ;;
esac
[ "$start" = 1 ] && [ -z "$prefix" ] && usage_error "--start is for --prefix installs (without --prefix systemd starts the agent)"
if [ -n "$prefix" ]; then
        case $prefix in /*) ;; *) prefix=$(pwd)/$prefix ;; esac
        prefix=${prefix%/}
fi

etc=$prefix/etc/gpuslice
state=$prefix/var/lib/gpuslice-agent
conf=$etc/agent.conf
key=$etc/node.key
cert=$etc/node.crt
ca=$etc/ca.crt

# ---- already enrolled? ----
conf_get() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$conf" 2>/dev/null | tail -n 1; }
if [ -f "$conf" ] && [ -s "$cert" ]; then
        enrolled_node=$(conf_get node_id)
        enrolled_url=$(conf_get controller_url)
        if [ "$enrolled_url" = "$controller" ] && [ -n "$enrolled_node" ]; then
                say "already enrolled as $enrolled_node with $controller (config $conf); nothing changed"
                exit 0
        fi
        fail "this host is enrolled with another controller ($enrolled_url, node ${enrolled_node:-unknown}; config $conf)" \
                "to re-enroll, stop the agent and remove $conf $cert $key $ca (the old node can then be deleted on its controller), then run this again with a new token"
fi

# ---- checks ----
failed=0
check() { # check "name" ok|FAILED "what to do"
        if [ "$2" = ok ]; then say "check: $1 ... ok"; else
                say "check: $1 ... FAILED ($3)"
                failed=1
        fi
}
have() { command -v "$1" > /dev/null 2>&1; }

if [ -z "$prefix" ] && [ "$(id -u)" != 0 ] && [ "$dry_run" = 0 ]; then
        fail "must run as root to install under / (it writes /etc/gpuslice and starts a systemd unit)" \
                "run it with sudo, or pass --prefix DIR to install under DIR without systemd"
fi
for tool in openssl curl; do
        if have "$tool"; then check "$tool is installed" ok; else check "$tool is installed" FAILED "apt-get install $tool"; fi
done
if have jq || have python3; then check "jq or python3 is installed (JSON)" ok
else check "jq or python3 is installed (JSON)" FAILED "apt-get install jq"; fi
if [ -x "$agent_bin" ]; then check "gpuslice-agent at $agent_bin" ok
else check "gpuslice-agent at $agent_bin" FAILED "install the gpuslice-agent package, or pass --agent-bin PATH / set GPUSLICE_AGENT_BIN"; fi

if [ "$simulate" = 1 ]; then
        say "check: IOMMU, vfio-pci, SR-IOV ... skipped (--simulate: a simulated host, nothing on this machine is used)"
else
        if [ -n "$(ls -A "$sys/kernel/iommu_groups" 2> /dev/null)" ] ||
                grep -qE '(intel_iommu=on|amd_iommu=on|iommu=pt)' "$proc/cmdline" 2> /dev/null; then
                check "IOMMU enabled" ok
        else
                check "IOMMU enabled" FAILED "enable VT-d / AMD-Vi in the firmware and add intel_iommu=on iommu=pt (or amd_iommu=on) to the kernel command line, then reboot"
        fi
        if [ -d "$sys/bus/pci/drivers/vfio-pci" ] || [ -d "$sys/module/vfio_pci" ] ||
                { [ "$sys" = /sys ] && modinfo vfio-pci > /dev/null 2>&1; }; then
                check "vfio-pci available" ok
        else
                check "vfio-pci available" FAILED "install a kernel with the vfio-pci module (Debian's linux-image-amd64 has it): modprobe vfio-pci must work"
        fi
        sriov=""
        for f in "$sys"/bus/pci/devices/*/sriov_totalvfs; do
                [ -r "$f" ] || continue
                n=$(cat "$f" 2> /dev/null || echo 0)
                if [ "${n:-0}" -gt 0 ] 2> /dev/null; then sriov="$sriov $(basename "$(dirname "$f")")"; fi
        done
        if [ -n "$sriov" ]; then check "SR-IOV capable devices present:$sriov" ok
        else check "SR-IOV capable devices present" FAILED "enable SR-IOV in the firmware and in the NIC's firmware (e.g. mlxconfig set SRIOV_EN=1 NUM_OF_VFS=16), then reboot"; fi
fi
if [ "$failed" = 1 ]; then
        fail "a check failed; nothing was changed" "fix the checks marked FAILED above and run this again (the token is still unused)"
fi

# ---- plan ----
# GPUSLICE_AGENT_BIN is this script's; the agent refuses unknown GPUSLICE_AGENT_* keys.
run_cmd=("$agent_bin" run --config "$conf")
[ "$simulate" = 1 ] && run_cmd+=(--simulate)
if [ "$dry_run" = 1 ]; then
        say "would: create $etc (0755) and $state (0700)"
        say "would: generate the node key $key (EC P-256, 0600) with openssl genpkey; it never leaves this host"
        say "would: make a certificate signing request with openssl req -new"
        say "would: POST $controller/api/v1/agent/enroll {bootstrap_token, csr_pem, facts}"
        say "would: write $cert, $ca and $conf"
        if [ -n "$prefix" ]; then
                if [ "$start" = 1 ]; then say "would: start ${run_cmd[*]} in the background"
                else say "would: print the command that starts the agent: ${run_cmd[*]}"; fi
        else
                say "would: install /etc/systemd/system/gpuslice-agent.service and run systemctl daemon-reload, systemctl enable --now gpuslice-agent"
        fi
        say "dry run: nothing was done"
        exit 0
fi

# ---- JSON helpers (jq, else python3) ----
json_body() { # token csr_file facts_json -> request body on stdout
        if have jq; then
                jq -nc --arg t "$1" --rawfile c "$2" --argjson f "$3" '{bootstrap_token:$t, csr_pem:$c, facts:$f}'
        else
                python3 -c 'import json,sys; print(json.dumps({"bootstrap_token":sys.argv[1],"csr_pem":open(sys.argv[2]).read(),"facts":json.loads(sys.argv[3])}))' "$1" "$2" "$3"
        fi
}
json_get() { # file dotted.key -> value ("" when absent)
        if have jq; then
                jq -r --arg k "$2" 'try (getpath($k | split("."))) catch null | if . == null then "" else . end' "$1" 2> /dev/null || true
        else
                python3 -c '
import json,sys
try:
    v=json.load(open(sys.argv[1]))
    for k in sys.argv[2].split("."): v=v[k]
    print("" if v is None else v)
except Exception: print("")' "$1" "$2"
        fi
}

# ---- key and CSR ----
umask 077
mkdir -p "$etc" "$state"
chmod 0755 "$etc" 2> /dev/null || true
chmod 0700 "$state"
work=$(mktemp -d "$etc/.enroll.XXXXXX")
trap 'rm -rf "$work"' EXIT
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/node.key" 2> "$work/err" ||
        fail "openssl could not make the node key: $(cat "$work/err")" "check that openssl 3 is installed (apt-get install openssl)"
chmod 0600 "$work/node.key"
openssl req -new -key "$work/node.key" -subj "/CN=$(hostname)" -out "$work/node.csr" 2> "$work/err" ||
        fail "openssl could not make the CSR: $(cat "$work/err")" "check that openssl 3 is installed"
say "made the node key (EC P-256, stays on this host) and a certificate signing request"

# ---- facts ----
facts=""
if [ -x "$agent_bin" ]; then
        fargs=(facts)
        [ "$simulate" = 1 ] && fargs+=(--simulate)
        [ -n "$topology" ] && fargs+=(--simulate-topology "$topology")
        facts=$(env -u GPUSLICE_AGENT_BIN "$agent_bin" "${fargs[@]}" 2> "$work/err") || facts=""
fi
if [ -z "$facts" ]; then
        sim=false
        [ "$simulate" = 1 ] && sim=true
        facts="{\"hostname\":\"$(hostname)\",\"kernel\":\"$(uname -r)\",\"agent_version\":null,\"simulated\":$sim,\"fingerprint\":null}"
fi

# ---- enroll ----
json_body "$token" "$work/node.csr" "$facts" > "$work/body.json"
curl_args=(-sS -X POST -H 'Content-Type: application/json' --data-binary "@$work/body.json"
        -o "$work/resp.json" -w '%{http_code}' --connect-timeout 10 --max-time 60)
[ -n "$cacert" ] && curl_args+=(--cacert "$cacert")
say "enrolling at $controller/api/v1/agent/enroll"
status=$(curl "${curl_args[@]}" "$controller/api/v1/agent/enroll" 2> "$work/err") || status=000
code=$(json_get "$work/resp.json" error.code)
message=$(json_get "$work/resp.json" error.message)
case $status in
200 | 201) ;;
000) fail "cannot reach the controller at $controller: $(cat "$work/err")" \
        "check the URL and that this host can reach it (firewall, DNS); for https with a private CA pass --cacert FILE" ;;
401) fail "the controller refused the bootstrap token (401 ${code:-unauthenticated}: ${message:-no message})" \
        "bootstrap tokens are single use and expire: ask an admin for a new one (POST /api/v1/admin/nodes, or the node's page) and run this again" ;;
400) fail "the controller refused the request (400 ${code:-invalid_request}: ${message:-no message})" \
        "this script and the controller may be different versions; upgrade gpuslice on this host" ;;
409) fail "the controller refused the enrollment (409 ${code:-conflict}: ${message:-no message})" \
        "the node may be enrolled already or disabled: ask an admin to check it, or for a new node and token" ;;
*) fail "enrollment failed with HTTP $status (${code:-no code}: ${message:-$(head -c 300 "$work/resp.json" 2> /dev/null)})" \
        "try again later; if it persists, give this output to the controller's admin" ;;
esac
node_id=$(json_get "$work/resp.json" node_id)
endpoint=$(json_get "$work/resp.json" agent_endpoint)
json_get "$work/resp.json" certificate_pem > "$work/node.crt"
json_get "$work/resp.json" ca_pem > "$work/ca.crt"
if [ -z "$node_id" ] || [ -z "$endpoint" ] || ! grep -q 'BEGIN CERTIFICATE' "$work/node.crt" ||
        ! grep -q 'BEGIN CERTIFICATE' "$work/ca.crt"; then
        fail "the controller's answer lacks node_id, agent_endpoint or certificates" \
                "this script and the controller may be different versions; upgrade gpuslice on this host"
fi
openssl verify -CAfile "$work/ca.crt" "$work/node.crt" > /dev/null 2>&1 ||
        fail "the certificate the controller issued does not verify against its CA" "give this output to the controller's admin"

# ---- install ----
{
        printf '# gpuslice agent: written by scripts/bootstrap.sh on %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'controller_url = %s\n' "$controller"
        printf 'agent_endpoint = %s\n' "$endpoint"
        printf 'node_id = %s\n' "$node_id"
        printf 'key_file = %s\n' "$key"
        printf 'cert_file = %s\n' "$cert"
        printf 'ca_file = %s\n' "$ca"
        printf 'state_dir = %s\n' "$state"
        if [ "$simulate" = 1 ]; then printf 'simulate = true\n'; fi
        if [ -n "$topology" ]; then printf 'simulate_topology = %s\n' "$topology"; fi
} > "$work/agent.conf"
chmod 0600 "$work/node.key"
chmod 0644 "$work/node.crt" "$work/ca.crt" "$work/agent.conf"
# The config goes last: its presence (with the certificate) means "enrolled".
mv -f "$work/node.key" "$key"
mv -f "$work/node.crt" "$cert"
mv -f "$work/ca.crt" "$ca"
mv -f "$work/agent.conf" "$conf"
say "enrolled as $node_id; wrote $conf, $key (0600), $cert, $ca"

if [ -n "$prefix" ]; then
        if [ "$start" = 1 ]; then
                mkdir -p "$prefix/var/log" "$prefix/run"
                nohup env -u GPUSLICE_AGENT_BIN "${run_cmd[@]}" >> "$prefix/var/log/gpuslice-agent.log" 2>&1 < /dev/null &
                echo $! > "$prefix/run/gpuslice-agent.pid"
                say "started the agent (pid $!, log $prefix/var/log/gpuslice-agent.log)"
        else
                say "start the agent with:"
                say "  ${run_cmd[*]}"
        fi
        exit 0
fi

unit_src=""
for u in "$script_dir/../systemd/gpuslice-agent.service" /usr/lib/systemd/system/gpuslice-agent.service \
        /usr/share/gpuslice/systemd/gpuslice-agent.service; do
        if [ -f "$u" ]; then unit_src=$u; break; fi
done
[ -n "$unit_src" ] || fail "gpuslice-agent.service not found (looked beside this script and in /usr/lib/systemd/system)" \
        "install the gpuslice-agent package, then run this again (the host is enrolled; this run will only install the unit)"
if [ "$unit_src" != /usr/lib/systemd/system/gpuslice-agent.service ]; then
        install -m 0644 "$unit_src" /etc/systemd/system/gpuslice-agent.service
fi
if [ "$simulate" = 1 ]; then
        mkdir -p /etc/systemd/system/gpuslice-agent.service.d
        printf '[Service]\nEnvironment=GPUSLICE_AGENT_SIMULATE=true\n' > /etc/systemd/system/gpuslice-agent.service.d/simulate.conf
fi
systemctl daemon-reload || fail "systemctl daemon-reload failed" "check 'systemctl status' and the journal"
systemctl enable --now gpuslice-agent.service ||
        fail "could not start gpuslice-agent.service" "see 'journalctl -u gpuslice-agent' for why; the host is enrolled, so fix that and run 'systemctl start gpuslice-agent'"
say "installed and started gpuslice-agent.service (journalctl -u gpuslice-agent follows it)"
