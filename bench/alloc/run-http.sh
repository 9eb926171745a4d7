#!/usr/bin/env bash
# Launches accepted durably over HTTP (docs/performance.md, "Allocations"):
# one controller (release build, log level warning, rate limits lifted),
# N simulated agents from bench/agents/bench-agents so every node is online,
# 8 approved slots per node (rows written into the state database, then one
# slot per node verified through the admin API so the placement index reads
# the node), a SKU/image/network and 100 tenants with credit through the API;
# then wrk POSTs 1-GPU launches from 100 tenants in turn, each with its own
# Idempotency-Key, for
# DURATION_S with CONNECTIONS connections. A 202 comes after the batch's
# commit (synchronous=FULL), so accepted/s is durable launches per second.
#   bench/alloc/run-http.sh [NODES=1000] [DURATION_S=3] [CONNECTIONS=64]
# The agents do not answer commands: nothing is provisioned, only accepted.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
nodes=${1:-1000}
duration=${2:-3}
conns=${3:-64}
build=${BENCH_BUILD_DIR:-build-bench}
[ -f "$build/build.ninja" ] || meson setup "$build" -Dbuildtype=release -Dtests=false > /dev/null
meson compile -C "$build" controller/gpuslice-controller bench/agents/bench-agents > /dev/null
ctl=$root/$build/controller/gpuslice-controller
agents=$root/$build/bench/agents/bench-agents
ulimit -n "$(ulimit -Hn)"

tmp=$(mktemp -d)
ctl_pid= agents_pid=
stop() {
        local pid=$1
        [ -n "$pid" ] || return 0
        kill -TERM "$pid" 2> /dev/null || return 0
        for _ in $(seq 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
}
cleanup() { stop "$agents_pid"; stop "$ctl_pid"; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

state=$tmp/state
mkdir -p "$state"
pw=$("$ctl" create-admin --state-dir "$state" --email bench@example.com \
        --password-scrypt-log-n 10 2> /dev/null)
"$ctl" serve --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 --state-dir "$state" \
        --ready-file "$tmp/ready" --log-level warning --heartbeat-timeout-s 60 \
        --rate-limit-address-rps 0 --rate-limit-session-rps 0 --password-scrypt-log-n 10 \
        --access-token-ttl-s 7200 2> "$tmp/controller.log" &
ctl_pid=$!
for _ in $(seq 200); do [ -s "$tmp/ready" ] && break; sleep 0.05; done
url=$(cat "$tmp/ready")
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $nodes nodes x 8 slots"

timeout -k 10 900 "$agents" --url "$url" --email bench@example.com --password "$pw" \
        --agents "$nodes" --controller-pid "$ctl_pid" --interval 5 --settle 1 --window 900 \
        > "$tmp/agents.out" 2> "$tmp/agents.err" &
agents_pid=$!

BENCH_URL=$url BENCH_PW=$pw BENCH_STATE=$state BENCH_NODES=$nodes python3 - > "$tmp/env" <<'PY'
import http.client, json, os, sqlite3, sys, time, urllib.parse
url = urllib.parse.urlparse(os.environ["BENCH_URL"])
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
def call(method, path, body=None, token=None):
    global conn
    h = {"Content-Type": "application/json"}
    if token: h["Authorization"] = "Bearer " + token
    for attempt in (1, 2):
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, h)
            r = conn.getresponse(); data = r.read()
            return r.status, (json.loads(data) if data else None)
        except (http.client.HTTPException, OSError):
            if attempt == 2: raise
            conn.close()  # an idle keep-alive the controller closed: dial again
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
_, tok = call("POST", "/api/v1/auth/personal/login", {"email": "bench@example.com", "password": os.environ["BENCH_PW"]})
admin = tok["access_token"]
n = int(os.environ["BENCH_NODES"])
db = sqlite3.connect(os.environ["BENCH_STATE"] + "/gpuslice.db", timeout=30)
deadline = time.time() + 600
while db.execute("SELECT count(*) FROM nodes WHERE online = 1").fetchone()[0] < n:
    if time.time() > deadline: sys.exit("agents did not come online")
    time.sleep(1)
now = int(time.time() * 1e6)
with db:
    db.execute("UPDATE nodes SET state = 'active', updated_at = ?", (now,))
    for i, (node,) in enumerate(db.execute("SELECT id FROM nodes ORDER BY seq").fetchall()):
        for k in range(8):
            db.execute("INSERT INTO node_resource_slots (id, node_id, discovery_id, slot_key, gpus, "
                       "nic, vf_index, numa_node, state, approved_at, gpu_pci_ids, switch, updated_at) "
                       "VALUES (?, ?, 'dsc_bench', ?, ?, ?, ?, ?, ?, ?, '[\"10de:2330\"]', ?, ?)",
                       ("slt_bench%015d%dA" % (i, k), node, "slot-%d" % k, json.dumps(["0000:%02x:00.0" % (0x10 + k)]),
                        "0000:a%d:00.0" % (k // 4), k, k // 4, "quarantined" if k == 0 else "available",
                        now, "sw%d" % (k // 2), now))
db.close()
# One verify per node: the placement index re-reads the node with its 8 slots.
for i, (node,) in enumerate(sqlite3.connect(os.environ["BENCH_STATE"] + "/gpuslice.db").execute(
        "SELECT id FROM nodes ORDER BY seq").fetchall()):
    st, b = call("POST", "/api/v1/admin/nodes/%s/slots/slt_bench%015d0A/verify" % (node, i), {}, admin)
    if st != 200: sys.exit("verify: %d %s" % (st, b))
def create(path, body):
    st, b = call("POST", path, body, admin)
    if st != 201: sys.exit("%s: %d %s" % (path, st, b))
    return b["id"]
sku = create("/api/v1/admin/skus", {"name": "h100", "gpu_model": "H100", "gpu_memory_gb": 80,
      "pci_ids": ["10de:2330"], "gpu_counts": [1, 2, 4, 8], "price_per_gpu_hour_micros": 2000000,
      "topology": "node"})
img = create("/api/v1/admin/images", {"name": "ubuntu"})
net = create("/api/v1/admin/networks", {"name": "tenant", "vlan": 100})
# 100 tenants, launches spread over them (a launch reads its tenant's account
# row and open meters, not their holds; nothing runs here, so no meters).
tokens = []
for t in range(100):
    st, u = call("POST", "/api/v1/auth/personal/signup", {"email": "tenant-%d@example.com" % t, "password": "bench-password-1", "name": "T"})
    if st != 201: sys.exit("signup: %d %s" % (st, u))
    st, b = call("POST", "/api/v1/admin/users/%s/credits" % u["user"]["id"], {"amount_micros": 10**12, "reason": "bench"}, admin)
    if st not in (200, 201): sys.exit("credit: %d %s" % (st, b))
    tokens.append(u["access_token"])
st, skus = call("GET", "/api/v1/catalog/skus", None, tokens[0])
print("BENCH_TOKENS=%s" % ",".join(tokens))
print("BENCH_BODY='%s'" % json.dumps({"sku_id": sku, "gpu_count": 1, "image_id": img, "network_id": net}))
print("# available_gpu_counts %s" % skus["items"][0]["available_gpu_counts"], file=sys.stderr)
PY
set -a; . "$tmp/env"; set +a
perf_pid=
if [ -n "${BENCH_PERF:-}" ]; then # BENCH_PERF=FILE: a perf profile of the controller under load
        perf record --call-graph dwarf,16384 -F 499 -o "$BENCH_PERF" -p "$ctl_pid" > /dev/null 2>&1 &
        perf_pid=$!
        sleep 1
fi
# The controller's CPU time (utime + stime, clock ticks) around the run: on a
# machine shared with other work, CPU per launch is steadier than launches/s.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$ctl_pid/stat"; }
cpu0=$(cpu_ticks)
wrk -t2 -c"$conns" -d"${duration}s" -s "$root/bench/alloc/launch.lua" "$url" | tee "$tmp/wrk.out"
cpu1=$(cpu_ticks)
[ -z "$perf_pid" ] || { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
accepted=$(sed -n 's/^result accepted=\([0-9]*\).*/\1/p' "$tmp/wrk.out")
awk -v t="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" -v n="${accepted:-0}" 'BEGIN {
        if (n > 0) printf "controller CPU %.2f s for %d accepted launches: %.0f us per launch\n",
                t / hz, n, t / hz / n * 1e6 }'
held=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT count(*) FROM allocation_slots WHERE state='held'\").fetchone()[0])" "$state/gpuslice.db")
echo "slots held after the run: $held"
grep 'level=error' "$tmp/controller.log" | head -5 || true
