package jblockd.fuzz;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

import jblockd.nbd.proto.Nbd;

/**
 * What the NBD server must answer to one fuzzed client stream, checked against what it did
 * answer. The client's bytes are read the way the server reads them (fixed newstyle, then
 * transmission); the server's bytes (after its greeting) are read alongside, reply by reply:
 * <ul>
 *   <li>every option gets its replies, for that option, ending in ACK or an error of the kind the
 *   payload calls for (the checks of nbd/server.c, which the server follows); an error carries a
 *   message that is valid UTF-8, non-empty, without NUL and at most 4096 bytes (proto.md's
 *   strings); INFO, META_CONTEXT and SERVER replies are well formed;</li>
 *   <li>every request read whole gets exactly one reply, with the error code QEMU's checks give
 *   (EINVAL, ENOSPC: computed here from the request) or success; a READ's chunks cover exactly
 *   its range, a BLOCK_STATUS has one chunk per selected context, the last chunk says DONE;</li>
 *   <li>the server hangs up exactly where the client's stream stops making sense (bad magic, a
 *   length past the limit, an incomplete message, EXPORT_NAME of an unknown export, DISC, a
 *   WRITE too large to read), after the replies it owes, and at a reply boundary.</li>
 * </ul>
 * The harness's export: name "", writable, 1 MiB, contexts base:allocation and
 * qemu:allocation-depth. Requests that reuse a handle break proto.md's rule that makes replies
 * attributable; from the first of them on the replies are only drained.
 */
final class NbdConversation {
    /** The reply chunk the harness accepts before calling it an unbounded allocation. */
    private static final int MAX_CHUNK = Nbd.MAX_BUFFER_SIZE + 64;
    private static final Set<Integer> NBD_ERRNOS = Set.of(1, 5, 12, 22, 28, 75, 95, 108);
    private static final int EINVAL = 22;
    private static final int ENOSPC = 28;
    private static final int ENOTSUP = 95;

    private final ByteBuffer client;
    private final InputStream server;
    private final long size;
    private boolean noZeroes;
    private boolean structured;
    /** Context id to name, as the last SET_META_CONTEXT selected them. */
    private Map<Integer, String> selected = new LinkedHashMap<>();

    private NbdConversation(byte[] clientBytes, InputStream server, long size) {
        this.client = ByteBuffer.wrap(clientBytes);
        this.server = server;
        this.size = size;
    }

    /** Checks the server's whole answer to {@code clientBytes}; an AssertionError says what broke. */
    static void check(byte[] clientBytes, InputStream server, long exportSize) throws IOException {
        new NbdConversation(clientBytes, server, exportSize).run();
    }

    private void run() throws IOException {
        if (client.remaining() < 4) {
            expectEnd("client flags incomplete");
            return;
        }
        int flags = client.getInt();
        if ((flags & ~(Nbd.FLAG_C_FIXED_NEWSTYLE | Nbd.FLAG_C_NO_ZEROES)) != 0) {
            expectEnd("unknown client flags");
            return;
        }
        noZeroes = (flags & Nbd.FLAG_C_NO_ZEROES) != 0;
        for (int n = 0; ; n++) {
            if (client.remaining() < 16) {
                expectEnd("option header incomplete");
                return;
            }
            long magic = client.getLong();
            int option = client.getInt();
            long len = Integer.toUnsignedLong(client.getInt());
            if (magic != Nbd.IHAVEOPT || len > Nbd.MAX_OPTION_LENGTH || client.remaining() < len) {
                expectEnd("option " + n + ": bad magic, length past the limit or payload incomplete");
                return;
            }
            ByteBuffer data = client.slice(client.position(), (int) len);
            client.position(client.position() + (int) len);
            Next next = option(n, option, data);
            if (next == Next.END) {
                expectEnd("after option " + n);
                return;
            }
            if (next == Next.TRANSMISSION) {
                transmission();
                return;
            }
        }
    }

    private enum Next { OPTIONS, TRANSMISSION, END }

    /** An option reply header and payload. */
    private record OptReply(int type, byte[] data) {
        boolean isError() {
            return type < 0;
        }
    }

    private Next option(int n, int option, ByteBuffer data) throws IOException {
        String where = "option " + n + " (" + Nbd.optionName(option) + ")";
        switch (option) {
            case Nbd.OPT_EXPORT_NAME -> {
                if (data.hasRemaining()) { // the export is "": any other name drops the client
                    return Next.END;
                }
                long exportSize = readLong(where);
                int flags = readU16(where);
                checkTransmissionFlags(where, flags);
                check(exportSize == size, where, "export size " + exportSize);
                if (!noZeroes) {
                    byte[] zeroes = readN(124, where);
                    for (byte b : zeroes) {
                        check(b == 0, where, "non-zero padding");
                    }
                }
                return Next.TRANSMISSION;
            }
            case Nbd.OPT_ABORT -> {
                OptReply r = reply(where, option);
                check(r.type() == Nbd.REP_ACK, where, "ABORT answered " + r.type());
                return Next.END;
            }
            case Nbd.OPT_LIST, Nbd.OPT_STARTTLS, Nbd.OPT_STRUCTURED_REPLY -> {
                List<OptReply> rs = replies(where, option, option == Nbd.OPT_LIST ? Nbd.REP_SERVER : 0);
                OptReply last = rs.getLast();
                if (data.hasRemaining()) {
                    expectType(where, last, Nbd.REP_ERR_INVALID);
                } else if (option == Nbd.OPT_STARTTLS) {
                    expectType(where, last, Nbd.REP_ERR_POLICY); // no TLS on the harness's server
                } else if (option == Nbd.OPT_STRUCTURED_REPLY) {
                    expectType(where, last, structured ? Nbd.REP_ERR_INVALID : Nbd.REP_ACK);
                    structured = true;
                } else {
                    expectType(where, last, Nbd.REP_ACK);
                    check(rs.size() == 2, where, "LIST of one export gave " + (rs.size() - 1));
                    ByteBuffer s = ByteBuffer.wrap(rs.getFirst().data());
                    check(s.remaining() >= 4 && s.getInt() == 0, where, "SERVER reply for a name other than \"\"");
                }
                return Next.OPTIONS;
            }
            case Nbd.OPT_INFO, Nbd.OPT_GO -> {
                List<OptReply> rs = replies(where, option, Nbd.REP_INFO);
                OptReply last = rs.getLast();
                expectType(where, last, infoReplyType(data.duplicate()));
                if (last.type() == Nbd.REP_ACK) {
                    boolean export = false;
                    for (OptReply r : rs.subList(0, rs.size() - 1)) {
                        export |= checkInfo(where, r.data());
                    }
                    check(export, where, "no INFO_EXPORT before the ACK");
                    return option == Nbd.OPT_GO ? Next.TRANSMISSION : Next.OPTIONS;
                }
                return Next.OPTIONS;
            }
            case Nbd.OPT_LIST_META_CONTEXT, Nbd.OPT_SET_META_CONTEXT -> {
                boolean set = option == Nbd.OPT_SET_META_CONTEXT;
                List<OptReply> rs = replies(where, option, Nbd.REP_META_CONTEXT);
                OptReply last = rs.getLast();
                if (set && !structured) {
                    expectType(where, last, Nbd.REP_ERR_INVALID); // and the selection stays
                    return Next.OPTIONS;
                }
                if (set) {
                    selected = new LinkedHashMap<>(); // a SET forgets the old selection first
                }
                Map<Integer, String> contexts = new LinkedHashMap<>();
                for (OptReply r : rs.subList(0, rs.size() - 1)) {
                    ByteBuffer b = ByteBuffer.wrap(r.data());
                    check(b.remaining() > 4, where, "META_CONTEXT reply of " + b.remaining() + " bytes");
                    int id = b.getInt();
                    String name = utf8(where, b);
                    check(name.equals(Nbd.BASE_ALLOCATION) || name.equals("qemu:allocation-depth"), where,
                            "a context the export does not offer: " + name);
                    if (set) {
                        check(contexts.put(id, name) == null, where, "context id " + id + " twice");
                    } else {
                        check(id == 0, where, "LIST reply with id " + id);
                    }
                }
                if (set && last.type() == Nbd.REP_ACK) {
                    selected = contexts;
                }
                return Next.OPTIONS;
            }
            default -> {
                expectType(where, replies(where, option, 0).getLast(), Nbd.REP_ERR_UNSUP);
                return Next.OPTIONS;
            }
        }
    }

    /** The final reply type an INFO/GO payload calls for (nbd_negotiate_handle_info's order). */
    private static int infoReplyType(ByteBuffer d) {
        if (d.remaining() < 4) {
            return Nbd.REP_ERR_INVALID;
        }
        long len = Integer.toUnsignedLong(d.getInt());
        if (len > Nbd.MAX_STRING_SIZE || d.remaining() < len) {
            return Nbd.REP_ERR_INVALID;
        }
        boolean nul = false;
        for (int i = 0; i < len; i++) {
            nul |= d.get() == 0;
        }
        if (nul || d.remaining() < 2) {
            return Nbd.REP_ERR_INVALID;
        }
        int requests = Short.toUnsignedInt(d.getShort());
        if (d.remaining() != 2 * requests) {
            return Nbd.REP_ERR_INVALID;
        }
        return len == 0 ? Nbd.REP_ACK : Nbd.REP_ERR_UNKNOWN;
    }

    /** One INFO reply's payload; true for INFO_EXPORT. */
    private boolean checkInfo(String where, byte[] data) {
        ByteBuffer b = ByteBuffer.wrap(data);
        check(b.remaining() >= 2, where, "INFO reply of " + b.remaining() + " bytes");
        int type = Short.toUnsignedInt(b.getShort());
        switch (type) {
            case Nbd.INFO_EXPORT -> {
                check(b.remaining() == 10, where, "INFO_EXPORT of " + b.remaining() + " bytes");
                check(b.getLong() == size, where, "INFO_EXPORT size");
                checkTransmissionFlags(where, Short.toUnsignedInt(b.getShort()));
                return true;
            }
            case Nbd.INFO_BLOCK_SIZE -> {
                check(b.remaining() == 12, where, "INFO_BLOCK_SIZE of " + b.remaining() + " bytes");
                int min = b.getInt();
                int preferred = b.getInt();
                int max = b.getInt();
                check(min > 0 && Integer.bitCount(min) == 1 && Integer.bitCount(preferred) == 1
                        && min <= preferred && Integer.compareUnsigned(preferred, max) <= 0, where,
                        "block sizes " + min + "/" + preferred + "/" + max);
                return false;
            }
            case Nbd.INFO_NAME, Nbd.INFO_DESCRIPTION -> {
                utf8(where, b);
                return false;
            }
            default -> throw new AssertionError(where + ": unknown INFO type " + type);
        }
    }

    private void checkTransmissionFlags(String where, int flags) {
        check((flags & Nbd.FLAG_HAS_FLAGS) != 0, where, "transmission flags without HAS_FLAGS");
        check((flags & Nbd.FLAG_READ_ONLY) == 0, where, "a writable export offered read-only");
        check(((flags & Nbd.FLAG_SEND_DF) != 0) == structured, where, "SEND_DF against structured=" + structured);
    }

    /** Replies to one option: any number of {@code intermediate}, then ACK or an error. */
    private List<OptReply> replies(String where, int option, int intermediate) throws IOException {
        List<OptReply> rs = new ArrayList<>();
        while (true) {
            OptReply r = reply(where, option);
            rs.add(r);
            if (r.type() == Nbd.REP_ACK || r.isError()) {
                return rs;
            }
            check(intermediate != 0 && r.type() == intermediate, where, "reply type " + r.type());
            check(rs.size() <= 16, where, "more than 16 replies"); // the export has 2 contexts
        }
    }

    private OptReply reply(String where, int option) throws IOException {
        long magic = readLong(where);
        check(magic == Nbd.OPT_REPLY_MAGIC, where, "option reply magic 0x" + Long.toHexString(magic));
        int o = readInt(where);
        check(o == option, where, "a reply for option " + o);
        int type = readInt(where);
        long len = Integer.toUnsignedLong(readInt(where));
        check(len <= Nbd.MAX_OPTION_LENGTH, where, "option reply of " + len + " bytes");
        byte[] data = readN((int) len, where);
        if (type < 0) {
            check(type >= Nbd.REP_ERR_UNSUP && type <= Nbd.REP_ERR_TOO_BIG, where, "error type 0x"
                    + Integer.toHexString(type));
            checkMessage(where, ByteBuffer.wrap(data));
        }
        return new OptReply(type, data);
    }

    private static void expectType(String where, OptReply r, int type) {
        check(r.type() == type, where, "answered 0x" + Integer.toHexString(r.type()) + ", expected 0x"
                + Integer.toHexString(type));
    }

    // ==== transmission ==========================================================================

    /** A request the server read whole and dispatched, with what it must answer. */
    private record Request(int n, int flags, int type, long handle, long offset, long length, int error) {
        String where() {
            return "request " + n + " (" + Nbd.commandName(type) + ", handle " + handle + ")";
        }
    }

    private void transmission() throws IOException {
        Map<Long, Request> pending = new HashMap<>();
        Set<Long> handles = new HashSet<>();
        boolean attributable = true;
        for (int n = 0; ; n++) {
            if (client.remaining() < 28) {
                break;
            }
            int magic = client.getInt();
            int flags = Short.toUnsignedInt(client.getShort());
            int type = Short.toUnsignedInt(client.getShort());
            long handle = client.getLong();
            long offset = client.getLong();
            long length = Integer.toUnsignedLong(client.getInt());
            if (magic != Nbd.REQUEST_MAGIC || type == Nbd.CMD_DISC) {
                break;
            }
            boolean hangUp = false;
            if (type == Nbd.CMD_WRITE) {
                if (length > Nbd.MAX_BUFFER_SIZE) {
                    hangUp = true; // answered EINVAL, then the client is dropped
                } else if (client.remaining() < length) {
                    break; // the payload never comes: no reply
                } else {
                    client.position(client.position() + (int) length);
                }
            }
            attributable &= handles.add(handle);
            if (attributable) {
                pending.put(handle, new Request(n, flags, type, handle, offset, length,
                        hangUp ? EINVAL : expectedError(flags, type, offset, length)));
            }
            if (hangUp) {
                break;
            }
        }
        if (!attributable) {
            drain();
            return;
        }
        Map<Long, Chunks> partial = new HashMap<>();
        while (!pending.isEmpty()) {
            int magic = readInt("replies (" + pending.size() + " owed)");
            long handle;
            if (magic == Nbd.SIMPLE_REPLY_MAGIC) {
                int error = readInt("simple reply");
                handle = readLong("simple reply");
                Request r = pending.remove(handle);
                check(r != null, "simple reply", "for handle " + handle + ", owed none");
                String where = r.where();
                check(error == r.error() || acceptableAlternative(r, error), where, "error " + error
                        + ", expected " + r.error());
                check(!structured || error == 0, where, "a simple error reply after structured replies");
                check(!structured || (r.type() != Nbd.CMD_READ && r.type() != Nbd.CMD_BLOCK_STATUS), where,
                        "a simple reply to a READ or BLOCK_STATUS after structured replies");
                if (r.type() == Nbd.CMD_READ && error == 0) {
                    readN((int) r.length(), where);
                }
            } else {
                check(magic == Nbd.STRUCTURED_REPLY_MAGIC, "replies", "reply magic 0x" + Integer.toHexString(magic));
                check(structured, "replies", "a structured reply that was not negotiated");
                int flags = readU16("chunk");
                int type = readU16("chunk");
                handle = readLong("chunk");
                long len = Integer.toUnsignedLong(readInt("chunk"));
                Request r = pending.get(handle);
                check(r != null, "chunk", "for handle " + handle + ", owed none");
                check(len <= MAX_CHUNK, r.where(), "a chunk of " + len + " bytes");
                byte[] payload = readN((int) len, r.where());
                Chunks c = partial.computeIfAbsent(handle, h -> new Chunks());
                chunk(r, c, type, ByteBuffer.wrap(payload));
                if ((flags & Nbd.REPLY_FLAG_DONE) != 0) {
                    c.done(r);
                    pending.remove(handle);
                    partial.remove(handle);
                }
            }
        }
        expectEnd("after the last reply owed");
    }

    /** Fast zeroes may be refused by a node that cannot write zeroes quickly; nothing else varies. */
    private static boolean acceptableAlternative(Request r, int error) {
        return r.error() == 0 && error == ENOTSUP && r.type() == Nbd.CMD_WRITE_ZEROES
                && (r.flags() & Nbd.CMD_FLAG_FAST_ZERO) != 0;
    }

    /** nbd_co_receive_request's checks in QEMU 7.2's order, for the harness's writable export. */
    private int expectedError(int flags, int type, long offset, long length) {
        if (type == Nbd.CMD_READ && length > Nbd.MAX_BUFFER_SIZE) {
            return EINVAL;
        }
        if (Long.compareUnsigned(offset, size) > 0 || length > size - offset) {
            return type == Nbd.CMD_WRITE || type == Nbd.CMD_WRITE_ZEROES ? ENOSPC : EINVAL;
        }
        int valid = Nbd.CMD_FLAG_FUA;
        if (type == Nbd.CMD_READ && structured) {
            valid |= Nbd.CMD_FLAG_DF;
        } else if (type == Nbd.CMD_WRITE_ZEROES) {
            valid |= Nbd.CMD_FLAG_NO_HOLE | Nbd.CMD_FLAG_FAST_ZERO;
        } else if (type == Nbd.CMD_BLOCK_STATUS) {
            valid |= Nbd.CMD_FLAG_REQ_ONE;
        }
        if ((flags & ~valid) != 0 || type > Nbd.CMD_BLOCK_STATUS) {
            return EINVAL;
        }
        if (type == Nbd.CMD_BLOCK_STATUS && (length == 0 || selected.isEmpty())) {
            return EINVAL;
        }
        return 0;
    }

    /** The chunks of one structured reply seen so far. */
    private final class Chunks {
        int count;
        boolean error;
        /** READ: bytes covered, and the ranges (to find overlaps). */
        long covered;
        final List<long[]> ranges = new ArrayList<>();
        /** BLOCK_STATUS: the contexts answered, in order. */
        final List<Integer> contexts = new ArrayList<>();

        void done(Request r) {
            String where = r.where();
            if (r.error() != 0 || error) {
                check(error && count == 1, where, "an error reply of " + count + " chunks");
                return;
            }
            if (r.type() == Nbd.CMD_READ) {
                check(covered == r.length(), where, "chunks cover " + covered + " of " + r.length() + " bytes");
                ranges.sort((a, b) -> Long.compare(a[0], b[0]));
                for (int i = 1; i < ranges.size(); i++) {
                    check(ranges.get(i - 1)[1] <= ranges.get(i)[0], where, "overlapping chunks");
                }
            } else {
                check(contexts.equals(new ArrayList<>(selected.keySet())), where, "contexts " + contexts
                        + ", selected " + selected.keySet());
            }
        }
    }

    private void chunk(Request r, Chunks c, int type, ByteBuffer p) {
        String where = r.where();
        c.count++;
        if (type == Nbd.REPLY_TYPE_ERROR || type == Nbd.REPLY_TYPE_ERROR_OFFSET) {
            check(p.remaining() >= 6, where, "error chunk of " + p.remaining() + " bytes");
            int error = p.getInt();
            int msgLen = Short.toUnsignedInt(p.getShort());
            check(error == r.error() || acceptableAlternative(r, error), where, "error " + error
                    + ", expected " + r.error());
            check(NBD_ERRNOS.contains(error), where, "error " + error + " is not an NBD error");
            check(type == Nbd.REPLY_TYPE_ERROR && p.remaining() == msgLen, where,
                    "error chunk message length " + msgLen + " of " + p.remaining());
            checkMessage(where, p);
            c.error = true;
            return;
        }
        check(r.error() == 0, where, "chunk type " + type + " where error " + r.error() + " was due");
        switch (r.type()) {
            case Nbd.CMD_READ -> {
                long start;
                long len;
                if (type == Nbd.REPLY_TYPE_NONE) {
                    check(r.length() == 0 && p.remaining() == 0, where, "NONE chunk for a read of " + r.length());
                    return;
                } else if (type == Nbd.REPLY_TYPE_OFFSET_DATA) {
                    check(p.remaining() > 8, where, "data chunk of " + p.remaining() + " bytes");
                    start = p.getLong();
                    len = p.remaining();
                } else if (type == Nbd.REPLY_TYPE_OFFSET_HOLE) {
                    check(p.remaining() == 12, where, "hole chunk of " + p.remaining() + " bytes");
                    start = p.getLong();
                    len = Integer.toUnsignedLong(p.getInt());
                    check(len > 0, where, "an empty hole");
                    check((r.flags() & Nbd.CMD_FLAG_DF) == 0, where, "a hole despite DF");
                } else {
                    throw new AssertionError(where + ": chunk type " + type + " for a read");
                }
                check(start >= r.offset() && start + len <= r.offset() + r.length(), where,
                        "chunk [" + start + ", +" + len + ") outside the request");
                c.covered += len;
                c.ranges.add(new long[] {start, start + len});
            }
            case Nbd.CMD_BLOCK_STATUS -> {
                check(type == Nbd.REPLY_TYPE_BLOCK_STATUS, where, "chunk type " + type + " for block status");
                check(p.remaining() >= 12 && (p.remaining() - 4) % 8 == 0, where, "block status chunk of "
                        + p.remaining() + " bytes");
                int id = p.getInt();
                String context = selected.get(id);
                check(context != null, where, "context id " + id + " not selected");
                int extents = p.remaining() / 8;
                check((r.flags() & Nbd.CMD_FLAG_REQ_ONE) == 0 || extents == 1, where, extents + " extents with REQ_ONE");
                long sum = 0;
                for (int i = 0; i < extents; i++) {
                    long len = Integer.toUnsignedLong(p.getInt());
                    int flags = p.getInt();
                    check(len > 0, where, "an empty extent");
                    int maxFlags = context.equals(Nbd.BASE_ALLOCATION) ? Nbd.STATE_HOLE | Nbd.STATE_ZERO : 1;
                    check(Integer.compareUnsigned(flags, maxFlags) <= 0, where, context + " flags " + flags);
                    sum += len;
                }
                check(sum <= r.length(), where, "extents of " + sum + " bytes for " + r.length());
                c.contexts.add(id);
            }
            default -> throw new AssertionError(where + ": a structured chunk " + type + " for a simple-reply command");
        }
    }

    /** Reads everything the server still sends (replies that cannot be attributed). */
    private void drain() throws IOException {
        byte[] sink = new byte[64 * 1024];
        try {
            while (server.read(sink) >= 0) {
                // not checked: see the class comment
            }
        } catch (IOException reset) {
            // the server may reset a connection it drops with unread input
        }
    }

    // ==== the server's bytes ====================================================================

    private void expectEnd(String where) throws IOException {
        int b;
        try {
            b = server.read();
        } catch (IOException reset) {
            return; // a close with unread input: ECONNRESET after the data, an end all the same
        }
        check(b < 0, where, "the server sent more (byte 0x" + Integer.toHexString(b) + ") where it was to hang up");
    }

    private byte[] readN(int n, String where) throws IOException {
        byte[] b;
        try {
            b = server.readNBytes(n);
        } catch (IOException reset) {
            throw new AssertionError(where + ": the connection ended inside a reply (" + reset + ")");
        }
        if (b.length < n) {
            throw new AssertionError(where + ": the server hung up after " + b.length + " of " + n
                    + " bytes of a reply it owed", new EOFException());
        }
        return b;
    }

    private long readLong(String where) throws IOException {
        return ByteBuffer.wrap(readN(8, where)).getLong();
    }

    private int readInt(String where) throws IOException {
        return ByteBuffer.wrap(readN(4, where)).getInt();
    }

    private int readU16(String where) throws IOException {
        return Short.toUnsignedInt(ByteBuffer.wrap(readN(2, where)).getShort());
    }

    /** An error message: a string by proto.md's rule, and not empty (a clear error). */
    private static void checkMessage(String where, ByteBuffer b) {
        check(b.remaining() > 0 && b.remaining() <= Nbd.MAX_STRING_SIZE, where, "error message of "
                + b.remaining() + " bytes");
        String text = utf8(where, b);
        check(text.indexOf('\0') < 0, where, "NUL in the error message");
    }

    private static String utf8(String where, ByteBuffer b) {
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(b).toString();
        } catch (CharacterCodingException e) {
            throw new AssertionError(where + ": a string that is not UTF-8", e);
        }
    }

    private static void check(boolean ok, String where, String what) {
        if (!ok) {
            throw new AssertionError(where + ": " + what);
        }
    }
}
