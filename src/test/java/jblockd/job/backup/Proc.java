package jblockd.job.backup;

import jblockd.testsupport.ExternalTools;

/** The real QEMU tools for the backup tests ({@link ExternalTools} under a short local name). */
final class Proc extends ExternalTools {
    private Proc() {
    }
}
