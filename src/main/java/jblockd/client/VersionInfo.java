package jblockd.client;

import com.fasterxml.jackson.databind.JsonNode;

/** {@code query-version}: {@code {"qemu": {"major", "minor", "micro"}, "package"}}. */
public record VersionInfo(int major, int minor, int micro, String pkg) {
    static VersionInfo from(JsonNode r) {
        JsonNode q = r.path("qemu");
        return new VersionInfo(q.path("major").asInt(), q.path("minor").asInt(), q.path("micro").asInt(),
                r.path("package").asText(""));
    }

    @Override
    public String toString() {
        return major + "." + minor + "." + micro + (pkg.isEmpty() ? "" : " (" + pkg + ")");
    }
}
