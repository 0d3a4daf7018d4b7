package jblockd.block;

import java.io.IOException;

/** Opens a driver from its typed options; registered per driver name in {@link DriverRegistry}. */
@FunctionalInterface
public interface DriverFactory<O extends BlockdevOptions> {
    BlockDriver open(O options, OpenContext ctx) throws IOException;
}
