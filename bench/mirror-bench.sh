#!/usr/bin/env bash
# Mirror / stream benchmark: jblockd vs QEMU 7.2 (qemu-system-x86_64 -M none + QMP) on the same
# images in the same run.
#
#   bench/mirror-bench.sh [WORKDIR]      (default: a fresh directory under /var/tmp)
#
# Cases
#   1. drive-mirror sync=full of a 2 GiB fully allocated raw image: time to BLOCK_JOB_READY
#      (MiB/s), then block-job-complete; the target is checked with qemu-img compare.
#   2. the same mirror (of src.raw, which the guest changes) while a guest writes 20 MiB/s through an NBD export (qemu-io: 1 MiB
#      writes every 50 ms at spread offsets): time to READY.
#   3. block-stream of a qcow2 top (empty) over a 2 GiB fully allocated qcow2 base: time to
#      BLOCK_JOB_COMPLETED (MiB/s); the result checked with qemu-img check + compare.
# Env: SIZE_MB (default 2048), RUNS (1), GUEST_MBS (20).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
W=${1:-$(mktemp -d /var/tmp/jblockd-mirror-bench.XXXXXX)}
mkdir -p "$W"
SIZE_MB=${SIZE_MB:-2048}
RUNS=${RUNS:-1}
GUEST_MBS=${GUEST_MBS:-20}
trap 'rm -f "$W"/*.raw "$W"/*.qcow2 "$W"/*.sock; [ -n "${KEEP:-}" ] || rmdir "$W" 2>/dev/null || true' EXIT

. bin/_jdk.sh >/dev/null 2>&1 || true
bin/jblockd --version >/dev/null   # build outside the timed region

echo "== preparing images in $W"
SRC=$W/src.raw
qemu-img create -q -f raw "$SRC" "${SIZE_MB}M"
for ((i = 0; i < SIZE_MB; i += 64)); do
    qemu-io -f raw -c "write -P $(( (i / 64) % 250 + 1 )) ${i}M 64M" "$SRC" >/dev/null
done
BASE=$W/base.qcow2
qemu-img convert -q -f raw -O qcow2 "$SRC" "$BASE"

python3 - "$ROOT" "$W" "$SRC" "$BASE" "$RUNS" "$GUEST_MBS" <<'PY'
import json, os, socket, subprocess, sys, time

root, w, src, base, runs, guest_mbs = sys.argv[1:7]
runs = int(runs); guest_mbs = int(guest_mbs)

sys.path.insert(0, os.path.join(root, "bench"))
from qmp_client import Qmp, drop, stop

def start(kind, sock, drive_file, fmt):
    if os.path.exists(sock): os.unlink(sock)
    if kind == "jblockd":
        p = subprocess.Popen([f"{root}/bin/jblockd", "--qmp", f"unix:{sock}",
                              "--drive", f"id=drive0,file={drive_file},format={fmt}"],
                             stdout=subprocess.DEVNULL, stderr=open(f"{w}/jblockd.log", "a"))
    else:
        p = subprocess.Popen(["qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                              "-qmp", f"unix:{sock},server=on,wait=off",
                              "-drive", f"if=none,id=drive0,file={drive_file},format={fmt}"],
                             stdout=subprocess.DEVNULL, stderr=open(f"{w}/qemu.log", "a"))
    return p, Qmp(sock)

def guest_writer(nbd_sock, seconds=600):
    # 1 MiB writes every (1000/guest_mbs) ms at spread offsets: guest_mbs MiB/s
    period = max(1, int(1000 / guest_mbs))
    cmds = []
    size_mb = os.path.getsize(src) >> 20
    for i in range(int(seconds * 1000 / period)):
        cmds += ["-c", f"write -P {i % 250 + 1} {(i * 37) % size_mb}M 1M", "-c", f"sleep {period}"]
    return subprocess.Popen(["qemu-io", "-f", "raw", *cmds, f"nbd+unix:///disk?socket={nbd_sock}"],
                            stdout=subprocess.DEVNULL, stderr=open(f"{w}/writer.log", "a"))

def mirror(kind, with_guest=False):
    sock = f"{w}/{kind}.sock"
    tgt = f"{w}/{kind}-tgt.raw"
    if os.path.exists(tgt): os.unlink(tgt)
    p, q = start(kind, sock, src, "raw")
    writer = None
    try:
        if with_guest:
            nbd = f"{w}/{kind}-nbd.sock"
            if os.path.exists(nbd): os.unlink(nbd)
            q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": nbd}})
            q.cmd("nbd-server-add", device="drive0", writable=True, name="disk")
            writer = guest_writer(nbd)
            time.sleep(1.0)
        drop(src)
        t0 = time.monotonic()
        q.cmd("drive-mirror", device="drive0", target=tgt, sync="full", format="raw")
        q.wait_event("BLOCK_JOB_READY")
        dt = time.monotonic() - t0
        if writer: writer.kill(); writer.wait()
        q.cmd("block-job-complete", device="drive0")
        ev = q.wait_event("BLOCK_JOB_COMPLETED")
        if "error" in ev["data"]: raise RuntimeError(f"{kind}: {ev['data']}")
    finally:
        if writer and writer.poll() is None: writer.kill()
        stop(p, q)
    same = "" if with_guest else ("identical" if subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", src, tgt]).returncode == 0 else "DIFFERENT")
    os.unlink(tgt)
    return dt, same

def stream(kind):
    sock = f"{w}/{kind}.sock"
    top = f"{w}/{kind}-top.qcow2"
    if os.path.exists(top): os.unlink(top)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top], check=True)
    p, q = start(kind, sock, top, "qcow2")
    try:
        drop(base)
        t0 = time.monotonic()
        q.cmd("block-stream", device="drive0")
        ev = q.wait_event("BLOCK_JOB_COMPLETED")
        dt = time.monotonic() - t0
        if "error" in ev["data"]: raise RuntimeError(f"{kind}: {ev['data']}")
    finally:
        stop(p, q)
    ok = subprocess.run(["qemu-img", "check", "-q", top]).returncode == 0
    # against the base: case 2's guest wrote into src.raw meanwhile
    same = subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", top, base]).returncode == 0
    info = subprocess.run(["qemu-img", "info", top], capture_output=True, text=True).stdout
    os.unlink(top)
    return dt, ("check ok" if ok else "CHECK FAILED") + (", identical" if same else ", DIFFERENT") + \
        (", no backing" if "backing file" not in info else ", STILL HAS BACKING")

size = os.path.getsize(src)
mib = size / 2**20
res = {}
print(f"\n== case 1: drive-mirror sync=full of a {size >> 20} MiB raw image, time to READY")
for run in range(runs):
    for kind in ("qemu", "jblockd"):
        dt, same = mirror(kind)
        res.setdefault(("m", kind), []).append(dt)
        print(f"  {kind:8s} run {run}: {dt:7.2f} s  {mib / dt:7.1f} MiB/s  target {same}")
b = lambda k: min(res[k])
print(f"  ratio jblockd/qemu MiB/s: {b(('m', 'qemu')) / b(('m', 'jblockd')):.2f}")

print(f"\n== case 2: the same mirror with a guest writing {guest_mbs} MiB/s through NBD, time to READY")
for kind in ("qemu", "jblockd"):
    try:
        dt, _ = mirror(kind, with_guest=True)
        res.setdefault(("g", kind), []).append(dt)
        print(f"  {kind:8s}: {dt:7.2f} s to READY")
    except Exception as e:
        print(f"  {kind:8s}: failed: {e}")
if ("g", "qemu") in res and ("g", "jblockd") in res:
    print(f"  ratio jblockd/qemu time to READY: {b(('g', 'jblockd')) / b(('g', 'qemu')):.2f}")

print(f"\n== case 3: block-stream of an empty qcow2 top over a {size >> 20} MiB qcow2 base")
for run in range(runs):
    for kind in ("qemu", "jblockd"):
        dt, check = stream(kind)
        res.setdefault(("s", kind), []).append(dt)
        print(f"  {kind:8s} run {run}: {dt:7.2f} s  {mib / dt:7.1f} MiB/s  {check}")
print(f"  ratio jblockd/qemu MiB/s: {b(('s', 'qemu')) / b(('s', 'jblockd')):.2f}")
PY
