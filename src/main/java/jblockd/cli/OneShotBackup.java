package jblockd.cli;

/** {@code jblockctl backup --image SOURCE TARGET} / {@code --demo}: an embedded daemon. */
final class OneShotBackup {
    private OneShotBackup() {
    }

    static int run(BackupCommand cmd) {
        throw new CliException("one-shot backup (--image/--demo) needs the embedded daemon, "
                + "which this build does not have yet", 2);
    }
}
