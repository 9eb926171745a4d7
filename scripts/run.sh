#!/usr/bin/env bash
# Installs what is missing, builds, and runs gpuslice on this machine until
# Ctrl-C: the controller with its SQLite state under ./var, and an agent on a
# simulated GPU host (a real machine's topology from the test fixtures, marked
# simulated) enrolled through the real bootstrap path. Prints the URL, the
# admin credentials and the admin journey to walk with curl.
#   GPUSLICE_LISTEN=127.0.0.1:9090 ./scripts/run.sh        another API address
#   GPUSLICE_AGENT_LISTEN=127.0.0.1:9443 ./scripts/run.sh  another agent-link address
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

./scripts/install-deps.sh --build-only
build=build-run
if [ ! -f "$build/build.ninja" ]; then
        meson setup "$build" -Dbuildtype=release -Dtests=false
fi
meson compile -C "$build"

state=$root/var
host=$state/sim-host
mkdir -p "$state"
chmod 0700 "$state"
export GPUSLICE_LISTEN=${GPUSLICE_LISTEN:-127.0.0.1:8080}
export GPUSLICE_AGENT_LISTEN=${GPUSLICE_AGENT_LISTEN:-127.0.0.1:7443}
admin_email=${GPUSLICE_RUN_ADMIN_EMAIL:-admin@gpuslice.example}
# The controller refuses GPUSLICE_* variables it does not know.
unset GPUSLICE_RUN_ADMIN_EMAIL
ctl=$root/$build/controller/gpuslice-controller
agent=$root/$build/agent/gpuslice-agent

# create-admin is idempotent: it resets the password of an existing admin.
admin_password=$("$ctl" create-admin --state-dir "$state" --email "$admin_email" \
        2> "$state/create-admin.log") || {
        cat "$state/create-admin.log" >&2
        exit 1
}

# Background jobs get their own process groups: Ctrl-C reaches this script
# only, and stop() asks each daemon once to shut down gracefully.
set -m
ctl_pid= agent_pid= tail_pid=
stop() {
        trap - INT TERM EXIT
        # Signal the daemons before printing: when our output went through a
        # pipe that Ctrl-C already closed, the echo must not end us first.
        trap '' PIPE
        for pid in $agent_pid $ctl_pid; do
                kill -TERM "$pid" 2> /dev/null || true
        done
        echo "stopping..." >&2 || true
        for pid in $agent_pid $ctl_pid; do
                wait "$pid" 2> /dev/null || true
        done
        [ -n "$tail_pid" ] && kill "$tail_pid" 2> /dev/null
        exit 0
}
trap stop INT TERM EXIT

rm -f "$state/ready"
"$ctl" serve --state-dir "$state" --ready-file "$state/ready" >> "$state/controller.log" 2>&1 &
ctl_pid=$!
for _ in $(seq 1 100); do
        [ -s "$state/ready" ] && break
        if ! kill -0 "$ctl_pid" 2> /dev/null; then
                tail -20 "$state/controller.log" >&2
                echo "run.sh: the controller exited; see $state/controller.log" >&2
                exit 1
        fi
        sleep 0.1
done
[ -s "$state/ready" ] || { echo "run.sh: the controller did not become ready" >&2; exit 1; }
url=$(cat "$state/ready")

api() { # api METHOD PATH [BODY]: an admin call, JSON out
        local body=${3:-}
        curl -sS -X "$1" "$url$2" -H "authorization: Bearer $admin_token" \
                ${body:+-H 'content-type: application/json' -d "$body"}
}
admin_token=$(curl -sS -X POST "$url/api/v1/auth/personal/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$admin_email\",\"password\":\"$admin_password\"}" | jq -r .access_token)

# The simulated host: created and enrolled once, through the real bootstrap path.
if [ ! -f "$host/etc/gpuslice/agent.conf" ]; then
        api POST /api/v1/admin/nodes '{"name":"sim-node-1","simulated":true}' > "$state/sim-node.json"
        token=$(jq -r .bootstrap_token "$state/sim-node.json")
        [ "$token" != null ] || { cat "$state/sim-node.json" >&2; exit 1; }
        ./scripts/bootstrap.sh --controller "$url" --token "$token" --simulate --prefix "$host" \
                --agent-bin "$agent"
fi
node_id=$(sed -n 's/^node_id *= *//p' "$host/etc/gpuslice/agent.conf")
"$agent" run --config "$host/etc/gpuslice/agent.conf" --simulate >> "$state/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 100); do
        [ "$(api GET "/api/v1/admin/nodes/$node_id" | jq -r .online)" = true ] && break
        kill -0 "$agent_pid" 2> /dev/null || { tail -20 "$state/agent.log" >&2; exit 1; }
        sleep 0.2
done

cat <<TXT

  gpuslice is running.

  API:             $url/api/v1   (ready: $url/api/v1/ready)
  Admin email:     $admin_email
  Admin password:  $admin_password   (new on every start of run.sh)
  Simulated node:  $node_id (an agent with --simulate; see $state/agent.log)
  State:           $state/gpuslice.db   (logs: $state/controller.log, $state/agent.log)

  Walk the admin journey (onboard the simulated node):
    TOKEN=\$(curl -s -X POST $url/api/v1/auth/personal/login -H 'content-type: application/json' \\
           -d '{"email":"$admin_email","password":"$admin_password"}' | jq -r .access_token)
    curl -s $url/api/v1/admin/nodes -H "authorization: Bearer \$TOKEN" | jq
    DSC=\$(curl -s -X POST $url/api/v1/admin/nodes/$node_id/slice-topology/discovery \\
           -H "authorization: Bearer \$TOKEN" | jq -r .discovery_id)
    curl -s $url/api/v1/admin/nodes/$node_id/slice-topology/candidates/\$DSC -H "authorization: Bearer \$TOKEN" | jq
    curl -s -X POST $url/api/v1/admin/nodes/$node_id/slice-topology/candidates/\$DSC/approve \\
           -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' -d '{}' | jq .node

  Or sign up as a user:
    curl -s -X POST $url/api/v1/auth/personal/signup -H 'content-type: application/json' \\
           -d '{"email":"you@example.com","password":"correct horse battery","name":"You"}' | jq

  Ctrl-C stops both.
TXT

tail -n 0 -F "$state/controller.log" "$state/agent.log" &
tail_pid=$!
wait "$ctl_pid"
