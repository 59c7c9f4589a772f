#!/usr/bin/env python3
"""Streams through two sidecars with mTLS, next to a direct connection and to HAProxy and
nginx as plain TCP relays. Started by bench/streams.sh; see bench/README.md.

Paths (each relay path has two hops, one per "host"):

  direct        client -> server
  trellis-mtls  client -> sidecar A -> (mTLS) -> sidecar B -> server, sidecars started by
                `trellis proxy --service ... --control ...` under `trellis control`, with a
                strict MeshConfig; redis is an opaque TCP Service (appProtocol tcp), the
                echo server a gRPC Service (appProtocol grpc)
  haproxy       client -> HAProxy -> HAProxy -> server (mode tcp)
  nginx         client -> nginx -> nginx -> server (stream module)

Workloads:

  redis  redis-benchmark -c 16 -n N -t set,get against redis-server
  grpc   one gRPC bidi stream of small messages echoed back (bench/grpc_stream.py)

The client side (load generator, sidecar A, the first relay) runs on CPU 0, the server
side (servers, sidecar B, the second relay, the control plane) on CPU 1: two hosts of one
core each.
"""

import csv
import datetime
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

from procs import (  # noqa: E402
    CLK_TCK, HOST, NCPU, RUNNING, SERVER_CPU, STARTUP_TIMEOUT, OtherCpu, cmd_version,
    env_int, http_get, log, port_free, proc_cpu_ticks, run_main, run_pinned, save_report,
    start, start_control_plane, stop_all, trellis_version, wait_port, wait_ready, write,
)
from templates import (  # noqa: E402
    HAPROXY_TCP,
    HAPROXY_TCP_RELAY,
    NGINX_STREAM,
    NGINX_STREAM_RELAY,
    STREAMS_MESH,
)

# Ports of their own, so this benchmark can run while bench/run.sh does.
PORTS = {
    "redis": 18200,
    "echo": 18201,
    "a_redis": 18210,
    "a_echo": 18211,
    "a_inbound": 18212,
    "b_redis": 18213,
    "b_echo": 18214,
    "haproxy1_redis": 18220,
    "haproxy1_echo": 18221,
    "haproxy2_redis": 18222,
    "haproxy2_echo": 18223,
    "nginx1_redis": 18230,
    "nginx1_echo": 18231,
    "nginx2_redis": 18232,
    "nginx2_echo": 18233,
    "admin_a": 17201,
    "admin_b_redis": 17202,
    "admin_b_echo": 17203,
    "control_grpc": 17200,
    "control_http": 17280,
}

SCENARIOS = ["direct", "trellis-mtls", "haproxy", "nginx"]
HOPS = {"direct": 0, "trellis-mtls": 2, "haproxy": 2, "nginx": 2}
DESCRIPTION = {
    "direct": "client → server",
    "trellis-mtls": "client → sidecar A → (mTLS) → sidecar B → server, under `trellis control`, strict mTLS",
    "haproxy": "client → HAProxy → HAProxy → server (`mode tcp`, 1 thread each)",
    "nginx": "client → nginx → nginx → server (stream module, 1 worker each)",
}
# Where each scenario's client connects, per workload.
ENTRY = {
    "redis": {"direct": "redis", "trellis-mtls": "a_redis", "haproxy": "haproxy1_redis", "nginx": "nginx1_redis"},
    "grpc": {"direct": "echo", "trellis-mtls": "a_echo", "haproxy": "haproxy1_echo", "nginx": "nginx1_echo"},
}
# The relay processes of each scenario (names as started), whose CPU time is counted.
RELAYS = {
    "direct": [],
    "trellis-mtls": ["trellis-a", "trellis-b-redis", "trellis-b-echo"],
    "haproxy": ["haproxy1", "haproxy2"],
    "nginx": ["nginx1", "nginx2"],
}
GOAL_RATIO = 0.5


ROUNDS = env_int("STREAMS_ROUNDS", 3)
REDIS_REQUESTS = env_int("STREAMS_REDIS_REQUESTS", 40_000)
REDIS_CLIENTS = 16
GRPC_MESSAGES = env_int("STREAMS_GRPC_MESSAGES", 8_000)
GRPC_SIZE = env_int("STREAMS_GRPC_SIZE", 32)
TRELLIS_BIN = os.environ.get("TRELLIS_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release", "trellis")
OUT = os.environ.get("STREAMS_OUT") or os.path.join(HERE, "RESULTS-streams.md")
CLIENT_CPU = os.environ.get("BENCH_CLIENT_CPU", "0")
BENCH_CPUS = sorted({int(c) for cpus in (CLIENT_CPU, SERVER_CPU) for c in cpus.split(",")})
GRPC_HELPER = os.path.join(HERE, "grpc_stream.py")
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def die(msg):
    print(f"streams: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def on_client_cpu(argv):
    """argv run on the client CPU; started through procs.start, which pins to the server
    CPU first and then lets taskset move it."""
    return ["taskset", "-c", CLIENT_CPU] + argv


# --------------------------------------------------------------------------
# starting the paths


def start_servers(workdir):
    redis = start("redis-server", ["redis-server", "--bind", HOST, "--port", str(PORTS["redis"]),
                                   "--save", "", "--appendonly", "no", "--protected-mode", "no",
                                   "--dir", workdir], workdir)
    echo = start("echo", [sys.executable, GRPC_HELPER, "server", str(PORTS["echo"])], workdir)
    wait_port(redis, PORTS["redis"])
    wait_port(echo, PORTS["echo"])


def start_mesh(workdir):
    """A control plane with a strict MeshConfig and the two Services, then the server
    sidecars (B, one per service) and the client's sidecar A with both as upstreams, as a
    user would start them (docs/control-plane.md, "Run services with sidecars")."""
    control, token = start_control_plane(TRELLIS_BIN, workdir, PORTS["control_http"], PORTS["control_grpc"],
                                         STREAMS_MESH.format(redis=PORTS["redis"], echo=PORTS["echo"]))
    common = ["--control", control, "--token", token]
    for service in ("redis", "echo"):
        b = start(f"trellis-b-{service}", [
            TRELLIS_BIN, "proxy", "--service", service, "--app", f"{HOST}:{PORTS[service]}",
            "--inbound-port", str(PORTS[f"b_{service}"]), "--admin", f"{HOST}:{PORTS[f'admin_b_{service}']}",
        ] + common, workdir)
        wait_ready(b, PORTS[f"admin_b_{service}"])
    # A's own application is never called; --app names the redis server only because
    # a sidecar needs one.
    a = start("trellis-a", on_client_cpu([
        TRELLIS_BIN, "proxy", "--service", "bench-client", "--app", f"{HOST}:{PORTS['redis']}",
        "--inbound-port", str(PORTS["a_inbound"]), "--admin", f"{HOST}:{PORTS['admin_a']}",
        "--upstream", f"redis:{PORTS['a_redis']}", "--upstream", f"echo:{PORTS['a_echo']}",
    ] + common), workdir)
    wait_ready(a, PORTS["admin_a"])
    wait_port(a, PORTS["a_redis"])
    wait_port(a, PORTS["a_echo"])


def start_haproxy(workdir):
    for hop, cpu_wrap in (("2", list), ("1", on_client_cpu)):
        nxt = ({"redis": PORTS["redis"], "echo": PORTS["echo"]} if hop == "2"
               else {"redis": PORTS["haproxy2_redis"], "echo": PORTS["haproxy2_echo"]})
        body = "".join(HAPROXY_TCP_RELAY.format(name=s, host=HOST, port=PORTS[f"haproxy{hop}_{s}"], next=nxt[s])
                       for s in ("redis", "echo"))
        cfg = write(os.path.join(workdir, f"haproxy{hop}.cfg"), HAPROXY_TCP.format(body=body))
        p = start(f"haproxy{hop}", cpu_wrap(["haproxy", "-db", "-f", cfg]), workdir)
        for s in ("redis", "echo"):
            wait_port(p, PORTS[f"haproxy{hop}_{s}"])


def start_nginx(workdir):
    load = f"load_module {NGINX_STREAM_MODULE};\n" if os.path.exists(NGINX_STREAM_MODULE) else ""
    for hop, cpu_wrap in (("2", list), ("1", on_client_cpu)):
        name = f"nginx{hop}"
        nxt = ({"redis": PORTS["redis"], "echo": PORTS["echo"]} if hop == "2"
               else {"redis": PORTS["nginx2_redis"], "echo": PORTS["nginx2_echo"]})
        body = "".join(NGINX_STREAM_RELAY.format(host=HOST, port=PORTS[f"nginx{hop}_{s}"], next=nxt[s])
                       for s in ("redis", "echo"))
        conf = write(os.path.join(workdir, f"{name}.conf"),
                     NGINX_STREAM.format(load_module=load, dir=workdir, name=name, body=body))
        p = start(name, cpu_wrap(["nginx", "-p", workdir, "-e", os.path.join(workdir, f"{name}.err"),
                                  "-c", conf]), workdir)
        for s in ("redis", "echo"):
            wait_port(p, PORTS[f"nginx{hop}_{s}"])


def redis_command(port, *args):
    """One command on a new connection; returns the reply line."""
    cmd = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection((HOST, port), timeout=2) as s:
        s.sendall(cmd.encode())
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.decode("utf-8", "replace")


def check_paths():
    """Every path carries a redis SET and GET and a short gRPC stream; through the mesh,
    A → B is mTLS. Retries while the mesh's configuration arrives."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    for sc in SCENARIOS:
        port = PORTS[ENTRY["redis"][sc]]
        value = f"through-{sc}"
        while True:
            try:
                set_reply = redis_command(port, "SET", "streams:probe", value)
                got = redis_command(port, "GET", "streams:probe")
                if set_reply == "+OK\r\n" and got == f"${len(value)}\r\n{value}\r\n":
                    break
                last = f"SET answered {set_reply!r}, GET {got!r}"
            except OSError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis through {sc}: {last}\n{logs_of(sc)}")
            time.sleep(0.2)
        grpc_stream(sc, 100)
    metrics = http_get(PORTS["admin_b_redis"], "/metrics")[1].decode()
    if not re.search(r'trellis_tls_handshakes_total\{[^}]*result="ok"[^}]*\} [1-9]', metrics):
        raise RuntimeError("sidecar B (redis) counts no successful mTLS handshake")


def logs_of(sc):
    return "\n".join(f"  {p.name}:\n{p.log_tail()}" for p in RUNNING if p.name in RELAYS[sc])


# --------------------------------------------------------------------------
# load (on the client CPU)


def client(argv, timeout):
    return run_pinned(CLIENT_CPU, argv, timeout)


def redis_benchmark(sc, requests):
    """SET and GET rates (req/s) and p50 latencies (ms) from redis-benchmark's CSV."""
    out = client(["redis-benchmark", "-h", HOST, "-p", str(PORTS[ENTRY["redis"][sc]]), "-c", str(REDIS_CLIENTS),
                  "-n", str(requests), "-t", "set,get", "--csv"], timeout=300)
    rows = {row["test"]: row for row in csv.DictReader(io.StringIO(out))}
    if "SET" not in rows or "GET" not in rows:
        raise RuntimeError(f"cannot parse redis-benchmark output:\n{out}")
    res = {}
    for test in ("SET", "GET"):
        res[f"{test.lower()}_rps"] = float(rows[test]["rps"])
        res[f"{test.lower()}_p50"] = float(rows[test]["p50_latency_ms"])
    return res


def grpc_stream(sc, messages):
    out = client([sys.executable, GRPC_HELPER, "client", str(PORTS[ENTRY["grpc"][sc]]),
                  str(messages), str(GRPC_SIZE)], timeout=300)
    return json.loads(out)


class SyscallCount:
    """System calls and context switches of `pids` (all their threads) from start() to
    stop(), counted by `perf stat` on the kernel's tracepoints; None without perf or
    where the kernel does not let it count."""

    def __init__(self, pids, workdir):
        self.path = os.path.join(workdir, "perf-stat.csv")
        self.proc = None
        if pids and shutil.which("perf"):
            self.proc = subprocess.Popen(
                ["perf", "stat", "-x,", "-o", self.path, "-e", "raw_syscalls:sys_enter,context-switches",
                 "-p", ",".join(map(str, pids))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)  # attached before the load starts

    def stop(self):
        """(system calls, context switches), or None."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        counts = {}
        try:
            with open(self.path) as f:
                for row in csv.reader(f):
                    if len(row) > 2 and row[0].isdigit():
                        counts[row[2]] = int(row[0])
        except OSError:
            return None
        if "raw_syscalls:sys_enter" not in counts or "context-switches" not in counts:
            return None
        return counts["raw_syscalls:sys_enter"], counts["context-switches"]


def measure(workload, sc, workdir):
    relay_pids = [pid for p in RUNNING if p.name in RELAYS[sc] for pid in p.tree()]
    server_pids = [pid for p in RUNNING for pid in p.tree()]
    res = {}
    try:
        syscalls = SyscallCount(relay_pids, workdir)
        gauge = OtherCpu(BENCH_CPUS, server_pids)
        before = sum(proc_cpu_ticks(pid) for pid in relay_pids)
        if workload == "redis":
            res.update(redis_benchmark(sc, REDIS_REQUESTS))
            ops = 2 * REDIS_REQUESTS
        else:
            out = grpc_stream(sc, GRPC_MESSAGES)
            res["msg_per_s"] = out["messages_per_s"]
            ops = GRPC_MESSAGES
        after = sum(proc_cpu_ticks(pid) for pid in relay_pids)
        res["other_cpu_pct"] = gauge.read()
        counted = syscalls.stop()
        if relay_pids:
            res["relay_us_per_op"] = (after - before) / CLK_TCK * 1e6 / ops
        if counted:
            res["syscalls_per_op"] = counted[0] / ops
            res["switches_per_op"] = counted[1] / ops
        for p in RUNNING:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited during the run:\n{p.log_tail()}")
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError, ValueError, KeyError) as e:
        res["failed"] = str(e)
        log(f"  FAILED: {e}")
    return res


# --------------------------------------------------------------------------
# report


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None and "failed" not in r]
    return statistics.median(vals) if vals else None


def fmt(v, nd=0):
    return "—" if v is None else f"{v:,.{nd}f}"


def ratio(v, d):
    return None if v is None or not d else v / d


def verdict(v):
    return "—" if v is None else ("**PASS**" if v >= GOAL_RATIO else "**FAIL**")


def environment(load_start, load_end):
    grpc_version = cmd_version([sys.executable, "-c", "import grpc; print(grpc.__version__)"])
    return [
        ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("nproc", str(NCPU)),
        ("CPU", cmd_version(["lscpu"], r"(?<=Model name:).*")),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("load average (1, 5, 15 min)", f"{load_start} at start; {load_end} at end"),
        ("trellis", trellis_version(TRELLIS_BIN, REPO)),
        ("rustc", cmd_version(["rustc", "--version"])),
        ("redis", cmd_version(["redis-server", "--version"], r"v=\S+")),
        ("HAProxy", cmd_version(["haproxy", "-v"], r"HAProxy version \S+")),
        ("nginx", cmd_version(["nginx", "-v"], r"nginx/\S+")),
        ("Python, grpcio", f"{platform.python_version()}, {grpc_version}"),
    ]


def tables(results):
    d = {w: {k: med(results[w]["direct"], k) for k in ("set_rps", "get_rps", "msg_per_s")} for w in results}
    lines = [f"### redis-benchmark -c {REDIS_CLIENTS} -n {REDIS_REQUESTS:,} -t set,get", "",
             "| path | hops | SET req/s | × direct | GET req/s | × direct | SET p50 ms | GET p50 ms "
             "| relay CPU µs/req | relay syscalls/req |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for sc in SCENARIOS:
        rows = results["redis"][sc]
        s = {k: med(rows, k) for k in ("set_rps", "get_rps", "set_p50", "get_p50", "relay_us_per_op",
                                       "syscalls_per_op")}
        lines.append(f"| {name(sc, rows)} | {HOPS[sc]} | {fmt(s['set_rps'])} | {fmt(ratio(s['set_rps'], d['redis']['set_rps']), 2)} "
                     f"| {fmt(s['get_rps'])} | {fmt(ratio(s['get_rps'], d['redis']['get_rps']), 2)} "
                     f"| {fmt(s['set_p50'], 3)} | {fmt(s['get_p50'], 3)} | {fmt(s['relay_us_per_op'], 1)} "
                     f"| {fmt(s['syscalls_per_op'], 1)} |")
    lines += ["", f"### gRPC bidi stream, {GRPC_MESSAGES:,} messages of {GRPC_SIZE} bytes echoed", "",
              "| path | hops | messages/s | × direct | relay CPU µs/message | relay syscalls/message |",
              "|---|--:|--:|--:|--:|--:|"]
    for sc in SCENARIOS:
        rows = results["grpc"][sc]
        s = {k: med(rows, k) for k in ("msg_per_s", "relay_us_per_op", "syscalls_per_op")}
        lines.append(f"| {name(sc, rows)} | {HOPS[sc]} | {fmt(s['msg_per_s'])} "
                     f"| {fmt(ratio(s['msg_per_s'], d['grpc']['msg_per_s']), 2)} | {fmt(s['relay_us_per_op'], 1)} "
                     f"| {fmt(s['syscalls_per_op'], 1)} |")
    mesh = {w: {k: med(results[w]["trellis-mtls"], k) for k in ("set_rps", "get_rps", "msg_per_s")} for w in results}
    goals = [("redis SET through two sidecars with mTLS", ratio(mesh["redis"]["set_rps"], d["redis"]["set_rps"])),
             ("redis GET through two sidecars with mTLS", ratio(mesh["redis"]["get_rps"], d["redis"]["get_rps"])),
             ("gRPC bidi stream messages/s through two sidecars with mTLS",
              ratio(mesh["grpc"]["msg_per_s"], d["grpc"]["msg_per_s"]))]
    lines += ["", "### Goals", "", "| goal | measured | target | result |", "|---|--:|--:|---|"]
    lines += [f"| {g} | {fmt(v, 2)}× direct | ≥ {GOAL_RATIO}× | {verdict(v)} |" for g, v in goals]
    failures = [(w, sc, r["failed"]) for w in results for sc in SCENARIOS for r in results[w][sc] if "failed" in r]
    if failures:
        lines += ["", "### Failures", ""]
        lines += [f"- {w} {sc}: {f.strip().splitlines()[0] if f.strip() else '?'}" for w, sc, f in failures]
    return lines


def name(sc, rows):
    ok = sum(1 for r in rows if "failed" not in r)
    return sc if ok == len(rows) else ("failed" if ok == 0 else f"{sc} ({ok}/{len(rows)} rounds)")


def per_round(results):
    lines = ["<details><summary>Per-round values</summary>", "",
             "| round | workload | path | SET req/s | GET req/s | messages/s | relay CPU µs/op "
             "| relay syscalls/op | relay context switches/op | other CPU % |",
             "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for w in results:
        for sc in SCENARIOS:
            for i, r in enumerate(results[w][sc]):
                if "failed" in r:
                    lines.append(f"| {i + 1} | {w} | {sc} | failed | | | | | | |")
                    continue
                lines.append(f"| {i + 1} | {w} | {sc} | {fmt(r.get('set_rps'))} | {fmt(r.get('get_rps'))} "
                             f"| {fmt(r.get('msg_per_s'))} | {fmt(r.get('relay_us_per_op'), 1)} "
                             f"| {fmt(r.get('syscalls_per_op'), 2)} | {fmt(r.get('switches_per_op'), 2)} "
                             f"| {fmt(r.get('other_cpu_pct'), 1)} |")
    return lines + ["", "</details>", ""]


def method():
    return f"""\
- One machine, 127.0.0.1. Two "hosts" of one core each: the client side (load
  generator, sidecar A, the first HAProxy and nginx) on CPU {CLIENT_CPU}, the server side
  (redis-server, the gRPC echo server, sidecars B, the second HAProxy and nginx, the
  idle control plane) on CPU {SERVER_CPU}, pinned with `taskset`.
- Mesh: `trellis control` with a strict `MeshConfig`, a Service `redis`
  (`appProtocol: tcp`, opaque TCP) and a Service `echo` (`appProtocol: grpc`);
  each server has a sidecar (`trellis proxy --service NAME --app ADDR`), the client
  one sidecar with `--upstream redis:PORT --upstream echo:PORT`. A → B is TLS 1.3
  with certificates from the control plane's CA. Before measuring, every path
  carries a redis SET and GET and a 100-message stream, and sidecar B has counted a
  successful mTLS handshake.
- HAProxy (`mode tcp`, `nbthread 1`) and nginx (`stream`, 1 worker) relay plain TCP,
  two instances each, so every relay path has two hops.
- All processes start once; each round measures every path, redis then gRPC, the
  order of the paths reversed in even rounds. {ROUNDS} rounds; every number is the
  median over rounds.
- redis: `redis-benchmark -c {REDIS_CLIENTS} -n {REDIS_REQUESTS} -t set,get --csv` (new
  connections per test, one request in flight per connection).
- gRPC: `bench/grpc_stream.py` (grpcio, generic handlers, no generated code): one
  bidi stream, {GRPC_MESSAGES:,} messages of {GRPC_SIZE} bytes sent as fast as flow control
  allows while the echoes are read and checked; messages/s = messages ÷ time from the
  stream's start to the last echo.
- relay CPU µs/op: utime + stime of the path's relay processes (for the mesh: A and
  both B sidecars) over the run, ÷ requests (redis: SET + GET) or messages. It grows
  when the machine is busy (cache and scheduler pressure).
- relay syscalls/op and context switches/op: `perf stat -e
  raw_syscalls:sys_enter,context-switches -p RELAY_PIDS` over the run, ÷ requests or
  messages (both hops together): what the relays ask of the kernel per request, which
  does not depend on how busy the machine is. `—` where perf is not installed
  (Debian's `linux-perf`). A hop that relays a request and its answer needs a read
  and a write each way, four calls, plus its share of `epoll_wait`: about 8–9 per
  request for two hops is the floor of any relay that copies through user space.
- other CPU %: busy time of CPUs {','.join(map(str, BENCH_CPUS))} not spent by the benchmark's own
  processes (other work on a shared machine); high values make the run noisy.
- With one request in flight per connection, every request waits for each relay to
  be woken and scheduled, twice, on a core it shares with the client or the server;
  on a busy machine that, more than the relays' CPU time, is what the rate loses.
  The HAProxy and nginx rows show that floor on the machine at hand.
"""


def report(results, started, elapsed, load_start, load_end):
    others = [r["other_cpu_pct"] for w in results for sc in SCENARIOS for r in results[w][sc]
              if r.get("other_cpu_pct") is not None]
    lines = ["# Streams through two sidecars with mTLS", ""]
    if others and max(others) > 5:
        lines += [f"> **Noisy machine:** other work used up to {max(others):.0f} % of the benchmark CPUs "
                  f"(median {statistics.median(others):.0f} %). Compare within this report only.", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in environment(load_start, load_end)]
    lines += [f"| run | {ROUNDS} rounds, {elapsed / 60:.1f} min, started {started} |", ""]
    lines += ["## Results", ""] + tables(results) + [""]
    lines += ["## Paths", ""] + [f"- **{sc}**: {DESCRIPTION[sc]}" for sc in SCENARIOS]
    lines += ["", "## Method", "", method()] + per_round(results)
    return "\n".join(lines)


# --------------------------------------------------------------------------


def preflight():
    missing = [(tool, pkg) for tool, pkg in (("taskset", "util-linux"), ("redis-server", "redis-server"),
                                             ("redis-benchmark", "redis-tools"), ("haproxy", "haproxy"),
                                             ("nginx", "nginx")) if not shutil.which(tool)]
    if missing:
        die("not found: " + ", ".join(t for t, _ in missing) + "; install the Debian packages "
            + " ".join(p for _, p in missing) + " (scripts/setup.sh does)")
    if subprocess.run([sys.executable, "-c", "import grpc"], capture_output=True).returncode != 0:
        die("Python's grpcio is missing: python3 -m pip install grpcio (scripts/setup.sh does)")
    if not os.path.exists(NGINX_STREAM_MODULE) and "--with-stream " not in cmd_version(["nginx", "-V"]) + " ":
        die("nginx has no stream module: install the Debian package libnginx-mod-stream")
    if not os.access(TRELLIS_BIN, os.X_OK):
        die(f"trellis binary not found at {TRELLIS_BIN}; build it with `cargo build --release -p trellis-cli`")
    taken = [p for p in sorted(PORTS.values()) if not port_free(p)]
    if taken:
        die("port(s) already in use on 127.0.0.1: " + ", ".join(map(str, taken))
            + " — the benchmark needs 18200-18299 and 17200-17299 free")


def loadavg():
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    preflight()
    started = datetime.datetime.now().strftime("%H:%M:%S")
    load_start = loadavg()
    t0 = time.monotonic()
    workdir = os.environ.get("BENCH_TMPDIR") or tempfile.mkdtemp(prefix="trellis-streams-")
    results = {w: {sc: [] for sc in SCENARIOS} for w in ("redis", "grpc")}
    try:
        log(f"starting servers, mesh and relays; configs and logs in {workdir}")
        start_servers(workdir)
        start_mesh(workdir)
        start_haproxy(workdir)
        start_nginx(workdir)
        check_paths()
        for rnd in range(ROUNDS):
            order = SCENARIOS if rnd % 2 == 0 else list(reversed(SCENARIOS))
            for workload in ("redis", "grpc"):
                for sc in order:
                    r = measure(workload, sc, workdir)
                    results[workload][sc].append(r)
                    if "failed" not in r:
                        shown = (f"SET {fmt(r['set_rps'])} GET {fmt(r['get_rps'])} req/s" if workload == "redis"
                                 else f"{fmt(r['msg_per_s'])} messages/s")
                        log(f"round {rnd + 1}/{ROUNDS} {workload} {sc}: {shown}, relay CPU "
                            f"{fmt(r.get('relay_us_per_op'), 1)} µs/op, other CPU {fmt(r['other_cpu_pct'], 1)} %")
    finally:
        stop_all()
    elapsed = time.monotonic() - t0
    text = report(results, started, elapsed, load_start, loadavg())
    save_report(OUT, text, results, workdir, elapsed)
    return 1 if any("failed" in r for w in results.values() for rows in w.values() for r in rows) else 0


if __name__ == "__main__":
    run_main(main)
