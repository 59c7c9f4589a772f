#!/usr/bin/env python3
"""CPU instructions one request costs a Trellis proxy, counted by valgrind's callgrind:
exact and repeatable whatever else the machine is doing, where throughput on a shared
machine is not.

For each configuration (request metrics off and no tracing; request metrics, the
default; request metrics and tracing at 1 % sampling to a rotel receiver) the proxy
runs under callgrind twice, once carrying N1 requests and once N2 over 16 keep-alive
connections at once; (instructions at N2 - instructions at N1) / (N2 - N1) is the cost of one
request, startup and shutdown cancelling out. Writes a markdown table to stdout.

Environment: TRELLIS_BIN (default target/release/trellis), BENCH_N1 (default 2000),
BENCH_N2 (default 12000), BENCH_CONNECTIONS (default 16).
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import PORTS, nginx_start, start_otlp_receiver, write  # noqa: E402
from procs import HOST, start, stop_all, wait_port, wait_ready  # noqa: E402
from templates import ORIGIN_BODY, TRELLIS_1HOP, TRELLIS_TRACING  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRELLIS_BIN = os.environ.get("TRELLIS_BIN", os.path.join(REPO, "target/release/trellis"))
N1 = int(os.environ.get("BENCH_N1", "2000"))
N2 = int(os.environ.get("BENCH_N2", "12000"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))

CONFIGS = [
    ("request metrics off, no tracing", "requestMetrics: false\n"),
    ("request metrics (default)", ""),
    ("request metrics and tracing at 1 %", None),  # tracing filled in below
]


def send(port, n):
    """n GETs over CONNECTIONS keep-alive connections at once (h2load, HTTP/1.1), as a
    loaded proxy sees them: each wake-up of the proxy then serves several requests, so
    what a wake-up costs is shared as it is at saturation. Every answer must be 200."""
    out = subprocess.run(["h2load", "--h1", "-n", str(n), "-c", str(CONNECTIONS), "-t", "1",
                          f"http://{HOST}:{port}/"], capture_output=True, text=True, timeout=600)
    m = re.search(r"status codes: (\d+) 2xx", out.stdout)
    if out.returncode != 0 or not m or int(m.group(1)) != n:
        raise RuntimeError(f"h2load: not {n} answers 2xx:\n{out.stdout}{out.stderr}")


def instructions(config_text, requests, workdir, tag):
    """Total instructions of one proxy run under callgrind carrying `requests`."""
    cfg = write(os.path.join(workdir, f"{tag}.yaml"), config_text)
    out = os.path.join(workdir, f"{tag}.callgrind")
    p = start(f"proxy-{tag}", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                               TRELLIS_BIN, "proxy", "--config", cfg], workdir)
    wait_ready(p, PORTS["admin_a"], timeout=120)
    wait_port(p, PORTS["trellis_a"], timeout=120)
    send(PORTS["trellis_a"], requests)
    os.killpg(p.pid, signal.SIGTERM)
    p.popen.wait(timeout=300)
    with open(out) as f:
        text = f.read()
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    if not m:
        raise RuntimeError(f"no totals in {out}")
    return int(m.group(1))


def main():
    if not os.access(TRELLIS_BIN, os.X_OK):
        sys.exit(f"no trellis binary at {TRELLIS_BIN}: cargo build --release -p trellis-cli")
    workdir = tempfile.mkdtemp(prefix="trellis-instructions-")
    rows = []
    try:
        origin = nginx_start("origin", ORIGIN_BODY.format(host=HOST, h1=PORTS["origin_h1"], h2=PORTS["origin_h2"]),
                             workdir)
        wait_port(origin, PORTS["origin_h1"])
        start_otlp_receiver(workdir)
        base = TRELLIS_1HOP.format(host=HOST, port=PORTS["trellis_a"], origin=PORTS["origin_h1"],
                                   admin=PORTS["admin_a"])
        tracing = TRELLIS_TRACING.format(host=HOST, port=PORTS["otlp_grpc"])
        for i, (label, extra) in enumerate(CONFIGS):
            text = base + (tracing if extra is None else extra)
            counts = [instructions(text, n, workdir, f"c{i}-n{n}") for n in (N1, N2)]
            per_request = (counts[1] - counts[0]) / (N2 - N1)
            rows.append((label, per_request))
            print(f"{label}: {per_request:,.0f} instructions per request", file=sys.stderr)
    finally:
        stop_all()
    bare = rows[0][1]
    print(f"Instructions per request through one proxy (HTTP/1.1, {CONNECTIONS} keep-alive connections "
          f"at once), callgrind, "
          f"{N2 - N1:,} requests between runs of {N1:,} and {N2:,}; git "
          f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=REPO).stdout.strip()}.")
    print()
    print("| configuration | instructions per request | over metrics off, no tracing |")
    print("|---|--:|--:|")
    for label, n in rows:
        print(f"| {label} | {n:,.0f} | {(n / bare - 1) * 100:+.1f} % |")
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    code = main()
    print(f"\n({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    sys.exit(code)
