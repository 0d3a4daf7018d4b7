package jblockd.block.qcow2;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;

import jblockd.block.BlockNode;
import jblockd.block.IoError;

/**
 * The file a qcow2 image lives in: the growable {@code file} child node when the driver runs,
 * a plain channel while {@link Qcow2Creator} builds a new image. Reads past the end are zeroes,
 * writes past the end extend the file.
 */
interface HostFile {
    void read(long offset, ByteBuffer dst) throws IOException;

    void write(long offset, ByteBuffer src) throws IOException;

    void flush() throws IOException;

    long length() throws IOException;

    static HostFile of(BlockNode node) {
        return new HostFile() {
            @Override
            public void read(long offset, ByteBuffer dst) throws IOException {
                node.read(offset, dst);
            }

            @Override
            public void write(long offset, ByteBuffer src) throws IOException {
                node.write(offset, src, false);
            }

            @Override
            public void flush() throws IOException {
                node.flush();
            }

            @Override
            public long length() throws IOException {
                return node.length();
            }
        };
    }

    static HostFile of(FileChannel ch) {
        return new HostFile() {
            @Override
            public void read(long offset, ByteBuffer dst) throws IOException {
                try {
                    long pos = offset;
                    while (dst.hasRemaining()) {
                        int n = ch.read(dst, pos);
                        if (n < 0) {
                            while (dst.hasRemaining()) {
                                dst.put((byte) 0);
                            }
                            return;
                        }
                        pos += n;
                    }
                } catch (IOException e) {
                    throw IoError.wrap(e);
                }
            }

            @Override
            public void write(long offset, ByteBuffer src) throws IOException {
                try {
                    long pos = offset;
                    while (src.hasRemaining()) {
                        pos += ch.write(src, pos);
                    }
                } catch (IOException e) {
                    throw IoError.wrap(e);
                }
            }

            @Override
            public void flush() throws IOException {
                try {
                    ch.force(false);
                } catch (IOException e) {
                    throw IoError.wrap(e);
                }
            }

            @Override
            public long length() throws IOException {
                return ch.size();
            }
        };
    }
}
