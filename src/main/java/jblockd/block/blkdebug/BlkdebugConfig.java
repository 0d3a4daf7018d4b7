package jblockd.block.blkdebug;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

import jblockd.block.Errno;
import jblockd.block.IoError;

/**
 * Parses a blkdebug config file in QEMU's config syntax (util/qemu-config.c qemu_config_parse):
 * <pre>
 * # comment
 * [inject-error]
 * event = "read_aio"
 * errno = "5"
 * sector = "2048"
 * once = "on"
 * </pre>
 * [set-state]
 * event = "write_aio"
 * state = "1"
 * new_state = "2"
 * </pre>
 * QEMU requires the double quotes; we also accept bare values (cut at a '#'). The state starts
 * at 1; rules of state 0 apply in every state.
 */
final class BlkdebugConfig {
    private static final Set<String> INJECT_KEYS = Set.of("event", "state", "iotype", "errno", "sector",
            "once", "immediately");
    private static final Set<String> SET_STATE_KEYS = Set.of("event", "state", "new_state");

    /** The rules of a config file, in file order. */
    record Rules(List<Rule> inject, List<StateRule> setState) {
    }
    private static final int MAX_LINE = 4096;
    private static final long MAX_FILE = 1 << 20;

    private BlkdebugConfig() {
    }

    static Rules read(Path file) throws IoError {
        String text;
        try {
            if (Files.size(file) > MAX_FILE) {
                throw new IoError(Errno.EFBIG, "Could not parse blkdebug config file: larger than 1 MiB");
            }
            text = Files.readString(file, StandardCharsets.UTF_8);
        } catch (NoSuchFileException e) {
            throw new IoError(Errno.ENOENT, "Could not read blkdebug config file: No such file or directory", e);
        } catch (IoError e) {
            throw e;
        } catch (IOException e) {
            throw new IoError(IoError.wrap(e).errno(), "Could not read blkdebug config file: " + e.getMessage(), e);
        }
        return parse(text, file.toString());
    }

    static Rules parse(String text, String name) throws IoError {
        List<Rule> rules = new ArrayList<>();
        List<StateRule> states = new ArrayList<>();
        Map<String, String> section = null;
        boolean setState = false;
        int sectionLine = 0;
        String[] lines = text.split("\r?\n", -1);
        for (int i = 0; i < lines.length; i++) {
            String line = lines[i].strip();
            int lineNo = i + 1;
            if (line.length() > MAX_LINE) {
                throw parseError(name, lineNo, "line too long");
            }
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            if (line.startsWith("[")) {
                if (section != null) {
                    add(section, setState, rules, states, name, sectionLine);
                }
                if (!line.endsWith("]")) {
                    throw parseError(name, lineNo, "parse error");
                }
                String group = line.substring(1, line.length() - 1).strip();
                int sp = group.indexOf(' ');
                if (sp > 0) {
                    group = group.substring(0, sp); // [group "id"]: the id is irrelevant here
                }
                if (!group.equals("inject-error") && !group.equals("set-state")) {
                    throw parseError(name, lineNo, "There is no option group '" + group + "'");
                }
                setState = group.equals("set-state");
                section = new LinkedHashMap<>();
                sectionLine = lineNo;
                continue;
            }
            int eq = line.indexOf('=');
            if (eq <= 0) {
                throw parseError(name, lineNo, "parse error");
            }
            if (section == null) {
                throw parseError(name, lineNo, "no group defined");
            }
            String key = line.substring(0, eq).strip();
            String value = unquote(line.substring(eq + 1).strip(), name, lineNo);
            if (!(setState ? SET_STATE_KEYS : INJECT_KEYS).contains(key)) {
                throw parseError(name, lineNo, "Invalid parameter '" + key + "'");
            }
            section.put(key, value);
        }
        if (section != null) {
            add(section, setState, rules, states, name, sectionLine);
        }
        return new Rules(List.copyOf(rules), List.copyOf(states));
    }

    private static void add(Map<String, String> section, boolean setState, List<Rule> rules,
                            List<StateRule> states, String name, int line) throws IoError {
        if (setState) {
            states.add(toStateRule(section, name, line));
        } else {
            rules.add(toRule(section, name, line));
        }
    }

    private static StateRule toStateRule(Map<String, String> s, String name, int line) throws IoError {
        try {
            return StateRule.of(s.get("event"), number(s.get("state"), "state"),
                    number(s.get("new_state"), "new_state"));
        } catch (IoError e) {
            throw new IoError(e.errno(), "Could not parse blkdebug config file: " + name + ":" + line + ": "
                    + e.getMessage(), e);
        } catch (ArithmeticException e) {
            throw parseError(name, line, "number out of range");
        }
    }

    private static String unquote(String v, String name, int lineNo) throws IoError {
        if (v.startsWith("\"")) {
            int close = v.indexOf('"', 1);
            if (close < 0) {
                throw parseError(name, lineNo, "parse error");
            }
            String rest = v.substring(close + 1).strip();
            if (!rest.isEmpty() && !rest.startsWith("#")) {
                throw parseError(name, lineNo, "parse error");
            }
            return v.substring(1, close);
        }
        int hash = v.indexOf('#');
        return (hash >= 0 ? v.substring(0, hash) : v).strip();
    }

    private static Rule toRule(Map<String, String> s, String name, int line) throws IoError {
        try {
            Long st = number(s.get("state"), "state");
            Integer state = st == null ? null : Math.toIntExact(st);
            bool(s.get("immediately"), "immediately"); // accepted; requests here never complete async
            Long errno = number(s.get("errno"), "errno");
            return Rule.of(s.get("event"), errno == null ? null : Math.toIntExact(errno),
                    number(s.get("sector"), "sector"), bool(s.get("once"), "once"), s.get("iotype"), state);
        } catch (IoError e) {
            throw new IoError(e.errno(), "Could not parse blkdebug config file: " + name + ":" + line + ": "
                    + e.getMessage(), e);
        } catch (ArithmeticException e) {
            throw parseError(name, line, "number out of range");
        }
    }

    private static Long number(String v, String key) throws IoError {
        if (v == null) {
            return null;
        }
        try {
            return Long.decode(v.strip());
        } catch (NumberFormatException e) {
            throw new IoError(Errno.EINVAL, "Parameter '" + key + "' expects a number");
        }
    }

    private static boolean bool(String v, String key) throws IoError {
        if (v == null) {
            return false;
        }
        return switch (v.strip().toLowerCase(Locale.ROOT)) {
            case "on", "yes", "true", "y" -> true;
            case "off", "no", "false", "n" -> false;
            default -> throw new IoError(Errno.EINVAL, "Parameter '" + key + "' expects 'on' or 'off'");
        };
    }

    private static IoError parseError(String name, int line, String what) {
        return new IoError(Errno.EINVAL, "Could not parse blkdebug config file: " + name + ":" + line + ": " + what);
    }
}
