package jblockd.cli;

import java.util.Arrays;
import java.util.stream.Collectors;
import jblockd.qapi.BlockdevOnError;
import jblockd.qapi.MirrorSyncMode;
import jblockd.qapi.NewImageMode;
import jblockd.qapi.WireEnum;
import picocli.CommandLine;

/** picocli converters: human sizes, and QAPI enums by their wire spelling ({@code absolute-paths}). */
final class Converters {
    private Converters() {
    }

    /** {@code 512K}, {@code 50M}, {@code 2G} or bytes. */
    static final class Size implements CommandLine.ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            try {
                return Sizes.parse(value);
            } catch (IllegalArgumentException e) {
                throw new CommandLine.TypeConversionException(e.getMessage());
            }
        }
    }

    static final class SyncMode implements CommandLine.ITypeConverter<MirrorSyncMode> {
        @Override
        public MirrorSyncMode convert(String v) {
            return wire(MirrorSyncMode.values(), v);
        }
    }

    static final class ImageMode implements CommandLine.ITypeConverter<NewImageMode> {
        @Override
        public NewImageMode convert(String v) {
            return wire(NewImageMode.values(), v);
        }
    }

    static final class OnError implements CommandLine.ITypeConverter<BlockdevOnError> {
        @Override
        public BlockdevOnError convert(String v) {
            return wire(BlockdevOnError.values(), v);
        }
    }

    private static <E extends Enum<E> & WireEnum> E wire(E[] values, String v) {
        E e = WireEnum.lookup(values, v);
        if (e == null) {
            throw new CommandLine.TypeConversionException("'" + v + "' is not one of "
                    + Arrays.stream(values).map(WireEnum::wire).collect(Collectors.joining(", ")));
        }
        return e;
    }
}
