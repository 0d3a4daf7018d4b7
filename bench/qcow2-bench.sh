#!/usr/bin/env bash
# qcow2 throughput: jblockd's qcow2 driver (src/test/java/jblockd/bench/Qcow2Bench.java) against
# `qemu-img bench` on the same kind of file, same run, same request shapes:
#   sequential 1 MiB writes then reads over a fresh 1 GiB image (COUNT1M requests),
#   "random" 4 KiB writes then reads: offset = i * STEP mod 1 GiB (qemu-img bench -S), COUNT4K requests,
# DEPTH requests in flight (qemu-img bench -d; virtual threads for us).
# Usage: bench/qcow2-bench.sh [workdir]   (env: COUNT1M=1024 COUNT4K=20000 DEPTH=64 QEMU_CACHE=none)
set -euo pipefail
cd "$(dirname "$0")/.."
export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
WORK=${1:-$(mktemp -d /var/tmp/qcow2-bench.XXXXXX)}
COUNT1M=${COUNT1M:-1024}
COUNT4K=${COUNT4K:-20000}
DEPTH=${DEPTH:-64}
STEP=${STEP:-134541312}   # 4 KiB * 32847 (odd): walks the image without repeating
QEMU_CACHE=${QEMU_CACHE:-none}
IMG="$WORK/bench.qcow2"
trap 'rm -f "$IMG"' EXIT

./mvnw -B -o -q test-compile dependency:build-classpath -Dmdep.outputFile=target/bench-classpath.txt >/dev/null
CP="target/classes:target/test-classes:$(cat target/bench-classpath.txt)"

qemu_secs() { # qemu-img bench args... -> seconds
    qemu-img bench "$@" | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'
}
qemu_aio=()
[ "$QEMU_CACHE" = none ] && qemu_aio=(-n)

declare -A Q
rm -f "$IMG"; qemu-img create -q -f qcow2 "$IMG" 1G
Q[seq-write-1M]=$(qemu_secs -f qcow2 -t "$QEMU_CACHE" "${qemu_aio[@]}" -d "$DEPTH" -w -s 1M -c "$COUNT1M" "$IMG")
Q[seq-read-1M]=$(qemu_secs -f qcow2 -t "$QEMU_CACHE" "${qemu_aio[@]}" -d "$DEPTH" -s 1M -c "$COUNT1M" "$IMG")
rm -f "$IMG"; qemu-img create -q -f qcow2 "$IMG" 1G
Q[rand-write-4k]=$(qemu_secs -f qcow2 -t "$QEMU_CACHE" "${qemu_aio[@]}" -d "$DEPTH" -w -s 4K -S "$STEP" -c "$COUNT4K" "$IMG")
Q[rand-read-4k]=$(qemu_secs -f qcow2 -t "$QEMU_CACHE" "${qemu_aio[@]}" -d "$DEPTH" -s 4K -S "$STEP" -c "$COUNT4K" "$IMG")
rm -f "$IMG"

declare -A J
while read -r tag name secs _count _bytes; do
    [ "$tag" = RESULT ] && J[$name]=$secs
done < <("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -cp "$CP" jblockd.bench.Qcow2Bench \
    "$IMG" "$COUNT1M" "$COUNT4K" "$DEPTH" "$STEP")

printf '%-14s %14s %14s %8s   (qemu-img bench -t %s, depth %s)\n' phase jblockd qemu-img ratio "$QEMU_CACHE" "$DEPTH"
for p in seq-write-1M seq-read-1M rand-write-4k rand-read-4k; do
    case $p in
        *1M) n=$COUNT1M; unit=MiB/s ;;
        *) n=$COUNT4K; unit=IOPS ;;
    esac
    awk -v p="$p" -v n="$n" -v u="$unit" -v j="${J[$p]}" -v q="${Q[$p]}" 'BEGIN {
        jv = (u == "MiB/s") ? n / j : n / j; qv = (u == "MiB/s") ? n / q : n / q;
        printf "%-14s %9.0f %-5s %8.0f %-5s %7.2fx\n", p, jv, u, qv, u, jv / qv }'
done
