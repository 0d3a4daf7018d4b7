# Sourced by bin/* scripts: selects a JDK 25 (JAVA_HOME if it is one, else /usr/lib/jvm/*25*)
# and exports JAVA_HOME and JAVA.
jblockd_is_jdk25() {
    [ -x "$1/bin/java" ] && "$1/bin/java" -version 2>&1 | head -1 | grep -qE '"25([.-]|")'
}
if [ -n "${JAVA_HOME:-}" ] && jblockd_is_jdk25 "$JAVA_HOME"; then
    :
else
    JAVA_HOME=
    for d in /usr/lib/jvm/*25*; do
        if jblockd_is_jdk25 "$d"; then JAVA_HOME=$d; break; fi
    done
    if [ -z "$JAVA_HOME" ]; then
        echo "jblockd: no JDK 25 found (set JAVA_HOME to a JDK 25, or install one under /usr/lib/jvm)" >&2
        exit 2
    fi
fi
export JAVA_HOME
JAVA="$JAVA_HOME/bin/java"
