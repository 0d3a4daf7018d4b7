package jblockd.object;

/** {@code authz-simple}: exactly one identity is allowed (authz/simple.c, a plain string compare). */
public record AuthzSimple(String id, String identity) implements Authz {
    @Override
    public String qomType() {
        return "authz-simple";
    }

    @Override
    public boolean allows(String who) {
        return identity.equals(who);
    }
}
