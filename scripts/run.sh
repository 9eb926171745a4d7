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

# First start: the admin's onboarding done for you (discovery, approve every
# candidate slot), a catalog matching the simulated host, and a demo user with
# credit, so the launch journey works at once. Later starts keep what is there.
node_state=$(api GET "/api/v1/admin/nodes/$node_id" | jq -r .state)
if [ "$node_state" = enrolled ] || [ "$node_state" = pending_approval ]; then
        dsc=$(api POST "/api/v1/admin/nodes/$node_id/slice-topology/discovery" | jq -r .discovery_id)
        for _ in $(seq 1 150); do
                cand=$(api GET "/api/v1/admin/nodes/$node_id/slice-topology/candidates/$dsc")
                [ "$(jq -r '.slots | length' <<< "$cand" 2> /dev/null)" -gt 0 ] 2> /dev/null && break
                sleep 0.2
        done
        api POST "/api/v1/admin/nodes/$node_id/slice-topology/candidates/$dsc/approve" '{}' \
                > "$state/approve.json"
        [ "$(jq -r .node.state "$state/approve.json")" = active ] || {
                echo "run.sh: approving the simulated node's slots failed:" >&2
                cat "$state/approve.json" >&2
                exit 1
        }
fi
if [ "$(api GET /api/v1/admin/skus | jq '.items | length')" = 0 ]; then
        # The simulated host is LLNL Tioga: 8 AMD MI250X GCDs (1002:7408) on 4 NUMA nodes.
        api POST /api/v1/admin/skus '{"name":"mi250x-64gb","gpu_model":"AMD Instinct MI250X",
                "gpu_memory_gb":64,"pci_ids":["1002:7408"],"gpu_counts":[1,2,4,8],
                "price_per_gpu_hour_micros":1800000,"topology":"node"}' > /dev/null
        api POST /api/v1/admin/images '{"name":"ubuntu-22.04","description":"Ubuntu 22.04 LTS",
                "source":"ubuntu-22.04.img","ssh_user":"ubuntu"}' > /dev/null
        api POST /api/v1/admin/networks '{"name":"default","description":"Tenant VLAN 100",
                "vlan":100}' > /dev/null
fi
demo_email=demo@gpuslice.example
if [ ! -s "$state/demo-password" ]; then
        demo_password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
        signup=$(curl -sS -X POST "$url/api/v1/auth/personal/signup" -H 'content-type: application/json' \
                -d "{\"email\":\"$demo_email\",\"password\":\"$demo_password\",\"name\":\"Demo User\"}")
        demo_id=$(jq -r .user.id <<< "$signup")
        [ "$demo_id" != null ] || { echo "run.sh: demo signup failed: $signup" >&2; exit 1; }
        api POST "/api/v1/admin/users/$demo_id/credits" \
                '{"amount_micros":100000000,"reason":"run.sh demo credit"}' > /dev/null
        (umask 077 && echo "$demo_password" > "$state/demo-password")
fi
demo_password=$(cat "$state/demo-password")

cat <<TXT

  gpuslice is running.

  API:             $url/api/v1   (ready: $url/api/v1/ready)
  Admin email:     $admin_email
  Admin password:  $admin_password   (new on every start of run.sh)
  Demo user:       $demo_email / $demo_password   (USD 100 of credit)
  Simulated node:  $node_id (an agent with --simulate; see $state/agent.log)
  State:           $state/gpuslice.db   (logs: $state/controller.log, $state/agent.log)

  Launch a workload as the demo user (README.md, "Launch a workload", shows each answer):
    U=\$(curl -s -X POST $url/api/v1/auth/personal/login -H 'content-type: application/json' \\
         -d '{"email":"$demo_email","password":"$demo_password"}' | jq -r .access_token)
    H="authorization: Bearer \$U"; J='content-type: application/json'
    curl -s $url/api/v1/catalog/skus -H "\$H" | jq
    SKU=\$(curl -s $url/api/v1/catalog/skus -H "\$H" | jq -r '.items[0].id')
    IMG=\$(curl -s $url/api/v1/catalog/images -H "\$H" | jq -r '.items[0].id')
    NET=\$(curl -s $url/api/v1/catalog/networks -H "\$H" | jq -r '.items[0].id')
    # any OpenSSH public key of yours (ssh-keygen -t ed25519 makes one)
    KEY=\$(jq -n --arg k "\$(cat ~/.ssh/id_ed25519.pub)" '{public_key:\$k}' | \\
         curl -s -X POST $url/api/v1/access/ssh-keys -H "\$H" -H "\$J" -d @- | jq -r .id)
    BODY="{\"sku_id\":\"\$SKU\",\"gpu_count\":2,\"image_id\":\"\$IMG\",\"network_id\":\"\$NET\",\"ssh_key_ids\":[\"\$KEY\"]}"
    curl -s -X POST $url/api/v1/allocations/quote -H "\$H" -H "\$J" -d "\$BODY" | jq
    curl -s -X POST $url/api/v1/allocations -H "\$H" -H "\$J" -H "Idempotency-Key: launch-\$(date +%s)" \\
         -d "\$BODY" | tee /tmp/launch.json | jq
    curl -s $url/api/v1/tasks/\$(jq -r .task_id /tmp/launch.json) -H "\$H" | jq
    curl -s $url/api/v1/allocations/\$(jq -r .allocation.id /tmp/launch.json) -H "\$H" | jq .connection
    # a shell on it, in this terminal (Ctrl-D ends it; needs: cd tests/node && npm ci)
    node $root/scripts/console.mjs \$(curl -s -X POST $url/api/v1/allocations/\$(jq -r .allocation.id \\
         /tmp/launch.json)/terminal-token -H "\$H" | jq -r .websocket_url)
    curl -s -X POST $url/api/v1/allocations/\$(jq -r .allocation.id /tmp/launch.json)/release -H "\$H" | jq

  Admin: nodes, slots, allocations, events (token: log in as $admin_email):
    curl -s $url/api/v1/admin/nodes/$node_id/slots -H "authorization: Bearer \$TOKEN" | jq

  Ctrl-C stops both.
TXT

tail -n 0 -F "$state/controller.log" "$state/agent.log" &
tail_pid=$!
wait "$ctl_pid"
