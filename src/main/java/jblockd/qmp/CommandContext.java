package jblockd.qmp;

import java.util.ArrayList;
import java.util.List;

/**
 * What a command handler may know about the request it serves, bound for the duration of one
 * dispatch (a {@link ScopedValue}, so nothing is stored statically). Outside a dispatch,
 * {@link #current()} returns a detached context: negotiated, with no session.
 */
public final class CommandContext {
    private static final ScopedValue<CommandContext> CURRENT = ScopedValue.newInstance();

    /** The session side of capability negotiation (qmp_capabilities). */
    public interface Negotiation {
        boolean negotiated();

        /** Called after the reply of a successful qmp_capabilities. */
        void complete();
    }

    private static final Negotiation ALWAYS = new Negotiation() {
        @Override
        public boolean negotiated() {
            return true;
        }

        @Override
        public void complete() {
        }
    };

    private final Negotiation negotiation;
    private final List<Runnable> afterReply = new ArrayList<>();

    public CommandContext(Negotiation negotiation) {
        this.negotiation = negotiation;
    }

    /** A context for in-process calls (Daemon.executeCommand): already negotiated. */
    public static CommandContext detached() {
        return new CommandContext(ALWAYS);
    }

    public static CommandContext current() {
        return CURRENT.isBound() ? CURRENT.get() : detached();
    }

    public Negotiation negotiation() {
        return negotiation;
    }

    /**
     * Runs {@code action} once the command's reply has been queued to the client (quit uses it
     * to shut down only after its {@code {"return": {}}} is on its way).
     */
    public void afterReply(Runnable action) {
        afterReply.add(action);
    }

    /** Runs the handler with this context bound. */
    <T> T call(ScopedValue.CallableOp<T, jblockd.qapi.QmpError> op) throws jblockd.qapi.QmpError {
        return ScopedValue.where(CURRENT, this).call(op);
    }

    /** Runs the queued after-reply actions (each at most once). */
    public void runAfterReply() {
        List<Runnable> actions = List.copyOf(afterReply);
        afterReply.clear();
        actions.forEach(Runnable::run);
    }
}
