package jblockd.qmp;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.qapi.ErrorClass;
import jblockd.qapi.QmpError;

/**
 * Name → schema validation → typed arguments → handler → JSON result (STYLE.md §2 step 2-3).
 * A command must be both declared in the schema and registered to be callable. Thread-safe:
 * sessions dispatch concurrently; handlers synchronise on the domain objects they touch.
 */
public final class QmpDispatcher {
    private final QapiSchema schema;
    private final QapiValidator validator;
    private final CommandRegistry registry;
    private final QmpJson json;

    public QmpDispatcher(QapiSchema schema, CommandRegistry registry, QmpJson json) {
        this.schema = schema;
        this.validator = new QapiValidator(schema);
        this.registry = registry;
        this.json = json;
    }

    public QapiSchema schema() {
        return schema;
    }

    public QapiValidator validator() {
        return validator;
    }

    public CommandRegistry registry() {
        return registry;
    }

    public QmpJson json() {
        return json;
    }

    /** True when the command is declared and registered. */
    public boolean available(String name) {
        return schema.command(name) != null && registry.get(name) != null;
    }

    /**
     * Executes one command. {@code args} null means no {@code arguments}; {@code keyval} makes
     * scalars strings to convert (command-line options). The result is never null ({@code {}}).
     */
    public JsonNode execute(String name, JsonNode args, boolean keyval, CommandContext ctx) throws QmpError {
        QapiSchema.Command cmd = schema.command(name);
        CommandRegistry.Entry<?> entry = registry.get(name);
        if (cmd == null || entry == null) {
            throw new QmpError(ErrorClass.COMMAND_NOT_FOUND, "The command " + name + " has not been found");
        }
        ObjectNode valid = validator.validateArguments(cmd, args, keyval);
        Object result = ctx.call(() -> invoke(entry, valid));
        if (result == null) {
            return JsonNodeFactory.instance.objectNode();
        }
        if (result instanceof JsonNode n) {
            return n;
        }
        return json.mapper().valueToTree(result);
    }

    private <A> Object invoke(CommandRegistry.Entry<A> entry, ObjectNode args) throws QmpError {
        A typed = json.bind(args, entry.argsType());
        try {
            return entry.handler().handle(typed);
        } catch (QmpError e) {
            throw e;
        } catch (RuntimeException e) {
            // A bug in a handler must not kill the connection; report it like QEMU reports
            // unexpected failures (GenericError) and log the stack for us.
            System.err.println("jblockd: command " + entry.name() + " failed unexpectedly: " + e);
            e.printStackTrace();
            throw QmpError.generic(e.getMessage() != null ? e.getMessage() : e.toString());
        }
    }
}
