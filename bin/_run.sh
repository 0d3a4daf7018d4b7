# Sourced by bin/jblockd and bin/jblockctl: builds the jar when it is missing or older than the
# sources (under a lock, so concurrent first runs build once), then runs MAIN_CLASS.
JBLOCKD_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$JBLOCKD_HOME/bin/_jdk.sh"
target="$JBLOCKD_HOME/target"
jar="$target/jblockd.jar"
cpfile="$target/runtime-classpath.txt"
stale() {
    [ ! -f "$jar" ] || [ ! -f "$cpfile" ] ||
        [ -n "$(find "$JBLOCKD_HOME/src/main" "$JBLOCKD_HOME/pom.xml" -newer "$jar" -print -quit 2>/dev/null)" ]
}
if stale; then
    mkdir -p "$target"
    (
        flock 9
        if stale; then
            echo "jblockd: building the jar (first run)..." >&2
            (cd "$JBLOCKD_HOME" && ./mvnw -q -B -DskipTests -Dmaven.test.skip=true package >&2) || {
                echo "jblockd: build failed" >&2; exit 2; }
            cp "$target"/jblockd-*.jar "$jar"
        fi
    ) 9>"$target/.build.lock" || exit 2
fi
cp="$jar:$(cat "$cpfile")"
# The JVM's ahead-of-time cache (JDK 25, JEP 483/514/515): classes loaded and linked and method
# profiles recorded from a training run of a small workload (jblockd.daemon.AotTraining), so a
# fresh daemon runs its first job near steady speed instead of warming up for seconds. Recorded
# once per jar (under the build lock); JBLOCKD_AOT=0 runs without it. A cache that does not
# match the jar is ignored by the JVM.
aot="$target/jblockd.aot"
aot_opts=()
if [ "${JBLOCKD_AOT:-1}" != 0 ]; then
    if [ ! -f "$aot" ] || [ "$jar" -nt "$aot" ]; then
        (
            flock 9
            if [ ! -f "$aot" ] || [ "$jar" -nt "$aot" ]; then
                echo "jblockd: recording the JVM's AOT cache (first run, about 20 s)..." >&2
                rm -f "$aot"
                "$JAVA" --enable-native-access=ALL-UNNAMED -XX:AOTCacheOutput="$aot.new" -cp "$cp" \
                    jblockd.daemon.AotTraining >"$target/aot-training.log" 2>&1 &&
                    mv "$aot.new" "$aot" ||
                    { echo "jblockd: no AOT cache (see $target/aot-training.log); running without" >&2; rm -f "$aot.new"; }
            fi
        ) 9>"$target/.build.lock"
    fi
    [ -f "$aot" ] && aot_opts=(-XX:AOTCache="$aot")
fi
exec "$JAVA" --enable-native-access=ALL-UNNAMED "${aot_opts[@]}" ${JBLOCKD_JAVA_OPTS:-} \
    -cp "$cp" "$MAIN_CLASS" "$@"
