package jblockd.object;

/**
 * An object made by {@code object-add} or {@code --object} (QEMU's user-creatable objects under
 * {@code /objects}): its id and QOM type name. Immutable once made.
 */
public sealed interface UserObject permits Secret, TlsCredsX509, Authz {
    String id();

    /** The {@code qom-type}, e.g. {@code secret}. */
    String qomType();
}
