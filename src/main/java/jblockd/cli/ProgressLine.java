package jblockd.cli;

import jblockd.client.JobProgress;
import jblockd.client.JobResult;
import jblockd.qapi.IoStatus;
import java.util.Locale;

/** The text of one job's progress line and of its final result line. */
final class ProgressLine {
    static final int BAR_WIDTH = 24;

    private ProgressLine() {
    }

    /** {@code drive0 backup [######------] 42.1%  27.0 MiB/64.0 MiB  12.0 MiB/s  ETA 0:03  running}. */
    static String render(JobProgress p, boolean withBar) {
        StringBuilder sb = new StringBuilder();
        sb.append(p.id()).append(' ').append(p.type() == null ? "job" : p.type().wire()).append(' ');
        if (withBar) {
            int filled = (int) Math.round(p.percent() / 100.0 * BAR_WIDTH);
            sb.append('[').append("#".repeat(filled)).append("-".repeat(BAR_WIDTH - filled)).append("] ");
        }
        sb.append(String.format(Locale.ROOT, "%5.1f%%", p.percent()));
        sb.append("  ").append(Sizes.format(p.offset())).append('/')
                .append(p.len() == 0 && !p.finished() ? "?" : Sizes.format(p.len()));
        if (!p.finished()) {
            sb.append("  ").append(Sizes.formatRate(p.rate()));
            sb.append("  ETA ").append(p.eta() == null ? "--:--" : Sizes.formatDuration(p.eta()));
        }
        sb.append("  ").append(p.status() == null ? "?" : p.status().wire());
        if (p.paused()) {
            sb.append(" PAUSED");
        }
        if (p.ioStatus() != null && p.ioStatus() != IoStatus.OK) {
            sb.append(" io-status=").append(p.ioStatus().wire());
        }
        if (p.speed() > 0) {
            sb.append("  limit ").append(Sizes.formatRate(p.speed()));
        }
        if (p.lastError() != null && !p.finished()) {
            sb.append("  (").append(p.lastError()).append(')');
        }
        return sb.toString();
    }

    /** {@code drive0: backup completed (64.0 MiB)} / {@code ... failed: Input/output error}. */
    static String result(JobResult r, double seconds) {
        String type = r.type() == null ? "job" : r.type().wire();
        return switch (r.outcome()) {
            case COMPLETED -> String.format(Locale.ROOT, "%s: %s completed, %s in %.1f s (%s)", r.id(), type,
                    Sizes.format(r.len()), seconds, Sizes.formatRate(seconds > 0 ? r.len() / seconds : 0));
            case CANCELLED -> r.id() + ": " + type + " cancelled at " + Sizes.format(r.offset()) + " of "
                    + Sizes.format(r.len());
            case FAILED -> r.id() + ": " + type + " failed: " + r.error();
        };
    }
}
