#!/usr/bin/env bash
# Installs what is missing, builds, and runs gpuslice on this machine: the
# controller with its SQLite state under ./var, until Ctrl-C. Prints the URL,
# the admin credentials and a few commands to try.
#   GPUSLICE_LISTEN=127.0.0.1:9090 ./scripts/run.sh   to use another address
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
mkdir -p "$state"
chmod 0700 "$state"
export GPUSLICE_LISTEN=${GPUSLICE_LISTEN:-127.0.0.1:8080}
admin_email=${GPUSLICE_RUN_ADMIN_EMAIL:-admin@gpuslice.example}
# The controller refuses GPUSLICE_* variables it does not know.
unset GPUSLICE_RUN_ADMIN_EMAIL
ctl=$root/$build/controller/gpuslice-controller

# create-admin is idempotent: it resets the password of an existing admin.
admin_password=$("$ctl" create-admin --state-dir "$state" \
        --email "$admin_email" 2> "$state/create-admin.log") || {
        cat "$state/create-admin.log" >&2
        exit 1
}

rm -f "$state/ready"
"$ctl" serve --state-dir "$state" --ready-file "$state/ready" 2>&1 | tee -a "$state/controller.log" &
ctl_pid=$!
stop() {
        trap - INT TERM
        echo
        echo "stopping the controller..."
        pkill -TERM -f "$ctl serve --state-dir $state" 2> /dev/null || true
        wait "$ctl_pid" 2> /dev/null || true
        exit 0
}
trap stop INT TERM

for _ in $(seq 1 100); do
        [ -s "$state/ready" ] && break
        if ! kill -0 "$ctl_pid" 2> /dev/null; then
                echo "run.sh: the controller exited; see $state/controller.log" >&2
                exit 1
        fi
        sleep 0.1
done
[ -s "$state/ready" ] || { echo "run.sh: the controller did not become ready" >&2; exit 1; }
url=$(cat "$state/ready")

cat <<TXT

  gpuslice is running.

  API:             $url/api/v1   (ready: $url/api/v1/ready)
  Admin email:     $admin_email
  Admin password:  $admin_password   (new on every start of run.sh)
  State:           $state/gpuslice.db   (log: $state/controller.log)

  Try it:
    curl -s -X POST $url/api/v1/auth/personal/signup -H 'content-type: application/json' \\
         -d '{"email":"you@example.com","password":"correct horse battery","name":"You"}'
    curl -s -X POST $url/api/v1/auth/personal/login -H 'content-type: application/json' \\
         -d '{"email":"$admin_email","password":"$admin_password"}'
    curl -s $url/api/v1/me -H "authorization: Bearer <access_token from above>"

  Ctrl-C stops it.
TXT

wait "$ctl_pid"
