#!/usr/bin/env bash
# Installs what is missing, builds gpuslice with ASan + UBSan, runs every test.
# The last line is the plain summary "N passed, N failed[, N skipped]".
set -uo pipefail
cd "$(dirname "$0")/.."

build=${GPUSLICE_TEST_BUILD_DIR:-build-test}

finish_broken() {
        echo "test.sh: $1" >&2
        echo "0 passed, 1 failed"
        exit 1
}

./scripts/install-deps.sh >&2 || finish_broken "installing dependencies failed"

if [ ! -f "$build/build.ninja" ]; then
        meson setup "$build" -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
                >&2 || finish_broken "meson setup failed"
fi
meson compile -C "$build" >&2 || finish_broken "build failed"

rm -rf "$build/tests/tap"
mkdir -p "$build/tests/tap"
# Each test binary bounds its own cases; meson bounds each binary (timeout in tests/*/meson.build).
meson test -C "$build" --print-errorlogs --num-processes "${GPUSLICE_TEST_JOBS:-2}" "$@" >&2
python3 scripts/test-summary.py "$build"
