"""A minimal blocking QMP client for the bench scripts (the same for QEMU and jblockd)."""
import json
import socket
import subprocess
import time


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
    def cmd(self, _cmd, **args):
        self.f.write((json.dumps({"execute": _cmd, "arguments": args}) + "\n").encode())
        while True:
            m = self._read()
            if "return" in m: return m["return"]
            if "error" in m: raise RuntimeError(f"{_cmd}: {m['error']}")
    def wait_event(self, name, match=None, timeout=3600):
        self.s.settimeout(timeout)
        while True:
            for e in self.events:
                if e["event"] == name and (match is None or match(e)):
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

def stop(p, q):
    """quit over QMP, then wait for the daemon (killed after 60 s)."""
    try: q.cmd("quit")
    except Exception: pass
    try: p.wait(timeout=60)
    except subprocess.TimeoutExpired: p.kill()

def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"

def rss_sampler(pid, out, stop):
    """Appends to `out` the peak VmRSS (KiB) of process `pid`, sampled every 50 ms until `stop` is set."""
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
