package jblockd.cli;

import java.util.List;
import java.util.concurrent.Callable;
import jblockd.client.Job;
import jblockd.client.QmpClient;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;

/** The job verbs: pause, resume, cancel, complete, set-speed, finalize, dismiss (block-job-*). */
final class JobVerbCommands {
    private JobVerbCommands() {
    }

    /** A verb that returns as soon as the daemon accepted it. */
    abstract static class Verb implements Callable<Integer> {
        @ParentCommand
        JblockCtl top;

        @Parameters(index = "0", paramLabel = "JOB", description = "Job id (usually the device name)")
        String id;

        abstract String command();

        abstract void send(QmpClient qmp);

        @Override
        public Integer call() throws InterruptedException {
            try (QmpClient qmp = top.connect()) {
                send(qmp);
                report(top, command(), id);
                return 0;
            }
        }
    }

    static void report(JblockCtl top, String command, String id) {
        if (top.json) {
            top.out.println("{\"kind\":\"done\",\"command\":\"" + command + "\",\"id\":\"" + id + "\"}");
        } else {
            top.out.println(id + ": " + command + " accepted");
        }
    }

    @Command(name = "pause", description = "Pause a job (block-job-pause).")
    static final class Pause extends Verb {
        String command() {
            return "block-job-pause";
        }

        void send(QmpClient qmp) {
            qmp.jobs().blockJobPause(id);
        }
    }

    @Command(name = "resume", description = "Resume a paused job; clears an error stop's io-status and retries (block-job-resume).")
    static final class Resume extends Verb {
        String command() {
            return "block-job-resume";
        }

        void send(QmpClient qmp) {
            qmp.jobs().blockJobResume(id);
        }
    }

    @Command(name = "set-speed", description = "Change a job's rate limit live (block-job-set-speed); 0 = unlimited.")
    static final class SetSpeed extends Verb {
        @Parameters(index = "1", paramLabel = "SPEED", converter = Converters.Size.class,
                description = "Bytes per second: 512K, 50M, ...")
        long speed;

        String command() {
            return "block-job-set-speed";
        }

        void send(QmpClient qmp) {
            qmp.jobs().blockJobSetSpeed(id, speed);
        }
    }

    @Command(name = "finalize", description = "Finalize a job waiting in 'pending' (block-job-finalize).")
    static final class Finalize extends Verb {
        String command() {
            return "block-job-finalize";
        }

        void send(QmpClient qmp) {
            qmp.jobs().blockJobFinalize(id);
        }
    }

    @Command(name = "dismiss", description = "Dismiss a 'concluded' job (block-job-dismiss).")
    static final class Dismiss extends Verb {
        String command() {
            return "block-job-dismiss";
        }

        void send(QmpClient qmp) {
            qmp.jobs().blockJobDismiss(id);
        }
    }

    /** A verb that ends the job: follow it to its end unless --detach. */
    abstract static class EndingVerb extends Verb {
        @Option(names = "--detach", description = "Return once the daemon accepted the command")
        boolean detach;

        abstract boolean cancelledIsSuccess();

        @Override
        public Integer call() throws InterruptedException {
            try (QmpClient qmp = top.connect()) {
                if (detach) {
                    send(qmp);
                    report(top, command(), id);
                    return 0;
                }
                Job job = qmp.jobs().attach(id); // subscribe first: the end may precede the reply
                send(qmp);
                return JobWaiter.await(List.of(job), top.progressView(), JobWaiter.OnReady.WAIT,
                        cancelledIsSuccess());
            }
        }
    }

    @Command(name = "cancel", description = {"Cancel a job (block-job-cancel) and wait for it to end.",
            "A READY mirror cancelled without --force completes, leaving the device on its source."})
    static final class Cancel extends EndingVerb {
        @Option(names = "--force", description = "Also cancel a paused job, and a READY mirror without completing")
        boolean force;

        String command() {
            return "block-job-cancel";
        }

        void send(QmpClient qmp) {
            qmp.jobs().blockJobCancel(id, force);
        }

        boolean cancelledIsSuccess() {
            return true;
        }
    }

    @Command(name = "complete", description = "Complete a READY mirror or active commit (block-job-complete): pivot, and wait for the end.")
    static final class Complete extends EndingVerb {
        String command() {
            return "block-job-complete";
        }

        void send(QmpClient qmp) {
            qmp.jobs().blockJobComplete(id);
        }

        boolean cancelledIsSuccess() {
            return false;
        }
    }
}
