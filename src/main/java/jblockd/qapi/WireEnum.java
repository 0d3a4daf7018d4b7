package jblockd.qapi;

/** A QAPI enum: each constant has its wire string (QEMU's spelling, often with dashes). */
public interface WireEnum {
    String wire();

    static <E extends Enum<E> & WireEnum> E lookup(E[] values, String s) {
        for (E e : values) {
            if (e.wire().equals(s)) {
                return e;
            }
        }
        return null;
    }
}
