package jblockd.object;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;

import javax.net.ssl.SSLPeerUnverifiedException;

import org.junit.jupiter.api.Test;

class AuthzTest {
    @Test
    void globMatchesAsGlibDoes() {
        assertThat(AuthzList.Glob.matches("*", "")).isTrue();
        assertThat(AuthzList.Glob.matches("CN=cl*", "CN=client")).isTrue();
        assertThat(AuthzList.Glob.matches("*CN=client", "C=GB,O=Acme Ltd,CN=client")).isTrue();
        assertThat(AuthzList.Glob.matches("*CN=client", "C=GB,CN=client,O=x")).isFalse();
        assertThat(AuthzList.Glob.matches("C=??,*", "C=GB,CN=a")).isTrue();
        assertThat(AuthzList.Glob.matches("C=?,*", "C=GB,CN=a")).isFalse();
        assertThat(AuthzList.Glob.matches("a*b*c", "aXbYbZc")).isTrue();
        assertThat(AuthzList.Glob.matches("a*b*c", "aXbYcZ")).isFalse();
        assertThat(AuthzList.Glob.matches("", "x")).isFalse();
    }

    @Test
    void firstMatchingRuleDecidesElseThePolicy() {
        AuthzList l = new AuthzList("l", false, List.of(
                new AuthzList.Rule("CN=bad*", false, true),
                new AuthzList.Rule("CN=*", true, true)));
        assertThat(l.allows("CN=badger")).isFalse();
        assertThat(l.allows("CN=good")).isTrue();
        assertThat(l.allows("O=x")).isFalse();
        assertThat(new AuthzList("e", true, List.of()).allows("anyone")).isTrue();
        // exact rules compare whole strings; '*' is then an ordinary character
        assertThat(new AuthzList("x", false, List.of(new AuthzList.Rule("CN=*", true, false))).allows("CN=a")).isFalse();
    }

    @Test
    void registryLooksTheObjectUpAtEachCheck() throws Exception {
        ObjectRegistry r = new ObjectRegistry();
        assertThatThrownBy(() -> r.authorize("a", "CN=x")).isInstanceOf(SSLPeerUnverifiedException.class)
                .hasMessage("Cannot find QAuthZ object ID a");
        r.add(new Secret("s", new byte[] {1}));
        assertThatThrownBy(() -> r.authorize("s", "CN=x")).hasMessage("Object 's' is not a QAuthZ subclass");
        r.add(new AuthzSimple("a", "CN=x"));
        r.authorize("a", "CN=x");
        assertThatThrownBy(() -> r.authorize("a", "CN=y")).hasMessage("TLS x509 authz check for CN=y is denied");
        r.delete("a");
        assertThatThrownBy(() -> r.authorize("a", "CN=x")).hasMessage("Cannot find QAuthZ object ID a");
    }
}
