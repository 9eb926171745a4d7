#!/bin/sh
# Copies the sysfs/procfs files gpuslice's discovery reads into a tarball, so a
# real host's topology can become a test fixture (gpuslice-agent discover
# --sysfs-root DIR). Plain POSIX sh and coreutils: nothing to install on the
# host. Copies no serial numbers, MAC addresses or host names.
#   usage: snapshot-sysfs.sh OUT.tar.gz [SYSFS_PREFIX]
set -eu
out=$1
src=${2:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root"

copy_file() {
        [ -f "$src$1" ] && [ -r "$src$1" ] || return 0
        mkdir -p "$root$(dirname "$1")"
        cat "$src$1" > "$root$1" 2>/dev/null || rm -f "$root$1"
}
copy_link() {
        [ -L "$src$1" ] || return 0
        mkdir -p "$root$(dirname "$1")"
        ln -sfn "$(readlink "$src$1")" "$root$1"
}

# PCI functions: the links in /sys/bus/pci/devices and the attributes of the
# device directories they point to (bridges and switch ports included).
for dev in "$src"/sys/bus/pci/devices/*; do
        [ -e "$dev" ] || continue
        d=${dev#"$src"}
        copy_link "$d"
        real=$(cd "$dev" && pwd -P)
        real=${real#"$src"}
        for f in class vendor device subsystem_vendor subsystem_device revision numa_node \
                 local_cpulist local_cpus sriov_totalvfs sriov_numvfs sriov_offset sriov_stride \
                 sriov_vf_device sriov_drivers_autoprobe current_link_speed current_link_width \
                 max_link_speed max_link_width reset_method enable modalias \
                 driver_override d3cold_allowed; do
                copy_file "$real/$f"
        done
        for l in driver iommu_group physfn; do
                copy_link "$real/$l"
        done
        # The standard 256-byte header only: extended space holds the device serial number.
        if [ -r "$src$real/config" ]; then
                head -c 256 "$src$real/config" > "$root$real/config" 2>/dev/null || true
        fi
        for l in "$src$real"/virtfn*; do
                [ -L "$l" ] && copy_link "${l#"$src"}"
        done
        # Class children (net, nvme, drm, infiniband) by name only: no addresses copied.
        for c in net nvme drm infiniband; do
                if [ -d "$src$real/$c" ]; then
                        for n in "$src$real/$c"/*; do
                                [ -e "$n" ] && mkdir -p "$root${n#"$src"}"
                        done
                fi
        done
done

# IOMMU groups.
for g in "$src"/sys/kernel/iommu_groups/*; do
        [ -d "$g" ] || continue
        gd=${g#"$src"}
        copy_file "$gd/type"
        for l in "$g"/devices/*; do
                [ -L "$l" ] && copy_link "${l#"$src"}"
        done
done

# NUMA nodes and CPUs (what hwloc's Linux backend reads).
for f in online possible has_cpu has_memory has_normal_memory; do
        copy_file /sys/devices/system/node/$f
done
for n in "$src"/sys/devices/system/node/node*; do
        [ -d "$n" ] || continue
        nd=${n#"$src"}
        for f in cpulist cpumap meminfo distance; do
                copy_file "$nd/$f"
        done
        for h in "$n"/hugepages/hugepages-*; do
                [ -d "$h" ] && copy_file "${h#"$src"}/nr_hugepages"
        done
done
for f in online possible present kernel_max; do
        copy_file /sys/devices/system/cpu/$f
done
for c in "$src"/sys/devices/system/cpu/cpu[0-9]*; do
        [ -d "$c" ] || continue
        cd_=${c#"$src"}
        copy_file "$cd_/online"
        for f in "$c"/topology/*; do
                [ -f "$f" ] && copy_file "${f#"$src"}"
        done
        for i in "$c"/cache/index*; do
                [ -d "$i" ] || continue
                for f in level type size shared_cpu_map shared_cpu_list coherency_line_size \
                         ways_of_associativity physical_line_partition number_of_sets; do
                        copy_file "${i#"$src"}/$f"
                done
        done
done
copy_file /proc/cpuinfo
copy_file /proc/meminfo
for f in sys_vendor product_name board_vendor board_name bios_vendor; do
        copy_file /sys/class/dmi/id/$f
done

# Facts for the fixture's SOURCES row, when the tools exist on the host.
mkdir -p "$tmp/facts"
uname -r > "$tmp/facts/uname-r.txt" 2>/dev/null || true
command -v lspci > /dev/null 2>&1 && lspci -nn -D > "$tmp/facts/lspci-nn.txt" 2>/dev/null || true
command -v lspci > /dev/null 2>&1 && lspci -tv > "$tmp/facts/lspci-tv.txt" 2>/dev/null || true
command -v lspci > /dev/null 2>&1 && lspci -x -D > "$tmp/facts/lspci-x.dump" 2>/dev/null || true
command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi topo -m > "$tmp/facts/nvidia-smi-topo.txt" 2>/dev/null || true
command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -q -d PCI > "$tmp/facts/nvidia-smi-pci.txt" 2>/dev/null || true
command -v lstopo-no-graphics > /dev/null 2>&1 && lstopo-no-graphics --whole-io --of xml > "$tmp/facts/lstopo.xml" 2>/dev/null || true

tar -C "$tmp" -czf "$out" root facts
echo "snapshot: $out ($(tar -tzf "$out" | wc -l) entries)"
