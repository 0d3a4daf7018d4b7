package jblockd.qmp;

/** A set of related commands (one per schema file) that registers its handlers. */
public interface CommandGroup {
    void register(CommandRegistry registry);
}
