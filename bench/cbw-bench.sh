#!/usr/bin/env bash
# Guest writes during a backup (issue 17, workload "cbw-guest-write"): jblockd with its
# copy-before-write save buffer, jblockd with the buffer off (x-perf.cbw-buffer-size=0, the
# synchronous copy-before-write of before) and QEMU 7.2, on the same image in the same run.
#
#   bench/cbw-bench.sh [WORKDIR]      (a fresh directory is made inside WORKDIR, default /var/tmp)
#
# For each peer the SIZE_MB raw source (fully allocated) is exported over NBD and fio (nbd
# engine) writes IO_MB through the export, spread at random over the disk (a small part of it, so
# that during a backup nearly every write is a first write to a cluster not yet copied; a run
# that wrote the whole disk would soon have nothing left to copy before writing):
#   tput  64 KiB random writes, iodepth 8: alone, then while a drive-backup
#         sync=full limited to SPEED_MB MiB/s runs (a fresh point in time, so nearly every guest
#         write is a first write to a not yet copied cluster), then while one runs unlimited
#         (speed=0: the "guests first" rule); MiB/s and the ratio during/alone.
#   lat   4 KiB random writes, iodepth 1, IO_MB/8: p99 completion latency alone and during a backup at
#         SPEED_MB MiB/s; the ratio during/alone.
#   mirror 64 KiB random writes as in tput while a drive-mirror (background copy mode) at
#         SPEED_MB MiB/s runs, against alone.
# jblockd's peak RSS during the backups is sampled from /proc/PID/status.
# Every peer first runs one unmeasured 64 KiB pass (JIT warm-up for jblockd; the same for QEMU).
# A job that ends before its guest run is reported ("note: ... ended before the guest run").
# Env: SIZE_MB (4096), IO_MB (512), SPEED_MB (32), RUNS (1), PEERS ("qemu jblockd jblockd-nobuf"),
#      TESTS ("tput lat mirror").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
W=$(mktemp -d "${1:-/var/tmp}/jblockd-cbw-bench.XXXXXX")
trap 'rm -f "$W"/*.raw "$W"/*.sock; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
SIZE_MB=${SIZE_MB:-4096}
export SIZE_MB
for t in fio qemu-img qemu-io qemu-system-x86_64; do
    command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "fio has no nbd engine" >&2; exit 2; }
. bin/_jdk.sh >/dev/null 2>&1 || true
bin/jblockd --version >/dev/null # builds on first use, outside the measured part

SRC=$W/src.raw
qemu-img create -q -f raw "$SRC" "${SIZE_MB}M"
for ((i = 0; i < SIZE_MB; i += 64)); do
    qemu-io -f raw -c "write -P $(( (i / 64) % 250 + 1 )) ${i}M 64M" "$SRC" >/dev/null
done

python3 - "$ROOT" "$W" "$SRC" <<'PY'
import json, os, subprocess, sys, threading, time
root, w, src = sys.argv[1:4]
size_mb = int(os.environ.get("SIZE_MB", "4096"))
io_mb = int(os.environ.get("IO_MB", "512"))
speed = int(os.environ.get("SPEED_MB", "32")) << 20
runs = int(os.environ.get("RUNS", "1"))
peers = os.environ.get("PEERS", "qemu jblockd jblockd-nobuf").split()
tests = os.environ.get("TESTS", "tput lat mirror").split()
sys.path.insert(0, os.path.join(root, "bench"))
from qmp_client import Qmp, rss_sampler

def start(peer, img):
    sock, nsock = f"{w}/{peer}.sock", f"{w}/{peer}-nbd.sock"
    for f in (sock, nsock):
        if os.path.exists(f): os.unlink(f)
    if peer.startswith("jblockd"):
        p = subprocess.Popen([f"{root}/bin/jblockd", "--qmp", f"unix:{sock}", "--drive",
                              f"id=drive0,file={img},format=raw", "--nbd-server",
                              f"addr.type=unix,addr.path={nsock}", "--export",
                              "type=nbd,id=e0,node-name=drive0,name=drive0,writable=on"],
                             stdout=subprocess.DEVNULL, stderr=open(f"{w}/jblockd.log", "a"))
        q = Qmp(sock)
    else:
        p = subprocess.Popen(["qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                              "-qmp", f"unix:{sock},server=on,wait=off", "-drive",
                              f"if=none,id=drive0,file={img},format=raw"],
                             stdout=subprocess.DEVNULL, stderr=open(f"{w}/qemu.log", "a"))
        q = Qmp(sock)
        q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": nsock}})
        q.cmd("nbd-server-add", device="drive0", writable=True)
    return p, q, nsock

def fio(nsock, bs, depth):
    # the dirty pages of what ran before are written back first, so no run pays for another's
    os.sync()
    out = subprocess.run(["fio", "--name=g", "--ioengine=nbd", f"--uri=nbd+unix:///drive0?socket={nsock}",
                          "--rw=randwrite", f"--bs={bs}", f"--iodepth={depth}",
                          f"--io_size={io_mb if bs == '64k' else io_mb // 8}M", f"--size={size_mb}M",
                          "--randrepeat=0",
                          "--output-format=json"], check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]["write"]
    return job["bw"] / 1024.0, job["clat_ns"]["percentile"]["99.000000"] / 1000.0  # MiB/s, p99 us

def job_args(peer, kind, tgt, spd):
    a = dict(device="drive0", target=tgt, format="raw", sync="full", speed=spd, job_id="bench")
    if kind == "backup" and peer == "jblockd-nobuf":
        a["x-perf"] = {"cbw-buffer-size": 0}
    return a

def during(peer, q, p, nsock, kind, spd, bs, depth):
    tgt = f"{w}/{peer}-tgt.raw"
    cmd = "drive-backup" if kind == "backup" else "drive-mirror"
    args = job_args(peer, kind, tgt, spd)
    args["job-id"] = args.pop("job_id")
    os.sync()
    q.cmd(cmd, **args)
    peak, stop = [], threading.Event()
    th = threading.Thread(target=rss_sampler, args=(p.pid, peak, stop)); th.start()
    try:
        r = fio(nsock, bs, depth)
        info = q.cmd("query-block-jobs")
        buf = info[0].get("x-cbw-buffer") if info else None
    finally:
        stop.set(); th.join()
    if info:
        q.cmd("block-job-cancel", device="bench", force=True)
        q.wait_event("BLOCK_JOB_CANCELLED")
    else:
        # the job ended before fio did: part of the run had no job, say so in the figures
        q.wait_event("BLOCK_JOB_COMPLETED")
        print(f"  note: {peer} {kind} speed={spd} ended before the guest run", flush=True)
    os.unlink(tgt)
    return r, peak[0] if peak else 0, buf

results = {}
for run in range(runs):
    for peer in peers:
        img = f"{w}/{peer}-src.raw"
        subprocess.run(["cp", "--reflink=auto", src, img], check=True)
        p, q, nsock = start(peer, img)
        try:
            def keep(k, v): results.setdefault((peer, k), []).append(v)
            # warm-up, not measured: a JVM's first writes run before its JIT compiled them
            fio(nsock, "64k", 8)
            if "tput" in tests or "mirror" in tests:
                alone = fio(nsock, "64k", 8)[0]
                keep("alone", alone)
            if "tput" in tests:
                (bw, _), rss, buf = during(peer, q, p, nsock, "backup", speed, "64k", 8)
                keep("backup", bw); keep("rss-backup", rss)
                if buf: keep("buf", buf)
                (bw0, _), rss0, _ = during(peer, q, p, nsock, "backup", 0, "64k", 8)
                keep("backup0", bw0); keep("rss-backup0", rss0)
            if "lat" in tests:
                keep("lat-alone", fio(nsock, "4k", 1)[1])
                (_, p99), _, _ = during(peer, q, p, nsock, "backup", speed, "4k", 1)
                keep("lat-backup", p99)
            if "mirror" in tests:
                (bwm, _), _, _ = during(peer, q, p, nsock, "mirror", speed, "64k", 8)
                keep("mirror", bwm)
            q.cmd("quit")
        finally:
            try: p.wait(timeout=30)
            except subprocess.TimeoutExpired: p.kill()
            os.unlink(img)

def med(peer, k):
    v = sorted(results.get((peer, k), []))
    return v[len(v) // 2] if v else None

print(f"\n== cbw-guest-write: {size_mb} MiB raw source over NBD, backup/mirror at {speed >> 20} MiB/s, "
      f"fio {io_mb} MiB (4k: {io_mb // 8} MiB) per run, median of {runs}")
for peer in peers:
    a = med(peer, "alone")
    line = f"  {peer:14s}"
    if "tput" in tests:
        b, b0 = med(peer, "backup"), med(peer, "backup0")
        line += (f" 64k iodepth 8: alone {a:7.1f} MiB/s, backup {b:7.1f} ({b / a:.2f}),"
                 f" backup speed=0 {b0:7.1f} ({b0 / a:.2f})")
        if peer.startswith("jblockd"):
            line += f"; RSS peak {med(peer, 'rss-backup') // 1024} / {med(peer, 'rss-backup0') // 1024} MiB"
        if results.get((peer, "buf")):
            bb = results[(peer, "buf")][-1]
            line += f"; buffer saves {bb['saves']}, sync fallbacks {bb['fallbacks']}"
    if "lat" in tests:
        la, lb = med(peer, "lat-alone"), med(peer, "lat-backup")
        line += f"\n  {'':14s} 4k iodepth 1 p99: alone {la:8.0f} us, backup {lb:8.0f} us ({lb / la:.2f}x)"
    if "mirror" in tests:
        m = med(peer, "mirror")
        line += f"\n  {'':14s} mirror (background): {m:7.1f} MiB/s ({m / a:.2f} of alone)"
    print(line)
PY
