package jblockd.block;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;

/**
 * Maps driver names to factories and format names to image creators and probes. Registration is
 * plain code ({@link #standard()}), no scanning.
 */
public final class DriverRegistry {

    /** Recognises a format from the first bytes of an image. */
    @FunctionalInterface
    public interface Probe {
        boolean matches(ByteBuffer head);
    }

    private final Map<String, DriverFactory<? extends BlockdevOptions>> factories = new HashMap<>();
    private final Map<String, ImageCreator> creators = new HashMap<>();
    private final Map<String, Probe> probes = new HashMap<>();
    private final Map<String, Filenames.ProtocolParser> protocols = new HashMap<>();

    public <O extends BlockdevOptions> void register(String driver, DriverFactory<O> factory) {
        factories.put(driver, factory);
    }

    /**
     * A protocol driver's filename syntax: a filename {@code name:...} is parsed by it
     * ({@link Filenames}). The NBD syntaxes are registered by the nbd driver.
     */
    public void registerProtocol(String name, Filenames.ProtocolParser parser) {
        protocols.put(name, parser);
    }

    /** The parser for filenames with this protocol prefix, or null (QEMU: "Unknown protocol"). */
    public Filenames.ProtocolParser protocol(String name) {
        return protocols.get(name);
    }

    public void registerFormat(String format, ImageCreator creator, Probe probe) {
        creators.put(format, creator);
        if (probe != null) {
            probes.put(format, probe);
        }
    }

    @SuppressWarnings("unchecked")
    public <O extends BlockdevOptions> DriverFactory<O> factory(String driver) {
        return (DriverFactory<O>) factories.get(driver);
    }

    public Optional<ImageCreator> creator(String format) {
        return Optional.ofNullable(creators.get(format));
    }

    public boolean isFormat(String name) {
        return creators.containsKey(name);
    }

    /** The format whose probe matches the file's first 512 bytes; raw when none does. */
    public String probe(Path path) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            ByteBuffer head = ByteBuffer.allocate(512);
            while (head.hasRemaining() && ch.read(head) > 0) {
                // read the first sector (or what the file has)
            }
            head.flip();
            return probe(head);
        }
    }

    /** The format whose probe matches an image's first bytes; raw when none does. */
    public String probe(ByteBuffer head) {
        for (Map.Entry<String, Probe> e : probes.entrySet()) {
            if (e.getValue().matches(head.duplicate())) {
                return e.getKey();
            }
        }
        return "raw";
    }

    /** Every driver and format jblockd ships. */
    public static DriverRegistry standard() {
        DriverRegistry r = new DriverRegistry();
        StandardDrivers.registerAll(r);
        return r;
    }
}
