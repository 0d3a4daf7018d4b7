package jblockd.object;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * A {@code secret} object (crypto/secret.c): its decoded value. The bytes are copied in and out
 * so no caller can change them; {@link #toString()} never shows them.
 */
public final class Secret implements UserObject {
    private final String id;
    private final byte[] value;

    public Secret(String id, byte[] value) {
        this.id = id;
        this.value = value.clone();
    }

    @Override
    public String id() {
        return id;
    }

    @Override
    public String qomType() {
        return "secret";
    }

    /** The value's bytes (a copy). */
    public byte[] bytes() {
        return value.clone();
    }

    /** The value as UTF-8 text (what rbd's key-secret and passwords are). */
    public String text() {
        return new String(value, StandardCharsets.UTF_8);
    }

    /** Overwrites the value (after object-del). */
    void wipe() {
        Arrays.fill(value, (byte) 0);
    }

    @Override
    public String toString() {
        return "Secret[" + id + "]";
    }
}
