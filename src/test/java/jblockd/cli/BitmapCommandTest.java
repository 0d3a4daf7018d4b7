package jblockd.cli;

import static org.assertj.core.api.Assertions.assertThat;

import jblockd.client.BitmapRef;
import org.junit.jupiter.api.Test;

/** How {@code jblockctl bitmap merge} reads its SOURCE arguments. */
class BitmapCommandTest {
    @Test
    void aSourceIsALocalNameOrNodeColonName() {
        assertThat(BitmapCommand.Merge.source("b0")).isEqualTo(BitmapRef.local("b0"));
        assertThat(BitmapCommand.Merge.source("drive1:b0")).isEqualTo(BitmapRef.on("drive1", "b0"));
        // a prefix that cannot be a node name keeps the colon in a local name
        assertThat(BitmapCommand.Merge.source("#block123:b0")).isEqualTo(BitmapRef.local("#block123:b0"));
        assertThat(BitmapCommand.Merge.source(":b0")).isEqualTo(BitmapRef.local(":b0"));
        assertThat(BitmapCommand.Merge.source("b0:")).isEqualTo(BitmapRef.local("b0:"));
        // the node named explicitly: the rest is the name, colons and all
        assertThat(BitmapCommand.Merge.source("n0:a:b")).isEqualTo(BitmapRef.on("n0", "a:b"));
    }
}
