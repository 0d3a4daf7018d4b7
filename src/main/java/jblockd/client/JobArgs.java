package jblockd.client;

/**
 * Members every job-starting command shares (qapi/block-core.json): {@code job-id},
 * {@code device}, {@code speed}, {@code auto-finalize}, {@code auto-dismiss}.
 */
public abstract class JobArgs<T extends JobArgs<T>> extends QmpArgs<T> {

    protected JobArgs(String device) {
        set("device", device);
    }

    /** Job id; when left out the daemon uses the device's (drive) name (reference/jobs.md §8). */
    public T jobId(String id) {
        return set("job-id", id);
    }

    /** Rate limit in bytes per second, 0 = unlimited. */
    public T speed(long bytesPerSecond) {
        return set("speed", bytesPerSecond);
    }

    /** false: the job waits in {@code pending} for {@code job-finalize}. */
    public T autoFinalize(boolean b) {
        return set("auto-finalize", b);
    }

    /** false: the job stays {@code concluded} until {@code job-dismiss}. */
    public T autoDismiss(boolean b) {
        return set("auto-dismiss", b);
    }

    public String device() {
        return (String) get("device");
    }

    public String jobId() {
        return (String) get("job-id");
    }
}
