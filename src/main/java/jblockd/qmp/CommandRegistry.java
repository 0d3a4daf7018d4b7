package jblockd.qmp;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Command name to handler and argument type. The schema (src/main/resources/jblockd/qapi)
 * declares each command's arguments; every registered command must be declared there, which
 * a unit test checks.
 */
public final class CommandRegistry {

    /** A handler and the record type its arguments are converted to ({@code Void} for none). */
    public record Entry<A>(String name, Class<A> argsType, CommandHandler<A> handler) {
    }

    private final Map<String, Entry<?>> entries = new LinkedHashMap<>();

    public <A> void register(String name, Class<A> argsType, CommandHandler<A> handler) {
        if (entries.putIfAbsent(name, new Entry<>(name, argsType, handler)) != null) {
            throw new IllegalStateException("command registered twice: " + name);
        }
    }

    public Entry<?> get(String name) {
        return entries.get(name);
    }

    public Map<String, Entry<?>> all() {
        return Collections.unmodifiableMap(entries);
    }
}
