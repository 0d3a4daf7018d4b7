package jblockd.cli;

import java.time.Duration;
import java.util.Locale;

/**
 * Human units for sizes and speeds, as QEMU's tools spell them: a number with an optional
 * suffix {@code K M G T P E} (powers of 1024, case-insensitive, optionally followed by
 * {@code iB} or {@code B}), {@code 512K}, {@code 50M}, {@code 2G}, {@code 1.5G}; plain digits
 * are bytes. Output uses binary units with one decimal ({@code 40.0 MiB}).
 */
public final class Sizes {
    private static final String SUFFIXES = "KMGTPE";

    private Sizes() {
    }

    /** Parses a size; throws IllegalArgumentException with a one-line reason. */
    public static long parse(String text) {
        String s = text.trim();
        if (s.isEmpty()) {
            throw new IllegalArgumentException("empty size");
        }
        String upper = s.toUpperCase(Locale.ROOT);
        if (upper.endsWith("IB")) {
            upper = upper.substring(0, upper.length() - 2); // 64MiB
        } else if (upper.endsWith("B")) {
            upper = upper.substring(0, upper.length() - 1); // 64MB, 512B
        }
        int shift = 0;
        char last = upper.isEmpty() ? ' ' : upper.charAt(upper.length() - 1);
        int idx = SUFFIXES.indexOf(last);
        if (idx >= 0) {
            shift = 10 * (idx + 1);
            upper = upper.substring(0, upper.length() - 1);
        }
        if (upper.isEmpty() || !upper.matches("[0-9]+(\\.[0-9]+)?")) {
            throw new IllegalArgumentException("invalid size '" + text + "' (use bytes or a suffix K, M, G, T: 512K, 50M, 2G)");
        }
        if (upper.contains(".")) {
            double v = Double.parseDouble(upper) * Math.pow(2, shift);
            if (v >= 0x1p63) {
                throw new IllegalArgumentException("size '" + text + "' is too large");
            }
            return (long) v;
        }
        try {
            long v = Long.parseLong(upper);
            if (shift > 0 && v > (Long.MAX_VALUE >> shift)) {
                throw new IllegalArgumentException("size '" + text + "' is too large");
            }
            return v << shift;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("size '" + text + "' is too large");
        }
    }

    /** {@code 0 B}, {@code 512 B}, {@code 40.0 KiB}, {@code 1.5 GiB}. */
    public static String format(long bytes) {
        if (bytes < 1024) {
            return bytes + " B";
        }
        double v = bytes;
        int i = -1;
        while (v >= 1024 && i < SUFFIXES.length() - 1) {
            v /= 1024;
            i++;
        }
        return String.format(Locale.ROOT, "%.1f %siB", v, SUFFIXES.charAt(i));
    }

    /** A rate in bytes per second: {@code 12.3 MiB/s}. */
    public static String formatRate(double bytesPerSecond) {
        return format((long) bytesPerSecond) + "/s";
    }

    /** {@code 0:07}, {@code 12:30}, {@code 1:02:03}. */
    public static String formatDuration(Duration d) {
        long s = Math.max(0, (d.toMillis() + 999) / 1000); // round up: "0:00" left would be a lie
        if (s >= 3600) {
            return String.format(Locale.ROOT, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
        }
        return String.format(Locale.ROOT, "%d:%02d", s / 60, s % 60);
    }
}
