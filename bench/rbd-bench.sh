#!/usr/bin/env bash
# Ceph RBD benchmark: jblockd vs QEMU 7.2 (qemu-storage-daemon) on one test cluster of our own
# (bin/test-ceph: one monitor, one memstore OSD), the same images and workload in the same run
# (issue 16's Measure section).
#
#   bench/rbd-bench.sh [WORKDIR]    (a fresh directory is made inside WORKDIR, default /var/tmp)
#
# Cases
#   1. backup of a SIZE_MB (1024) MiB RBD image, fully written, to a local qcow2: drive-backup
#      sync=full from the rbd node, time to BLOCK_JOB_COMPLETED (median of RUNS); for jblockd also
#      the point-in-time backup from an RBD snapshot (internal snapshot, snapshot node, backup).
#   2. mirror of a local raw file of SIZE_MB into a fresh RBD image, time to BLOCK_JOB_READY.
#   3. an NBD export of the RBD image: nbdcopy reading it whole (to null:) and writing it whole
#      (from a local raw file), each the median of RUNS.
#   4. incremental with DIRTY_PCT (5) % of the 64 KiB clusters changed at random over NBD: the
#      snapshot-diff incremental (new RBD snapshot, its node's diff bitmap, blockdev-backup
#      sync=bitmap bitmap-mode=never) vs a dirty-bitmap incremental (sync=incremental) of the same
#      change, time to COMPLETED; and fio 4 KiB random writes over the export (FIO_SECONDS) during
#      each kind of backup (limited to INC_SPEED so it lasts the fio run) vs with no job.
# The memstore is MEMSTORE_MB (8192): a full memstore hangs all I/O, the data kept in it stays
# well below (three SIZE_MB images, reused by every case, and the snapshots' changed objects).
# Case 4 runs INC_RUNS (2) rounds, the first not counted: each RBD snapshot followed by scattered
# writes costs the cluster a copy of every object touched (RADOS clones whole objects; 5 % of the
# 64 KiB clusters at random touch nearly all 4 MiB objects), freed only when the OSD has trimmed
# a deleted snapshot; more rounds filled an 8 GiB memstore.
# Env: SIZE_MB, DIRTY_PCT, RUNS (3), INC_RUNS, FIO_SECONDS (4), INC_SPEED (8M), MEMSTORE_MB,
# CASES ("1 2 3 4").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
W=$(mktemp -d "${1:-/var/tmp}/jblockd-rbd-bench.XXXXXX")
C=$(mktemp -d /tmp/cephb.XXXX)   # short: the cluster's UNIX socket paths
SIZE_MB=${SIZE_MB:-1024}
DIRTY_PCT=${DIRTY_PCT:-5}
RUNS=${RUNS:-3}
FIO_SECONDS=${FIO_SECONDS:-4}
INC_SPEED=${INC_SPEED:-8M}
MEMSTORE_MB=${MEMSTORE_MB:-8192}
CASES=${CASES:-1 2 3 4}
INC_RUNS=${INC_RUNS:-2}
trap 'bin/test-ceph stop "$C" >/dev/null 2>&1 || true; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT

for t in qemu-img qemu-io qemu-storage-daemon nbdcopy fio ceph-mon ceph-osd rbd; do
    command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 2; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "fio has no nbd engine" >&2; exit 2; }
. bin/_jdk.sh >/dev/null 2>&1 || true
bin/jblockd --version >/dev/null   # build outside the timed region

echo "== a one-host cluster in $C (memstore $MEMSTORE_MB MiB)"
bin/test-ceph start "$C" $((MEMSTORE_MB << 20)) > "$W/cluster"
CONF=$(sed -n 's/^conf=//p' "$W/cluster")

python3 - "$ROOT" "$W" "$CONF" "$SIZE_MB" "$DIRTY_PCT" "$RUNS" "$FIO_SECONDS" "$INC_SPEED" "$CASES" "$INC_RUNS" <<'PY'
import json, os, random, subprocess, sys, threading, time

root, w, conf, size_mb, dirty_pct, runs, fio_seconds, inc_speed, cases, inc_runs = sys.argv[1:11]
size, runs, cases, inc_runs = int(size_mb) << 20, int(runs), cases.split(), int(inc_runs)
speed = int(inc_speed[:-1]) << 20 if inc_speed[-1] in "Mm" else int(inc_speed)
sys.path.insert(0, os.path.join(root, "bench"))
from qmp_client import Qmp, median, ratio, stop

CL = 64 * 1024
KINDS = ("jblockd", "qemu")

def sh(*a, **k):
    return subprocess.run(a, check=True, capture_output=True, text=True, **k).stdout

def rbd(*a):
    return sh("timeout", "120", "rbd", "--conf", conf, *a)

def rbd_name(img, snap=None):
    return f"rbd:rbd/{img}{'@' + snap if snap else ''}:conf={conf}:id=admin"

def start(kind, tag):
    d = f"{w}/{kind}-{tag}"
    os.makedirs(d, exist_ok=True)
    sock, nbd = f"{d}/qmp.sock", f"{d}/nbd.sock"
    if kind == "jblockd":
        argv = [f"{root}/bin/jblockd", "--qmp", f"unix:{sock}"]
    else:
        argv = ["qemu-storage-daemon", "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                "--monitor", "chardev=m,mode=control"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(f"{d}/log", "a"))
    q = Qmp(sock)
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": nbd}})
    return p, q, d, nbd

def rbd_node(node, img, snap=None):
    o = {"driver": "rbd", "node-name": node, "pool": "rbd", "image": img, "conf": conf, "user": "admin"}
    if snap:
        o.update(snapshot=snap, **{"read-only": True})
    return o

def uri(nbd, name="g"):
    return f"nbd+unix:///{name}?socket={nbd}"

def job(q, cmd, jid, **args):
    t0 = time.monotonic()
    q.cmd(cmd, **{"job-id": jid}, **args)
    ev = q.wait_event("BLOCK_JOB_COMPLETED", lambda e: e["data"]["device"] == jid)
    if "error" in ev["data"]:
        raise RuntimeError(f"{jid}: {ev['data']}")
    dt = time.monotonic() - t0
    q.wait_event("JOB_STATUS_CHANGE", lambda e: e["data"]["id"] == jid and e["data"]["status"] == "null")
    return dt

def fio_iops(nbd, seconds):
    r = subprocess.run(["fio", "--name=g", "--ioengine=nbd", f"--uri={uri(nbd)}", "--rw=randwrite",
                        "--bs=4k", "--iodepth=16", f"--runtime={seconds}", "--time_based",
                        "--output-format=json"], check=True, capture_output=True, text=True).stdout
    return json.loads(r[r.index("{"):])["jobs"][0]["write"]["iops"]

def qcow2(path):
    sh("qemu-img", "create", "-q", "-f", "qcow2", path, str(size))

res = {}
SRC = "bench-src"
rbd("create", "--size", f"{size_mb}M", f"rbd/{SRC}")
# every case reuses these three images: memstore gives back little of what an 'rbd rm' frees
# (a 1 GiB image made and removed a few times filled a 4 GiB memstore), and a full one hangs
for kind in KINDS:
    rbd("create", "--size", f"{size_mb}M", f"rbd/disk-{kind}")
for i in range(0, int(size_mb), 128):
    sh("qemu-io", "-f", "raw", "-c", f"write -P {(i // 128) % 250 + 1} {i}M {min(128, int(size_mb) - i)}M",
       rbd_name(SRC))

if "1" in cases:
    for kind in KINDS:
        p, q, d, nbd = start(kind, "backup")
        try:
            q.cmd("blockdev-add", **rbd_node("r0", SRC))
            for r in range(runs + 1):   # run 0 warms the daemon (JIT), not counted
                tgt = f"{d}/b.qcow2"
                dt = job(q, "drive-backup", f"b{r}", device="r0", target=tgt, format="qcow2", sync="full")
                if r:
                    res.setdefault(f"{kind}-backup", []).append(dt)
                os.unlink(tgt)
            if kind == "jblockd":
                for r in range(runs):
                    tgt = f"{d}/s.qcow2"
                    t0 = time.monotonic()
                    q.cmd("blockdev-snapshot-internal-sync", device="r0", name=f"pit{r}")
                    q.cmd("blockdev-add", **rbd_node("snap", SRC, f"pit{r}"))
                    job(q, "drive-backup", f"s{r}", device="snap", target=tgt, format="qcow2", sync="full")
                    q.cmd("blockdev-del", **{"node-name": "snap"})
                    q.cmd("blockdev-snapshot-delete-internal-sync", device="r0", name=f"pit{r}")
                    res.setdefault("jblockd-snapshot-backup", []).append(time.monotonic() - t0)
                    os.unlink(tgt)
        finally:
            stop(p, q)

if "2" in cases:
    local = f"{w}/local.raw"
    sh("qemu-img", "create", "-q", "-f", "raw", local, str(size))
    sh("qemu-io", "-f", "raw", "-c", f"write -P 0x42 0 {size}", local)
    for kind in KINDS:
        p, q, d, nbd = start(kind, "mirror")
        try:
            q.cmd("blockdev-add", driver="raw", **{"node-name": "src"}, file={"driver": "file", "filename": local})
            img = f"disk-{kind}"
            for r in range(runs):
                q.cmd("blockdev-add", **rbd_node("dst", img))
                t0 = time.monotonic()
                q.cmd("blockdev-mirror", **{"job-id": "m"}, device="src", target="dst", sync="full")
                q.wait_event("BLOCK_JOB_READY")
                res.setdefault(f"{kind}-mirror", []).append(time.monotonic() - t0)
                q.cmd("block-job-cancel", device="m")
                q.wait_event("JOB_STATUS_CHANGE", lambda e: e["data"]["status"] == "null")
                q.cmd("blockdev-del", **{"node-name": "dst"})
        finally:
            stop(p, q)
    if "3" not in cases:
        os.unlink(local)

if "3" in cases:
    local = f"{w}/local.raw"
    if not os.path.exists(local):
        sh("qemu-img", "create", "-q", "-f", "raw", local, str(size))
        sh("qemu-io", "-f", "raw", "-c", f"write -P 0x42 0 {size}", local)
    for kind in KINDS:
        img = f"disk-{kind}"
        p, q, d, nbd = start(kind, "nbd")
        try:
            q.cmd("blockdev-add", **rbd_node("r0", img))
            q.cmd("block-export-add", type="nbd", id="g", **{"node-name": "r0"}, name="g", writable=True)
            for r in range(runs + 1):
                t0 = time.monotonic()
                sh("nbdcopy", local, uri(nbd))
                if r:
                    res.setdefault(f"{kind}-nbd-write", []).append(time.monotonic() - t0)
                t0 = time.monotonic()
                sh("nbdcopy", uri(nbd), "null:")
                if r:
                    res.setdefault(f"{kind}-nbd-read", []).append(time.monotonic() - t0)
        finally:
            stop(p, q)
    os.unlink(local)

if "4" in cases:
    rnd = random.Random(16)
    ncl = size // CL
    def change(nbd):
        dirty = sorted(rnd.sample(range(ncl), ncl * int(dirty_pct) // 100))
        for i in range(0, len(dirty), 2000):
            args = []
            for c in dirty[i:i + 2000]:
                args += ["-c", f"write -P 0x5a {c * CL} {CL}"]
            subprocess.run(["qemu-io", "-f", "raw", *args, uri(nbd)], check=True, stdout=subprocess.DEVNULL)
        return len(dirty) * CL

    def during(q, nbd, start_job):
        """fio over the export while a speed-limited job runs; the job is then let go to its end."""
        jid = start_job()
        iops = fio_iops(nbd, int(fio_seconds))
        try:
            q.cmd("block-job-set-speed", device=jid, speed=0)
        except RuntimeError:
            pass   # it has ended already
        q.wait_event("BLOCK_JOB_COMPLETED", lambda e: e["data"]["device"] == jid)
        q.wait_event("JOB_STATUS_CHANGE", lambda e: e["data"]["id"] == jid and e["data"]["status"] == "null")
        return iops

    for kind in KINDS:
        img = f"disk-{kind}"
        p, q, d, nbd = start(kind, "inc")
        try:
            q.cmd("blockdev-add", **rbd_node("r0", img))
            q.cmd("block-export-add", type="nbd", id="g", **{"node-name": "r0"}, name="g", writable=True)
            fio_iops(nbd, 2)   # warm-up, not counted
            res.setdefault(f"{kind}-fio-idle", []).append(fio_iops(nbd, int(fio_seconds)))
            q.cmd("block-dirty-bitmap-add", node="r0", name="b0", granularity=CL)
            if kind == "jblockd":
                q.cmd("blockdev-snapshot-internal-sync", device="r0", name="i0")
            for r in range(inc_runs):
                changed = change(nbd)
                # (a) the dirty-bitmap incremental (QEMU and jblockd)
                tgt = f"{d}/bm{r}.qcow2"
                qcow2(tgt)
                q.cmd("blockdev-add", driver="qcow2", **{"node-name": "t"}, file={"driver": "file", "filename": tgt})
                if kind == "jblockd":
                    # the same change for the snapshot-diff path: its own snapshot before b0 is reset
                    q.cmd("blockdev-snapshot-internal-sync", device="r0", name=f"i{r + 1}")
                dt = job(q, "blockdev-backup", f"bm{r}", device="r0", target="t", sync="incremental", bitmap="b0")
                q.cmd("blockdev-del", **{"node-name": "t"})
                os.unlink(tgt)
                if r:
                    res.setdefault(f"{kind}-inc-bitmap", []).append(dt)
                # (b) the snapshot-diff incremental (jblockd): i<r> -> i<r+1>, same change
                if kind == "jblockd":
                    tgt = f"{d}/sd{r}.qcow2"
                    qcow2(tgt)
                    q.cmd("blockdev-add", driver="qcow2", **{"node-name": "t"},
                          file={"driver": "file", "filename": tgt})
                    t0 = time.monotonic()
                    q.cmd("blockdev-add", **rbd_node("snap", img, f"i{r + 1}"))
                    job(q, "blockdev-backup", f"sd{r}", device="snap", target="t", sync="bitmap",
                        bitmap=f"i{r}", **{"bitmap-mode": "never"})
                    dt = time.monotonic() - t0
                    q.cmd("blockdev-del", **{"node-name": "snap"})
                    q.cmd("blockdev-del", **{"node-name": "t"})
                    q.cmd("blockdev-snapshot-delete-internal-sync", device="r0", name=f"i{r}")
                    m = json.loads(sh("qemu-img", "map", "--output=json", tgt))
                    got = sum(e["length"] for e in m if e["data"])
                    res.setdefault("jblockd-inc-snapdiff-bytes", []).append(got)
                    os.unlink(tgt)
                    if r:
                        res.setdefault("jblockd-inc-snapdiff", []).append(dt)
            res["changed"] = changed
            # guest writes during each kind of incremental, the job limited so it lasts the run
            change(nbd)
            tgt = f"{d}/g.qcow2"
            qcow2(tgt)
            q.cmd("blockdev-add", driver="qcow2", **{"node-name": "t"}, file={"driver": "file", "filename": tgt})
            def bitmap_job():
                q.cmd("blockdev-backup", **{"job-id": "gb"}, device="r0", target="t", sync="incremental",
                      bitmap="b0", speed=speed)
                return "gb"
            if kind == "jblockd":
                q.cmd("blockdev-snapshot-internal-sync", device="r0", name="g1")
            res[f"{kind}-fio-bitmap"] = during(q, nbd, bitmap_job)
            q.cmd("blockdev-del", **{"node-name": "t"})
            os.unlink(tgt)
            if kind == "jblockd":
                last = f"i{inc_runs}"
                qcow2(tgt)
                q.cmd("blockdev-add", driver="qcow2", **{"node-name": "t"}, file={"driver": "file", "filename": tgt})
                q.cmd("blockdev-add", **rbd_node("snap", img, "g1"))
                def snap_job():
                    q.cmd("blockdev-backup", **{"job-id": "gs"}, device="snap", target="t", sync="bitmap",
                          bitmap=last, **{"bitmap-mode": "never"}, speed=speed)
                    return "gs"
                res["jblockd-fio-snapdiff"] = during(q, nbd, snap_job)
                q.cmd("blockdev-del", **{"node-name": "snap"})
                q.cmd("blockdev-del", **{"node-name": "t"})
                os.unlink(tgt)
        finally:
            stop(p, q)
        rbd("snap", "purge", f"rbd/{img}")

mib = size / (1 << 20)
print()
print(f"{'case (same cluster, same run)':52} {'jblockd':>10} {'QEMU 7.2':>10} {'ratio':>8}")
def row(label, j, qq, unit="s", better="lower"):
    r = ratio(qq, j) if better == "lower" else ratio(j, qq)
    print(f"{label:52} {j:10.2f} {qq:10.2f} {r:>8}")
if "1" in cases:
    j, qq = median(res["jblockd-backup"]), median(res["qemu-backup"])
    row(f"backup {mib:.0f} MiB RBD -> qcow2, drive-backup (s)", j, qq)
    print(f"{'  = MiB/s':52} {mib / j:10.1f} {mib / qq:10.1f}")
    s = median(res["jblockd-snapshot-backup"])
    row("  jblockd from an RBD snapshot (snap+node+backup) (s)", s, qq)
if "2" in cases:
    row(f"mirror {mib:.0f} MiB local -> RBD to READY (s)", median(res["jblockd-mirror"]), median(res["qemu-mirror"]))
if "3" in cases:
    row("nbdcopy read of the RBD export (s)", median(res["jblockd-nbd-read"]), median(res["qemu-nbd-read"]))
    row("nbdcopy write to the RBD export (s)", median(res["jblockd-nbd-write"]), median(res["qemu-nbd-write"]))
if "4" in cases:
    ch = res["changed"] >> 20
    jb, qb = median(res["jblockd-inc-bitmap"]), median(res["qemu-inc-bitmap"])
    row(f"dirty-bitmap incremental, {ch} MiB changed (s)", jb, qb)
    sd = median(res["jblockd-inc-snapdiff"])
    row(f"  jblockd snapshot-diff incremental (node+backup) (s)", sd, qb)
    print(f"    snapshot-diff copied {int(median(res['jblockd-inc-snapdiff-bytes'])) >> 20} MiB "
          f"(librbd's diff: whole extents of changed objects' data)")
    ji, qi = median(res["jblockd-fio-idle"]), median(res["qemu-fio-idle"])
    row("fio 4k randwrite IOPS, no job", ji, qi, better="higher")
    row("  during the dirty-bitmap incremental (cbw)", res["jblockd-fio-bitmap"], res["qemu-fio-bitmap"],
        better="higher")
    print(f"{'  during the snapshot-diff incremental (jblockd)':52} {res['jblockd-fio-snapdiff']:10.0f}"
          f"   {ratio(res['jblockd-fio-snapdiff'], ji)} of idle; bitmap: "
          f"{ratio(res['jblockd-fio-bitmap'], ji)} (jblockd), {ratio(res['qemu-fio-bitmap'], qi)} (QEMU)")
print("ratios: QEMU's time / ours (higher is better for us); IOPS rows: ours / QEMU's")
PY
