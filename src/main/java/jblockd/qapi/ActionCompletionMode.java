package jblockd.qapi;

/**
 * ActionCompletionMode (qapi/transaction.json): what happens to the jobs a transaction started.
 * {@code individual}: each ends on its own; {@code grouped}: they form one job transaction, none
 * is finalized before all have finished and one failing or cancelled aborts them all.
 */
public enum ActionCompletionMode implements WireEnum {
    INDIVIDUAL("individual"),
    GROUPED("grouped");

    private final String wire;

    ActionCompletionMode(String wire) {
        this.wire = wire;
    }

    @Override
    public String wire() {
        return wire;
    }

    /** The constant for a wire string, or null when there is none. */
    public static ActionCompletionMode fromWire(String s) {
        return WireEnum.lookup(values(), s);
    }
}
