#!/usr/bin/env bash
# The agent link at scale (docs/performance.md, "Agent link at scale"): one
# controller (release build, loopback, heartbeat_timeout_s 15, log level
# warning) and N simulated agents in one bench-agents process, each enrolled
# over the API with its own key and CA-signed certificate, dialing its own
# tls+tcp link and heartbeating every 5 s at a random phase from its welcome.
# Once all N are online: the controller's CPU (utime+stime over the window,
# % of one core) and RSS, and whether any node dropped in the window.
#   bench/agents/run.sh [N...]            (default: 1000 10000)
# BENCH_WINDOW_S (60), BENCH_SETTLE_S (15), BENCH_CONTROLLER (another binary),
# BENCH_BUILD=0 (use build-bench as it is, e.g. on a host without meson),
# BENCH_CONTROLLER_CPUS / BENCH_AGENTS_CPUS (taskset CPU lists, e.g. 0-1 and 2-15).
# Every phase has a deadline; the controller, the agents and the temporary
# state directory are gone when it returns.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
build=build-bench
if [ "${BENCH_BUILD:-1}" = 1 ]; then
        [ -f "$build/build.ninja" ] || meson setup "$build" -Dbuildtype=release -Dtests=false > /dev/null
        meson compile -C "$build" controller/gpuslice-controller bench/agents/bench-agents > /dev/null
fi
ctl=${BENCH_CONTROLLER:-$root/$build/controller/gpuslice-controller}
bench=$root/$build/bench/agents/bench-agents
window=${BENCH_WINDOW_S:-60}
settle=${BENCH_SETTLE_S:-15}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)

# Both ends run here: about one descriptor per agent on each side.
max=0
for n in "${sizes[@]}"; do [ "$n" -gt "$max" ] && max=$n; done
want=$((max * 2 + 4096))
[ "$want" -lt 65536 ] && want=65536
ulimit -Hn "$want" 2> /dev/null || true
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((max + 1024)) ]; then
        echo "open file limit $(ulimit -n) is too low for $max agents" >&2
        exit 1
fi

tmp=$(mktemp -d)
ctl_pid= bench_pid=
stop() { # pid: TERM, then KILL after 10 s
        local pid=$1
        [ -n "$pid" ] || return 0
        kill -TERM "$pid" 2> /dev/null || return 0
        for _ in $(seq 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
}
cleanup() {
        stop "$bench_pid"
        stop "$ctl_pid"
        rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); window ${window}s after ${settle}s settle; open files $(ulimit -n)"
results=()
for n in "${sizes[@]}"; do
        state=$tmp/state-$n
        mkdir -p "$state"
        pw=$("$ctl" create-admin --state-dir "$state" --email bench@example.com \
                --password-scrypt-log-n 10 2> /dev/null)
        # The setup calls (2 per agent, from one address and one session) are
        # not what is measured: lift the request rate limits; the access token
        # must outlive the run.
        ${BENCH_CONTROLLER_CPUS:+taskset -c "$BENCH_CONTROLLER_CPUS"} \
                "$ctl" serve --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 --state-dir "$state" \
                --ready-file "$tmp/ready-$n" --log-level warning --heartbeat-timeout-s 15 \
                --rate-limit-address-rps 0 --rate-limit-session-rps 0 \
                --access-token-ttl-s 7200 2> "$tmp/controller-$n.log" &
        ctl_pid=$!
        for _ in $(seq 200); do [ -s "$tmp/ready-$n" ] && break; sleep 0.05; done
        if ! [ -s "$tmp/ready-$n" ]; then
                echo "controller did not start" >&2
                cat "$tmp/controller-$n.log" >&2
                exit 1
        fi
        url=$(cat "$tmp/ready-$n")
        # Deadlines: enrollment and connection scale with N; the whole run is
        # bounded by timeout(1) on top of bench-agents' own deadlines.
        enroll_deadline=$((120 + n / 20))
        connect_deadline=$((120 + n / 20))
        timeout -k 10 $((enroll_deadline + connect_deadline + settle + window + 300)) \
                ${BENCH_AGENTS_CPUS:+taskset -c "$BENCH_AGENTS_CPUS"} "$bench" --url "$url" --email bench@example.com --password "$pw" --agents "$n" --controller-pid "$ctl_pid" \
                --interval 5 --settle "$settle" --window "$window" \
                --enroll-deadline "$enroll_deadline" --connect-deadline "$connect_deadline" \
                > "$tmp/bench-$n.out" 2> >(tee "$tmp/bench-$n.err" | sed -u "s/^/[$n] /" >&2) &
        bench_pid=$!
        wait "$bench_pid" || true
        bench_pid=
        line=$(grep '^result ' "$tmp/bench-$n.out" || echo "result agents=$n error=no_result")
        echo "$line"
        results+=("$line")
        errors=$(grep -c 'level=error' "$tmp/controller-$n.log" || true)
        warnings=$(grep -c 'level=warning' "$tmp/controller-$n.log" || true)
        echo "controller log: $errors errors, $warnings warnings"
        grep 'level=\(error\|warning\)' "$tmp/controller-$n.log" | head -5 || true
        stop "$ctl_pid"
        ctl_pid=
        rm -rf "$state"
done

python3 - "${results[@]}" <<'PY'
import sys
rows = [dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv) for line in sys.argv[1:]]
print(f"{'agents':>7} {'online':>7} {'api online':>10} {'CPU % core':>10} {'RSS MB':>7} "
      f"{'RSS max':>7} {'RSS peak':>8} {'enroll s':>8} {'online s':>8} {'drops':>5} {'load':>16}")
for r in rows:
    if "error" in r:
        print(f"{r.get('agents', '?'):>7} failed: {r['error']} (welcomed {r.get('welcomed', '?')})")
        continue
    print(f"{r['agents']:>7} {r['welcomed_end']:>7} {r['api_online']:>10} {float(r['cpu_pct']):10.1f} "
          f"{float(r['rss_mb']):7.0f} {float(r['rss_max_mb']):7.0f} {float(r['hwm_mb']):8.0f} "
          f"{float(r['enroll_s']):8.1f} {float(r['online_s']):8.1f} "
          f"{int(r['disconnects']) + int(r['errors']):5d} {r['load_end']:>16}")
PY
