package jblockd.job;

/**
 * The use of a job's bounded buffer ({@link JobDriver#bufferUse}): a backup's copy-before-write
 * save buffer.
 *
 * @param size      the bound, bytes
 * @param used      bytes held now
 * @param saves     guest writes whose old data went to the buffer
 * @param fallbacks guest writes that found the buffer full and copied synchronously
 */
public record BufferUse(long size, long used, long saves, long fallbacks) {
}
