package jblockd.object;

import java.util.List;

/**
 * {@code authz-list} (authz/list.c): the first rule whose {@code match} matches the identity
 * decides; when none matches, the list's own {@code policy} does (default deny).
 */
public record AuthzList(String id, boolean allowByDefault, List<Rule> rules) implements Authz {

    /** One {@code QAuthZListRule}: {@code format} exact (default) or glob. */
    public record Rule(String match, boolean allow, boolean glob) {
        boolean matches(String identity) {
            return glob ? Glob.matches(match, identity) : match.equals(identity);
        }
    }

    public AuthzList {
        rules = List.copyOf(rules);
    }

    @Override
    public String qomType() {
        return "authz-list";
    }

    @Override
    public boolean allows(String identity) {
        for (Rule r : rules) {
            if (r.matches(identity)) {
                return r.allow();
            }
        }
        return allowByDefault;
    }

    /** GLib's g_pattern_match_simple, which QEMU uses for glob rules: '*' any run, '?' one character. */
    static final class Glob {
        private Glob() {
        }

        static boolean matches(String pattern, String s) {
            int p = 0;
            int i = 0;
            int star = -1;
            int resume = 0;
            while (i < s.length()) {
                if (p < pattern.length() && (pattern.charAt(p) == '?' || pattern.charAt(p) == s.charAt(i))) {
                    p++;
                    i++;
                } else if (p < pattern.length() && pattern.charAt(p) == '*') {
                    star = p++;
                    resume = i;
                } else if (star >= 0) {
                    p = star + 1;
                    i = ++resume;
                } else {
                    return false;
                }
            }
            while (p < pattern.length() && pattern.charAt(p) == '*') {
                p++;
            }
            return p == pattern.length();
        }
    }
}
