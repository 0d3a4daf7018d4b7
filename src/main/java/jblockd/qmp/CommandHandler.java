package jblockd.qmp;

import jblockd.qapi.QmpError;

/**
 * One QMP command. {@code A} is the typed arguments record (built from the schema-validated
 * {@code arguments}; property names map camelCase to QEMU's kebab-case); the result is any
 * Jackson-serialisable value (a record, list, map or String), null meaning {@code {}}.
 */
@FunctionalInterface
public interface CommandHandler<A> {
    Object handle(A args) throws QmpError;
}
