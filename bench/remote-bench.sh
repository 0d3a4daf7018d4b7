#!/usr/bin/env bash
# Remote (NBD between hosts) benchmark: jblockd vs QEMU 7.2 in the same run, "hosts" being two
# network namespaces joined by a veth pair (as the integration tests' HostPair). Needs root.
#
#   bench/remote-bench.sh [WORKDIR]      (default: a fresh directory under /var/tmp)
#
# Cases (SIZE_MB of fully allocated raw source, default 2048):
#   1. blockdev-mirror sync=full from host A into an nbd node served by host B: time to
#      BLOCK_JOB_READY. jblockd on A -> jblockd on B, vs qemu-storage-daemon on A -> qemu-nbd on
#      B. Cancelled at READY (remote.md 5 (a)); the copy is checked with qemu-img compare.
#   2. the same with TLS (tls-creds-x509 on both ends, certificates made here with openssl):
#      ours with TLS / ours plain, and ours vs QEMU's TLS figure.
#   3. a backup reading from a remote source: qemu-nbd on B serves the source read-only, the
#      nbd driver on A (jblockd's, then qemu-storage-daemon's) reads it in a blockdev-backup
#      to a local raw image: MiB/s.
# Page caches are dropped before every timed run. Env: SIZE_MB, RUNS (1), CASES ("1 2 3"),
# KINDS ("qemu jblockd"; one alone for profiling, e.g. with JBLOCKD_JAVA_OPTS=-XX:StartFlightRecording=...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
[ "$(id -u)" = 0 ] || { echo "remote-bench.sh: network namespaces need root" >&2; exit 1; }
W=${1:-$(mktemp -d /var/tmp/jblockd-remote-bench.XXXXXX)}
mkdir -p "$W"
SIZE_MB=${SIZE_MB:-2048}
RUNS=${RUNS:-1}
NSA=jbbench$$a
NSB=jbbench$$b
# a /30 that exists only inside the two namespaces
ADDR_A=10.254.$(( $$ % 250 )).1
ADDR_B=10.254.$(( $$ % 250 )).2
cleanup() {
    local rc=$?
    for ns in "$NSA" "$NSB"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -f "$W"/*.raw "$W"/*.sock
    rm -rf "$W"/pki
    # the daemons' logs stay after a failure (or with KEEP=1)
    if [ "$rc" = 0 ] && [ -z "${KEEP:-}" ]; then rm -f "$W"/*.log; rmdir "$W" 2>/dev/null || true; fi
}
trap cleanup EXIT

ip netns add "$NSA"
ip netns add "$NSB"
ip link add veth-a netns "$NSA" type veth peer name veth-b netns "$NSB"
ip -n "$NSA" addr add "$ADDR_A/30" dev veth-a
ip -n "$NSB" addr add "$ADDR_B/30" dev veth-b
for ns in "$NSA" "$NSB"; do
    ip -n "$ns" link set lo up
done
ip -n "$NSA" link set veth-a up
ip -n "$NSB" link set veth-b up

. bin/_jdk.sh >/dev/null 2>&1 || true
bin/jblockd --version >/dev/null   # build outside the timed region

echo "== hosts: $NSA ($ADDR_A) <-> $NSB ($ADDR_B); preparing images in $W"
SRC=$W/src.raw
qemu-img create -q -f raw "$SRC" "${SIZE_MB}M"
for ((i = 0; i < SIZE_MB; i += 64)); do
    qemu-io -f raw -c "write -P $(( (i / 64) % 250 + 1 )) ${i}M 64M" "$SRC" >/dev/null
done

# remote.md 6.1's PKI: the server certificate names B's address
P=$W/pki
mkdir -p "$P/server" "$P/client"
cat > "$P/ext.cnf" <<EOF
[srv]
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$ADDR_B
[cli]
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$P/ca-key.pem" -out "$P/ca-cert.pem" -days 2 \
    -subj "/CN=bench CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for who in server:srv client:cli; do
    d=${who%%:*}; ext=${who##*:}
    openssl req -newkey rsa:2048 -nodes -keyout "$P/$d/$d-key.pem" -out "$P/$d.csr" -subj "/CN=$d" 2>/dev/null
    openssl x509 -req -in "$P/$d.csr" -CA "$P/ca-cert.pem" -CAkey "$P/ca-key.pem" -CAcreateserial \
        -out "$P/$d/$d-cert.pem" -days 2 -extfile "$P/ext.cnf" -extensions "$ext" 2>/dev/null
    cp "$P/ca-cert.pem" "$P/$d/"
done

python3 - "$ROOT" "$W" "$SRC" "$RUNS" "$NSA" "$NSB" "$ADDR_B" "$P" "${CASES:-1 2 3}" "${KINDS:-qemu jblockd}" <<'PY'
import os, subprocess, sys, time

root, w, src, runs, nsa, nsb, addr_b, pki, cases, kinds = sys.argv[1:11]
runs = int(runs)
cases = cases.split()
kinds = kinds.split()
sys.path.insert(0, os.path.join(root, "bench"))
from qmp_client import Qmp, drop, stop, ratio

PORT = 10809
size = os.path.getsize(src)
mib = size / 2**20

def netns(ns, *cmd):
    return ["ip", "netns", "exec", ns, *cmd]

def daemon(kind, ns, name, *args):
    """jblockd or qemu-storage-daemon in namespace ns, QMP on a UNIX socket in w."""
    sock = f"{w}/{name}.sock"
    if os.path.exists(sock): os.unlink(sock)
    log = open(f"{w}/{name}.log", "a")
    if kind == "jblockd":
        cmd = [f"{root}/bin/jblockd", *args, "--qmp", f"unix:{sock}"]
    else:
        cmd = ["qemu-storage-daemon", *args, "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
               "--monitor", "chardev=m,mode=control"]
    p = subprocess.Popen(netns(ns, *cmd), stdout=subprocess.DEVNULL, stderr=log)
    return p, Qmp(sock)

def listening(ns, port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(netns(ns, "cat", "/proc/net/tcp", "/proc/net/tcp6"), capture_output=True, text=True).stdout
        if any(l.split()[1].endswith(":%04X" % port) and l.split()[3] == "0A" for l in out.splitlines()[1:]
               if len(l.split()) > 3):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} in {ns}")

def qemu_nbd(image, tls, readonly=False):
    cmd = ["qemu-nbd", "-f", "raw", "-t", "-e", "4", "-x", "e", "-b", addr_b, "-p", str(PORT)]
    if readonly: cmd.append("-r")
    if tls:
        cmd += ["--object", f"tls-creds-x509,id=tls0,endpoint=server,dir={pki}/server", "--tls-creds", "tls0"]
    p = subprocess.Popen(netns(nsb, *cmd, image), stdout=subprocess.DEVNULL, stderr=open(f"{w}/qemu-nbd.log", "a"))
    listening(nsb, PORT)
    return p

def client_tls(q):
    q.cmd("object-add", **{"qom-type": "tls-creds-x509", "id": "tls0", "dir": f"{pki}/client", "endpoint": "client"})

def nbd_node(q, name, tls, readonly=False):
    args = {"driver": "nbd", "node-name": name, "server": {"type": "inet", "host": addr_b, "port": str(PORT)},
            "export": "e"}
    if tls: args["tls-creds"] = "tls0"
    if readonly: args["read-only"] = True
    q.cmd("blockdev-add", **args)

def raw_node(q, name, image):
    q.cmd("blockdev-add", **{"driver": "raw", "node-name": name, "file": {"driver": "file", "filename": image}})

def fresh(path):
    if os.path.exists(path): os.unlink(path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, str(size)], check=True)

def identical(a, b):
    return "identical" if subprocess.run(["qemu-img", "compare", "-q", "-U", "-f", "raw", "-F", "raw", a, b]).returncode == 0 \
        else "DIFFERENT"

def mirror(kind, tls):
    """kind jblockd: jblockd A -> jblockd B; qemu: qemu-storage-daemon A -> qemu-nbd B."""
    dst = f"{w}/dst-{kind}.raw"
    fresh(dst)
    server = None
    if kind == "jblockd":
        tls_args = ["--object", f"tls-creds-x509,id=tls0,endpoint=server,dir={pki}/server"] if tls else []
        bp, bq = daemon("jblockd", nsb, "b", *tls_args,
                        "--nbd-server", f"addr.type=inet,addr.host={addr_b},addr.port={PORT}"
                        + (",tls-creds=tls0" if tls else ""),
                        "--blockdev", f"driver=raw,node-name=disk,file.driver=file,file.filename={dst}",
                        "--export", "type=nbd,id=e,node-name=disk,name=e,writable=on")
        server = (bp, bq)
    else:
        server = (qemu_nbd(dst, tls), None)
    ap, aq = daemon("jblockd" if kind == "jblockd" else "qsd", nsa, "a")
    try:
        if tls: client_tls(aq)
        raw_node(aq, "src", src)
        nbd_node(aq, "tgt", tls)
        drop(src, dst)
        t0 = time.monotonic()
        aq.cmd("blockdev-mirror", device="src", target="tgt", sync="full", **{"job-id": "m"})
        aq.wait_event("BLOCK_JOB_READY")
        dt = time.monotonic() - t0
        aq.cmd("block-job-cancel", device="m")
        ev = aq.wait_event("BLOCK_JOB_COMPLETED")
        if "error" in ev["data"]: raise RuntimeError(f"{kind}: {ev['data']}")
        aq.cmd("blockdev-del", **{"node-name": "tgt"})
    finally:
        stop(ap, aq)
        if server[1] is not None: stop(*server)
        else: server[0].terminate(); server[0].wait(timeout=60)
    same = identical(src, dst)
    os.unlink(dst)
    return dt, same

def backup(kind):
    """qemu-nbd on B serves src read-only; the nbd driver on A reads it into a local raw image."""
    tgt = f"{w}/backup-{kind}.raw"
    fresh(tgt)
    server = qemu_nbd(src, False, readonly=True)
    ap, aq = daemon("jblockd" if kind == "jblockd" else "qsd", nsa, "a")
    try:
        nbd_node(aq, "remote", False, readonly=True)
        raw_node(aq, "tgt", tgt)
        drop(src, tgt)
        t0 = time.monotonic()
        aq.cmd("blockdev-backup", device="remote", target="tgt", sync="full", **{"job-id": "b"})
        ev = aq.wait_event("BLOCK_JOB_COMPLETED")
        dt = time.monotonic() - t0
        if "error" in ev["data"]: raise RuntimeError(f"{kind}: {ev['data']}")
    finally:
        stop(ap, aq)
        server.terminate(); server.wait(timeout=60)
    same = identical(src, tgt)
    os.unlink(tgt)
    return dt, same

res = {}
def best(k): return min(res[k]) if res.get(k) else None

for tls in (False, True):
    if str(2 if tls else 1) not in cases: continue
    label = "with TLS" if tls else "plain"
    print(f"\n== case {2 if tls else 1}: blockdev-mirror of {size >> 20} MiB across the link ({label}), time to READY")
    for run in range(runs):
        for kind in kinds:
            dt, same = mirror(kind, tls)
            res.setdefault((tls, kind), []).append(dt)
            who = "qemu-storage-daemon -> qemu-nbd" if kind == "qemu" else "jblockd -> jblockd"
            print(f"  {who:32s} run {run}: {dt:7.2f} s  {mib / dt:7.1f} MiB/s  copy {same}")
    print(f"  jblockd vs QEMU ({label}), MiB/s ratio: {ratio(best((tls, 'qemu')), best((tls, 'jblockd')))}")
print(f"  jblockd with TLS / jblockd plain (MiB/s): {ratio(best((False, 'jblockd')), best((True, 'jblockd')))}")
print(f"  QEMU with TLS / QEMU plain (MiB/s):       {ratio(best((False, 'qemu')), best((True, 'qemu')))}")

if "3" not in cases: sys.exit(0)
print(f"\n== case 3: blockdev-backup of a {size >> 20} MiB remote source (qemu-nbd on B) to a local raw image")
for run in range(runs):
    for kind in kinds:
        dt, same = backup(kind)
        res.setdefault(("b", kind), []).append(dt)
        who = "qemu-storage-daemon nbd driver" if kind == "qemu" else "jblockd nbd driver"
        print(f"  {who:32s} run {run}: {dt:7.2f} s  {mib / dt:7.1f} MiB/s  copy {same}")
print(f"  jblockd vs QEMU, MiB/s ratio: {ratio(best(('b', 'qemu')), best(('b', 'jblockd')))}")
PY
