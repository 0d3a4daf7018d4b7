package jblockd.cli;

import jblockd.client.BlockStream;
import jblockd.client.Job;
import jblockd.client.QmpClient;
import jblockd.qapi.BlockdevOnError;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code jblockctl stream DEVICE}: block-stream. */
@Command(name = "stream", sortOptions = false,
        description = "Pull the backing chain's data into DEVICE's top image (block-stream), then drop the backing link.")
final class StreamCommand extends JobStartCommand {
    @Parameters(index = "0", paramLabel = "DEVICE")
    String device;

    @Option(names = "--base", paramLabel = "FILE", description = "Keep this backing file and what is below it")
    String base;

    @Option(names = "--base-node", paramLabel = "NODE", description = "Same, by node name")
    String baseNode;

    @Option(names = "--backing-file", paramLabel = "NAME", description = "Backing file name to write into the image")
    String backingFile;

    @Option(names = "--on-error", paramLabel = "ACTION", converter = Converters.OnError.class,
            description = "report (default), ignore, stop, enospc")
    BlockdevOnError onError;

    @Override
    Job start(QmpClient qmp) {
        return qmp.jobs().blockStream(common(BlockStream.of(device)).base(base).baseNode(baseNode)
                .backingFile(backingFile).onError(onError));
    }
}
