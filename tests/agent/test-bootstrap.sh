#!/usr/bin/env bash
# scripts/bootstrap.sh against a fake enroll endpoint (a few lines of python
# that sign the CSR with a test CA, as the controller's does): --dry-run does
# nothing, failing checks stop with the next step, --prefix writes the
# documented layout with a 0600 key that never left the host, a second run
# changes nothing, refused tokens and unreachable controllers say what to do.
# usage: test-bootstrap.sh SOURCE_ROOT BUILD_ROOT TAP_FILE
set -uo pipefail
src=$1 build=$2 tap=$3
script=$src/scripts/bootstrap.sh
agent=$build/agent/gpuslice-agent
tmp=$(mktemp -d /tmp/gpuslice-bootstrap-XXXXXX)
server_pid=""
cleanup() {
        [ -n "$server_pid" ] && kill "$server_pid" 2> /dev/null
        [ -f "$tmp/started/run/gpuslice-agent.pid" ] && kill "$(cat "$tmp/started/run/gpuslice-agent.pid")" 2> /dev/null
        [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
: > "$tap"
n=0 failed=0
result() { # result ok|not-ok name [diagnostic]
        n=$((n + 1))
        if [ "$1" = ok ]; then echo "ok $n - $2" >> "$tap"; else
                echo "not ok $n - $2" >> "$tap"; failed=1
                [ -n "${3:-}" ] && sed 's/^/# /' <<< "$3" >> "$tap" && echo "$2: $3" >&2
        fi
}
expect() { # expect name condition-command... (diagnostic from $out)
        local name=$1; shift
        if "$@"; then result ok "$name"; else result not-ok "$name" "${out:-}"; fi
}
has() { grep -qF -- "$1" <<< "$out"; }

# ---- a test CA and a fake enroll endpoint ----
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca.key" 2> /dev/null
openssl req -x509 -new -key "$tmp/ca.key" -subj /CN=test-ca -days 2 -out "$tmp/ca.crt" 2> /dev/null
cat > "$tmp/server.py" << 'PY'
import http.server, json, subprocess, sys, os, tempfile
tmp = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(os.path.join(tmp, "requests.log"), "ab") as f:
            f.write(body + b"\n")
        req = json.loads(body)
        if self.path != "/api/v1/agent/enroll":
            return self.reply(404, {"error": {"code": "not_found", "message": "no route"}})
        if req["bootstrap_token"] != "good":
            return self.reply(401, {"error": {"code": "unauthenticated", "message": "bootstrap token already used", "details": {}, "request_id": "r1"}})
        with tempfile.TemporaryDirectory() as d:
            open(d + "/c.csr", "w").write(req["csr_pem"])
            subprocess.run(["openssl", "x509", "-req", "-in", d + "/c.csr", "-CA", tmp + "/ca.crt", "-CAkey", tmp + "/ca.key",
                            "-CAcreateserial", "-days", "2", "-subj", "/CN=nod_TESTTESTTESTTESTTESTTE", "-out", d + "/c.crt"],
                           check=True, capture_output=True)
            cert = open(d + "/c.crt").read()
        self.reply(201, {"node_id": "nod_TESTTESTTESTTESTTESTTE", "certificate_pem": cert,
                         "ca_pem": open(tmp + "/ca.crt").read(), "agent_endpoint": "tls+tcp://127.0.0.1:1"})
    def reply(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(os.path.join(tmp, "port"), "w").write(str(s.server_port))
s.serve_forever()
PY
python3 "$tmp/server.py" "$tmp" &
server_pid=$!
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.1; done
url=http://127.0.0.1:$(cat "$tmp/port")
requests() { [ -f "$tmp/requests.log" ] && grep -c . "$tmp/requests.log" || echo 0; }
run() { out=$(GPUSLICE_AGENT_BIN=$agent "$script" "$@" 2>&1); rc=$?; }

# ---- usage ----
run --controller "$url"
expect "a missing token is a usage error (exit 2) naming the option" eval '[ $rc = 2 ] && has "--token"'

# ---- dry run ----
run --controller "$url" --token good --prefix "$tmp/dry" --simulate --dry-run
expect "--dry-run exits 0" eval '[ $rc = 0 ]'
expect "--dry-run prints every action" eval 'has "would: generate the node key" && has "would: POST $url/api/v1/agent/enroll" && has "would: print the command that starts the agent: $agent run --config $tmp/dry/etc/gpuslice/agent.conf --simulate"'
expect "--dry-run writes nothing and calls nothing" eval '[ ! -e "$tmp/dry" ] && [ "$(requests)" = 0 ]'
expect "--simulate skips the hardware checks and says so" eval 'has "skipped (--simulate"'

# ---- hardware checks on fake /sys and /proc ----
mkdir -p "$tmp/bare/sys" "$tmp/bare/proc" && echo "root=/dev/sda1 ro" > "$tmp/bare/proc/cmdline"
out=$(BOOTSTRAP_SYS=$tmp/bare/sys BOOTSTRAP_PROC=$tmp/bare/proc GPUSLICE_AGENT_BIN=$agent "$script" --controller "$url" --token good --prefix "$tmp/bare/inst" 2>&1); rc=$?
expect "a host without IOMMU, vfio-pci or SR-IOV is refused (exit 1)" eval '[ $rc = 1 ]'
expect "each failed check says what to do" eval 'has "check: IOMMU enabled ... FAILED (enable VT-d" && has "check: vfio-pci available ... FAILED" && has "check: SR-IOV capable devices present ... FAILED (enable SR-IOV"'
expect "failed checks change nothing and keep the token unused" eval '[ ! -e "$tmp/bare/inst/etc/gpuslice/node.key" ] && [ "$(requests)" = 0 ] && has "the token is still unused"'
mkdir -p "$tmp/good/sys/kernel/iommu_groups/0" "$tmp/good/sys/bus/pci/drivers/vfio-pci" "$tmp/good/sys/bus/pci/devices/0000:41:00.0" "$tmp/good/proc"
echo 16 > "$tmp/good/sys/bus/pci/devices/0000:41:00.0/sriov_totalvfs"; echo "intel_iommu=on" > "$tmp/good/proc/cmdline"
out=$(BOOTSTRAP_SYS=$tmp/good/sys BOOTSTRAP_PROC=$tmp/good/proc GPUSLICE_AGENT_BIN=$agent "$script" --controller "$url" --token good --prefix "$tmp/good/inst" --dry-run 2>&1); rc=$?
expect "a host with IOMMU, vfio-pci and an SR-IOV NIC passes the checks" eval '[ $rc = 0 ] && has "check: IOMMU enabled ... ok" && has "check: vfio-pci available ... ok" && has "check: SR-IOV capable devices present: 0000:41:00.0 ... ok"'

# ---- refused token ----
run --controller "$url" --token spent --prefix "$tmp/spent" --simulate
expect "a refused token exits 1 with the code and the next step" eval '[ $rc = 1 ] && has "401 unauthenticated: bootstrap token already used" && has "ask an admin for a new one"'
expect "a refused enrollment leaves no key, certificate or config" eval '[ -z "$(find "$tmp/spent" -type f 2>/dev/null)" ]'

# ---- unreachable controller ----
run --controller http://127.0.0.1:1 --token good --prefix "$tmp/unreach" --simulate
expect "an unreachable controller exits 1 and says what to check" eval '[ $rc = 1 ] && has "cannot reach the controller" && has "next: check the URL"'

# ---- enroll under a prefix ----
before=$(requests)
run --controller "$url" --token good --prefix "$tmp/inst" --simulate
p=$tmp/inst/etc/gpuslice
expect "--simulate --prefix enrolls (exit 0)" eval '[ $rc = 0 ] && has "enrolled as nod_TESTTESTTESTTESTTESTTE"'
expect "it prints the exact command that starts the agent" eval 'has "  $agent run --config $p/agent.conf --simulate"'
expect "the documented layout: agent.conf, node.key, node.crt, ca.crt, state dir" eval '[ -f "$p/agent.conf" ] && [ -f "$p/node.key" ] && [ -f "$p/node.crt" ] && [ -f "$p/ca.crt" ] && [ -d "$tmp/inst/var/lib/gpuslice-agent" ]'
expect "the key is 0600 and the state dir 0700" eval '[ "$(stat -c %a "$p/node.key")" = 600 ] && [ "$(stat -c %a "$tmp/inst/var/lib/gpuslice-agent")" = 700 ]'
expect "the config names the node, endpoint, files and simulation" eval 'grep -q "^node_id = nod_TESTTESTTESTTESTTESTTE$" "$p/agent.conf" && grep -q "^agent_endpoint = tls+tcp://127.0.0.1:1$" "$p/agent.conf" && grep -q "^key_file = $p/node.key$" "$p/agent.conf" && grep -q "^simulate = true$" "$p/agent.conf" && grep -q "^controller_url = $url$" "$p/agent.conf"'
last=$(grep . "$tmp/requests.log" | tail -n 1)
keyb64=$(sed -n '2p' "$p/node.key")
expect "exactly one enroll request was made" eval '[ "$(requests)" = $((before + 1)) ]'
expect "the private key never left the host (only the CSR, whose key matches)" eval '! grep -q "PRIVATE KEY" <<< "$last" && ! grep -qF "$keyb64" <<< "$last" && [ "$(openssl pkey -in "$p/node.key" -pubout 2>/dev/null)" = "$(openssl x509 -in "$p/node.crt" -pubkey -noout)" ]'
expect "the facts say simulated, with the simulated host's fingerprint" eval 'grep -q "\"simulated\": *true" <<< "$last" && grep -q "\"fingerprint\": *\"sha256:" <<< "$last"'
expect "the certificate verifies against the CA written beside it" eval 'openssl verify -CAfile "$p/ca.crt" "$p/node.crt" > /dev/null 2>&1'
expect "the agent accepts the written config (every key is known)" eval 'GPUSLICE_AGENT_LOG_LEVEL=error timeout 3 "$agent" run --config "$p/agent.conf" --simulate-topology "$src/tests/fixtures/topology/mpibind/eas-tioga.xml" > /dev/null 2>&1; [ $? = 124 ]'

# ---- idempotent second run ----
sums=$(cd "$p" && sha256sum agent.conf node.key node.crt ca.crt; stat -c '%n %Y' agent.conf node.key)
before=$(requests)
run --controller "$url" --token good --prefix "$tmp/inst" --simulate
expect "a second run says it is already enrolled (exit 0)" eval '[ $rc = 0 ] && has "already enrolled as nod_TESTTESTTESTTESTTESTTE" && has "nothing changed"'
expect "and changes nothing, not even a request" eval '[ "$sums" = "$(cd "$p" && sha256sum agent.conf node.key node.crt ca.crt; stat -c "%n %Y" agent.conf node.key)" ] && [ "$(requests)" = "$before" ]'
run --controller http://other.example:8080 --token good --prefix "$tmp/inst" --simulate
expect "enrolled with another controller: refused with how to re-enroll" eval '[ $rc = 1 ] && has "enrolled with another controller" && has "to re-enroll"'

# ---- --start ----
run --controller "$url" --token good --prefix "$tmp/started" --simulate --simulate-topology "$src/tests/fixtures/topology/mpibind/eas-tioga.xml" --start
pid=$(cat "$tmp/started/run/gpuslice-agent.pid" 2> /dev/null)
expect "--start launches the agent in the background with a pid file" eval '[ $rc = 0 ] && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null'
for _ in $(seq 100); do grep -q "Agent running" "$tmp/started/var/log/gpuslice-agent.log" 2> /dev/null && break; sleep 0.1; done
expect "the started agent runs the simulated host from the written config" eval 'grep -q "Agent running" "$tmp/started/var/log/gpuslice-agent.log" && grep -q "simulated=true" "$tmp/started/var/log/gpuslice-agent.log"'
[ -n "$pid" ] && kill "$pid" 2> /dev/null

echo "1..$n" >> "$tap"
exit $failed
