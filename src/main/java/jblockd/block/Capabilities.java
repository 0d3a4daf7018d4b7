package jblockd.block;

/**
 * What a driver can do, asked once when its node opens and cached by {@link BlockNode}
 * (nbdkit's can_* questions). {@code requestAlignment} is the granularity the driver needs
 * for its offsets and lengths; 1 means any byte range. A {@code growable} node (the file
 * protocol) accepts writes past its end, which extend it, and reads past its end as zeroes:
 * that is how qcow2 allocates clusters in its file; guests never see it because devices check
 * their own ranges.
 */
public record Capabilities(boolean readOnly,
                           boolean canDiscard,
                           boolean canWriteZeroes,
                           boolean canFua,
                           int requestAlignment,
                           boolean growable) {
    public static Capabilities readWrite() {
        return new Capabilities(false, true, true, true, 1, false);
    }

    public Capabilities withReadOnly(boolean ro) {
        return new Capabilities(ro, canDiscard, canWriteZeroes, canFua, requestAlignment, growable);
    }
}
