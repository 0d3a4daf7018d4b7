#!/usr/bin/env bash
# Incremental backup and dirty-tracking benchmark: jblockd vs QEMU 7.2 (qemu-storage-daemon), on
# the same images in the same run (issue 13's Measure section).
#
#   bench/incremental-bench.sh [WORKDIR]    (a fresh directory is made inside WORKDIR, default /var/tmp)
#
# Cases
#   1. incremental backup of a SIZE_GB (4) GiB qcow2 image with DIRTY_PCT (5) % of its 64 KiB
#      clusters dirty, scattered at random (written over NBD while bitmap b0 records): time from
#      blockdev-backup sync=incremental to BLOCK_JOB_COMPLETED, onto a fresh qcow2 target, cold
#      cache; beside it the time of copying just that much data (qemu-img convert of a raw file
#      of the dirty size into a fresh qcow2, cold cache). Targets: vs QEMU >= 1.25x (QEMU's time /
#      ours), and ours <= 1.2x the plain copy.
#   2. cost of tracking: fio 4 KiB random writes over NBD (iodepth 16, FIO_SECONDS each) on the
#      same daemon with no bitmap, then with two enabled bitmaps on the node (target >= 0.95x).
#      With the crash record on (persistent bitmaps in a qcow2 opened read-write) as a third row.
#   3. memory: RSS of the daemon with a 1 TiB sparse qcow2 carrying 4 bitmaps (64 KiB granularity).
# Env: SIZE_GB (4), DIRTY_PCT (5), FIO_SECONDS (5), CASES ("1 2 3"), INC_RUNS (6: the first job of
# a fresh daemon, then INC_RUNS-1 more in it, each after the same scattered writes again),
# FIO_ROUNDS (3: rounds of the three fio rows, rotated, after one warm-up run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
W=$(mktemp -d "${1:-/var/tmp}/jblockd-incremental-bench.XXXXXX")
SIZE_GB=${SIZE_GB:-4}
DIRTY_PCT=${DIRTY_PCT:-5}
FIO_SECONDS=${FIO_SECONDS:-5}
CASES=${CASES:-1 2 3}
INC_RUNS=${INC_RUNS:-6}
FIO_ROUNDS=${FIO_ROUNDS:-3}
trap 'rm -f "$W"/*.qcow2 "$W"/*.raw "$W"/*.sock; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT

for t in qemu-img qemu-io qemu-storage-daemon fio; do
    command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 2; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "fio has no nbd engine" >&2; exit 2; }
. bin/_jdk.sh >/dev/null 2>&1 || true
bin/jblockd --version >/dev/null   # build outside the timed region

echo "== preparing a ${SIZE_GB} GiB qcow2 in $W"
BASE=$W/base.qcow2
qemu-img create -q -f qcow2 "$BASE" "${SIZE_GB}G"
# fully allocated, a distinct pattern per 256 MiB
for ((i = 0; i < SIZE_GB * 1024; i += 256)); do
    qemu-io -c "write -P $(( (i / 256) % 250 + 1 )) ${i}M 256M" "$BASE" >/dev/null
done

python3 - "$ROOT" "$W" "$BASE" "$SIZE_GB" "$DIRTY_PCT" "$FIO_SECONDS" "$CASES" "$INC_RUNS" "$FIO_ROUNDS" <<'PY'
import json, os, random, shutil, subprocess, sys, time

root, w, base, size_gb, dirty_pct, fio_seconds, cases, inc_runs, fio_rounds = sys.argv[1:10]
inc_runs, fio_rounds = int(inc_runs), int(fio_rounds)
size = int(size_gb) << 30
cases = cases.split()
sys.path.insert(0, os.path.join(root, "bench"))
from qmp_client import Qmp, drop, median, ratio, stop

CL = 64 * 1024

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

def uri(nbd, name="src"):
    return f"nbd+unix:///{name}?socket={nbd}"

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])
    return 0

res = {}
rnd = random.Random(13)
nclusters = size // CL
dirty = sorted(rnd.sample(range(nclusters), nclusters * int(dirty_pct) // 100))
dirty_bytes = len(dirty) * CL

if "1" in cases:
    def dirty_it(nbd):
        # the scattered writes, in batches of qemu-io commands
        for i in range(0, len(dirty), 2000):
            args = []
            for c in dirty[i:i + 2000]:
                args += ["-c", f"write -P 0x5a {c * CL} {CL}"]
            subprocess.run(["qemu-io", "-f", "raw", *args, uri(nbd)], check=True, stdout=subprocess.DEVNULL)

    for kind in ("jblockd", "qemu"):
        src = f"{w}/{kind}-src.qcow2"
        shutil.copyfile(base, src)
        p, q, d, nbd = start(kind, "inc")
        try:
            q.cmd("blockdev-add", driver="qcow2", **{"node-name": "src"},
                  file={"driver": "file", "filename": src})
            q.cmd("block-export-add", type="nbd", id="g", **{"node-name": "src"}, name="src", writable=True)
            q.cmd("block-dirty-bitmap-add", node="src", name="b0", granularity=CL)
            # run 0 is the daemon's first job ("cold": for jblockd the JIT has not compiled the
            # copy path yet); runs 1..INC_RUNS-1 are what a long-running daemon does ("warm")
            for r in range(inc_runs):
                dirty_it(nbd)
                tgt = f"{w}/{kind}-inc{r}.qcow2"
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", tgt, f"{size_gb}G"], check=True)
                q.cmd("blockdev-add", driver="qcow2", **{"node-name": f"tgt{r}"},
                      file={"driver": "file", "filename": tgt})
                drop(src)
                t0 = time.monotonic()
                q.cmd("blockdev-backup", device="src", target=f"tgt{r}", sync="incremental", bitmap="b0",
                      **{"job-id": f"inc{r}"})
                ev = q.wait_event("BLOCK_JOB_COMPLETED")
                res.setdefault(f"{kind}-inc", []).append(time.monotonic() - t0)
                if "error" in ev["data"] or ev["data"]["len"] != dirty_bytes:
                    raise RuntimeError(f"{kind}: {ev['data']} (expected len {dirty_bytes})")
                q.wait_event("JOB_STATUS_CHANGE", lambda e: e["data"]["status"] == "null")
                q.cmd("blockdev-del", **{"node-name": f"tgt{r}"})
                m = json.loads(subprocess.run(["qemu-img", "map", "--output=json", tgt], check=True,
                                              capture_output=True, text=True).stdout)
                got = sum(e["length"] for e in m if e["data"])
                if got != dirty_bytes:
                    raise RuntimeError(f"{kind}: target holds {got} bytes of data, expected {dirty_bytes}")
                os.unlink(tgt)
        finally:
            stop(p, q)
        os.unlink(src)
    # the plain copy of as much data
    raw, out = f"{w}/plain.raw", f"{w}/plain.qcow2"
    with open(raw, "wb") as f:
        f.write(os.urandom(1 << 20) * (dirty_bytes >> 20))
        f.write(os.urandom(dirty_bytes & ((1 << 20) - 1)))
    drop(raw)
    t0 = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out], check=True)
    res["plain"] = time.monotonic() - t0
    os.unlink(raw); os.unlink(out)

def fio_iops(nbd):
    r = subprocess.run(["fio", "--name=b", "--ioengine=nbd", f"--uri={uri(nbd)}", "--rw=randwrite",
                        "--bs=4k", "--iodepth=16", f"--runtime={fio_seconds}", "--time_based",
                        "--output-format=json"], check=True, capture_output=True, text=True).stdout
    return json.loads(r[r.index("{"):])["jobs"][0]["write"]["iops"]

if "2" in cases:
    rows = (("none", 0, False), ("two", 2, False), ("two-persistent", 2, True))
    for kind in ("jblockd", "qemu"):
        img = f"{w}/{kind}-fio.qcow2"
        shutil.copyfile(base, img)
        def one(label, nb, persistent, measure=True):
            p, q, d, nbd = start(kind, "fio-" + label)
            try:
                q.cmd("blockdev-add", driver="qcow2", **{"node-name": "src"},
                      file={"driver": "file", "filename": img})
                for i in range(nb):
                    q.cmd("block-dirty-bitmap-add", node="src", name=f"b{i}", persistent=persistent)
                q.cmd("block-export-add", type="nbd", id="g", **{"node-name": "src"}, name="src",
                      writable=True)
                # first a run that is not counted, in the same daemon: the JIT compiles
                # jblockd's write path in its first seconds, which a long-running daemon has
                # long behind it (QEMU gets the same run, so the image state is equal too)
                fio_iops(nbd)
                iops = fio_iops(nbd)
                if measure:
                    res.setdefault(f"{kind}-fio-{label}", []).append(iops)
                for i in range(nb):
                    q.cmd("block-dirty-bitmap-remove", node="src", name=f"b{i}")
            finally:
                stop(p, q)
        # a warm-up daemon (not counted) so no row pays for first writes into the copied image,
        # then FIO_ROUNDS rounds with the rows in a rotated order (no row always runs first)
        one("warm-up", 0, False, measure=False)
        for r in range(fio_rounds):
            for k in range(len(rows)):
                one(*rows[(k + r) % len(rows)])
        os.unlink(img)

if "3" in cases:
    for kind in ("jblockd", "qemu"):
        img = f"{w}/{kind}-huge.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "1T"], check=True)
        p, q, d, nbd = start(kind, "huge")
        try:
            q.cmd("blockdev-add", driver="qcow2", **{"node-name": "src"},
                  file={"driver": "file", "filename": img})
            before = rss_kib(p.pid)
            for i in range(4):
                q.cmd("block-dirty-bitmap-add", node="src", name=f"b{i}", granularity=CL)
            res[f"{kind}-rss-before"] = before
            res[f"{kind}-rss-4bitmaps"] = rss_kib(p.pid)
        finally:
            stop(p, q)
        os.unlink(img)

print()
print(f"{'case':44} {'jblockd':>12} {'QEMU 7.2':>12} {'ratio':>8}")
if "1" in cases:
    jc, qc = res["jblockd-inc"][0], res["qemu-inc"][0]
    print(f"{'incremental, %d %% of %d GiB dirty, first job (s)' % (int(dirty_pct), int(size_gb)):44} "
          f"{jc:12.2f} {qc:12.2f} {ratio(qc, jc):>8}   (QEMU time / ours)")
    if inc_runs > 1:
        jw, qw = median(res["jblockd-inc"][1:]), median(res["qemu-inc"][1:])
        print(f"{'  later jobs, median of %d (s)' % (inc_runs - 1):44} {jw:12.2f} {qw:12.2f} {ratio(qw, jw):>8}")
    else:
        jw = jc
    print(f"{'  vs copying just %d MiB into a qcow2 (s)' % (dirty_bytes >> 20):44} {jw:12.2f} "
          f"{res['plain']:12.2f} {ratio(jw, res['plain']):>8}   (ours / plain copy)")
if "2" in cases:
    for label, _, _ in rows:
        j, qq = median(res[f"jblockd-fio-{label}"]), median(res[f"qemu-fio-{label}"])
        print(f"{'fio 4k randwrite, bitmaps: ' + label + ' (IOPS)':44} {j:12.0f} {qq:12.0f} {ratio(j, qq):>8}")
    for kind in ("jblockd", "qemu"):
        none = median(res[f"{kind}-fio-none"])
        print(f"  {kind}: two bitmaps / none = {ratio(median(res[f'{kind}-fio-two']), none)}, "
              f"persistent / none = {ratio(median(res[f'{kind}-fio-two-persistent']), none)} "
              f"(medians of {fio_rounds} rotated rounds, each measured after an uncounted run in the same daemon)")
if "3" in cases:
    for kind in ("jblockd", "qemu"):
        print(f"  {kind}: RSS with a 1 TiB qcow2 {res[f'{kind}-rss-before'] // 1024} MiB, with 4 bitmaps "
              f"{res[f'{kind}-rss-4bitmaps'] // 1024} MiB (bits alone: 4 x 2 MiB)")
PY
