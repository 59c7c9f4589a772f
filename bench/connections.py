"""Memory per idle HTTP/1.1 client connection: Trellis, HAProxy and nginx as one-hop
proxies in front of the same nginx origin, each flooded with CONNS client connections
that send one request each and then stay open, idle.

Every round of every proxy reads the proxy's resident memory (VmRSS, summed over its
process tree) before the flood, once all CONNS connections have their answer, and
SETTLE seconds after they all closed. Writes bench/RESULTS-connections.md (or
BENCH_OUT). Started by bench/connections.sh, which installs what is missing and raises
the open-file limit. Stdlib only."""

import asyncio
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import nginx_start, write  # noqa: E402
from procs import HOST, start, stop_all, wait_port, wait_ready  # noqa: E402
from templates import HAPROXY_CFG, NGINX_COMMON, NGINX_PROXY_BODY, ORIGIN_BODY, TRELLIS_1HOP  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONNS = int(os.environ.get("BENCH_CONNS", "10000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SETTLE = float(os.environ.get("BENCH_SETTLE", "60"))
PROXIES = os.environ.get("BENCH_PROXIES", "trellis,haproxy,nginx").split(",")
TRELLIS_BIN = os.environ.get("TRELLIS_BIN", os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "trellis"))
OUT = os.environ.get("BENCH_OUT", os.path.join(REPO, "bench", "RESULTS-connections.md"))
# Ports of their own, beside run.sh's 18000-18099 and 17100-17199; BENCH_PORT_OFFSET
# moves them, so that several runs (one proxy each) can go at once.
_OFFSET = int(os.environ.get("BENCH_PORT_OFFSET", "0"))
PORTS = {name: 18150 + i + _OFFSET for i, name in enumerate(
    ("origin_h1", "origin_h2", "trellis", "admin", "haproxy", "nginx"))}
# Seconds the connections sit idle before RSS is read.
IDLE = 5
# Connections opened (and requests sent) at once.
PARALLEL = 200


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def nginx(name, body, workdir):
    # Room for the flood: one worker, every connection (client and upstream) counted.
    common = NGINX_COMMON.replace("worker_connections 4096;", f"worker_connections {CONNS + 2048};")
    common = common.replace("daemon off;", f"daemon off;\nworker_rlimit_nofile {CONNS + 4096};")
    return nginx_start(name, body, workdir, common)


def start_proxy(name, workdir):
    """Starts one proxy in front of the origin; returns (its Proc, its client port)."""
    origin = PORTS["origin_h1"]
    if name == "trellis":
        text = TRELLIS_1HOP.format(host=HOST, port=PORTS["trellis"], origin=origin, admin=PORTS["admin"])
        # Memory is measured here, not shedding: the flood's bursts all get through.
        text = text.replace("    loadBalancer: ewma\n",
                            "    loadBalancer: ewma\n    resilience: {adaptiveConcurrency: {enabled: false}}\n")
        cfg = write(os.path.join(workdir, "trellis.yaml"), text)
        p = start("trellis", [TRELLIS_BIN, "proxy", "--config", cfg], workdir, env={"TRELLIS_LOG": "error"})
        wait_ready(p, PORTS["admin"])
    elif name == "haproxy":
        text = HAPROXY_CFG.format(host=HOST, port=PORTS["haproxy"], origin=origin, h2="")
        # HAProxy sizes its descriptor limit from maxconn (two per connection); where the
        # hard limit is lower, it is given the hard limit, which the client side fits.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        text = text.replace("maxconn 4096", f"maxconn {CONNS + 100}\n    ulimit-n {min(hard, 2 * CONNS + 1024)}\n    no strict-limits")
        cfg = write(os.path.join(workdir, "haproxy.cfg"), text)
        p = start("haproxy", ["haproxy", "-db", "-f", cfg], workdir)
    elif name == "nginx":
        p = nginx("nginx-proxy", NGINX_PROXY_BODY.format(host=HOST, port=PORTS["nginx"], origin=origin, h2=""), workdir)
    else:
        raise ValueError(f"unknown proxy {name!r} (expected trellis, haproxy or nginx)")
    wait_port(p, PORTS[name])
    return p, PORTS[name]


async def open_one(port, gate, conns, failures):
    async with gate:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET / HTTP/1.1\r\nhost: origin\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:40])
            await reader.readexactly(3)  # "ok\n"
            conns.append(writer)
        except (OSError, RuntimeError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            failures.append(repr(e))


async def flood(port):
    """Opens CONNS connections with one answered request each; returns them."""
    gate = asyncio.Semaphore(PARALLEL)
    conns, failures = [], []
    await asyncio.gather(*(open_one(port, gate, conns, failures) for _ in range(CONNS)))
    if failures:
        raise RuntimeError(f"{len(failures)} of {CONNS} connections failed, e.g. {failures[:3]}")
    return conns


async def close_all(conns):
    for w in conns:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in conns), return_exceptions=True)


async def measure(name, proc, port):
    rows = []
    pids = proc.tree()
    await asyncio.sleep(1)
    first = rss_kib(pids)
    for r in range(ROUNDS):
        before = rss_kib(pids)
        conns = await flood(port)
        # Idle for a moment: long enough for every proxy to settle what it keeps of an
        # idle connection (Trellis gives an HTTP/1 connection's buffers back after 1 s).
        await asyncio.sleep(IDLE)
        pids = proc.tree()
        at = rss_kib(pids)
        await close_all(conns)
        await asyncio.sleep(SETTLE)
        after = rss_kib(pids)
        # Against the idle proxy before any flood: what 10,000 idle connections cost.
        per_conn = (at - first) / CONNS
        rows.append((name, r + 1, before, at, after, per_conn, after / first))
        print(f"{name} round {r + 1}: before {before} KiB, at {CONNS} {at} KiB, "
              f"{SETTLE:.0f}s after close {after} KiB; {per_conn:.1f} KiB/conn", flush=True)
    return first, rows


def mib(kib):
    return f"{kib / 1024:.1f}"


def machine():
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name:[[:space:]]*//p'"],
                         capture_output=True, text=True).stdout.strip()
    load = open("/proc/loadavg").read().split()[:3]
    mem = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":", 1)
        mem[k] = int(v.split()[0])
    git = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    versions = []
    for cmd in (["haproxy", "-v"], ["nginx", "-v"]):
        out = subprocess.run(cmd, capture_output=True, text=True)
        versions.append((out.stdout + out.stderr).splitlines()[0])
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores ({cpu}), "
            f"{mem['MemTotal'] // 1024} MiB RAM ({mem['MemAvailable'] // 1024} MiB available), "
            f"load average {' '.join(load)} at the start, Linux {platform.release()}, git {git}; "
            f"{'; '.join(versions)}")


def report(state, results):
    lines = [
        "# Memory per idle HTTP/1.1 connection",
        "",
        state,
        "",
        f"Each proxy in front of the same nginx origin on loopback, alone on the machine's "
        f"server CPU; a Python client opens {CONNS} connections ({PARALLEL} at a time), sends "
        f"one `GET /` on each, reads the answer and leaves the connection open. RSS is the "
        f"proxy's `VmRSS` (summed over its processes: nginx's master and worker) before the "
        f"flood, once all {CONNS} are answered and have been idle {IDLE} s, and {SETTLE:.0f} s after the client "
        f"closed them all; {ROUNDS} floods in a row on the same process. Per connection: "
        f"(RSS at {CONNS} - RSS before the first flood) / {CONNS}. After/start: RSS {SETTLE:.0f} s after "
        f"the round's close over RSS before the first flood.",
        "",
        f"| proxy | round | RSS before (MiB) | RSS at {CONNS} (MiB) | RSS {SETTLE:.0f} s after close (MiB) | KiB per connection | after / start |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, first, rows in results:
        for (_, r, before, at, after, per_conn, ratio) in rows:
            lines.append(f"| {name} | {r} | {mib(before)} | {mib(at)} | {mib(after)} | {per_conn:.1f} | {ratio:.2f} |")
    lines.append("")
    text = "\n".join(lines)
    with open(OUT, "w") as f:
        f.write(text)
    print(text)


async def main():
    state = machine()
    workdir = tempfile.mkdtemp(prefix="trellis-conns-")
    results = []
    try:
        body = ORIGIN_BODY.format(host=HOST, h1=PORTS["origin_h1"], h2=PORTS["origin_h2"])
        origin = nginx("origin", body, workdir)
        wait_port(origin, PORTS["origin_h1"])
        for name in PROXIES:
            proc, port = start_proxy(name, workdir)
            first, rows = await measure(name, proc, port)
            results.append((name, first, rows))
            proc.stop()
    finally:
        stop_all()
    report(state, results)


if __name__ == "__main__":
    asyncio.run(main())
