package jblockd.block;

import java.util.Optional;

/**
 * A {@code cache=} shorthand of {@code --drive} as QEMU's block.c bdrv_parse_cache_mode() reads
 * it: {@code writeback} is the device's write cache (off: every guest write is FUA),
 * {@code direct} and {@code noFlush} are the nodes' {@code cache.direct} / {@code cache.no-flush}.
 */
public record CacheMode(boolean writeback, boolean direct, boolean noFlush) {

    /** QEMU's default when {@code cache=} is not given. */
    public static final CacheMode WRITEBACK = new CacheMode(true, false, false);

    /** Empty for a mode QEMU does not know. */
    public static Optional<CacheMode> parse(String mode) {
        return Optional.ofNullable(switch (mode) {
            case "writeback" -> WRITEBACK;
            case "none", "off" -> new CacheMode(true, true, false);
            case "writethrough" -> new CacheMode(false, false, false);
            case "directsync" -> new CacheMode(false, true, false);
            case "unsafe" -> new CacheMode(true, false, true);
            default -> null;
        });
    }
}
