package jblockd.device;

import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import jblockd.block.BlockNode;
import jblockd.block.IoError;
import jblockd.block.NodeGraph;
import jblockd.block.NodeUser;

/** The devices of one daemon by name, and the "device or node name" lookup jobs use. */
public final class Devices {
    private final NodeGraph graph;
    private final Map<String, Device> byName = new LinkedHashMap<>();
    /** Devices without a name (an export made on a node-name): not in byName, still re-pointable. */
    private final List<Device> anonymous = new java.util.ArrayList<>();
    /**
     * The graph users that reach their node through a device (the device's own BlockBackend, the
     * exports made on it) and move with it when a job re-points it, as QEMU's bdrv_replace_node()
     * moves every BlockBackend of a node onto the filter above.
     */
    private final Map<Device, List<NodeUser>> riders = new java.util.IdentityHashMap<>();

    public Devices(NodeGraph graph) {
        this.graph = graph;
    }

    public synchronized void add(Device device) {
        if (byName.containsKey(device.name())) {
            throw new IllegalArgumentException("Duplicate device name '" + device.name() + "'");
        }
        NodeUser user = NodeUser.device(device.name(), !device.root().readOnly());
        try {
            attachUser(device, user);
        } catch (IoError e) {
            throw new IllegalArgumentException(e.getMessage(), e);
        }
        byName.put(device.name(), device);
    }

    /**
     * Attaches {@code user} to the device's current root, checked ({@link NodeGraph#attach}),
     * and keeps it with the device from then on.
     */
    public synchronized void attachUser(Device device, NodeUser user) throws IoError {
        graph.attach(device.root(), user);
        riders.computeIfAbsent(device, d -> new java.util.ArrayList<>()).add(user);
    }

    public synchronized void detachUser(Device device, NodeUser user) {
        graph.detach(device.root(), user);
        List<NodeUser> r = riders.get(device);
        if (r != null) {
            r.removeIf(u -> u == user);
            if (r.isEmpty()) {
                riders.remove(device);
            }
        }
    }

    public synchronized Optional<Device> remove(String name) {
        Device d = byName.remove(name);
        if (d != null) {
            for (NodeUser u : List.copyOf(riders.getOrDefault(d, List.of()))) {
                detachUser(d, u);
            }
        }
        return Optional.ofNullable(d);
    }

    public synchronized Optional<Device> get(String name) {
        return Optional.ofNullable(byName.get(name));
    }

    public synchronized Collection<Device> all() {
        return List.copyOf(byName.values());
    }

    /**
     * Registers a device that has no name (an NBD export made on a node-name) so that a job
     * that inserts a filter above its root ({@link #attachedTo}) re-points it too.
     */
    public synchronized void addAnonymous(Device device) {
        anonymous.add(device);
    }

    /**
     * Forgets an anonymous device once its export is gone, after a drained section over it: when
     * this returns no request of that export is still running on the node.
     */
    public void removeAnonymous(Device device) {
        try (DrainedSection s = drain(device)) {
            synchronized (this) {
                anonymous.removeIf(d -> d == device);
            }
        }
    }

    /** Every device, named or anonymous, whose root is {@code node} right now. */
    public synchronized List<Device> attachedTo(BlockNode node) {
        List<Device> out = new java.util.ArrayList<>();
        for (Device d : byName.values()) {
            if (d.root() == node) {
                out.add(d);
            }
        }
        for (Device d : anonymous) {
            if (d.root() == node) {
                out.add(d);
            }
        }
        return out;
    }

    /** The device whose root is {@code node}, if any (QEMU: the node's BlockBackend). */
    public synchronized Optional<Device> deviceOf(BlockNode node) {
        return byName.values().stream().filter(d -> d.root() == node).findFirst();
    }

    /**
     * A device name or a node name, as jobs and exports accept them; the node is the device's
     * root. Empty when neither exists (QEMU: {@code Cannot find device='x' nor node-name='x'}).
     */
    public Optional<BlockNode> lookupNode(String deviceOrNode) {
        Optional<Device> d = get(deviceOrNode);
        if (d.isPresent()) {
            return Optional.of(d.get().root());
        }
        return graph.node(deviceOrNode);
    }

    /**
     * Opens a drained section over every device, named or anonymous, whose graph reaches any of
     * {@code nodes} (through children of every role: files, backing links, filtered children):
     * QEMU's bdrv_drained_begin() on a node quiesces all its parents up to their BlockBackends.
     * Returns once no guest request is in flight on them; close the section to let the held
     * requests go on. The one drain primitive: every graph change under a device runs in one.
     */
    public DrainedSection drain(BlockNode... nodes) {
        List<Device> above = new java.util.ArrayList<>();
        synchronized (this) {
            for (Device d : everyDevice()) {
                if (reachesAny(d.root(), nodes, new java.util.HashSet<>())) {
                    above.add(d);
                }
            }
        }
        // Outside the monitor: waiting for guest requests must not hold up other lookups.
        return new DrainedSection(above);
    }

    /** Opens a drained section over exactly {@code device}. */
    public DrainedSection drain(Device device) {
        return new DrainedSection(List.of(device));
    }

    /**
     * Points a device at a new root, inside a drained section over the device (nested in the
     * caller's, if it has one), and moves the graph's use record with it.
     */
    public void replaceRoot(Device device, BlockNode newRoot) {
        try (DrainedSection s = drain(device)) {
            synchronized (this) {
                // the graph users that ride on the device (its own, its exports') move along
                for (NodeUser u : riders.getOrDefault(device, List.of())) {
                    graph.move(u, device.root(), newRoot);
                }
                device.replaceRoot(newRoot);
            }
        }
    }

    private List<Device> everyDevice() {
        List<Device> all = new java.util.ArrayList<>(byName.values());
        all.addAll(anonymous);
        return all;
    }

    private static boolean reachesAny(BlockNode from, BlockNode[] nodes, java.util.Set<BlockNode> seen) {
        if (!seen.add(from)) {
            return false;
        }
        for (BlockNode n : nodes) {
            if (n == from) {
                return true;
            }
        }
        for (jblockd.block.BlockChild c : from.driver().children()) {
            if (reachesAny(c.node(), nodes, seen)) {
                return true;
            }
        }
        return false;
    }
}
