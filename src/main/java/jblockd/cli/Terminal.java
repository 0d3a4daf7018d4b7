package jblockd.cli;

import java.io.Console;

/** Whether we talk to a person on a terminal (then we redraw bars with {@code \r} and ANSI). */
final class Terminal {
    private Terminal() {
    }

    /**
     * {@code System.console()} alone is not enough on Java 22+, where it may return a console
     * for redirected streams; {@code Console.isTerminal()} tells. {@code JBLOCKCTL_TTY=0|1}
     * overrides the detection.
     */
    static boolean stdoutIsTerminal() {
        String force = System.getenv("JBLOCKCTL_TTY");
        if (force != null && !force.isEmpty()) {
            return force.equals("1");
        }
        Console c = System.console();
        return c != null && c.isTerminal();
    }
}
