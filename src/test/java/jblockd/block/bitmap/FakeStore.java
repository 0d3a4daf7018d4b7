package jblockd.block.bitmap;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * A persistent-bitmap store in memory (the qcow2 one comes from its own package): what it
 * loaded, what it was asked to check, remove and store, and refusals to inject.
 */
final class FakeStore implements PersistentBitmapStore {
    final List<StoredBitmap> loaded;
    final boolean readOnly;
    final List<String> removed = new ArrayList<>();
    final List<List<StoredBitmap>> stores = new ArrayList<>();
    final List<List<String>> checkedWith = new ArrayList<>();
    String refuse;
    IOException failRemove;
    IOException failStore;

    FakeStore(boolean readOnly, StoredBitmap... loaded) {
        this.readOnly = readOnly;
        this.loaded = List.of(loaded);
    }

    @Override
    public List<StoredBitmap> loaded() {
        return loaded;
    }

    @Override
    public boolean readOnly() {
        return readOnly;
    }

    @Override
    public void checkCanStore(String name, long granularity, List<String> alreadyPersistent)
            throws BitmapStoreException {
        checkedWith.add(List.copyOf(alreadyPersistent));
        if (refuse != null) {
            throw new BitmapStoreException(refuse);
        }
    }

    @Override
    public void remove(String name) throws IOException {
        if (failRemove != null) {
            throw failRemove;
        }
        removed.add(name);
    }

    @Override
    public void store(List<StoredBitmap> bitmaps) throws IOException {
        if (failStore != null) {
            throw failStore;
        }
        stores.add(List.copyOf(bitmaps));
    }
}
