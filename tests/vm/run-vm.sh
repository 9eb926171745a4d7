#!/usr/bin/env bash
# The agent's host operations against a real kernel: boots the pinned Debian
# kernel in QEMU (TCG) with an emulated SR-IOV NVMe controller behind an
# emulated Intel IOMMU, loads nvme, vfio-pci and netdevsim, and runs
# guest-hostops (built here, without sanitizers, from the agent's sources) as
# the guest's init. Its TAP lines come back over the serial console.
# usage: run-vm.sh SOURCE_ROOT TAP_FILE
#   GPUSLICE_VM_CACHE     kit cache (see kit.sh)
#   GPUSLICE_VM_TIMEOUT   seconds the boot may take (default 300)
#   GPUSLICE_VM_KEEP=1    keep the work directory (initramfs, console log)
set -uo pipefail
src=$1 tap=$2
here=$src/tests/vm
boot_timeout=${GPUSLICE_VM_TIMEOUT:-300}
: > "$tap"

finish() { # finish ok|not-ok|skip name [diagnostic]
        case $1 in
        ok) echo "ok 1 - $2" >> "$tap" ;;
        skip) echo "ok 1 - $2 # SKIP $3" >> "$tap" ;;
        *) echo "not ok 1 - $2" >> "$tap"; [ -n "${3:-}" ] && sed 's/^/# /' <<< "$3" >> "$tap" ;;
        esac
        echo "1..1" >> "$tap"
        [ "$1" = not-ok ] && { echo "${3:-}" >&2; exit 1; }
        exit 0
}

# QEMU is the one thing allowed to be missing, and only where it cannot be installed.
if ! command -v qemu-system-x86_64 > /dev/null; then
        why="qemu-system-x86_64 is not installed"
        if [ "$(id -u)" -eq 0 ] && command -v apt-get > /dev/null; then
                out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                        qemu-system-x86 2>&1) || why="qemu-system-x86 cannot be installed: $(tail -1 <<< "$out")"
        else
                why="qemu-system-x86 cannot be installed: not root or no apt-get"
        fi
        command -v qemu-system-x86_64 > /dev/null || finish skip vm "$why"
fi
for tool in cpio dpkg-deb depmod modprobe make cc pkg-config timeout; do
        command -v $tool > /dev/null || finish not-ok "vm tools present" "missing $tool (run ./scripts/install-deps.sh)"
done

t0=$(date +%s)
kit=$("$here/kit.sh") || finish not-ok "vm kit builds" "tests/vm/kit.sh failed"
t_kit=$(( $(date +%s) - t0 ))

work=$(mktemp -d /tmp/gpuslice-vm.XXXXXX)
[ "${GPUSLICE_VM_KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
st=$work/initramfs
mkdir -p "$st"/{bin,sbin,proc,sys,dev,tmp,lib,lib64,usr/lib}

# The guest program: the agent's host-operation modules, no sanitizers.
srcs=()
for m in pci-sysfs sriov pci-bind pci-reset nvme-wipe vf-config vf-baseline hooks slot-ops \
        sysfs-path alloc-ops simulated-ops; do
        srcs+=("$src/agent/$m.c")
done
# alloc-ops reads command bodies (the protocol codec) and logs.
for m in proto log timeutil; do
        srcs+=("$src/common/$m.c")
done
if ! out=$(cc -std=gnu17 -O2 -g0 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
        -Wno-missing-field-initializers -I"$src/agent" -I"$src/common" \
        "${srcs[@]}" "$here/guest-hostops.c" -o "$st/guest-hostops" \
        $(pkg-config --cflags --libs libnl-route-3.0 libnl-3.0 jansson msgpack) -pthread 2>&1); then
        finish not-ok "guest program builds" "$out"
fi
# Its shared libraries and the loader, as ldd names them.
for lib in $(ldd "$st/guest-hostops" | grep -o '/[^ ]*'); do
        mkdir -p "$st$(dirname "$lib")"
        cp -L "$lib" "$st$lib"
done

cp "$kit/busybox" "$st/bin/busybox"
while read -r ko; do
        mkdir -p "$st$(dirname "$ko")"
        cp "$kit/modules$ko" "$st$ko"
done < "$kit/insmod.order"
cp "$kit/insmod.order" "$st/insmod.order"
cat > "$st/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "$m" || echo "@@ # insmod $m failed"; done < /insmod.order
/guest-hostops
echo "@@ # guest-hostops exited $?"
poweroff -f
INIT
chmod +x "$st/init"
(cd "$st" && find . | cpio -o -H newc --quiet) > "$work/initrd"

truncate -s 8M "$work/ns1.img" "$work/ns2.img"
t1=$(date +%s)
timeout --kill-after=10 "$boot_timeout" qemu-system-x86_64 \
        -machine q35,kernel-irqchip=split -accel tcg -cpu max -m 1024 -smp 2 \
        -nographic -nodefaults -serial "file:$work/console.log" -monitor none -no-reboot \
        -device intel-iommu,intremap=on,caching-mode=on \
        -device pcie-root-port,id=rp1,chassis=1,slot=1 \
        -device nvme-subsys,id=subsys0,nqn=nqn.2024-01.io.test:subsys0 \
        -device nvme,id=nvme0,bus=rp1,serial=t0001,subsys=subsys0,max_ioqpairs=10,msix_qsize=6,sriov_max_vfs=4,sriov_vq_flexible=8,sriov_vi_flexible=4 \
        -drive file="$work/ns1.img",if=none,id=nvm0,format=raw \
        -device nvme-ns,drive=nvm0,bus=nvme0,nsid=1,shared=off \
        -drive file="$work/ns2.img",if=none,id=nvm1,format=raw \
        -device nvme-ns,drive=nvm1,bus=nvme0,nsid=2,detached=on,shared=off \
        -kernel "$kit/vmlinux" -initrd "$work/initrd" \
        -append "console=ttyS0 intel_iommu=on iommu=pt panic=-1 quiet loglevel=${GPUSLICE_VM_LOGLEVEL:-1} rdinit=/init" \
        > "$work/qemu.log" 2>&1
rc=$?
t_boot=$(( $(date +%s) - t1 ))

# The guest's TAP lines, renumbered as they come; everything else stays in the log.
tr -d '\r' < "$work/console.log" | sed -n 's/^.*@@ //p' | grep -v '^1\.\.' > "$work/tap.body"
cp "$work/tap.body" "$tap"
echo "# kit ${t_kit}s, boot+scenarios ${t_boot}s, qemu exit $rc" >> "$tap"
plan=$(tr -d '\r' < "$work/console.log" | sed -n 's/^.*@@ 1\.\.\([0-9]*\).*$/\1/p' | tail -1)
n=$(grep -cE '^(ok|not ok) ' "$work/tap.body")
if [ -z "$plan" ] || [ "$plan" != "$n" ] || [ $rc -ne 0 ]; then
        n=$((n + 1))
        echo "not ok $n - the guest ran every scenario to the end (plan ${plan:-missing}, qemu exit $rc)" >> "$tap"
        tail -40 "$work/console.log" | sed 's/^/# console: /' >> "$tap"
        sed 's/^/# qemu: /' "$work/qemu.log" >> "$tap"
fi
echo "1..$n" >> "$tap"
cat "$tap" >&2
grep -q '^not ok' "$tap" && exit 1
exit 0
