#!/usr/bin/env bash
# Side-by-side block I/O benchmark: jblockd's raw -> file nodes (RawBench) against
# `qemu-img bench` on the same 1 GiB raw file, in the same run, with the same request pattern.
#
# Both sides bypass the page cache (O_DIRECT: jblockd cache.direct=on, qemu-img bench -t none),
# so the figures compare the I/O paths, not the page cache (dropping the cache needs root and
# would still favour whoever runs second). "Random" 4 KiB uses qemu-img bench's offset/step
# walk with a large odd step (4096 * 99991, wrapping at 1 GiB), the only non-sequential pattern
# qemu-img bench has; RawBench walks exactly the same offsets.
#
# Each figure is the best of REPEAT (default 2) alternating runs per side.
# Usage: bench/block-bench.sh   (env: BENCH_DIR=/var/tmp, JAVA_HOME, REPEAT=2, QUICK=1 for a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
BUILD=${JBLOCKD_BUILD_DIR:-target}

for tool in qemu-img "$JAVA_HOME/bin/java"; do
    command -v "$tool" >/dev/null || { echo "block-bench: $tool not found" >&2; exit 1; }
done

./mvnw -B -q -o test-compile
./mvnw -B -q -o dependency:build-classpath -Dmdep.includeScope=test -Dmdep.outputFile="$BUILD/bench-classpath.txt" >/dev/null
CP="$BUILD/test-classes:$BUILD/classes:$(cat "$BUILD/bench-classpath.txt")"

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/jblockd-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
IMG="$WORK/bench.raw"
SIZE_GIB=1
qemu-img create -q -f raw -o preallocation=full "$IMG" ${SIZE_GIB}G

MIB=$((1 << 20))
RSTEP=$((4096 * 99991))
if [[ "${QUICK:-0}" == 1 ]]; then
    SEQ_COUNT=128; RAND_COUNT=2000; RAND_QD_COUNT=4000
else
    SEQ_COUNT=$((SIZE_GIB * 1024)); RAND_COUNT=10000; RAND_QD_COUNT=40000
fi

seconds() { sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'; }

qemu_run() { # op count size depth step
    local w=""; [[ $1 == write ]] && w="-w"
    qemu-img bench -f raw -t none $w -c "$2" -s "$3" -d "$4" -S "$5" "$IMG" | seconds
}
ours_run() { # op count size depth step
    "$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -cp "$CP" \
        jblockd.bench.RawBench "$IMG" "$1" "$2" "$3" "$4" "$5" direct | seconds
}

printf '%-26s %10s %10s %10s %10s %7s\n' "test (O_DIRECT, 1 GiB raw)" "qemu MiB/s" "ours MiB/s" "qemu IOPS" "ours IOPS" "ratio"
bench() { # name op count size depth step
    local name=$1; shift
    local q="" o="" t i
    # Alternate the two sides REPEAT times and keep each side's best time: the machine is
    # shared, and alternating keeps device/cache state from favouring one side.
    for ((i = 0; i < ${REPEAT:-2}; i++)); do
        t=$(qemu_run "$@"); q=$(awk -v a="$q" -v b="$t" 'BEGIN { print (a == "" || b < a) ? b : a }')
        t=$(ours_run "$@"); o=$(awk -v a="$o" -v b="$t" 'BEGIN { print (a == "" || b < a) ? b : a }')
    done
    awk -v n="$name" -v c="$2" -v s="$3" -v q="$q" -v o="$o" 'BEGIN {
        qm = c * s / 1048576 / q; om = c * s / 1048576 / o;
        printf "%-26s %10.1f %10.1f %10.0f %10.0f %7.2f\n", n, qm, om, c / q, c / o, om / qm }'
}

bench "seq write 1 MiB qd1"      write "$SEQ_COUNT"     $MIB 1  $MIB
bench "seq read 1 MiB qd1"       read  "$SEQ_COUNT"     $MIB 1  $MIB
bench "rand write 4 KiB qd1"     write "$RAND_COUNT"    4096 1  $RSTEP
bench "rand read 4 KiB qd1"      read  "$RAND_COUNT"    4096 1  $RSTEP
bench "rand write 4 KiB qd16"    write "$RAND_QD_COUNT" 4096 16 $RSTEP
bench "rand read 4 KiB qd16"     read  "$RAND_QD_COUNT" 4096 16 $RSTEP
echo "ratio = ours / qemu (higher is better for jblockd); qemu-img $(qemu-img --version | head -1 | awk '{print $3}')"
