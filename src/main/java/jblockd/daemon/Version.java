package jblockd.daemon;

/** jblockd's own version and the QEMU QMP API level it implements. */
public final class Version {
    private Version() {
    }

    /** The QEMU release whose QMP behaviour jblockd follows. */
    public static final int QEMU_MAJOR = 7;
    public static final int QEMU_MINOR = 2;
    public static final int QEMU_MICRO = 0;

    public static String jblockd() {
        String v = Version.class.getPackage().getImplementationVersion();
        return v != null ? v : "0.1.0-SNAPSHOT";
    }

    /** The {@code package} string of the QMP greeting and query-version. */
    public static String packageString() {
        return "jblockd " + jblockd();
    }
}
