package jblockd.cli;

import jblockd.client.BlockCommit;
import jblockd.client.Job;
import jblockd.client.QmpClient;
import jblockd.qapi.BlockdevOnError;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code jblockctl commit DEVICE}: block-commit. */
@Command(name = "commit", sortOptions = false,
        header = "Push the data of TOP (default: the active layer) down into BASE (block-commit).",
        description = "Committing the active layer reaches READY: like mirror, the command then returns,"
                + " or completes with --complete, or follows to the end with --wait.")
final class CommitCommand extends JobStartCommand {
    @Parameters(index = "0", paramLabel = "DEVICE")
    String device;

    @Option(names = "--base", paramLabel = "FILE")
    String base;

    @Option(names = "--base-node", paramLabel = "NODE")
    String baseNode;

    @Option(names = "--top", paramLabel = "FILE")
    String topFile;

    @Option(names = "--top-node", paramLabel = "NODE")
    String topNode;

    @Option(names = "--backing-file", paramLabel = "NAME")
    String backingFile;

    @Option(names = "--on-error", paramLabel = "ACTION", converter = Converters.OnError.class,
            description = "report (default), ignore, stop, enospc")
    BlockdevOnError onError;

    @Mixin
    ReadyOptions ready = new ReadyOptions();

    @Override
    JobWaiter.OnReady onReady() {
        return ready.onReady();
    }

    @Override
    Job start(QmpClient qmp) {
        return qmp.jobs().blockCommit(common(BlockCommit.of(device)).base(base).baseNode(baseNode).top(topFile)
                .topNode(topNode).backingFile(backingFile).onError(onError));
    }
}
