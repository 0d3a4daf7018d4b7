#!/usr/bin/env bash
# QMP round-trip latency, jblockd vs qemu-system-x86_64 -M none, same run.
# Usage: bench/qmp-bench.sh [N=5000] [command]   (needs a built tree: ./mvnw -o package -DskipTests)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. bin/_jdk.sh
[ -f target/runtime-classpath.txt ] || ./mvnw -q -B -o package -DskipTests >&2
[ -d target/test-classes/jblockd/bench ] || ./mvnw -q -B -o test-compile >&2
cp="target/test-classes:target/classes:$(cat target/runtime-classpath.txt)"
# test dependencies (jackson is already in the runtime classpath)
exec "$JAVA" --enable-native-access=ALL-UNNAMED -cp "$cp" jblockd.bench.QmpLatencyBench "${1:-5000}" ${2:+"$2"}
