/**
 * The block-job framework (QEMU job.c + blockjob.c), shared by backup, mirror, stream and commit.
 *
 * <h2>Writing a job type</h2>
 * <ol>
 *   <li>Implement {@link jblockd.job.JobDriver}: {@code type()} and {@code run(JobContext)}; the
 *       optional hooks {@code prepare/commit/abort/clean} run after {@code run} (see the class
 *       javadoc for the order); {@code canComplete()/complete()} for READY-able jobs;
 *       {@code cancel(force, ready)} returns false to make a soft cancel after READY end as
 *       COMPLETED (mirror).</li>
 *   <li>In {@code run}, per chunk (at most ~1 MiB): {@code ctx.rateLimit(n)} before dispatching
 *       (it is also the pause/cancel point), do the I/O, {@code ctx.addOffset(n)}. A chunk handed
 *       to a helper thread is bracketed by {@code ctx.beginInFlight()} / {@code close()}, so the
 *       job reports paused only once no chunk is in flight. Set
 *       {@code ctx.setLen()} first. On an {@link jblockd.block.IoError} call
 *       {@code ctx.handleError(policy, op, e, offset)}: it emits BLOCK_JOB_ERROR, throws for
 *       report, returns STOP after the user resumed (retry the request) or IGNORE (skip it, or
 *       mark it dirty again; call {@code ctx.recordIgnoredError(e)} if the job must end with an
 *       error). Mirror/commit call {@code ctx.ready()} once in sync and then loop until
 *       {@code cancelRequested()} or their own complete flag.</li>
 *   <li>In the command: resolve nodes, {@code registry.checkNotBusy(node, name)},
 *       {@code Job job = registry.create(id, driver, nodes, speed, autoFinalize, autoDismiss)}
 *       (emits J(created); id and speed errors as QEMU), make the graph changes, then
 *       {@code registry.start(job)} (emits J(running) before the reply).</li>
 * </ol>
 * Status changes, events, the verb table and the finish sequence are the framework's; a
 * driver never emits job events itself. Jobs that must end together (a {@code transaction} with
 * {@code completion-mode: grouped}) are created into one {@link jblockd.job.JobTxn}
 * ({@code registry.create(..., txn)}); its rules are the job layer's, not the commands'.
 */
package jblockd.job;
