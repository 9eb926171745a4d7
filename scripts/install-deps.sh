#!/usr/bin/env bash
# Installs exactly what gpuslice's build, tests and benchmarks need on Debian 12.
# Idempotent: packages already present are not touched; npm peers install from
# committed lock files with `npm ci`.
#   --build-only   only what building and running needs (used by run.sh):
#                  no test peers from npm, no benchmark tools.
set -euo pipefail
cd "$(dirname "$0")/.."
build_only=0
[ "${1:-}" = "--build-only" ] && build_only=1

PKGS=(
  # build
  build-essential meson ninja-build pkg-config cmake clang-format
  # libraries (the fixed choices)
  libuv1-dev libh2o-dev libh2o-dev-common libssl-dev libwslay-dev libnng-dev
  libmsgpack-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev libcjose-dev
  libnl-3-dev libnl-route-3-dev libpci-dev libhwloc-dev libcriterion-dev libsystemd-dev
  # runtime tools used by scripts and tests
  openssl curl ca-certificates jq sqlite3 procps iproute2 systemd
)
if [ $build_only -eq 0 ]; then
  PKGS+=(
    # benchmarks
    wrk nginx-light
    # ssh-keygen: the SSH key tests compare fingerprints with its output
    openssh-client
    # peers for tests (OpenAPI linter, OIDC provider, Stripe library) run on Node
    nodejs
    # the real-kernel host-operation tests (tests/vm): QEMU boots the Debian
    # kernel; its .debs are fetched by tests/vm/kit.sh with apt-get download
    qemu-system-x86 cpio kmod xz-utils file
  )
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ $build_only -eq 1 ]; then
  echo "install-deps: ok (build only)"
  exit 0
fi

# Debian's nodejs lacks npm while NodeSource's bundles it (and conflicts with
# Debian's npm package): install the package only where the command is absent.
if ! command -v npm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
fi

# Node peers used by tests and docs checks, pinned by lock files.
for dir in tests/node; do
  if [ -f "$dir/package-lock.json" ]; then
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  fi
done
echo "install-deps: ok"
