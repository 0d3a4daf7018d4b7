package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Duration;
import org.junit.jupiter.api.Test;

class SizesTest {

    @Test
    void suffixesArePowersOf1024() {
        assertThat(Sizes.parse("512K")).isEqualTo(512 * 1024L);
        assertThat(Sizes.parse("50M")).isEqualTo(50L << 20);
        assertThat(Sizes.parse("2G")).isEqualTo(2L << 30);
        assertThat(Sizes.parse("1t")).isEqualTo(1L << 40);
        assertThat(Sizes.parse("64MiB")).isEqualTo(64L << 20);
        assertThat(Sizes.parse("64MB")).isEqualTo(64L << 20);
        assertThat(Sizes.parse("1.5G")).isEqualTo(3L << 29);
    }

    @Test
    void plainDigitsAreBytes() {
        assertThat(Sizes.parse("4096")).isEqualTo(4096);
        assertThat(Sizes.parse("512B")).isEqualTo(512);
        assertThat(Sizes.parse("0")).isZero();
    }

    @Test
    void garbageAndOverflowAreRefusedWithAReason() {
        assertThatThrownBy(() -> Sizes.parse("fast")).hasMessageContaining("invalid size 'fast'");
        assertThatThrownBy(() -> Sizes.parse("-1M")).hasMessageContaining("invalid size");
        assertThatThrownBy(() -> Sizes.parse("")).hasMessageContaining("empty");
        assertThatThrownBy(() -> Sizes.parse("99999999999E")).hasMessageContaining("too large");
    }

    @Test
    void formatsInBinaryUnits() {
        assertThat(Sizes.format(0)).isEqualTo("0 B");
        assertThat(Sizes.format(1023)).isEqualTo("1023 B");
        assertThat(Sizes.format(40L << 20)).isEqualTo("40.0 MiB");
        assertThat(Sizes.format(3L << 29)).isEqualTo("1.5 GiB");
        assertThat(Sizes.formatRate(12.5 * (1 << 20))).isEqualTo("12.5 MiB/s");
        assertThat(Sizes.formatDuration(Duration.ofSeconds(7))).isEqualTo("0:07");
        assertThat(Sizes.formatDuration(Duration.ofSeconds(3723))).isEqualTo("1:02:03");
    }
}
