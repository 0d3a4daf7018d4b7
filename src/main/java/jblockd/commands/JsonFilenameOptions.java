package jblockd.commands;

import java.io.IOException;
import java.util.Iterator;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;

import jblockd.block.BlockdevOptions;
import jblockd.block.Errno;
import jblockd.block.Filenames;
import jblockd.block.IoError;
import jblockd.qapi.QmpError;
import jblockd.qmp.QapiValidator;

/**
 * {@code json:{...}} filenames (block.c parse_json_filename): the object, with dotted keys
 * ({@code "file.filename"}) crumpled into nested objects as qdict_flatten/crumple allow both,
 * validated as BlockdevOptions and decoded by {@link BlockdevOptionsCodec} — the same path as
 * blockdev-add. An object without {@code driver} names only its protocol layer ({@code file}):
 * the format is probed on top, as QEMU does.
 */
public final class JsonFilenameOptions implements Filenames.JsonOptions {
    private static final Pattern BAD_TOKEN = Pattern.compile("Unrecognized token '([^']*)'");

    private final QapiValidator validator;
    private final ObjectMapper mapper = new ObjectMapper();

    public JsonFilenameOptions(QapiValidator validator) {
        this.validator = validator;
    }

    @Override
    public BlockdevOptions decode(String json) throws IOException {
        JsonNode tree;
        try {
            tree = mapper.readTree(json);
        } catch (JsonProcessingException e) {
            throw new IoError(Errno.EINVAL, "Could not parse the JSON options: JSON parse error, "
                    + parseError(json, e));
        }
        if (tree == null || !tree.isObject()) {
            throw new IoError(Errno.EINVAL, "Invalid JSON object given");
        }
        ObjectNode options = crumple((ObjectNode) tree);
        if (!options.has("driver") && options.get("file") instanceof ObjectNode file) {
            options = file;
        }
        try {
            return BlockdevOptionsCodec.decode(validator.validate(options, "BlockdevOptions", false));
        } catch (QmpError e) {
            throw new IoError(Errno.EINVAL, e.getMessage());
        }
    }

    /**
     * QEMU's JSON lexer reads a bare word as a keyword and names it ("invalid keyword 'bad'");
     * Jackson stops at its first letter or names the token itself.
     */
    private static String parseError(String json, JsonProcessingException e) {
        Matcher m = BAD_TOKEN.matcher(e.getOriginalMessage());
        if (m.find()) {
            return "invalid keyword '" + m.group(1) + "'";
        }
        long at = e.getLocation() == null ? -1 : e.getLocation().getCharOffset();
        if (at >= 0 && at <= json.length()) {
            int start = (int) Math.max(0, at - 1);
            while (start < json.length() && !Character.isLetter(json.charAt(start)) && start < at) {
                start++;
            }
            int end = start;
            while (end < json.length() && Character.isLetter(json.charAt(end))) {
                end++;
            }
            if (end > start) {
                return "invalid keyword '" + json.substring(start, end) + "'";
            }
        }
        return e.getOriginalMessage();
    }

    /** Dotted keys into nested objects ({@code "file.driver"} = {@code "file": {"driver"}}). */
    private static ObjectNode crumple(ObjectNode in) throws IoError {
        ObjectNode out = JsonNodeFactory.instance.objectNode();
        Iterator<Map.Entry<String, JsonNode>> it = in.fields();
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> e = it.next();
            JsonNode value = e.getValue() instanceof ObjectNode o ? crumple(o) : e.getValue();
            String[] parts = e.getKey().split("\\.", -1);
            ObjectNode at = out;
            for (int i = 0; i < parts.length - 1; i++) {
                JsonNode next = at.get(parts[i]);
                if (next == null) {
                    next = at.putObject(parts[i]);
                } else if (!(next instanceof ObjectNode)) {
                    throw new IoError(Errno.EINVAL, "Cannot mix scalar and non-scalar keys");
                }
                at = (ObjectNode) next;
            }
            String last = parts[parts.length - 1];
            JsonNode old = at.get(last);
            if (old instanceof ObjectNode oldObj && value instanceof ObjectNode newObj) {
                oldObj.setAll(newObj);
            } else if (old != null) {
                throw new IoError(Errno.EINVAL, "Cannot mix scalar and non-scalar keys");
            } else {
                at.set(last, value);
            }
        }
        return out;
    }
}
