#!/usr/bin/env bash
# NBD export throughput and IOPS: jblockd vs qemu-nbd 7.2 on the same machine, same run.
#   bench/nbd-bench.sh [SIZE_MIB=1024] [WORKDIR=/tmp/nbd-bench]
# For each server exporting a raw image of SIZE_MIB (random data) over a UNIX socket:
#   - nbdcopy read (export -> null:) and write (file -> export), MiB/s, with --connections=1
#     and --connections=4 (nbdcopy uses multi-conn only when the server advertises
#     CAN_MULTI_CONN: both do here, qemu-nbd because of -e 8; nbdcopy opens no more connections
#     than it has threads, one per CPU, so a 2-CPU machine gets 2: the script prints both facts);
#   - fio --ioengine=nbd 4 KiB random read and write IOPS, iodepth 16, FIO_SECONDS (5) each.
# ROUNDS (3) rounds alternate the two servers figure by figure; the best of the rounds is
# reported for each, so that a burst of load from other processes does not decide a ratio.
# Both servers first get the same unmeasured passes: a read and a write with 1 and with 4
# connections (page cache; the JVM compiles its hot paths only after a few thousand requests,
# which at nbdcopy's 256 KiB requests is a few GiB).
# The machine is shared: run it when idle, or several times, and compare the ratios.
# Prints one line per figure and the jblockd/qemu-nbd ratios.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZE_MIB=${1:-1024}
WORK=${2:-/tmp/nbd-bench}
FIO_SECONDS=${FIO_SECONDS:-5}
ROUNDS=${ROUNDS:-3}
mkdir -p "$WORK"
rm -f "$WORK"/*.sock
for t in nbdcopy nbdinfo qemu-nbd fio; do
    command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "fio has no nbd engine" >&2; exit 2; }

SRC=$WORK/src.raw
if [ ! -f "$SRC" ] || [ "$(stat -c %s "$SRC")" -ne $((SIZE_MIB << 20)) ]; then
    head -c $((SIZE_MIB << 20)) /dev/urandom >"$SRC"
fi
cp --sparse=never "$SRC" "$WORK/j.raw"
cp --sparse=never "$SRC" "$WORK/q.raw"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

bin/jblockd --drive "id=drive0,file=$WORK/j.raw,format=raw,cache=writeback" \
    --nbd-server "addr.type=unix,addr.path=$WORK/j.sock" \
    --export "type=nbd,id=e0,node-name=drive0,name=disk,writable=on" 2>"$WORK/jblockd.log" &
pids+=($!)
qemu-nbd -f raw -t -e 8 -x disk -k "$WORK/q.sock" --cache=writeback --aio=threads "$WORK/q.raw" &
pids+=($!)
for s in j q; do
    for _ in $(seq 1 300); do [ -S "$WORK/$s.sock" ] && break; sleep 0.1; done
    [ -S "$WORK/$s.sock" ] || { echo "server $s did not start" >&2; cat "$WORK/jblockd.log" >&2; exit 1; }
done

uri() { echo "nbd+unix:///disk?socket=$WORK/$1.sock"; }
now() { date +%s.%N; }
mibs() { # seconds -> MiB/s
    awk -v s="$1" -v m="$SIZE_MIB" 'BEGIN { printf "%.0f", m / s }'
}
declare -A R
keep() { # key value: keep the best (largest) value
    if [ -z "${R[$1]:-}" ] || awk -v a="$2" -v b="${R[$1]}" 'BEGIN { exit !(a > b) }'; then
        R[$1]=$2
    fi
}
copy() { # name server conns direction
    local t0 t1
    sync
    t0=$(now)
    if [ "$4" = read ]; then
        nbdcopy --connections="$3" "$(uri "$2")" null:
    else
        nbdcopy --connections="$3" "$SRC" "$(uri "$2")"
    fi
    t1=$(now)
    keep "$1" "$(mibs "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")"
}
fio_iops() { # name server rw
    keep "$1" "$(fio --name=b --ioengine=nbd --uri="$(uri "$2")" --rw="$3" --bs=4k --iodepth=16 \
        --runtime="$FIO_SECONDS" --time_based --size="${SIZE_MIB}m" --output-format=terse 2>/dev/null |
        awk -F';' -v rw="$3" '$1 == "3" { print (rw == "randread") ? $8 : $49; exit }')"
}

# Warm-up, the same for both servers (the JVM compiles its hot paths, both page caches hold
# the image). Not measured.
for s in j q; do
    for c in 1 4; do
        nbdcopy --connections=$c "$(uri "$s")" null:
        nbdcopy --connections=$c "$SRC" "$(uri "$s")"
    done
done

mc=""
for s in j q; do
    if nbdinfo --can multi-conn "$(uri "$s")" 2>/dev/null; then mc="$mc $s:yes"; else mc="$mc $s:no"; fi
done
echo "multi-conn (j = jblockd, q = qemu-nbd):$mc; nbdcopy --connections=4 opens min(4, $(nproc) CPUs) where offered"

for _ in $(seq 1 "$ROUNDS"); do
    for s in j q; do copy "$s-read-1" "$s" 1 read; done
    for s in j q; do copy "$s-write-1" "$s" 1 write; done
    for s in j q; do copy "$s-read-4" "$s" 4 read; done
    for s in j q; do copy "$s-write-4" "$s" 4 write; done
    for s in j q; do fio_iops "$s-randread" "$s" randread; done
    for s in j q; do fio_iops "$s-randwrite" "$s" randwrite; done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-34s %12s %12s %7s\n' "figure (${SIZE_MIB} MiB image, best of $ROUNDS)" jblockd qemu-nbd ratio
for k in read-1 write-1 read-4 write-4; do
    printf '%-34s %10s/s %10s/s %7s\n' "nbdcopy $k (MiB)" "${R[j-$k]}" "${R[q-$k]}" "$(ratio "${R[j-$k]}" "${R[q-$k]}")"
done
for k in randread randwrite; do
    printf '%-34s %12s %12s %7s\n' "fio 4k $k iodepth 16 (IOPS)" "${R[j-$k]}" "${R[q-$k]}" "$(ratio "${R[j-$k]}" "${R[q-$k]}")"
done
