#!/usr/bin/env bash
# Pull-mode backup benchmark: jblockd vs QEMU 7.2 (qemu-storage-daemon) as the daemon being
# pulled from, on the same images in the same run (issue 14's Measure section).
#
#   bench/pull-bench.sh [WORKDIR]    (a fresh directory is made inside WORKDIR, default /var/tmp)
#
# Cases
#   1. incremental pull of a SIZE_GB (4) GiB qcow2 with DIRTY_PCT (5) % of its 64 KiB clusters
#      dirty (scattered, written over NBD while checkpoint bitmap chk records): the same client,
#      `jblockctl pull DEVICE TARGET --bitmap chk --previous FULL`, against each daemon (classic
#      fleecing, export with the bitmap, reads of the dirty extents only), cold cache; time of the
#      whole pull (set-up, read, teardown). Target: jblockd >= 1.0x QEMU's throughput (goal 1.25x).
#      PULL_RUNS (3) pulls per daemon, each after the same writes again; the median is reported
#      beside the first.
#   2. guest 64 KiB random writes over NBD (fio, iodepth 8, FIO_SECONDS) during classic fleecing
#      (a sync=none backup into a scratch qcow2 over the disk) vs alone, per daemon: the ratio
#      "during / alone" for jblockd and for QEMU (target: jblockd's >= QEMU's).
# Env: SIZE_GB (4), DIRTY_PCT (5), PULL_RUNS (3), FIO_SECONDS (5), CASES ("1 2").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
W=$(mktemp -d "${1:-/var/tmp}/jblockd-pull-bench.XXXXXX")
SIZE_GB=${SIZE_GB:-4}
DIRTY_PCT=${DIRTY_PCT:-5}
PULL_RUNS=${PULL_RUNS:-3}
FIO_SECONDS=${FIO_SECONDS:-5}
CASES=${CASES:-1 2}
trap 'rm -f "$W"/*.qcow2 "$W"/*.raw "$W"/*.sock; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT

for t in qemu-img qemu-io qemu-storage-daemon fio; do
    command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 2; }
done
. bin/_jdk.sh >/dev/null 2>&1 || true
bin/jblockd --version >/dev/null   # build outside the timed region

echo "== preparing a ${SIZE_GB} GiB qcow2 in $W"
BASE=$W/base.qcow2
qemu-img create -q -f qcow2 "$BASE" "${SIZE_GB}G"
for ((i = 0; i < SIZE_GB * 1024; i += 256)); do
    qemu-io -c "write -P $(( (i / 256) % 250 + 1 )) ${i}M 256M" "$BASE" >/dev/null
done

python3 - "$ROOT" "$W" "$BASE" "$SIZE_GB" "$DIRTY_PCT" "$PULL_RUNS" "$FIO_SECONDS" "$CASES" <<'PY'
import json, os, random, shutil, subprocess, sys, time

root, w, base, size_gb, dirty_pct, pull_runs, fio_seconds, cases = sys.argv[1:9]
size = int(size_gb) << 30
pull_runs = int(pull_runs)
cases = cases.split()
sys.path.insert(0, os.path.join(root, "bench"))
from qmp_client import Qmp, drop, median, ratio, stop

CL = 64 * 1024
rnd = random.Random(14)
nclusters = size // CL
dirty = sorted(rnd.sample(range(nclusters), nclusters * int(dirty_pct) // 100))
dirty_bytes = len(dirty) * CL
res = {}

def start(kind, tag):
    d = f"{w}/{kind}-{tag}"
    os.makedirs(d, exist_ok=True)
    sock, sock2, nbd = f"{d}/qmp.sock", f"{d}/qmp2.sock", f"{d}/nbd.sock"
    if kind == "jblockd":
        argv = [f"{root}/bin/jblockd", "--qmp", f"unix:{sock}"]
        ctl = sock
    else:
        # a QEMU monitor takes one client at a time: jblockctl gets its own
        argv = ["qemu-storage-daemon", "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                "--monitor", "chardev=m,mode=control",
                "--chardev", f"socket,id=m2,path={sock2},server=on,wait=off", "--monitor", "chardev=m2,mode=control"]
        ctl = sock2
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(f"{d}/log", "a"))
    q = Qmp(sock)
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": nbd}})
    return p, q, d, nbd, ctl

def uri(nbd, name="vda"):
    return f"nbd+unix:///{name}?socket={nbd}"

def dirty_it(nbd):
    for i in range(0, len(dirty), 2000):
        args = []
        for c in dirty[i:i + 2000]:
            args += ["-c", f"write -P 0x5a {c * CL} {CL}"]
        subprocess.run(["qemu-io", "-f", "raw", *args, uri(nbd)], check=True, stdout=subprocess.DEVNULL)

def jblockctl(ctl, *args):
    r = subprocess.run([f"{root}/bin/jblockctl", "--socket", ctl, "--json", *args], check=True,
                       capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])

if "1" in cases:
    for kind in ("jblockd", "qemu"):
        src = f"{w}/{kind}-src.qcow2"
        shutil.copyfile(base, src)
        p, q, d, nbd, ctl = start(kind, "pull")
        links, full = [], f"{w}/{kind}-full.qcow2"
        try:
            q.cmd("blockdev-add", driver="qcow2", **{"node-name": "fmt"},
                  file={"driver": "file", "filename": src})
            q.cmd("block-export-add", type="nbd", id="guest", **{"node-name": "fmt"}, name="vda", writable=True)
            # the chain's start: a full pull that sets the checkpoint (not timed)
            jblockctl(ctl, "pull", "fmt", full, "--checkpoint", "chk0", "--nbd-socket", nbd,
                      "--scratch", f"{d}/scratch-full.qcow2")
            prev, chk = full, "chk0"
            for r in range(pull_runs):
                dirty_it(nbd)
                inc = f"{w}/{kind}-inc{r}.qcow2"
                nxt = f"chk{r + 1}"
                drop(src)
                t0 = time.monotonic()
                out = jblockctl(ctl, "pull", "fmt", inc, "--bitmap", chk, "--previous", prev, "--checkpoint", nxt,
                                "--nbd-socket", nbd, "--scratch", f"{d}/scratch{r}.qcow2")
                res.setdefault(f"{kind}-pull", []).append(time.monotonic() - t0)
                if out["dirty"] != dirty_bytes:
                    raise RuntimeError(f"{kind}: pulled {out} (expected {dirty_bytes} dirty)")
                q.cmd("block-dirty-bitmap-remove", node="fmt", name=chk)
                links.append(inc)
                prev, chk = inc, nxt
        finally:
            stop(p, q)
        for f in [src, full] + links:   # the chain's links back each other: removed at the end
            if os.path.exists(f): os.unlink(f)

def fio_iops(nbd, name="vda"):
    r = subprocess.run(["fio", "--name=b", "--ioengine=nbd", f"--uri={uri(nbd, name)}", "--rw=randwrite",
                        "--bs=64k", "--iodepth=8", f"--runtime={fio_seconds}", "--time_based",
                        "--output-format=json"], check=True, capture_output=True, text=True).stdout
    return json.loads(r[r.index("{"):])["jobs"][0]["write"]["iops"]

if "2" in cases:
    for kind in ("jblockd", "qemu"):
        for label in ("alone", "fleecing", "alone2", "fleecing2"):
            img = f"{w}/{kind}-fio.qcow2"
            shutil.copyfile(base, img)
            p, q, d, nbd, ctl = start(kind, "fio-" + label)
            try:
                q.cmd("blockdev-add", driver="qcow2", **{"node-name": "fmt"},
                      file={"driver": "file", "filename": img})
                q.cmd("block-export-add", type="nbd", id="guest", **{"node-name": "fmt"}, name="vda", writable=True)
                if label.startswith("fleecing"):
                    scratch = f"{d}/scratch.qcow2"
                    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", scratch, f"{size_gb}G"], check=True)
                    q.cmd("blockdev-add", driver="qcow2", **{"node-name": "scratch"}, backing="fmt",
                          file={"driver": "file", "filename": scratch})
                    q.cmd("blockdev-backup", device="fmt", target="scratch", sync="none", **{"job-id": "fl"})
                res.setdefault(f"{kind}-{label.rstrip('2')}", []).append(fio_iops(nbd))
            finally:
                stop(p, q)
            os.unlink(img)

print()
print(f"{'case':46} {'jblockd':>10} {'QEMU 7.2':>10} {'ratio':>8}")
if "1" in cases:
    j0, q0 = res["jblockd-pull"][0], res["qemu-pull"][0]
    jm, qm = median(res["jblockd-pull"]), median(res["qemu-pull"])
    print(f"{'pull of %d MiB dirty of %d GiB, first (s)' % (dirty_bytes >> 20, int(size_gb)):46} "
          f"{j0:10.2f} {q0:10.2f} {ratio(q0, j0):>8}   (QEMU time / ours)")
    print(f"{'  median of %d (s)' % pull_runs:46} {jm:10.2f} {qm:10.2f} {ratio(qm, jm):>8}")
if "2" in cases:
    for kind in ("jblockd", "qemu"):
        a, f = median(res[f"{kind}-alone"]), median(res[f"{kind}-fleecing"])
        print(f"  {kind}: guest 64k randwrite IOPS alone {a:.0f}, during fleecing {f:.0f}: {ratio(f, a)}")
PY
