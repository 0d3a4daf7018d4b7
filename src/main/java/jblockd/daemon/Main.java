package jblockd.daemon;

/** Entry point of bin/jblockd (skeleton: --version only; the daemon options come with QMP). */
public final class Main {
    private Main() {
    }

    public static void main(String[] args) {
        if (args.length == 1 && args[0].equals("--version")) {
            System.out.println("jblockd " + Version.jblockd() + " (QMP API of QEMU "
                    + Version.QEMU_MAJOR + "." + Version.QEMU_MINOR + "." + Version.QEMU_MICRO + ")");
            return;
        }
        System.err.println("jblockd: only --version is implemented so far");
        System.exit(2);
    }
}
