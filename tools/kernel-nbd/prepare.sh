#!/bin/sh
# Builds a tiny Linux VM (kernel + initramfs) whose /init runs a shell script with the real
# Linux kernel nbd client (nbd.ko driven by Debian's nbd-client), for KernelNbdClientIT.
#
#   tools/kernel-nbd/prepare.sh CACHE_DIR
#
# Needs no root: Debian bookworm packages are fetched with `apt-get download` (the package lists
# must be present: `apt-get update` once, as root) and unpacked with dpkg-deb. Produces
#   CACHE_DIR/vmlinuz             the kernel linux-image-amd64 depends on
#   CACHE_DIR/initramfs.cpio.gz   busybox, nbd-client + its libraries, modules, /init
#   CACHE_DIR/versions            what went in
# Idempotent: does nothing when CACHE_DIR/ready exists.
# Exit codes: 0 ready, 2 cannot prepare here (no apt, no package lists, no network), 1 failure.
#
# The guest /init (see below) loads the modules, configures eth0 for QEMU user networking
# (10.0.2.15/24, host = 10.0.2.2), reads the script to run from fw_cfg
# (-fw_cfg name=opt/jblockd/script,file=SCRIPT), runs it between @@JBLOCKD-GUEST-BEGIN@@ and
# @@JBLOCKD-GUEST-EXIT <rc>@@ markers on the serial console, then powers off.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 CACHE_DIR" >&2
    exit 1
fi
CACHE=$1
if [ -f "$CACHE/ready" ] && [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initramfs.cpio.gz" ]; then
    echo "kernel-nbd: $CACHE already prepared"
    exit 0
fi

cannot() {
    echo "kernel-nbd: cannot prepare: $*" >&2
    exit 2
}

for t in apt-get apt-cache dpkg-deb gzip; do
    command -v "$t" >/dev/null 2>&1 || cannot "$t not found (a Debian/Ubuntu host is needed)"
done
[ "$(uname -m)" = x86_64 ] || cannot "host is $(uname -m), the guest is x86_64"

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
WORK=$CACHE/work
rm -rf "$WORK"
mkdir -p "$WORK/debs" "$WORK/x" "$WORK/root"

# The concrete kernel package behind the linux-image-amd64 metapackage (bookworm: 6.1.x).
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
[ -n "$KPKG" ] || cannot "apt-cache does not know linux-image-amd64 (package lists missing? run 'apt-get update' as root)"

# Debian's busybox has no nbd-client applet, so the real nbd-client (3.x) comes with the shared
# libraries it needs: its Depends closure restricted to lib* packages (bookworm: libc6, libgnutls30
# and its libraries, libnl; follows renames such as trixie's *t64 without a fixed list).
LIBPKGS=""
queue="nbd-client"
while [ -n "$queue" ]; do
    # one apt-cache call per level of the dependency tree
    # shellcheck disable=SC2086
    deps=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
        --no-enhances $queue 2>/dev/null | sed -n 's/^ *|\{0,1\}Depends: \(lib[^ <>]*\)$/\1/p')
    queue=""
    for dep in $deps; do
        case " $LIBPKGS " in
            *" $dep "*) ;;
            *) LIBPKGS="$LIBPKGS $dep"; queue="$queue $dep" ;;
        esac
    done
done
[ -n "$LIBPKGS" ] || cannot "apt-cache does not know nbd-client's dependencies"
PKGS="$KPKG busybox-static nbd-client$LIBPKGS"
echo "kernel-nbd: downloading $PKGS"
# shellcheck disable=SC2086
if ! (cd "$WORK/debs" && apt-get download $PKGS >"$WORK/download.log" 2>&1); then
    cat "$WORK/download.log" >&2
    cannot "apt-get download failed (no network or stale package lists? 'apt-get update' as root may help)"
fi

for d in "$WORK"/debs/*.deb; do
    dpkg-deb -x "$d" "$WORK/x"
done
X=$WORK/x
R=$WORK/root

KVER=$(ls "$X/lib/modules" | head -n 1)
[ -n "$KVER" ] && [ -f "$X/boot/vmlinuz-$KVER" ] || { echo "kernel-nbd: no vmlinuz in $KPKG" >&2; exit 1; }
grep -Eq '^CONFIG_BLK_DEV_NBD=(y|m)$' "$X/boot/config-$KVER" \
    || { echo "kernel-nbd: $KPKG has no NBD client (CONFIG_BLK_DEV_NBD)" >&2; exit 1; }

mkdir -p "$R/bin" "$R/sbin" "$R/lib/modules" "$R/lib/x86_64-linux-gnu" "$R/lib64" \
    "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/mnt" "$R/etc"
cp "$X/bin/busybox" "$R/bin/busybox"

# Modules: nbd; e1000 (the NIC QEMU's -nic model=e1000 emulates); qemu_fw_cfg (script
# delivery); ext4 (serves ext2) and its dependencies, in load order. Bookworm ships them
# uncompressed; later kernels compress them, and busybox insmod cannot read compressed ones.
MODS="drivers/block/nbd drivers/net/ethernet/intel/e1000/e1000 drivers/firmware/qemu_fw_cfg
lib/crc16 crypto/crc32c_generic fs/mbcache fs/jbd2/jbd2 fs/ext4/ext4"
: >"$R/lib/modules/order"
for m in $MODS; do
    src=$X/lib/modules/$KVER/kernel/$m
    name=$(basename "$m").ko
    if [ -f "$src.ko" ]; then
        cp "$src.ko" "$R/lib/modules/$name"
    elif [ -f "$src.ko.xz" ]; then
        xz -dc "$src.ko.xz" >"$R/lib/modules/$name"
    elif [ -f "$src.ko.zst" ]; then
        zstd -qdc "$src.ko.zst" >"$R/lib/modules/$name"
    else
        # not a module in this kernel: built in (newer kernels build crc16, mbcache, ... in);
        # if it is really absent the guest's script fails and says so
        echo "kernel-nbd: note: no module $m in $KPKG (built in?)"
        continue
    fi
    echo "$name" >>"$R/lib/modules/order"
done

# nbd-client and the libraries (all of those packages' shared objects; a few MiB).
cp "$X/sbin/nbd-client" "$R/sbin/nbd-client"
for dir in "$X/lib/x86_64-linux-gnu" "$X/usr/lib/x86_64-linux-gnu"; do
    for f in "$dir"/*.so*; do
        [ -e "$f" ] && cp -P "$f" "$R/lib/x86_64-linux-gnu/"
    done
done
ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"
# The library closure is complete when the unpacked loader can run it here.
if ! "$R/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$R/lib/x86_64-linux-gnu" \
        "$R/sbin/nbd-client" -V >"$WORK/nbd-client.version" 2>&1; then
    cat "$WORK/nbd-client.version" >&2
    echo "kernel-nbd: nbd-client does not run with the unpacked libraries" >&2
    exit 1
fi

cat >"$R/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
    insmod "/lib/modules/$m" || echo "@@JBLOCKD-GUEST-WARN insmod $m failed@@"
done </lib/modules/order
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
s=/sys/firmware/qemu_fw_cfg/by_name/opt/jblockd/script/raw
if [ -r "$s" ]; then
    cat "$s" >/script.sh
    echo "@@JBLOCKD-GUEST-BEGIN@@"
    sh /script.sh
    echo "@@JBLOCKD-GUEST-EXIT $?@@"
else
    echo "@@JBLOCKD-GUEST-NOSCRIPT@@ (pass -fw_cfg name=opt/jblockd/script,file=SCRIPT)"
fi
sync
poweroff -f
EOF
chmod 755 "$R/init"

(cd "$R" && find . | "$R/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -6 >"$CACHE/initramfs.cpio.gz.tmp"
cp "$X/boot/vmlinuz-$KVER" "$CACHE/vmlinuz.tmp"
{
    echo "kernel $KPKG $KVER"
    echo "busybox $("$R/bin/busybox" | head -n 1)"
    echo "nbd-client $(head -n 1 "$WORK/nbd-client.version")"
} >"$CACHE/versions"
mv "$CACHE/initramfs.cpio.gz.tmp" "$CACHE/initramfs.cpio.gz"
mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
rm -rf "$WORK"
touch "$CACHE/ready"
echo "kernel-nbd: prepared $CACHE ($(tr '\n' ';' <"$CACHE/versions"))"
