package jblockd.qmp;

import java.io.IOException;
import java.nio.charset.StandardCharsets;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParseException;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.core.json.JsonWriteFeature;
import com.fasterxml.jackson.core.util.MinimalPrettyPrinter;
import com.fasterxml.jackson.databind.BeanDescription;
import com.fasterxml.jackson.databind.DeserializationConfig;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonDeserializer;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.JsonSerializer;
import com.fasterxml.jackson.databind.JavaType;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.PropertyNamingStrategies;
import com.fasterxml.jackson.databind.SerializationConfig;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.SerializerProvider;
import com.fasterxml.jackson.databind.deser.Deserializers;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.module.SimpleModule;
import com.fasterxml.jackson.databind.ser.Serializers;

import jblockd.qapi.QmpError;
import jblockd.qapi.WireEnum;

/**
 * The one JSON configuration of the QMP layer (immutable, shareable between daemons).
 * <p>
 * Reading follows QEMU's JSON dialect where Jackson can (qemu/qemu qobject/json-lexer.c):
 * single-quoted strings are accepted, duplicate keys are an error, nesting is bounded to 1024
 * levels (json-streamer.c {@code MAX_NESTING}) and strings to {@link #MAX_STRING_LENGTH}.
 * Writing matches QEMU's output: {@code ", "} and {@code ": "} separators and every non-ASCII
 * character as {@code \\uXXXX} (qobject/qjson.c escapes them too).
 * <p>
 * Records map camelCase components to QEMU's kebab-case member names; {@link WireEnum}s are
 * (de)serialised by their wire string.
 */
public final class QmpJson {
    /** QEMU's json-streamer.c MAX_NESTING. */
    public static final int MAX_NESTING = 1024;
    /** Bound on one JSON string (a message is bounded by the framer anyway). */
    public static final int MAX_STRING_LENGTH = 16 << 20;

    private final JsonFactory factory;
    private final ObjectMapper mapper;

    public QmpJson() {
        factory = JsonFactory.builder()
                .enable(JsonReadFeature.ALLOW_SINGLE_QUOTES)
                .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
                .enable(JsonWriteFeature.ESCAPE_NON_ASCII)
                .streamReadConstraints(StreamReadConstraints.builder()
                        .maxNestingDepth(MAX_NESTING)
                        .maxStringLength(MAX_STRING_LENGTH)
                        .build())
                .build();
        SimpleModule wireEnums = new SimpleModule("jblockd-wire-enums") {
            private static final long serialVersionUID = 1L;

            @Override
            public void setupModule(SetupContext context) {
                super.setupModule(context);
                context.addSerializers(new WireEnumSerializers());
                context.addDeserializers(new WireEnumDeserializers());
            }
        };
        mapper = JsonMapper.builder(factory)
                .propertyNamingStrategy(PropertyNamingStrategies.KEBAB_CASE)
                .addModule(wireEnums)
                .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
                .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .disable(SerializationFeature.FAIL_ON_EMPTY_BEANS)
                .defaultPrettyPrinter(new QemuPrinter())
                .build();
    }

    public ObjectMapper mapper() {
        return mapper;
    }

    public JsonFactory factory() {
        return factory;
    }

    /**
     * Binds schema-validated arguments to a handler's record (members by kebab-case name, wire
     * enums by wire string): the one conversion every command's arguments go through, and the
     * data of every transaction action, which carries the arguments of the command it names.
     * {@code type} may be {@code Void} (no arguments: null) or a {@link JsonNode} type (as given).
     */
    @SuppressWarnings("unchecked")
    public <A> A bind(JsonNode args, Class<A> type) throws QmpError {
        if (type == Void.class || type == void.class) {
            return null;
        }
        if (type.isInstance(args)) {
            return (A) args;
        }
        try {
            return mapper.treeToValue(args, type);
        } catch (Exception e) {
            throw QmpError.generic("Invalid arguments: " + e.getMessage());
        }
    }

    /**
     * Parses one complete JSON text (from the framer). The bytes are UTF-8, always: Jackson's
     * byte parser would detect UTF-16/32 from NUL bytes and a BOM ({@code 00 00 00 31} parsed
     * as the number 1, a UTF-16LE object as a command, {@code 00 00 fe ff} as no value at all;
     * found by QmpFuzzTest), where QEMU's json-lexer.c sees stray bytes. Malformed UTF-8 becomes
     * U+FFFD and a parse error. Never returns null.
     */
    public JsonNode parse(byte[] text) throws IOException {
        try (JsonParser p = factory.createParser(new String(text, StandardCharsets.UTF_8).toCharArray())) {
            JsonNode n = mapper.readTree(p);
            if (n == null || n.isMissingNode()) {
                throw new JsonParseException(p, "Unexpected end-of-input: no JSON value");
            }
            return n;
        }
    }

    /** One message on the wire: QEMU-style separators, no line end. */
    public byte[] write(Object value) {
        try {
            return mapper.writer(new QemuPrinter()).writeValueAsBytes(value);
        } catch (IOException e) {
            throw new IllegalStateException("cannot serialise " + value.getClass().getName(), e);
        }
    }

    /** {@code {"a": 1, "b": [1, 2]}} on one line, as QEMU's qobject_to_json prints it. */
    static final class QemuPrinter extends MinimalPrettyPrinter {
        private static final long serialVersionUID = 1L;

        @Override
        public void writeObjectFieldValueSeparator(JsonGenerator g) throws IOException {
            g.writeRaw(": ");
        }

        @Override
        public void writeObjectEntrySeparator(JsonGenerator g) throws IOException {
            g.writeRaw(", ");
        }

        @Override
        public void writeArrayValueSeparator(JsonGenerator g) throws IOException {
            g.writeRaw(", ");
        }
    }

    private static final class WireEnumSerializers extends Serializers.Base {
        @Override
        public JsonSerializer<?> findSerializer(SerializationConfig config, JavaType type, BeanDescription beanDesc) {
            if (WireEnum.class.isAssignableFrom(type.getRawClass())) {
                return new JsonSerializer<WireEnum>() {
                    @Override
                    public void serialize(WireEnum value, JsonGenerator gen, SerializerProvider sp) throws IOException {
                        gen.writeString(value.wire());
                    }
                };
            }
            return null;
        }
    }

    private static final class WireEnumDeserializers extends Deserializers.Base {
        @Override
        public JsonDeserializer<?> findEnumDeserializer(Class<?> type, DeserializationConfig config,
                                                        BeanDescription beanDesc) {
            if (!WireEnum.class.isAssignableFrom(type)) {
                return null;
            }
            Object[] constants = type.getEnumConstants();
            return new JsonDeserializer<Object>() {
                @Override
                public Object deserialize(JsonParser p, DeserializationContext ctxt) throws IOException {
                    String s = p.getValueAsString();
                    for (Object c : constants) {
                        if (((WireEnum) c).wire().equals(s)) {
                            return c;
                        }
                    }
                    return ctxt.handleWeirdStringValue(type, s, "not a wire value of %s", type.getSimpleName());
                }
            };
        }
    }
}
