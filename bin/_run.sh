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
exec "$JAVA" --enable-native-access=ALL-UNNAMED ${JBLOCKD_JAVA_OPTS:-} \
    -cp "$jar:$(cat "$cpfile")" "$MAIN_CLASS" "$@"
