package jblockd.daemon;

import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import jblockd.commands.ObjectCommands;

/** {@code --object help} and {@code --object TYPE,help} as qemu-storage-daemon prints them. */
final class ObjectHelp {
    private ObjectHelp() {
    }

    /** The text to print for {@code value}, or null when it is not a help request. */
    static String text(String value) {
        if (value.equals("help") || value.equals("?")) {
            StringBuilder b = new StringBuilder("List of user creatable objects:\n");
            for (String t : new TreeMap<>(ObjectCommands.HELP).keySet()) {
                b.append("  ").append(t).append('\n');
            }
            return b.toString();
        }
        int comma = value.indexOf(',');
        if (comma > 0 && (value.endsWith(",help") || value.endsWith(",?"))) {
            String type = value.substring(0, comma);
            Map<String, List<String>> all = ObjectCommands.HELP;
            List<String> props = all.get(type);
            if (props == null) {
                return null; // object-add refuses the type with QEMU's text
            }
            StringBuilder b = new StringBuilder(type + " options:\n");
            for (String p : props) {
                b.append("  ").append(p).append('\n');
            }
            return b.toString();
        }
        return null;
    }
}
