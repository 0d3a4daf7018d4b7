package jblockd.cli;

import jblockd.qapi.BlockdevOnError;
import picocli.CommandLine.Option;

/** {@code --on-source-error} / {@code --on-target-error} of the jobs that copy between two images. */
final class CopyErrorOptions {
    @Option(names = "--on-source-error", paramLabel = "ACTION", converter = Converters.OnError.class,
            description = "report (default), ignore, stop, enospc")
    BlockdevOnError onSourceError;

    @Option(names = "--on-target-error", paramLabel = "ACTION", converter = Converters.OnError.class,
            description = "report (default), ignore, stop, enospc")
    BlockdevOnError onTargetError;
}
