#!/usr/bin/env bash
# Console round-trip latency (docs/performance.md, "Console"): one controller
# and one agent on a simulated host (release builds, loopback, log level
# warning), enrolled through scripts/bootstrap.sh, the slots approved, a
# one-GPU allocation launched through the API; then latency.mjs types
# keystrokes one at a time into the allocation's console (running `cat`) and
# times each echo, and prints p50/p90/p99/max and a throughput figure.
#   bench/console/run.sh [KEYSTROKES] [WARMUP]      (default: 2000 200)
# BENCH_BUILD=0 uses build-console-bench as it is. BENCH_NICE=-10 runs the
# controller, the agent and the client at that nice value (root only), for a
# figure closer to a quiet machine on a shared one. Every phase has a
# deadline; the daemons and the temporary state are gone when it returns.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
build=build-console-bench
if [ "${BENCH_BUILD:-1}" = 1 ]; then
        [ -f "$build/build.ninja" ] || meson setup "$build" -Dbuildtype=release -Dtests=false > /dev/null
        meson compile -C "$build" > /dev/null
fi
ctl=$root/$build/controller/gpuslice-controller
agent=$root/$build/agent/gpuslice-agent
[ -d tests/node/node_modules/ws ] || { echo "npm ws is missing: (cd tests/node && npm ci)" >&2; exit 1; }

tmp=$(mktemp -d)
state=$tmp/state host=$tmp/host
ctl_pid= agent_pid=
stop() { # pid: TERM, then KILL after 10 s
        local pid=$1
        [ -n "$pid" ] || return 0
        kill -TERM "$pid" 2> /dev/null || return 0
        for _ in $(seq 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
}
cleanup() {
        stop "$agent_pid"
        stop "$ctl_pid"
        rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
        echo "bench/console: $*" >&2
        tail -5 "$tmp/controller.log" "$tmp/agent.log" 2> /dev/null >&2 || true
        exit 1
}

prio=()
[ -n "${BENCH_NICE:-}" ] && prio=(nice -n "$BENCH_NICE")
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)${BENCH_NICE:+, nice $BENCH_NICE}"
mkdir -p "$state"
admin_password=$("$ctl" create-admin --state-dir "$state" --email bench@example.com \
        2> "$tmp/create-admin.log") || fail "create-admin failed: $(tail -3 "$tmp/create-admin.log")"
"${prio[@]}" "$ctl" serve --state-dir "$state" --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 \
        --ready-file "$tmp/ready" --log-level warning --heartbeat-interval-s 1 \
        --rate-limit-address-rps 0 --rate-limit-session-rps 0 > "$tmp/controller.log" 2>&1 &
ctl_pid=$!
for _ in $(seq 100); do [ -s "$tmp/ready" ] && break; sleep 0.1; done
[ -s "$tmp/ready" ] || fail "the controller did not start"
url=$(cat "$tmp/ready")
login() { curl -sS -X POST "$url/api/v1/auth/personal/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"$2\"}" | jq -r .access_token; }
admin=$(login bench@example.com "$admin_password")
api() { # api TOKEN METHOD PATH [BODY]
        local body=${4:-}
        curl -sS -X "$2" "$url$3" -H "authorization: Bearer $1" \
                ${body:+-H 'content-type: application/json' -d "$body"} "${@:5}"
}

node=$(api "$admin" POST /api/v1/admin/nodes '{"name":"bench-sim","simulated":true}')
node_id=$(jq -r .node.id <<< "$node")
./scripts/bootstrap.sh --controller "$url" --token "$(jq -r .bootstrap_token <<< "$node")" \
        --simulate --prefix "$host" --agent-bin "$agent" > "$tmp/bootstrap.log" 2>&1 ||
        fail "bootstrap.sh failed: $(tail -3 "$tmp/bootstrap.log")"
"${prio[@]}" "$agent" run --config "$host/etc/gpuslice/agent.conf" --simulate --log-level warning \
        > "$tmp/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 150); do
        [ "$(api "$admin" GET "/api/v1/admin/nodes/$node_id" | jq -r .online)" = true ] && break
        sleep 0.2
done
dsc=$(api "$admin" POST "/api/v1/admin/nodes/$node_id/slice-topology/discovery" | jq -r .discovery_id)
for _ in $(seq 150); do
        cand=$(api "$admin" GET "/api/v1/admin/nodes/$node_id/slice-topology/candidates/$dsc")
        [ "$(jq -r .state <<< "$cand")" = completed ] && break
        sleep 0.2
done
[ "$(jq -r .state <<< "$cand")" = completed ] || fail "discovery did not complete"
gpu=$(jq -r '.slots[0].gpus[0]' <<< "$cand")
pci=$(jq -r --arg a "$gpu" '.document.devices[] | select(.address == $a) | "\(.vendor):\(.device)"' <<< "$cand")
api "$admin" POST "/api/v1/admin/nodes/$node_id/slice-topology/candidates/$dsc/approve" '{}' > /dev/null
sku=$(api "$admin" POST /api/v1/admin/skus "{\"name\":\"bench\",\"gpu_model\":\"Simulated\",
        \"gpu_memory_gb\":64,\"pci_ids\":[\"$pci\"],\"gpu_counts\":[1,2,4,8],
        \"price_per_gpu_hour_micros\":1000000,\"topology\":\"node\"}" | jq -r .id)
img=$(api "$admin" POST /api/v1/admin/images '{"name":"bench-image","ssh_user":"ubuntu"}' | jq -r .id)
net=$(api "$admin" POST /api/v1/admin/networks '{"name":"bench-net","vlan":100}' | jq -r .id)
user_id=$(curl -sS -X POST "$url/api/v1/auth/personal/signup" -H 'content-type: application/json' \
        -d '{"email":"tenant@example.com","password":"bench password 1","name":"Bench"}' | jq -r .user.id)
api "$admin" POST "/api/v1/admin/users/$user_id/credits" \
        '{"amount_micros":100000000,"reason":"bench"}' > /dev/null
user=$(login tenant@example.com "bench password 1")
alloc=$(api "$user" POST /api/v1/allocations "{\"sku_id\":\"$sku\",\"gpu_count\":1,
        \"image_id\":\"$img\",\"network_id\":\"$net\",\"ssh_key_ids\":[]}" \
        -H "Idempotency-Key: bench-1" | jq -r .allocation.id)
for _ in $(seq 300); do
        st=$(api "$user" GET "/api/v1/allocations/$alloc" | jq -r .state)
        [ "$st" = active ] && break
        [ "$st" = failed ] && fail "the allocation failed"
        sleep 0.2
done
[ "$st" = active ] || fail "the allocation never became active"

ws=$(api "$user" POST "/api/v1/allocations/$alloc/terminal-token" | jq -r .websocket_url)
"${prio[@]}" node bench/console/latency.mjs "$ws" "${1:-2000}" "${2:-200}"
