package jblockd.cli;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

/**
 * Minimal line editing for {@code jblockctl shell} on a terminal, without a terminal library:
 * the tty is put in non-canonical, no-echo mode with {@code stty} (restored on exit, also from a
 * shutdown hook) and keys are interpreted here. Supported: printable text (UTF-8), Backspace,
 * Delete, Left/Right, Home/End, Ctrl-A/E/B/F, Ctrl-K/U/W, Up/Down through the history, Tab to
 * complete command names (a unique match is inserted, several are listed), Enter, Ctrl-D (EOF
 * on an empty line), Ctrl-C (clears the line). Lines printed meanwhile ({@link #printAbove})
 * appear above the line being edited.
 */
final class LineEditor implements AutoCloseable {
    private static final int ESC = 27;

    private final InputStream in;
    private final PrintStream out;
    private final Supplier<Collection<String>> words;
    private final List<String> history;
    private final String saved;
    private final Thread restoreHook;

    private String prompt = "";
    private final StringBuilder buf = new StringBuilder();
    private int cursor;
    private boolean editing;

    private LineEditor(InputStream in, PrintStream out, Supplier<Collection<String>> words, List<String> history,
                       String saved) {
        this.in = in;
        this.out = out;
        this.words = words;
        this.history = history;
        this.saved = saved;
        this.restoreHook = new Thread(this::restore, "jblockctl-tty-restore");
        Runtime.getRuntime().addShutdownHook(restoreHook);
    }

    /** An editor on the process's terminal, or null when the tty cannot be switched (no stty). */
    static LineEditor open(InputStream in, PrintStream out, Supplier<Collection<String>> words, List<String> history) {
        try {
            String saved = stty("-g").strip();
            // no ICANON/ECHO: keys arrive one by one; no ISIG: Ctrl-C is a key here, not a kill
            stty("-icanon", "-echo", "-isig", "-ixon", "min", "1", "time", "0");
            return new LineEditor(in, out, words, history, saved);
        } catch (IOException e) {
            return null;
        }
    }

    /** Reads one line; null at end of input (Ctrl-D on an empty line). */
    String readLine(String p) throws IOException {
        synchronized (this) {
            prompt = p;
            buf.setLength(0);
            cursor = 0;
            editing = true;
            redraw();
        }
        int hist = history.size();
        String pending = "";
        while (true) {
            int c = in.read();
            synchronized (this) {
                if (c < 0 || (c == 4 && buf.isEmpty())) {
                    editing = false;
                    out.print("\r\n");
                    out.flush();
                    return null;
                }
                switch (c) {
                    case '\r', '\n' -> {
                        editing = false;
                        out.print("\r\n");
                        out.flush();
                        return buf.toString();
                    }
                    case 1 -> cursor = 0;
                    case 5 -> cursor = buf.length();
                    case 2 -> cursor = Math.max(0, cursor - 1);
                    case 6 -> cursor = Math.min(buf.length(), cursor + 1);
                    case 3 -> {
                        buf.setLength(0);
                        cursor = 0;
                        out.print("^C\r\n");
                    }
                    case 4 -> deleteAt(cursor);
                    case 8, 127 -> {
                        if (cursor > 0) {
                            deleteAt(--cursor);
                        }
                    }
                    case 11 -> buf.setLength(cursor);
                    case 21 -> {
                        buf.delete(0, cursor);
                        cursor = 0;
                    }
                    case 23 -> deleteWord();
                    case 9 -> complete();
                    case ESC -> {
                        int k = escape();
                        if (k == 'A' && hist > 0) {
                            if (hist == history.size()) {
                                pending = buf.toString();
                            }
                            set(history.get(--hist));
                        } else if (k == 'B' && hist < history.size()) {
                            hist++;
                            set(hist == history.size() ? pending : history.get(hist));
                        } else if (k == 'C') {
                            cursor = Math.min(buf.length(), cursor + 1);
                        } else if (k == 'D') {
                            cursor = Math.max(0, cursor - 1);
                        } else if (k == 'H') {
                            cursor = 0;
                        } else if (k == 'F') {
                            cursor = buf.length();
                        } else if (k == '3') {
                            deleteAt(cursor);
                        }
                    }
                    default -> {
                        if (c >= 32) {
                            String s = c < 0x80 ? String.valueOf((char) c) : utf8(c);
                            buf.insert(cursor, s);
                            cursor += s.length();
                        }
                    }
                }
                redraw();
            }
        }
    }

    /** Prints a line above the one being edited (events arriving while the user types). */
    synchronized void printAbove(String line) {
        if (editing) {
            out.print("\r\u001b[K" + line.replace("\n", "\r\n") + "\r\n");
            redraw();
        } else {
            out.print(line.replace("\n", "\r\n") + "\r\n");
            out.flush();
        }
    }

    private void set(String s) {
        buf.setLength(0);
        buf.append(s);
        cursor = buf.length();
    }

    private void deleteAt(int i) {
        if (i < buf.length()) {
            buf.deleteCharAt(i);
        }
    }

    private void deleteWord() {
        int i = cursor;
        while (i > 0 && buf.charAt(i - 1) == ' ') {
            i--;
        }
        while (i > 0 && buf.charAt(i - 1) != ' ') {
            i--;
        }
        buf.delete(i, cursor);
        cursor = i;
    }

    /** Tab: completes the first word against the command names. */
    private void complete() {
        String before = buf.substring(0, cursor);
        if (before.contains(" ")) {
            return; // only command names are known
        }
        List<String> match = new ArrayList<>();
        for (String w : words.get()) {
            if (w.startsWith(before)) {
                match.add(w);
            }
        }
        if (match.isEmpty()) {
            return;
        }
        String common = match.get(0);
        for (String m : match) {
            int n = 0;
            while (n < common.length() && n < m.length() && common.charAt(n) == m.charAt(n)) {
                n++;
            }
            common = common.substring(0, n);
        }
        String insert = common.substring(before.length()) + (match.size() == 1 ? " " : "");
        if (!insert.isEmpty()) {
            buf.insert(cursor, insert);
            cursor += insert.length();
        } else {
            match.sort(null);
            out.print("\r\n" + String.join("  ", match) + "\r\n");
        }
    }

    /** After ESC: CSI/SS3 sequences; returns the final byte ('A'..'D', 'H', 'F', '3' for Delete). */
    private int escape() throws IOException {
        int c = in.read();
        if (c != '[' && c != 'O') {
            return -1;
        }
        int k = in.read();
        if (k >= '0' && k <= '9') {
            int t;
            do {
                t = in.read();
            } while (t >= '0' && t <= '9' || t == ';');
            if (k == '1' || k == '7') {
                return 'H';
            }
            if (k == '4' || k == '8') {
                return 'F';
            }
            return k; // '3' ~ is Delete
        }
        return k;
    }

    private String utf8(int first) throws IOException {
        int extra = first >= 0xF0 ? 3 : first >= 0xE0 ? 2 : first >= 0xC0 ? 1 : 0;
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        b.write(first);
        for (int i = 0; i < extra; i++) {
            int n = in.read();
            if (n < 0) {
                break;
            }
            b.write(n);
        }
        return b.toString(StandardCharsets.UTF_8);
    }

    private void redraw() {
        StringBuilder sb = new StringBuilder("\r").append(prompt).append(buf).append("\u001b[K");
        int back = buf.length() - cursor;
        if (back > 0) {
            sb.append("\u001b[").append(back).append('D');
        }
        out.print(sb);
        out.flush();
    }

    private void restore() {
        try {
            stty(saved);
        } catch (IOException e) {
            // nothing more we can do for the terminal
        }
    }

    @Override
    public void close() {
        restore();
        try {
            Runtime.getRuntime().removeShutdownHook(restoreHook);
        } catch (IllegalStateException e) {
            // already shutting down: the hook runs anyway
        }
    }

    /** Runs stty on the controlling terminal. */
    private static String stty(String... args) throws IOException {
        List<String> cmd = new ArrayList<>(List.of("stty"));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/tty")))
                .redirectErrorStream(true).start();
        String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        try {
            if (!p.waitFor(5, TimeUnit.SECONDS) || p.exitValue() != 0) {
                throw new IOException("stty failed: " + text.strip());
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted", e);
        }
        return text;
    }
}
