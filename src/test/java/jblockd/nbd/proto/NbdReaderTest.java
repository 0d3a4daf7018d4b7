package jblockd.nbd.proto;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.channels.ReadableByteChannel;

import org.junit.jupiter.api.Test;

class NbdReaderTest {

    /** A channel that hands out one byte per read, the worst a socket can do. */
    private static ReadableByteChannel trickle(byte[] bytes) {
        ByteBuffer src = ByteBuffer.wrap(bytes);
        return new ReadableByteChannel() {
            public int read(ByteBuffer dst) {
                if (!src.hasRemaining()) {
                    return -1;
                }
                dst.put(src.get());
                return 1;
            }

            public boolean isOpen() {
                return true;
            }

            public void close() {
            }
        };
    }

    private static byte[] request(int flags, int type, long handle, long offset, int length, byte[] payload) {
        ByteBuffer b = ByteBuffer.allocate(28 + payload.length);
        b.putInt(Nbd.REQUEST_MAGIC).putShort((short) flags).putShort((short) type).putLong(handle)
                .putLong(offset).putInt(length).put(payload);
        return b.array();
    }

    @Test
    void requestsAndPayloadsSplitIntoSingleBytesAreReassembled() throws Exception {
        byte[] payload = new byte[10000];
        for (int i = 0; i < payload.length; i++) {
            payload[i] = (byte) i;
        }
        ByteArrayOutputStream all = new ByteArrayOutputStream();
        all.write(request(Nbd.CMD_FLAG_FUA, Nbd.CMD_WRITE, 0x1122334455667788L, 4096, payload.length, payload));
        all.write(request(0, Nbd.CMD_READ, 2, 0xffffffff00000000L, -1, new byte[0]));
        NbdReader r = new NbdReader(trickle(all.toByteArray()));

        NbdRequest w = r.readRequest();
        assertThat(w).isEqualTo(new NbdRequest(1, Nbd.CMD_WRITE, 0x1122334455667788L, 4096, 10000));
        ByteBuffer p = ByteBuffer.allocate((int) w.length());
        r.readFully(p);
        assertThat(p.array()).isEqualTo(payload);

        NbdRequest rd = r.readRequest();
        assertThat(rd.length()).isEqualTo(0xffffffffL); // u32 on the wire, never negative here
        assertThat(rd.offset()).isEqualTo(0xffffffff00000000L);
        assertThatThrownBy(r::readRequest).isInstanceOf(EOFException.class);
    }

    @Test
    void badRequestMagicIsAProtocolError() {
        byte[] bad = request(0, 0, 1, 0, 0, new byte[0]);
        bad[0] = 0x42;
        NbdReader r = new NbdReader(trickle(bad));
        assertThatThrownBy(r::readRequest).isInstanceOf(NbdProtocolException.class).hasMessageContaining("magic");
    }

    @Test
    void overlongOptionIsRefusedBeforeAnyBufferIsMade() {
        ByteBuffer b = ByteBuffer.allocate(16);
        b.putLong(Nbd.IHAVEOPT).putInt(Nbd.OPT_GO).putInt(0x7fffffff);
        NbdReader r = new NbdReader(Channels.newChannel(new java.io.ByteArrayInputStream(b.array())));
        assertThatThrownBy(r::readOption).isInstanceOf(NbdProtocolException.class).hasMessageContaining("max len");
    }

    @Test
    void errnoMapsLikeQemu() {
        assertThat(NbdError.of(jblockd.block.Errno.EROFS)).isEqualTo(NbdError.EPERM);
        assertThat(NbdError.of(jblockd.block.Errno.EFBIG)).isEqualTo(NbdError.ENOSPC);
        assertThat(NbdError.of(jblockd.block.Errno.EACCES)).isEqualTo(NbdError.EINVAL);
        assertThat(NbdError.ENOSPC.code()).isEqualTo(28);
    }

    /**
     * After a large WRITE the next header is read exactly: the bytes of a following payload go
     * straight into the caller's buffer instead of through the reader's own (copied twice).
     * A channel as generous as a socket with everything queued hands out all it may.
     */
    @Test
    void afterALargeWriteTheNextHeaderIsReadExactlySoItsPayloadIsNotBuffered() throws Exception {
        int len = 256 * 1024;
        byte[] p1 = new byte[len];
        byte[] p2 = new byte[len];
        java.util.Arrays.fill(p1, (byte) 1);
        java.util.Arrays.fill(p2, (byte) 2);
        ByteArrayOutputStream all = new ByteArrayOutputStream();
        all.write(request(0, Nbd.CMD_WRITE, 1, 0, len, p1));
        all.write(request(0, Nbd.CMD_WRITE, 2, len, len, p2));
        all.write(request(0, Nbd.CMD_READ, 3, 0, 4096, new byte[0]));
        ByteBuffer src = ByteBuffer.wrap(all.toByteArray());
        java.util.List<Integer> offered = new java.util.ArrayList<>();
        ReadableByteChannel generous = new ReadableByteChannel() {
            public int read(ByteBuffer dst) {
                if (!src.hasRemaining()) {
                    return -1;
                }
                offered.add(dst.remaining());
                int n = Math.min(dst.remaining(), src.remaining());
                dst.put(src.slice(src.position(), n));
                src.position(src.position() + n);
                return n;
            }

            public boolean isOpen() {
                return true;
            }

            public void close() {
            }
        };
        NbdReader r = new NbdReader(generous);
        assertThat(r.readRequest().handle()).isEqualTo(1);
        ByteBuffer b1 = ByteBuffer.allocate(len);
        r.readFully(b1);
        assertThat(b1.array()).isEqualTo(p1);
        offered.clear();
        NbdRequest w2 = r.readRequest();
        assertThat(w2).isEqualTo(new NbdRequest(0, Nbd.CMD_WRITE, 2, len, len));
        assertThat(offered).as("the header read asks for the header only").containsExactly(28);
        offered.clear();
        ByteBuffer b2 = ByteBuffer.allocate(len);
        r.readFully(b2);
        assertThat(b2.array()).isEqualTo(p2);
        assertThat(offered).as("the payload is read straight into its buffer, whole").containsExactly(len);
        assertThat(r.readRequest()).isEqualTo(new NbdRequest(0, Nbd.CMD_READ, 3, 0, 4096));
    }
}
