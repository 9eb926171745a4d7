#!/usr/bin/env bash
# hooks/simulated-shell run for real, as the agent runs it (the copy in the
# build tree the simulated daemon finds, an environment with only the hook
# contract's variables): start makes the workspace with the tenant's keys and
# prints a stable SSH line, status follows start and stop, stop is
# idempotent, console is an interactive shell in the workspace with a minimal
# environment (on a pipe and, where script(1) exists, on a PTY) whose exit
# status is the hook's, and the refusals say why.
# usage: test-simulated-shell.sh SOURCE_ROOT BUILD_ROOT TAP_FILE
set -uo pipefail
src=$1 build=$2 tap=$3
hook=$build/hooks/simulated-shell
tmp=$(mktemp -d /tmp/gpuslice-simshell-XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
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

rt=$tmp/runtime/alc_test
mkdir -p "$rt"
chmod 700 "$tmp/runtime" "$rt"
printf 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl t@x\n' > "$rt/authorized_keys"
run() { # run VERB [ENV=VALUE...]: the hook with the contract's environment only
        local verb=$1; shift
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                GPUSLICE_SLOT_ID=slt_one GPUSLICE_SLOT_IDS="slt_one slt_two" \
                GPUSLICE_ALLOCATION_ID=alc_test GPUSLICE_RUNTIME_DIR="$rt" \
                GPUSLICE_VFIO_DEVICES="0000:d1:00.0 0000:d5:00.1" GPUSLICE_VFIO_GROUPS= "$@" \
                "$hook" "$verb" slt_one alc_test 0000:d1:00.0 0000:d5:00.1
}
start_env=(GPUSLICE_SSH_AUTHORIZED_KEYS="$rt/authorized_keys" GPUSLICE_SSH_USER=ubuntu
        GPUSLICE_IMAGE_ID=img_1 GPUSLICE_IMAGE_NAME="Ubuntu 24.04" GPUSLICE_IMAGE_SOURCE=https://images.example/u.qcow2)

expect "the build tree has the hook, executable" test -x "$hook"

out=$(run start "${start_env[@]}" 2>&1); rc=$?
expect "start succeeds" test $rc -eq 0
expect "start prints one ssh line for 127.0.0.1 and the image's user" \
        grep -qE '^\{"ssh":\{"host":"127\.0\.0\.1","port":22[0-9]{3},"user":"ubuntu"\}\}$' <<< "$out"
first=$out
ws=$rt/workspace
out=$(cat "$ws/.ssh/authorized_keys" 2>&1)
expect "the workspace has the tenant's keys" has "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"
out=$(stat -c '%a' "$ws/.ssh" "$ws/.ssh/authorized_keys" 2>&1)
expect "the keys are private (700/600)" test "$out" = $'700\n600'
out=$(cat "$ws/README" 2>&1)
expect "the README names the allocation, its slots and devices" \
        eval 'has alc_test && has "slt_one slt_two" && has 0000:d5:00.1 && has "Ubuntu 24.04"'
out=$(run status 2>&1)
expect "status after start: running" test "$out" = '{"state":"running"}'

out=$(run start "${start_env[@]}" 2>&1); rc=$?
expect "start again is done and prints the same line (a stable port)" test $rc -eq 0 -a "$out" = "$first"

# The console: an interactive shell in the workspace, nothing of ours in its environment.
out=$(printf 'pwd\necho "home=$HOME user=$USER"\necho "keys=${GPUSLICE_SSH_AUTHORIZED_KEYS:-unset}"\nexit 7\n' |
        run console GPUSLICE_SSH_AUTHORIZED_KEYS=/nope 2>/dev/null); rc=$?
expect "console runs a shell in the workspace" has "$ws"
expect "with HOME there and the tenant's user" has "home=$ws user=ubuntu"
expect "and a minimal environment" has "keys=unset"
expect "its exit status is the hook's" test $rc -eq 7
if command -v script > /dev/null; then
        out=$(printf 'echo "tty=$(tty)"\nexit 3\n' | env -i PATH=/usr/bin:/bin GPUSLICE_RUNTIME_DIR="$rt" \
                script -qec "'$hook' console slt_one alc_test" /dev/null 2>&1); rc=$?
        expect "on a PTY it is a terminal session" has "tty=/dev/pts/"
        expect "and ends with the shell's status" test $rc -eq 3
fi

out=$(run stop 2>&1); rc=$?
expect "stop succeeds" test $rc -eq 0
out=$(run status 2>&1)
expect "status after stop: stopped" test "$out" = '{"state":"stopped"}'
out=$(run stop 2>&1); rc=$?
expect "stop of a stopped workload is done" test $rc -eq 0
out=$(run console < /dev/null 2>&1); rc=$?
expect "console refuses a stopped workload" eval 'test $rc -ne 0 && has "not running"'

rm -rf "$rt"
out=$(run stop 2>&1); rc=$?
expect "stop after the runtime directory is gone is done" test $rc -eq 0
out=$(run status 2>&1)
expect "status without a runtime directory: stopped" test "$out" = '{"state":"stopped"}'

out=$(run reboot 2>&1); rc=$?
expect "an unknown verb fails and says so" eval 'test $rc -ne 0 && has "unknown verb"'
out=$(env -i PATH=/usr/bin:/bin "$hook" start slt_one alc_test 2>&1); rc=$?
expect "without GPUSLICE_RUNTIME_DIR it refuses" eval 'test $rc -ne 0 && has GPUSLICE_RUNTIME_DIR'

echo "1..$n" >> "$tap"
cat "$tap"
exit $failed
