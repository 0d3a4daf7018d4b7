#!/usr/bin/env bash
# Backup benchmark: jblockd vs QEMU 7.2 (qemu-system-x86_64 -M none + QMP drive-backup) vs cp,
# on the same images in the same run.
#
#   bench/backup-bench.sh [WORKDIR]      (default: a fresh directory under /var/tmp)
#
# Cases
#   1. full backup of a 2 GiB fully allocated raw image, cold cache (the source's pages are
#      dropped with posix_fadvise(DONTNEED) through `dd iflag=nocache count=0`, plus
#      /proc/sys/vm/drop_caches when writable), vs QEMU and vs `cp`; jblockd's peak RSS while
#      it runs (sampled from /proc/PID/status every 50 ms; target <= 300 MiB).
#   2. a 64 GiB sparse raw image holding 512 MiB of data: time vs copying the 512 MiB alone.
#      QEMU's raw drive-backup target would be written full of zeroes (64 GiB allocated on
#      disk, SPEC §7), so QEMU runs it as blockdev-backup onto a target node with
#      discard=unmap,detect-zeroes=unmap — QEMU's best sparse configuration.
# Env: SIZE_MB (default 2048), SPARSE_GB (64), SPARSE_DATA_MB (512), RUNS (1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
W=${1:-$(mktemp -d /var/tmp/jblockd-backup-bench.XXXXXX)}
mkdir -p "$W"
SIZE_MB=${SIZE_MB:-2048}
SPARSE_GB=${SPARSE_GB:-64}
SPARSE_DATA_MB=${SPARSE_DATA_MB:-512}
RUNS=${RUNS:-1}
trap 'rm -f "$W"/*.raw "$W"/*.sock; [ -n "${KEEP:-}" ] || rmdir "$W" 2>/dev/null || true' EXIT

. bin/_jdk.sh >/dev/null 2>&1 || true
# Build once (bin/jblockd builds on first use; do it outside the timed region).
bin/jblockd --version >/dev/null

drop_cache() { # FILE...
    sync
    for f in "$@"; do dd if="$f" iflag=nocache count=0 status=none 2>/dev/null || true; done
    (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null || true
}

echo "== preparing images in $W"
SRC=$W/src.raw
qemu-img create -q -f raw "$SRC" "${SIZE_MB}M"
# fully allocated, not compressible to nothing: a distinct pattern per 64 MiB
for ((i = 0; i < SIZE_MB; i += 64)); do
    qemu-io -f raw -c "write -P $(( (i / 64) % 250 + 1 )) ${i}M 64M" "$SRC" >/dev/null
done
SPARSE=$W/sparse.raw
qemu-img create -q -f raw "$SPARSE" "${SPARSE_GB}G"
# data spread over the disk: 8 MiB extents every (SPARSE_GB*1024/ (SPARSE_DATA_MB/8)) MiB
n=$((SPARSE_DATA_MB / 8)); step=$((SPARSE_GB * 1024 / n))
args=(); for ((i = 0; i < n; i++)); do args+=(-c "write -P $((i % 250 + 1)) $((i * step))M 8M"); done
qemu-io -f raw "${args[@]}" "$SPARSE" >/dev/null
DATA=$W/data.raw
dd if=/dev/urandom of="$DATA" bs=1M count="$SPARSE_DATA_MB" status=none

python3 - "$ROOT" "$W" "$SRC" "$SPARSE" "$DATA" "$RUNS" <<'PY'
import json, os, socket, subprocess, sys, threading, time

root, w, src, sparse, data, runs = sys.argv[1:7]
runs = int(runs)

class Qmp:
    def __init__(self, path, timeout=60):
        deadline = time.time() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX); self.s.connect(path); break
            except OSError:
                if time.time() > deadline: raise
                time.sleep(0.05)
        self.f = self.s.makefile("rwb", buffering=0)
        self.events = []
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")
    def _read(self):
        m = json.loads(self.f.readline())
        if "event" in m: self.events.append(m)
        return m
    def cmd(self, name, **args):
        self.f.write((json.dumps({"execute": name, "arguments": args}) + "\n").encode())
        while True:
            m = self._read()
            if "return" in m: return m["return"]
            if "error" in m: raise RuntimeError(f"{name}: {m['error']}")
    def wait_event(self, name, timeout=3600):
        self.s.settimeout(timeout)
        while True:
            for e in self.events:
                if e["event"] == name:
                    self.events.remove(e); return e
            self._read()

def drop(*files):
    subprocess.run(["sync"])
    for f in files:
        subprocess.run(["dd", f"if={f}", "iflag=nocache", "count=0", "status=none"])
    try:
        open("/proc/sys/vm/drop_caches", "w").write("3\n")
    except OSError:
        pass

def rss_sampler(pid, out, stop):
    peak = 0
    while not stop.is_set():
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            break
        time.sleep(0.05)
    out.append(peak)

def start_jblockd(sock, drive):
    p = subprocess.Popen([f"{root}/bin/jblockd", "--qmp", f"unix:{sock}", "--drive", drive],
                         stdout=subprocess.DEVNULL, stderr=open(f"{w}/jblockd.log", "a"))
    return p, Qmp(sock)

def start_qemu(sock, drive):
    p = subprocess.Popen(["qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                          "-qmp", f"unix:{sock},server=on,wait=off", "-drive", drive],
                         stdout=subprocess.DEVNULL, stderr=open(f"{w}/qemu.log", "a"))
    return p, Qmp(sock)

def timed_backup(kind, drive_src, target, fmt="raw", blockdev_target=None):
    sock = f"{w}/{kind}.sock"
    if os.path.exists(sock): os.unlink(sock)
    starter = start_jblockd if kind == "jblockd" else start_qemu
    drive = (f"id=drive0,file={drive_src},format=raw" if kind == "jblockd"
             else f"if=none,id=drive0,file={drive_src},format=raw")
    p, q = starter(sock, drive)
    peak = []
    stop = threading.Event()
    try:
        if blockdev_target:
            subprocess.run(["qemu-img", "create", "-q", "-f", "raw", target, str(os.path.getsize(drive_src))], check=True)
            q.cmd("blockdev-add", **blockdev_target)
        drop(drive_src)
        th = threading.Thread(target=rss_sampler, args=(p.pid, peak, stop)); th.start()
        t0 = time.monotonic()
        if blockdev_target:
            q.cmd("blockdev-backup", device="drive0", target=blockdev_target["node-name"], sync="full")
        else:
            q.cmd("drive-backup", device="drive0", target=target, format=fmt, sync="full")
        ev = q.wait_event("BLOCK_JOB_COMPLETED")
        dt = time.monotonic() - t0
        stop.set(); th.join()
        if "error" in ev["data"]:
            raise RuntimeError(f"{kind}: {ev['data']}")
        q.cmd("quit")
    finally:
        stop.set()
        try: p.wait(timeout=30)
        except subprocess.TimeoutExpired: p.kill()
    return dt, (peak[0] if peak else 0)

def allocated(path):
    return os.stat(path).st_blocks * 512

def compare(a, b):
    r = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", a, b])
    return "identical" if r.returncode == 0 else "DIFFERENT"

res = {}
size = os.path.getsize(src)
print(f"\n== case 1: full backup of a {size >> 20} MiB fully allocated raw image (cold source cache)")
for run in range(runs):
    tgt = f"{w}/cp.raw"
    drop(src); t0 = time.monotonic()
    subprocess.run(["cp", "--sparse=never", src, tgt], check=True); subprocess.run(["sync"])
    res.setdefault("cp", []).append(time.monotonic() - t0); os.unlink(tgt)
    for kind in ("qemu", "jblockd"):
        tgt = f"{w}/{kind}-full.raw"
        if os.path.exists(tgt): os.unlink(tgt)
        dt, peak = timed_backup(kind, src, tgt)
        res.setdefault(kind, []).append(dt)
        res.setdefault(kind + "-rss", []).append(peak)
        print(f"  {kind:8s} run {run}: {dt:7.2f} s  {size / dt / 2**20:7.1f} MiB/s  peak RSS {peak // 1024} MiB  "
              f"target {compare(src, tgt)}")
        os.unlink(tgt)
    print(f"  cp       run {run}: {res['cp'][-1]:7.2f} s  {size / res['cp'][-1] / 2**20:7.1f} MiB/s")
b = lambda k: min(res[k])
print(f"  ratio jblockd/qemu time: {b('jblockd') / b('qemu'):.2f}   jblockd/cp time: {b('jblockd') / b('cp'):.2f}"
      f"   jblockd peak RSS: {max(res['jblockd-rss']) // 1024} MiB (QEMU {max(res['qemu-rss']) // 1024} MiB)")

ssize = os.path.getsize(sparse)
print(f"\n== case 2: {ssize >> 30} GiB sparse raw image with {os.path.getsize(data) >> 20} MiB of data")
drop(data); t0 = time.monotonic()
subprocess.run(["cp", data, f"{w}/data-copy.raw"], check=True); subprocess.run(["sync"])
tdata = time.monotonic() - t0; os.unlink(f"{w}/data-copy.raw")
print(f"  copying the data alone (cp + sync): {tdata:.2f} s")
tgt = f"{w}/jblockd-sparse.raw"
dt, peak = timed_backup("jblockd", sparse, tgt)
print(f"  jblockd drive-backup: {dt:.2f} s  ({dt / tdata:.2f}x the data copy)  target allocated "
      f"{allocated(tgt) >> 20} MiB of {ssize >> 20} MiB  {compare(sparse, tgt)}  peak RSS {peak // 1024} MiB")
os.unlink(tgt)
tgt = f"{w}/qemu-sparse.raw"
dtq, _ = timed_backup("qemu", sparse, tgt, blockdev_target={
    "driver": "raw", "node-name": "tgt0", "discard": "unmap", "detect-zeroes": "unmap",
    "file": {"driver": "file", "filename": tgt, "discard": "unmap"}})
print(f"  qemu blockdev-backup (detect-zeroes=unmap target): {dtq:.2f} s  ({dtq / tdata:.2f}x the data copy)  "
      f"target allocated {allocated(tgt) >> 20} MiB  {compare(sparse, tgt)}")
print(f"  ratio jblockd/qemu time: {dt / dtq:.2f}")
os.unlink(tgt)
PY
