#!/usr/bin/env bash
# Backup benchmark: jblockd vs QEMU 7.2 (qemu-system-x86_64 -M none + QMP drive-backup) vs cp,
# on the same images in the same run.
#
#   bench/backup-bench.sh [WORKDIR]      (a fresh directory is made inside WORKDIR, default /var/tmp)
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
#   3. rate limit accuracy: jblockd and QEMU back up 256 MiB at speed=32 MiB/s; the rate between
#      two query-block-jobs samples at 1 s and 7 s (steady state, no start-up or final flush).
#   4. guest write throughput during a backup: the 2 GiB source is exported over NBD (jblockd:
#      --nbd-server/--export; QEMU: nbd-server-start/nbd-server-add), a full backup starts at
#      full speed and `qemu-img bench -w` writes 512 MiB (64 KiB requests, depth 16, spread
#      over the disk) through the export at once; time of the guest writes, side by side.
# Env: SIZE_MB (default 2048), SPARSE_GB (64), SPARSE_DATA_MB (512), RUNS (1), CASES ("1 2 3").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# Always a fresh directory of our own (inside WORKDIR when given), so cleaning up never
# touches anyone else's files.
W=$(mktemp -d "${1:-/var/tmp}/jblockd-backup-bench.XXXXXX")
SIZE_MB=${SIZE_MB:-2048}
SPARSE_GB=${SPARSE_GB:-64}
SPARSE_DATA_MB=${SPARSE_DATA_MB:-512}
RUNS=${RUNS:-1}
# Images and sockets always go; the directory too unless KEEP=1 (keeps the daemon logs).
trap 'rm -f "$W"/*.raw "$W"/*.sock; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT

. bin/_jdk.sh >/dev/null 2>&1 || true
# Build once (bin/jblockd builds on first use; do it outside the timed region).
bin/jblockd --version >/dev/null

drop_cache() { # FILE...
    sync
    for f in "$@"; do dd if="$f" iflag=nocache count=0 status=none 2>/dev/null || true; done
    (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null || true
}

echo "== preparing images in $W"
CASES=${CASES:-1 2 3 4}
has() { [[ " $CASES " == *" $1 "* ]]; }
SRC=$W/src.raw
SPARSE=$W/sparse.raw
DATA=$W/data.raw
if has 1 || has 4; then
qemu-img create -q -f raw "$SRC" "${SIZE_MB}M"
# fully allocated, not compressible to nothing: a distinct pattern per 64 MiB
for ((i = 0; i < SIZE_MB; i += 64)); do
    qemu-io -f raw -c "write -P $(( (i / 64) % 250 + 1 )) ${i}M 64M" "$SRC" >/dev/null
done
fi
if has 2; then
qemu-img create -q -f raw "$SPARSE" "${SPARSE_GB}G"
# data spread over the disk: 8 MiB extents every (SPARSE_GB*1024/ (SPARSE_DATA_MB/8)) MiB
n=$((SPARSE_DATA_MB / 8)); step=$((SPARSE_GB * 1024 / n))
args=(); for ((i = 0; i < n; i++)); do args+=(-c "write -P $((i % 250 + 1)) $((i * step))M 8M"); done
qemu-io -f raw "${args[@]}" "$SPARSE" >/dev/null
dd if=/dev/urandom of="$DATA" bs=1M count="$SPARSE_DATA_MB" status=none
fi

python3 - "$ROOT" "$W" "$SRC" "$SPARSE" "$DATA" "$RUNS" "$CASES" <<'PY'
import json, os, socket, subprocess, sys, threading, time

root, w, src, sparse, data, runs, cases = sys.argv[1:8]
runs = int(runs)
cases = cases.split()

sys.path.insert(0, os.path.join(root, "bench"))
from qmp_client import Qmp, drop, rss_sampler

def start_jblockd(sock, drive):
    p = subprocess.Popen([f"{root}/bin/jblockd", "--qmp", f"unix:{sock}", "--drive", drive],
                         stdout=subprocess.DEVNULL, stderr=open(f"{w}/jblockd.log", "a"))
    return p, Qmp(sock)

def start_qemu(sock, drive):
    p = subprocess.Popen(["qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                          "-qmp", f"unix:{sock},server=on,wait=off", "-drive", drive],
                         stdout=subprocess.DEVNULL, stderr=open(f"{w}/qemu.log", "a"))
    return p, Qmp(sock)

def timed_backup(kind, drive_src, target, fmt="raw", blockdev_target=None, speed=0):
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
            q.cmd("drive-backup", device="drive0", target=target, format=fmt, sync="full", speed=speed)
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
if "1" in cases:
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

if "2" in cases:
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

if "3" in cases:
  rsrc = f"{w}/rate.raw"
  subprocess.run(["qemu-img", "create", "-q", "-f", "raw", rsrc, "256M"], check=True)
  subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x3c 0 256M", rsrc], check=True, stdout=subprocess.DEVNULL)
  speed = 32 << 20
  print(f"\n== case 3: rate limit, 256 MiB at speed={speed}: offset sampled by query-block-jobs at 1 s and 7 s")
  for kind in ("qemu", "jblockd"):
      tgt = f"{w}/{kind}-rate.raw"
      sock = f"{w}/{kind}.sock"
      if os.path.exists(sock): os.unlink(sock)
      starter = start_jblockd if kind == "jblockd" else start_qemu
      drive = (f"id=drive0,file={rsrc},format=raw" if kind == "jblockd"
               else f"if=none,id=drive0,file={rsrc},format=raw")
      p, q = starter(sock, drive)
      try:
          t0 = time.monotonic()
          q.cmd("drive-backup", device="drive0", target=tgt, format="raw", sync="full", speed=speed)
          samples = []
          for at in (1.0, 7.0):
              time.sleep(max(0, t0 + at - time.monotonic()))
              samples.append((time.monotonic(), q.cmd("query-block-jobs")[0]["offset"]))
          rate = (samples[1][1] - samples[0][1]) / (samples[1][0] - samples[0][0])
          print(f"  {kind:8s}: {rate / 2**20:6.2f} MiB/s  ({100 * (rate - speed) / speed:+.2f}% of the limit)")
          q.wait_event("BLOCK_JOB_COMPLETED")
          q.cmd("quit")
      finally:
          try: p.wait(timeout=30)
          except subprocess.TimeoutExpired: p.kill()
      os.unlink(tgt)

if "4" in cases:
  size = os.path.getsize(src)
  print(f"\n== case 4: guest writes over NBD during a full backup of the {size >> 20} MiB image")
  for kind in ("qemu", "jblockd"):
      sock = f"{w}/{kind}.sock"; nsock = f"{w}/{kind}-nbd.sock"; tgt = f"{w}/{kind}-gw.raw"
      for f in (sock, nsock):
          if os.path.exists(f): os.unlink(f)
      gsrc = f"{w}/gw-src.raw"
      subprocess.run(["cp", "--reflink=auto", src, gsrc], check=True)
      if kind == "jblockd":
          p = subprocess.Popen([f"{root}/bin/jblockd", "--qmp", f"unix:{sock}", "--drive",
                                f"id=drive0,file={gsrc},format=raw", "--nbd-server",
                                f"addr.type=unix,addr.path={nsock}", "--export",
                                "type=nbd,id=e0,node-name=drive0,name=drive0,writable=on"],
                               stdout=subprocess.DEVNULL, stderr=open(f"{w}/jblockd.log", "a"))
          q = Qmp(sock)
      else:
          p, q = start_qemu(sock, f"if=none,id=drive0,file={gsrc},format=raw")
          q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": nsock}})
          q.cmd("nbd-server-add", device="drive0", writable=True)
      try:
          # idle guest write speed first (no backup running)
          def bench():
              t0 = time.monotonic()
              subprocess.run(["qemu-img", "bench", "-w", "-f", "raw", "-c", "8192", "-s", "65536", "-d", "16",
                              "-S", str(size // 8192 // 65536 * 65536 or 65536), "--pattern=7",
                              f"nbd+unix:///drive0?socket={nsock}"], check=True, stdout=subprocess.DEVNULL)
              return time.monotonic() - t0
          idle = bench()
          t0 = time.monotonic()
          q.cmd("drive-backup", device="drive0", target=tgt, format="raw", sync="full")
          during = bench()
          ev = q.wait_event("BLOCK_JOB_COMPLETED")
          total = time.monotonic() - t0
          mib = 8192 * 65536 / 2**20
          print(f"  {kind:8s}: guest writes idle {mib / idle:7.1f} MiB/s, during backup {mib / during:7.1f} MiB/s;"
                f" backup took {total:6.2f} s")
          q.cmd("quit")
      finally:
          try: p.wait(timeout=30)
          except subprocess.TimeoutExpired: p.kill()
          for f in (tgt, gsrc):
              if os.path.exists(f): os.unlink(f)
PY
