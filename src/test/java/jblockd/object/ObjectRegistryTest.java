package jblockd.object;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.charset.StandardCharsets;

import org.junit.jupiter.api.Test;

/** The registry's lookups and use counts, with QEMU's texts. */
class ObjectRegistryTest {
    private final ObjectRegistry r = new ObjectRegistry();

    @Test
    void secretsAreLookedUpByIdWithQemusTexts() throws Exception {
        r.add(new Secret("s0", "key".getBytes(StandardCharsets.UTF_8)));
        assertThat(r.secret("s0").text()).isEqualTo("key");
        assertThat(r.secret("s0").toString()).doesNotContain("key");
        assertThatThrownBy(() -> r.secret("nosuch")).hasMessage("No secret with id 'nosuch'");
        assertThatThrownBy(() -> r.add(new Secret("s0", new byte[0])))
                .hasMessage("attempt to add duplicate property 's0' to object (type 'container')");
        assertThatThrownBy(() -> r.retainTlsCreds("s0", jblockd.tls.X509Credentials.Endpoint.SERVER))
                .hasMessage("Object with id 's0' is not TLS credentials");
        assertThatThrownBy(() -> r.retainTlsCreds("t0", jblockd.tls.X509Credentials.Endpoint.SERVER))
                .hasMessage("No TLS credentials with id 't0'");
        r.delete("s0");
        assertThatThrownBy(() -> r.delete("s0")).hasMessage("object 's0' not found");
        assertThat(r.list()).isEmpty();
    }

    @Test
    void aSecretKeepsItsOwnCopy() throws Exception {
        byte[] v = {1, 2, 3};
        r.add(new Secret("s", v));
        v[0] = 9;
        byte[] out = r.secret("s").bytes();
        out[1] = 9;
        assertThat(r.secret("s").bytes()).containsExactly(1, 2, 3);
    }
}
