#!/usr/bin/env bash
# Builds (once) and caches what the VM tests boot: the pinned Debian kernel
# (decompressed vmlinux: boots in half the time of the bzImage under TCG), the
# modules the scenarios load, netdevsim.ko built out of tree (Debian's kernel
# leaves CONFIG_NETDEVSIM unset), and busybox. Nothing is installed on the
# host: the .deb files are fetched with `apt-get download` and unpacked with
# dpkg-deb -x. Pinned, because old kernels leave the mirror; the .debs stay in
# the cache so a kit can be rebuilt after they do.
#   usage: kit.sh            prints the kit directory on stdout
#   GPUSLICE_VM_CACHE        cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/gpuslice-vm)
set -euo pipefail

KVER=6.1.0-56-amd64
DEBVER=6.1.192-2
cache=${GPUSLICE_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpuslice-vm}
kit=$cache/kit-$KVER
[ -f "$kit/.complete" ] && { echo "$kit"; exit 0; }

log() { echo "vm-kit: $*" >&2; }
mkdir -p "$cache/debs"
t0=$(date +%s)

debs=(linux-image-$KVER linux-headers-$KVER linux-headers-${KVER%-amd64}-common linux-kbuild-6.1
      linux-source-6.1)
for p in "${debs[@]}"; do
        ls "$cache/debs/${p}_${DEBVER}_"*.deb > /dev/null 2>&1 && continue
        log "downloading $p $DEBVER"
        (cd "$cache/debs" && apt-get download "$p=$DEBVER" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) ||
                { log "apt-get download $p=$DEBVER failed (pinned version gone from the mirror? run apt-get update)"; exit 1; }
done
if ! ls "$cache/debs/"busybox-static_*.deb > /dev/null 2>&1; then
        log "downloading busybox-static"
        (cd "$cache/debs" && apt-get download busybox-static 2>&1 | grep -v '^W: Download' >&2) ||
                { log "apt-get download busybox-static failed"; exit 1; }
fi
deb() { ls "$cache/debs/${1}_"*.deb | head -1; }

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/x" "$work/out"

log "unpacking the kernel, headers and kbuild"
mods="lib/modules/$KVER"
dpkg-deb -x "$(deb linux-image-$KVER)" "$work/x"
[ -f "$work/x/boot/vmlinuz-$KVER" ] || { log "linux-image-$KVER has no vmlinuz"; exit 1; }
for p in linux-headers-$KVER linux-headers-${KVER%-amd64}-common linux-kbuild-6.1; do
        dpkg-deb -x "$(deb "$p")" "$work/x"
done
hdr=$work/x/usr/src/linux-headers-$KVER
# The arch headers include the common ones by absolute path.
sed -i "s|/usr/src/linux-headers-|$work/x/usr/src/linux-headers-|" "$hdr/Makefile"

log "extracting netdevsim from linux-source-6.1"
mkdir -p "$work/nds"
dpkg-deb --fsys-tarfile "$(deb linux-source-6.1)" | tar -xO ./usr/src/linux-source-6.1.tar.xz |
        xz -dc -T0 | tar -x -C "$work/nds" --strip-components=4 --wildcards \
        'linux-source-6.1/drivers/net/netdevsim/*'
log "building netdevsim.ko"
make -s -C "$hdr" M="$work/nds" CONFIG_NETDEVSIM=m -j"$(nproc)" modules > "$work/nds.log" 2>&1 ||
        { cat "$work/nds.log" >&2; log "building netdevsim failed"; exit 1; }

log "decompressing vmlinux"
# bzImage carries an xz stream (CONFIG_KERNEL_XZ): find its magic and inflate.
off=$(LC_ALL=C grep -abo $'\xfd7zXZ\x00' "$work/x/boot/vmlinuz-$KVER" | head -1 | cut -d: -f1)
[ -n "$off" ] || { log "no xz stream in vmlinuz"; exit 1; }
tail -c +$((off + 1)) "$work/x/boot/vmlinuz-$KVER" | xz -dc 2> /dev/null > "$work/out/vmlinux" || true
file -b "$work/out/vmlinux" 2> /dev/null | grep -q ELF || head -c 4 "$work/out/vmlinux" | grep -q ELF ||
        { log "vmlinux did not decompress to an ELF image"; exit 1; }

log "collecting modules"
mkdir -p "$work/x/$mods/extra"
cp "$work/nds/netdevsim.ko" "$work/x/$mods/extra/"
depmod -b "$work/x" "$KVER"
# The insmod order for each module the guest needs, resolved here with kmod
# against every module of the kernel, so the guest needs only busybox's insmod
# and the kit keeps only those modules.
: > "$work/insmod.list"
for m in nvme vfio_pci vfio_iommu_type1 netdevsim; do
        modprobe -d "$work/x" -S "$KVER" --show-depends "$m" |
                awk '$1 == "insmod" { print $2 }' | sed "s|^$work/x||" >> "$work/insmod.list"
done
awk '!seen[$0]++' "$work/insmod.list" > "$work/out/insmod.order"
while read -r ko; do
        mkdir -p "$work/out/modules$(dirname "$ko")"
        cp "$work/x$ko" "$work/out/modules$ko"
done < "$work/out/insmod.order"

dpkg-deb -x "$(deb busybox-static)" "$work/bb"
cp "$work/bb/bin/busybox" "$work/out/busybox"

echo "$KVER $DEBVER" > "$work/out/VERSION"
touch "$work/out/.complete"
rm -rf "$kit"
mv "$work/out" "$kit"
log "kit ready in $(( $(date +%s) - t0 )) s: $kit"
echo "$kit"
