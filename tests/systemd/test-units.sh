#!/usr/bin/env bash
# Every unit in systemd/ passes `systemd-analyze verify` with no finding, run
# on a copy whose ExecStart points at the binaries this build made.
# usage: test-units.sh SOURCE_ROOT BUILD_ROOT TAP_FILE
set -uo pipefail
src=$1 build=$2 tap=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: > "$tap"
n=0 failed=0
for unit in "$src"/systemd/*.service; do
        name=$(basename "$unit")
        n=$((n + 1))
        sed -e "s|/usr/sbin/gpuslice-controller|$build/controller/gpuslice-controller|g" \
            -e "s|/usr/sbin/gpuslice-agent|$build/agent/gpuslice-agent|g" "$unit" > "$tmp/$name"
        out=$(systemd-analyze verify "$tmp/$name" 2>&1)
        rc=$?
        if [ $rc -eq 0 ] && [ -z "$out" ]; then
                echo "ok $n - $name passes systemd-analyze verify" >> "$tap"
        else
                echo "not ok $n - $name passes systemd-analyze verify" >> "$tap"
                sed 's/^/# /' <<< "$out" >> "$tap"
                echo "$out" >&2
                failed=1
        fi
done
echo "1..$n" >> "$tap"
exit $failed
