package jblockd.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.regex.Pattern;
import jblockd.client.BitmapAdd;
import jblockd.client.BitmapInfo;
import jblockd.client.BitmapRef;
import jblockd.client.QmpClient;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;

/**
 * {@code jblockctl bitmap add|remove|clear|enable|disable|merge|list}: the dirty-bitmap commands
 * (block-dirty-bitmap-*) and a table of the nodes' bitmaps. NODE is a node name or a device name.
 */
@Command(name = "bitmap", header = "Manage dirty bitmaps (block-dirty-bitmap-*): add, remove, clear, enable, disable, merge, list.",
        description = "NODE is a node name or a device name (the device's node). Bitmaps record which granules were"
                + " written since they were added, cleared or enabled; incremental backups copy just those.",
        mixinStandardHelpOptions = true,
        subcommands = {BitmapCommand.Add.class, BitmapCommand.Remove.class, BitmapCommand.Clear.class,
                BitmapCommand.Enable.class, BitmapCommand.Disable.class, BitmapCommand.Merge.class,
                BitmapCommand.ListBitmaps.class})
final class BitmapCommand implements Runnable {
    @ParentCommand
    JblockCtl top;

    @Override
    public void run() {
        throw new picocli.CommandLine.ParameterException(new picocli.CommandLine(this),
                "missing bitmap command (try 'jblockctl bitmap --help')");
    }

    /** A command on one named bitmap. */
    abstract static class OnBitmap implements Callable<Integer> {
        @ParentCommand
        BitmapCommand parent;

        @Parameters(index = "0", paramLabel = "NODE", description = "Node or device name")
        String node;

        @Parameters(index = "1", paramLabel = "NAME", description = "Bitmap name")
        String name;

        abstract String command();

        abstract String done();

        abstract void send(QmpClient qmp);

        @Override
        public Integer call() {
            JblockCtl top = parent.top;
            try (QmpClient qmp = top.connect()) {
                send(qmp);
            }
            if (top.json) {
                ObjectNode o = new ObjectMapper().createObjectNode().put("kind", "done").put("command", command())
                        .put("node", node).put("name", name);
                top.out.println(o.toString());
            } else {
                top.out.println(node + ": bitmap '" + name + "' " + done());
            }
            return 0;
        }
    }

    @Command(name = "add", mixinStandardHelpOptions = true,
            description = "Add a bitmap that records every later write (block-dirty-bitmap-add).")
    static final class Add extends OnBitmap {
        @Option(names = "--granularity", paramLabel = "SIZE", converter = Converters.Size.class,
                description = "Bytes per bit, a power of two from 512 (default: the cluster size within 4K..64K, else 64K)")
        Long granularity;

        @Option(names = "--persistent", description = "Store the bitmap in the image (qcow2 v3) when it is closed")
        boolean persistent;

        @Option(names = "--disabled", description = "Create it disabled: it records nothing until enabled")
        boolean disabled;

        String command() {
            return "block-dirty-bitmap-add";
        }

        String done() {
            return "added";
        }

        void send(QmpClient qmp) {
            BitmapAdd a = BitmapAdd.of(node, name);
            if (granularity != null) {
                a.granularity(granularity);
            }
            if (persistent) {
                a.persistent(true);
            }
            if (disabled) {
                a.disabled(true);
            }
            qmp.bitmaps().add(a);
        }
    }

    @Command(name = "remove", mixinStandardHelpOptions = true,
            description = "Remove a bitmap; a persistent one leaves the image at once (block-dirty-bitmap-remove).")
    static final class Remove extends OnBitmap {
        String command() {
            return "block-dirty-bitmap-remove";
        }

        String done() {
            return "removed";
        }

        void send(QmpClient qmp) {
            qmp.bitmaps().remove(node, name);
        }
    }

    @Command(name = "clear", mixinStandardHelpOptions = true, description = "Clear every bit (block-dirty-bitmap-clear).")
    static final class Clear extends OnBitmap {
        String command() {
            return "block-dirty-bitmap-clear";
        }

        String done() {
            return "cleared";
        }

        void send(QmpClient qmp) {
            qmp.bitmaps().clear(node, name);
        }
    }

    @Command(name = "enable", mixinStandardHelpOptions = true,
            description = "Start recording writes (block-dirty-bitmap-enable).")
    static final class Enable extends OnBitmap {
        String command() {
            return "block-dirty-bitmap-enable";
        }

        String done() {
            return "enabled";
        }

        void send(QmpClient qmp) {
            qmp.bitmaps().enable(node, name);
        }
    }

    @Command(name = "disable", mixinStandardHelpOptions = true,
            description = "Stop recording writes; the bits stay (block-dirty-bitmap-disable).")
    static final class Disable extends OnBitmap {
        String command() {
            return "block-dirty-bitmap-disable";
        }

        String done() {
            return "disabled";
        }

        void send(QmpClient qmp) {
            qmp.bitmaps().disable(node, name);
        }
    }

    /** QEMU's node and device names (util/id.c id_wellformed): a letter, then letters, digits, '-', '.', '_'. */
    private static final Pattern NODE_NAME = Pattern.compile("[A-Za-z][A-Za-z0-9._-]*");

    @Command(name = "merge", mixinStandardHelpOptions = true,
            description = {"OR the SOURCE bitmaps into TARGET, a bitmap of NODE (block-dirty-bitmap-merge); all or nothing.",
                "A SOURCE is NAME (a bitmap of NODE) or OTHER-NODE:NAME. To name a bitmap of NODE whose name has a"
                        + " ':' after a node-like prefix, write its node too: NODE:a:b."})
    static final class Merge implements Callable<Integer> {
        @ParentCommand
        BitmapCommand parent;

        @Parameters(index = "0", paramLabel = "NODE", description = "Node or device name of the target")
        String node;

        @Parameters(index = "1", paramLabel = "TARGET", description = "Target bitmap")
        String target;

        @Parameters(index = "2..*", arity = "1..*", paramLabel = "SOURCE", description = "Source bitmaps")
        List<String> sources;

        @Override
        public Integer call() {
            JblockCtl top = parent.top;
            List<BitmapRef> refs = new ArrayList<>();
            for (String s : sources) {
                refs.add(source(s));
            }
            try (QmpClient qmp = top.connect()) {
                qmp.bitmaps().merge(node, target, refs);
            }
            if (top.json) {
                ObjectNode o = new ObjectMapper().createObjectNode().put("kind", "done")
                        .put("command", "block-dirty-bitmap-merge").put("node", node).put("name", target);
                ArrayNode a = o.putArray("sources");
                sources.forEach(a::add);
                top.out.println(o.toString());
            } else {
                top.out.println(node + ": bitmap '" + target + "' merged from " + String.join(", ", sources));
            }
            return 0;
        }

        static BitmapRef source(String s) {
            int colon = s.indexOf(':');
            if (colon > 0 && NODE_NAME.matcher(s.substring(0, colon)).matches() && colon < s.length() - 1) {
                return BitmapRef.on(s.substring(0, colon), s.substring(colon + 1));
            }
            return BitmapRef.local(s);
        }
    }

    @Command(name = "list", mixinStandardHelpOptions = true,
            description = "The dirty bitmaps of NODE, or of every node that has some (query-named-block-nodes).")
    static final class ListBitmaps implements Callable<Integer> {
        @ParentCommand
        BitmapCommand parent;

        @Parameters(index = "0", arity = "0..1", paramLabel = "NODE", description = "Node or device name (default: all)")
        String node;

        @Override
        public Integer call() {
            JblockCtl top = parent.top;
            Map<String, List<BitmapInfo>> byNode;
            try (QmpClient qmp = top.connect()) {
                if (node == null) {
                    byNode = qmp.bitmaps().list();
                } else {
                    byNode = new LinkedHashMap<>();
                    try {
                        byNode.put(node, qmp.bitmaps().of(node));
                    } catch (IllegalArgumentException e) {
                        throw new CliException("no node or device '" + node + "'", 1);
                    }
                }
            }
            if (top.json) {
                ArrayNode a = new ObjectMapper().createArrayNode();
                byNode.forEach((n, list) -> list.forEach(b -> {
                    ObjectNode o = a.addObject().put("node", n);
                    if (b.name() != null) {
                        o.put("name", b.name());
                    }
                    o.put("recording", b.recording()).put("persistent", b.persistent()).put("busy", b.busy())
                            .put("granularity", b.granularity()).put("count", b.count());
                    if (b.inconsistent()) {
                        o.put("inconsistent", true);
                    }
                }));
                top.out.println(a.toString());
                return 0;
            }
            Table t = new Table("NODE", "NAME", "GRANULARITY", "DIRTY", "FLAGS");
            byNode.forEach((n, list) -> list.forEach(b -> t.row(n, b.name() == null ? "(anonymous)" : b.name(),
                    Sizes.format(b.granularity()), Sizes.format(b.count()) + (b.count() >= 1024 ? " (" + b.count()
                            + ")" : ""), flags(b))));
            top.out.print(t.isEmpty() ? "no dirty bitmaps\n" : t.render());
            return 0;
        }

        static String flags(BitmapInfo b) {
            List<String> f = new ArrayList<>();
            f.add(b.recording() ? "recording" : "disabled");
            if (b.busy()) {
                f.add("busy");
            }
            if (b.persistent()) {
                f.add("persistent");
            }
            if (b.inconsistent()) {
                f.add("inconsistent");
            }
            return String.join(",", f);
        }
    }
}
