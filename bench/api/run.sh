#!/usr/bin/env bash
# Foundation benchmark: the controller (release build) against nginx serving
# a static JSON file of the same size, both driven by wrk on loopback in one
# run, so the ratio is measured on the same machine under the same load.
#   bench/api/run.sh [DURATION_S] [CONNECTIONS]
# Prints req/s, p50/p99 latency and the ratio for GET /api/v1/me (authenticated)
# and POST /api/v1/auth/personal/login.
# BENCH_CONTROLLER=path runs another controller binary (an A/B comparison of
# two builds); BENCH_CASES="me" runs only some of nginx, me, login.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
duration=${1:-10}
conns=${2:-64}
build=build-bench
[ -f "$build/build.ninja" ] || meson setup "$build" -Dbuildtype=release -Dtests=false > /dev/null
meson compile -C "$build" > /dev/null
ctl=${BENCH_CONTROLLER:-$root/$build/controller/gpuslice-controller}
cases=${BENCH_CASES:-nginx me login}

tmp=$(mktemp -d)
cleanup() {
        [ -n "${ctl_pid:-}" ] && kill -TERM "$ctl_pid" 2> /dev/null && wait "$ctl_pid" 2> /dev/null
        [ -f "$tmp/nginx.pid" ] && kill -QUIT "$(cat "$tmp/nginx.pid")" 2> /dev/null
        rm -rf "$tmp"
}
trap cleanup EXIT

# wrk is one address and one session: lift the request rate limits so the run
# measures what the limiter costs, not its 429s (binaries that predate the
# limits do not know the flags).
limits=()
if [[ $("$ctl" --help) == *--rate-limit-session-rps* ]]; then
        limits=(--rate-limit-address-rps 1000000 --rate-limit-address-burst 1000000
                --rate-limit-session-rps 1000000 --rate-limit-session-burst 1000000)
fi
# Many logins from one address and one account are expected here: lift the
# failure limits too (concurrent logins are charged before the hash runs).
"$ctl" serve --listen 127.0.0.1:0 --state-dir "$tmp/state" --ready-file "$tmp/ready" \
        --log-level warning "${limits[@]}" --login-failures-per-address 100000 \
        --login-failures-per-account 1000 2> "$tmp/controller.log" &
ctl_pid=$!
for _ in $(seq 1 100); do [ -s "$tmp/ready" ] && break; sleep 0.1; done
url=$(cat "$tmp/ready")

email=bench@example.com password=bench-password-123
curl -sf -X POST "$url/api/v1/auth/personal/signup" -H 'content-type: application/json' \
        -d "{\"email\":\"$email\",\"password\":\"$password\",\"name\":\"Bench\"}" > "$tmp/signup.json"
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$tmp/signup.json")
curl -sf "$url/api/v1/me" -H "authorization: Bearer $token" > "$tmp/www-me.json"
mkdir -p "$tmp/www"
chmod 0755 "$tmp" "$tmp/www" # nginx workers run as www-data
cp "$tmp/www-me.json" "$tmp/www/me.json"
chmod 0644 "$tmp/www/me.json"
size=$(wc -c < "$tmp/www/me.json")

nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/nginx.conf" <<NGX
worker_processes ${BENCH_NGINX_WORKERS:-auto};
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port;
    location / { root $tmp/www; default_type application/json; }
  }
}
NGX
nginx -c "$tmp/nginx.conf" -p "$tmp" 2> "$tmp/nginx-start.log"
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$nginx_port/me.json" > /dev/null && break; sleep 0.1; done

run_wrk() { # name url [wrk args...]
        local name=$1 target=$2
        shift 2
        local script=$root/bench/api/report.lua
        if [ "${1:-}" = "-s" ]; then
                script=$2
                shift 2
        fi
        BENCH_DIR=$root/bench/api wrk --timeout 10s -t2 -c"$conns" -d"${duration}s" --latency -s "$script" "$@" "$target" \
                | grep '^RESULT' | sed "s/^RESULT/$name/"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "load: wrk -t2 -c$conns -d${duration}s on loopback; response body $size bytes"
lines=()
case_on() { [[ " $cases " == *" $1 "* ]]; }
case_on nginx && lines+=("$(run_wrk nginx_static "http://127.0.0.1:$nginx_port/me.json")")
case_on me && lines+=("$(run_wrk controller_me "$url/api/v1/me" -H "authorization: Bearer $token")")
case_on login && lines+=("$(BENCH_EMAIL=$email BENCH_PASSWORD=$password run_wrk controller_login \
        "$url/api/v1/auth/personal/login" -s "$root/bench/api/login.lua")")
printf '%s\n' "${lines[@]}"
python3 - "${lines[@]}" <<'PY'
import sys
def parse(line):
    name, *kv = line.split()
    return name, dict(x.split("=") for x in kv)
rows = [parse(l) for l in sys.argv[1:]]
base = float(rows[0][1]["rps"]) if rows[0][0] == "nginx_static" else None
print(f"{'case':18} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs nginx':>9} {'errors':>7}")
for name, d in rows:
    print(f"{name:18} {float(d['rps']):10.0f} {float(d['p50_ms']):8.2f} {float(d['p99_ms']):8.2f} "
          f"{float(d['rps'])/base if base else float('nan'):9.2f} {int(d['errors'])+int(d['non2xx']):7d}")
PY
