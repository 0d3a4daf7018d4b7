package jblockd.arch;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Keeps the package dependencies pointing one way (STYLE.md §2): the block layer, devices and
 * jobs never see a JSON tree, a socket or the QMP transport; the client library never reaches
 * into the daemon. Scans the import lines of the sources, so a violation names file and line.
 */
class DependencyDirectionTest {
    private static final Path MAIN = Path.of("src/main/java/jblockd");

    @ParameterizedTest(name = "{0} does not import {1}")
    @CsvSource({
        "block,   com.fasterxml.jackson",
        "block,   jblockd.qmp",
        "block,   jblockd.commands",
        "block,   jblockd.daemon",
        "block,   jblockd.nbd.server",
        "block,   jblockd.job",
        "device,  com.fasterxml.jackson",
        "device,  jblockd.qmp",
        "device,  jblockd.commands",
        "device,  jblockd.job",
        "job,     com.fasterxml.jackson",
        "job,     jblockd.qmp",
        "job,     jblockd.commands",
        "job,     jblockd.daemon",
        "client,  jblockd.daemon",
        "client,  jblockd.commands",
        "client,  jblockd.block",
        "client,  jblockd.job",
        "qapi,    jblockd.block",
        "qapi,    jblockd.qmp",
    })
    void packageDoesNotImport(String pkg, String forbidden) throws IOException {
        Path dir = MAIN.resolve(pkg.replace('.', '/'));
        if (!Files.isDirectory(dir)) {
            return;
        }
        List<String> violations = new ArrayList<>();
        try (Stream<Path> files = Files.walk(dir)) {
            for (Path f : files.filter(p -> p.toString().endsWith(".java")).toList()) {
                List<String> lines = Files.readAllLines(f);
                for (int i = 0; i < lines.size(); i++) {
                    String l = lines.get(i).trim();
                    if ((l.startsWith("import " + forbidden + ".") || l.startsWith("import static " + forbidden + "."))) {
                        violations.add(f + ":" + (i + 1) + ": " + l);
                    }
                }
            }
        }
        assertThat(violations).as("imports of %s from jblockd.%s", forbidden, pkg).isEmpty();
    }
}
