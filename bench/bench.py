#!/usr/bin/env python3
"""Trellis benchmark runner (stdlib only).

Measures, side by side and on this machine, for HTTP/1.1 and HTTP/2 (h2c
prior knowledge):

  direct        load generator -> nginx origin
  trellis-1hop  load generator -> trellis -> origin
  trellis-2hop  load generator -> trellis A -(h2)-> trellis B -(h1)-> origin
  trellis-2hop-mtls  the same two hops as sidecars under `trellis control`, A to B
                over mTLS (MeshConfig strict, certificates from the control plane)
  haproxy       load generator -> HAProxy (mode http) -> origin
  nginx-proxy   load generator -> nginx (proxy_pass, upstream keepalive) -> origin

See bench/README.md for the method and how to read the output.
Normally started through bench/run.sh, which installs the tools and builds
the trellis binary first.
"""

import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MIB = 1024 * 1024

# --------------------------------------------------------------------------
# settings

PORTS = {
    "origin_h1": 18000,
    "origin_h2": 18001,
    "trellis_a": 18010,
    "trellis_b": 18011,
    "haproxy": 18020,
    "nginx_proxy": 18030,
    "admin_a": 17101,
    "admin_b": 17102,
    "mtls_app_a": 18012,
    "control_http": 17180,
    "control_grpc": 17100,
    "otlp_grpc": 17190,
    "otlp_http": 17191,
}

from procs import (  # noqa: E402
    CLK_TCK,
    RUNNING,
    HOST,
    NCPU,
    SERVER_CPU,
    STARTUP_TIMEOUT,
    OtherCpu,
    cmd_version,
    env_int,
    http_get,
    log,
    port_free,
    proc_cpu_ticks,
    run_main,
    run_pinned,
    save_report,
    start,
    start_control_plane,
    stop_all,
    trellis_version,
    wait_port,
    wait_ready,
    write,
)
from tables import (  # noqa: E402
    DESCRIPTION,
    GOALS,
    HOPS,
    LAT_RATE,
    LAT_CONNECTIONS,
    PROTOCOLS,
    PROTO_TITLE,
    SAT_CONNECTIONS,
    SCENARIOS,
    ALL_SCENARIOS,
    fmt,
    fmt_signed,
    goals_table,
    med,
    protocol_table,
    summarize,
    verdict,
)


def env_float(name, default):
    v = os.environ.get(name, "").strip()
    return float(v) if v else default


def env_list(name, default, allowed):
    v = os.environ.get(name, "").strip()
    if not v:
        return list(default)
    items = [x.strip() for x in v.split(",") if x.strip()]
    for x in items:
        if x not in allowed:
            die(f"{name}: unknown value {x!r} (allowed: {', '.join(allowed)})")
    return [x for x in allowed if x in items]


def die(msg):
    print(f"bench: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ROUNDS = env_int("BENCH_ROUNDS", 1 if QUICK else 3)
# whole seconds: wrk and h2load take durations in seconds
DURATION = env_int("BENCH_DURATION", 2 if QUICK else 10)        # saturation run, s
LAT_DURATION = env_int("BENCH_LAT_DURATION", DURATION)          # fixed-rate run, s
WARMUP = env_int("BENCH_WARMUP", 1 if QUICK else 2)              # s, not recorded
SELECTED_SCENARIOS = env_list("BENCH_SCENARIOS", SCENARIOS, ALL_SCENARIOS)
SELECTED_PROTOCOLS = env_list("BENCH_PROTOCOLS", PROTOCOLS, PROTOCOLS)
TRELLIS_BIN = os.environ.get("TRELLIS_BIN") or os.path.join(REPO, "target", "release", "trellis")
OUT = os.environ.get("BENCH_OUT") or os.path.join(HERE, "RESULTS.md")
CLIENT_CPU = os.environ.get("BENCH_CLIENT_CPU", "0")
BENCH_CPUS = sorted({int(c) for c in (CLIENT_CPU, SERVER_CPU)})

if ROUNDS < 1 or DURATION <= 0 or LAT_DURATION <= 0:
    die("BENCH_ROUNDS must be >= 1 and durations > 0")


# --------------------------------------------------------------------------
# processes


def proc_status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------
# readiness and probes


def check_ports():
    taken = [p for p in sorted(PORTS.values()) if not port_free(p)]
    if taken:
        die("port(s) already in use on 127.0.0.1: " + ", ".join(map(str, taken))
            + " — the benchmark needs 18000-18099 and 17100-17199 free; stop whatever listens there")


def probe(port, proto):
    """One request through the path under test, in the protocol under test."""
    if proto == "h1":
        last = None
        for _ in range(40):
            try:
                status, body = http_get(port)
                if status == 200 and body == b"ok\n":
                    return
                last = f"status {status}, body {body[:60]!r}"
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        raise RuntimeError(f"HTTP/1.1 probe on {port} failed: {last}")
    last = None
    for _ in range(40):
        r = subprocess.run(["h2load", "-n", "2", "-c", "1", f"http://{HOST}:{port}/"],
                           capture_output=True, text=True, timeout=10)
        m = re.search(r"status codes: (\d+) 2xx", r.stdout)
        if m and int(m.group(1)) == 2:
            return
        last = (r.stdout + r.stderr).strip().splitlines()[-3:]
        time.sleep(0.05)
    raise RuntimeError(f"HTTP/2 probe on {port} failed: {last}")


# --------------------------------------------------------------------------
# configs

from templates import (  # noqa: E402
    HAPROXY_CFG,
    NGINX_COMMON,
    NGINX_PROXY_BODY,
    ORIGIN_BODY,
    TRELLIS_1HOP,
    TRELLIS_TRACING,
    TRELLIS_OUTBOUND,
)


def nginx_start(name, body, workdir, common=NGINX_COMMON):
    os.makedirs(os.path.join(workdir, f"{name}-tmp"), exist_ok=True)
    conf = write(os.path.join(workdir, f"{name}.conf"),
                 common.format(dir=workdir, name=name, body=body))
    return start(name, ["nginx", "-p", workdir, "-e", os.path.join(workdir, f"{name}.err"), "-c", conf], workdir)


def start_origin(workdir):
    p = nginx_start("origin", ORIGIN_BODY.format(host=HOST, h1=PORTS["origin_h1"], h2=PORTS["origin_h2"]), workdir)
    wait_port(p, PORTS["origin_h1"])
    wait_port(p, PORTS["origin_h2"])
    return p


def start_scenario(scenario, proto, workdir):
    """Starts the proxies of a scenario; returns (client port, [proxy Proc])."""
    h2 = proto == "h2"
    if scenario == "direct":
        return PORTS["origin_h2" if h2 else "origin_h1"], []
    if scenario == "haproxy":
        cfg = write(os.path.join(workdir, "haproxy.cfg"), HAPROXY_CFG.format(
            host=HOST, port=PORTS["haproxy"], origin=PORTS["origin_h1"], h2=" proto h2" if h2 else ""))
        p = start("haproxy", ["haproxy", "-db", "-f", cfg], workdir)
        wait_port(p, PORTS["haproxy"])
        return PORTS["haproxy"], [p]
    if scenario == "nginx-proxy":
        p = nginx_start("nginx-proxy", NGINX_PROXY_BODY.format(
            host=HOST, port=PORTS["nginx_proxy"], origin=PORTS["origin_h1"], h2=" http2" if h2 else ""), workdir)
        wait_port(p, PORTS["nginx_proxy"])
        return PORTS["nginx_proxy"], [p]
    if scenario in ("trellis-1hop", "trellis-1hop-bare", "trellis-1hop-traced"):
        text = TRELLIS_1HOP.format(host=HOST, port=PORTS["trellis_a"], origin=PORTS["origin_h1"], admin=PORTS["admin_a"])
        if scenario == "trellis-1hop-bare":
            text += "requestMetrics: false\n"
        if scenario == "trellis-1hop-traced":
            start_otlp_receiver(workdir)
            text += TRELLIS_TRACING.format(host=HOST, port=PORTS["otlp_grpc"])
        cfg = write(os.path.join(workdir, "trellis.yaml"), text)
        p = start("trellis", [TRELLIS_BIN, "proxy", "--config", cfg], workdir)
        wait_ready(p, PORTS["admin_a"])
        wait_port(p, PORTS["trellis_a"])
        return PORTS["trellis_a"], [p]
    if scenario == "trellis-2hop":
        cfg_b = write(os.path.join(workdir, "trellis-b.yaml"), TRELLIS_1HOP.format(
            host=HOST, port=PORTS["trellis_b"], origin=PORTS["origin_h1"], admin=PORTS["admin_b"]))
        cfg_a = write(os.path.join(workdir, "trellis-a.yaml"), TRELLIS_OUTBOUND.format(
            host=HOST, port=PORTS["trellis_a"], next=PORTS["trellis_b"], admin=PORTS["admin_a"]))
        b = start("trellis-b", [TRELLIS_BIN, "proxy", "--config", cfg_b], workdir)
        wait_ready(b, PORTS["admin_b"])
        wait_port(b, PORTS["trellis_b"])
        a = start("trellis-a", [TRELLIS_BIN, "proxy", "--config", cfg_a], workdir)
        wait_ready(a, PORTS["admin_a"])
        wait_port(a, PORTS["trellis_a"])
        return PORTS["trellis_a"], [a, b]
    if scenario == "trellis-2hop-mtls":
        return start_mtls_mesh(workdir)
    raise ValueError(scenario)


def start_otlp_receiver(workdir):
    """rotel's agent (PyPI `rotel`, installed by scripts/setup.sh), taking spans over OTLP
    and dropping them, on the load generator's CPU so the proxy's CPU is its own."""
    agent = subprocess.run(
        ["python3", "-c", "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))"],
        capture_output=True, text=True)
    if agent.returncode != 0:
        raise RuntimeError("rotel is not installed (pip install rotel, see scripts/setup.sh)")
    p = start("rotel", ["taskset", "-c", CLIENT_CPU, agent.stdout.strip(), "start", "--exporter", "blackhole",
                        "--otlp-grpc-endpoint", f"{HOST}:{PORTS['otlp_grpc']}",
                        "--otlp-http-endpoint", f"{HOST}:{PORTS['otlp_http']}"], workdir)
    wait_port(p, PORTS["otlp_grpc"])


STRICT_MESH = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: default}\nspec: {mtls: {mode: strict}}\n"


def start_mtls_mesh(workdir):
    """A control plane, then B (origin's sidecar) and A (the client's, with origin as an
    upstream on trellis_a), as `trellis proxy --service` sidecars; waits until a request
    crosses A → B over mTLS."""
    control, token = start_control_plane(TRELLIS_BIN, workdir, PORTS["control_http"], PORTS["control_grpc"],
                                         STRICT_MESH)
    common = ["--control", control, "--token", token]
    b = start("trellis-b", [TRELLIS_BIN, "proxy", "--service", "origin", "--app", f"{HOST}:{PORTS['origin_h1']}",
                            "--inbound-port", str(PORTS["trellis_b"]), "--admin", f"{HOST}:{PORTS['admin_b']}"]
              + common, workdir)
    wait_ready(b, PORTS["admin_b"])
    a = start("trellis-a", [TRELLIS_BIN, "proxy", "--service", "client", "--app", f"{HOST}:{PORTS['origin_h1']}",
                            "--inbound-port", str(PORTS["mtls_app_a"]), "--admin", f"{HOST}:{PORTS['admin_a']}",
                            "--upstream", f"origin:{PORTS['trellis_a']}"] + common, workdir)
    wait_ready(a, PORTS["admin_a"])
    wait_port(a, PORTS["trellis_a"])
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            status, _ = http_get(PORTS["trellis_a"], timeout=1.0)
            if status == 200 and b"trellis_tls_handshakes_total" in http_get(PORTS["admin_b"], "/metrics")[1]:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no request crossed A → B over mTLS:\n{a.log_tail()}\n{b.log_tail()}")
        time.sleep(0.1)
    return PORTS["trellis_a"], [a, b]


# --------------------------------------------------------------------------
# load generators (pinned to CLIENT_CPU)


def client(argv, timeout):
    return run_pinned(CLIENT_CPU, argv, timeout)


def saturate(port, proto, seconds):
    """Closed-loop saturation run; returns (requests completed, req/s, errors)."""
    url = f"http://{HOST}:{port}/"
    timeout = seconds + 60
    if proto == "h1":
        out = client(["wrk", "-t", "1", "-c", str(SAT_CONNECTIONS), "-d", f"{seconds:g}s", "--timeout", "5s", url], timeout)
        m = re.search(r"(\d+) requests in ([\d.]+)(m?s|m)\b", out)
        rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
        if not m or not rps:
            raise RuntimeError(f"cannot parse wrk output:\n{out}")
        errors = 0
        e = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
        if e:
            errors += int(e.group(1))
        e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if e:
            errors += sum(int(x) for x in e.groups())
        return int(m.group(1)), float(rps.group(1)), errors
    out = client(["h2load", "-t", "1", "-c", str(SAT_CONNECTIONS), "-m", "1", "-D", f"{seconds:g}", url], timeout)
    fin = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not fin or not req or not codes:
        raise RuntimeError(f"cannot parse h2load output:\n{out}")
    done = int(req.group(3))
    errors = int(req.group(5)) + int(req.group(6)) + int(req.group(7)) + int(codes.group(3)) + int(codes.group(4))
    return done, float(fin.group(3)), errors


OHA_JSON_FLAGS = None


def oha_json_flags():
    global OHA_JSON_FLAGS
    if OHA_JSON_FLAGS is None:
        h = subprocess.run(["oha", "--help"], capture_output=True, text=True).stdout
        if "--output-format" in h:
            OHA_JSON_FLAGS = ["--output-format", "json"]
        elif "--json" in h:
            OHA_JSON_FLAGS = ["--json"]
        else:
            die("installed oha has no JSON output flag (need --output-format json or -j)")
        for flag in ("--latency-correction", "--http2", "--no-tui", "-q", "-z"):
            if flag not in h:
                die(f"installed oha does not support {flag}; install a newer one: cargo install oha --locked")
    return OHA_JSON_FLAGS


def fixed_rate(port, proto, seconds):
    """Open-loop run at LAT_RATE req/s over LAT_CONNECTIONS with latency correction."""
    argv = ["oha", "--no-tui", *oha_json_flags(), "-z", f"{seconds:g}s", "-c", str(LAT_CONNECTIONS),
            "-q", str(LAT_RATE), "--latency-correction"]
    if proto == "h2":
        argv.append("--http2")
    argv.append(f"http://{HOST}:{port}/")
    data = json.loads(client(argv, seconds + 60))
    pct = data.get("latencyPercentiles") or {}

    def ms(key):
        v = pct.get(key)
        return None if v is None else v * 1000.0

    summary = data.get("summary", {})
    codes = data.get("statusCodeDistribution", {}) or {}
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    bad = sum(v for k, v in codes.items() if not str(k).startswith("2"))
    # requests still in flight when the run's deadline hits are not errors
    errors = bad + sum(v for k, v in (data.get("errorDistribution") or {}).items() if "deadline" not in k)
    return {
        "p50": ms("p50"),
        "p99": ms("p99"),
        "p999": ms("p99.9"),
        "lat_rps": summary.get("requestsPerSec"),
        "lat_ok": ok,
        "lat_errors": errors,
    }


# --------------------------------------------------------------------------
# one measurement


def measure(scenario, proto, base_dir, tag):
    workdir = tempfile.mkdtemp(prefix=f"{tag}-", dir=base_dir)
    res = {"scenario": scenario, "proto": proto}
    try:
        start_origin(workdir)
        port, proxies = start_scenario(scenario, proto, workdir)
        probe(port, proto)
        time.sleep(0.2)
        pids = [pid for p in proxies for pid in p.tree()]
        server_pids = [pid for p in RUNNING for pid in p.tree()]
        if proxies:
            per_proc = [sum(proc_status_kib(pid, "VmRSS") for pid in p.tree()) for p in proxies]
            res["idle_rss"] = sum(per_proc) / 1024.0
            res["idle_rss_max_proc"] = max(per_proc) / 1024.0
        if WARMUP > 0:
            saturate(port, proto, WARMUP)
        gauge = OtherCpu(BENCH_CPUS, server_pids)
        res.update(fixed_rate(port, proto, LAT_DURATION))
        res["other_cpu_lat_pct"] = gauge.read()
        before = sum(proc_cpu_ticks(pid) for pid in pids)
        gauge = OtherCpu(BENCH_CPUS, server_pids)
        done, rps, errors = saturate(port, proto, DURATION)
        res["other_cpu_pct"] = gauge.read()
        after = sum(proc_cpu_ticks(pid) for pid in pids)
        res.update({"requests": done, "rps": rps, "sat_errors": errors})
        if proxies:
            for p in proxies:
                if not p.alive():
                    raise RuntimeError(f"{p.name} died during the run:\n{p.log_tail()}")
            per_proc = [sum(proc_status_kib(pid, "VmHWM") for pid in p.tree()) for p in proxies]
            res["peak_rss"] = sum(per_proc) / 1024.0
            res["peak_rss_max_proc"] = max(per_proc) / 1024.0
            cpu_ms = (after - before) * 1000.0 / CLK_TCK
            res["cpu_ms_per_10k"] = cpu_ms / done * 10000.0 if done else None
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        res["failed"] = str(e)
        log(f"  FAILED: {e}")
    finally:
        stop_all()
    return res


# --------------------------------------------------------------------------
# report


def lscpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        return m.group(1).strip() if m else "?"
    except OSError:
        return "?"


def environment():
    return [
        ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("nproc", str(NCPU)),
        ("CPU", lscpu_model()),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("trellis", trellis_version(TRELLIS_BIN, REPO)),
        ("nginx", cmd_version(["nginx", "-v"], r"nginx/\S+")),
        ("HAProxy", cmd_version(["haproxy", "-v"], r"HAProxy version \S+")),
        ("wrk", cmd_version(["wrk", "--version"], r"wrk \S+")),
        ("h2load", cmd_version(["h2load", "--version"], r"nghttp2/\S+")),
        ("oha", cmd_version(["oha", "--version"])),
        ("rustc", cmd_version(["rustc", "--version"])),
    ]


def method_text():
    return f"""\
- Everything runs on 127.0.0.1 on this one machine. Load generators are pinned
  to CPU {CLIENT_CPU} (`taskset -c {CLIENT_CPU}`); the origin and the proxies share CPU {SERVER_CPU}
  (`taskset -c {SERVER_CPU}`), so a proxy's throughput is bounded by what it leaves
  of that core to the origin, as a sidecar's would be.
- Origin: nginx, 1 worker, `return 200 "ok\\n"`, HTTP/1.1 on :{PORTS['origin_h1']} and h2c
  (prior knowledge) on :{PORTS['origin_h2']}. Every proxy talks HTTP/1.1 with keep-alive to
  the origin; for the HTTP/2 table only the client side is h2c. trellis-2hop:
  A → B over HTTP/2 (backend `protocol: http2`), B → origin HTTP/1.1.
- HAProxy: `mode http`, 1 thread, `http-reuse always`; h2 via `proto h2` on the bind.
  nginx as proxy: separate instance, 1 worker, `proxy_pass` to an upstream with
  `keepalive 64`, `proxy_http_version 1.1`; h2 via `listen … http2`.
- Per round, per protocol, per scenario, fresh processes (origin and proxies):
  start, wait for readiness (trellis: admin `/ready` = 200), one probe request,
  idle RSS (sum of VmRSS of the proxy processes), {WARMUP:g} s unrecorded warm-up at
  saturation, then
  1. fixed rate: `oha -z {LAT_DURATION:g}s -c {LAT_CONNECTIONS} -q {LAT_RATE} --latency-correction [--http2]`,
     p50/p99/p99.9 from oha's JSON output (latency measured from the scheduled
     send time, so queueing delay counts);
  2. saturation: {SAT_CONNECTIONS} connections for {DURATION:g} s, `wrk -t1 -c{SAT_CONNECTIONS}` (HTTP/1.1) or
     `h2load -t1 -c{SAT_CONNECTIONS} -m1` (HTTP/2, one stream per connection); proxy CPU is the
     utime+stime delta (/proc/PID/stat, all threads, all processes of the proxy)
     over this run, divided by completed requests, × 10,000, in ms;
  3. peak RSS: sum of VmHWM (/proc/PID/status) over the proxy processes
     (nginx: master + worker; trellis-2hop: A + B).
- Noise gauge: “other CPU %” is the busy time of CPUs {','.join(map(str, BENCH_CPUS))} (/proc/stat, incl. steal)
  over each fixed-rate and each saturation run minus what the load generator,
  origin and proxies used — work from anything else on those cores. Above {NOISY_PCT:g} % the report is
  flagged as noisy.
- {ROUNDS} round(s); rounds alternate the order of the scenarios (forward, reversed, …).
  Every number is the median over rounds. “× direct” is throughput / direct
  throughput; “+pXX ms/hop” is (scenario − direct) / number of proxy hops.
  `errors` counts non-2xx responses and socket errors over all runs.
- Goals: RSS per proxy process is the largest single proxy process (for
  2-hop, the larger of A and B); added latency per hop must be within target
  for both the 1-hop and the 2-hop chain.
"""


def noise(results):
    vals = [r[k] for by_sc in results.values() for rows in by_sc.values()
            for r in rows for k in ("other_cpu_lat_pct", "other_cpu_pct") if r.get(k) is not None]
    return (statistics.median(vals), max(vals)) if vals else (None, None)


NOISY_PCT = 5.0


def report(summary, results, started, elapsed, load_start, load_end):
    lines = ["# Trellis benchmark results", ""]
    if QUICK:
        lines += ["> Quick smoke run (`BENCH_QUICK=1`): one short round — numbers are indicative only.", ""]
    other_med, other_max = noise(results)
    if other_max is not None and other_max > NOISY_PCT:
        lines += [f"> **Noisy machine:** other work used up to {other_max:.0f} % of the benchmark CPUs during "
                  f"the measured runs (median {other_med:.0f} %); see the per-round values. "
                  "Rerun on an idle machine before drawing conclusions.", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in environment()]
    lines += [f"| settings | rounds {ROUNDS}, saturation {DURATION:g} s, fixed-rate {LAT_DURATION:g} s, "
              f"warm-up {WARMUP:g} s |",
              f"| run time | {elapsed / 60:.1f} min (started {started}) |",
              f"| load average (1 min) | {load_start:.2f} at start, {load_end:.2f} at end |",
              f"| other CPU use | {fmt(other_med, 1)} % median, {fmt(other_max, 1)} % max of CPUs "
              f"{','.join(map(str, BENCH_CPUS))} during the measured runs, not counting the benchmark's own processes |",
              ""]
    lines += ["## Results", ""]
    for proto in SELECTED_PROTOCOLS:
        lines += protocol_table(proto, summary.get(proto, {}))
    lines += goals_table(summary, SELECTED_PROTOCOLS)
    failures = [(proto, sc, f) for proto in summary for sc, s in summary[proto].items() for f in s["failed"]]
    if failures:
        lines += ["### Failures", ""]
        for proto, sc, f in failures:
            first = f.strip().splitlines()[0] if f.strip() else "?"
            lines.append(f"- {proto} {sc}: {first}")
        lines.append("")
    lines += ["## Scenarios", ""]
    lines += [f"- **{sc}**: {DESCRIPTION[sc]}" for sc in ALL_SCENARIOS if sc in SELECTED_SCENARIOS]
    lines += ["", "## Method", "", method_text()]
    return "\n".join(lines)


def raw_section(results):
    lines = ["<details><summary>Per-round values</summary>", "",
             "| round | protocol | scenario | req/s | p50 ms | p99 ms | p99.9 ms | peak RSS MiB | CPU ms/10k "
             "| other CPU % (fixed rate / saturation) |",
             "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for proto in SELECTED_PROTOCOLS:
        for sc in ALL_SCENARIOS:
            for i, r in enumerate(results.get(proto, {}).get(sc, [])):
                if "failed" in r:
                    lines.append(f"| {i + 1} | {proto} | {sc} | failed | | | | | | |")
                    continue
                lines.append(f"| {i + 1} | {proto} | {sc} | {fmt(r.get('rps'), 0)} | {fmt(r.get('p50'), 3)} "
                             f"| {fmt(r.get('p99'), 3)} | {fmt(r.get('p999'), 3)} | {fmt(r.get('peak_rss'), 1)} "
                             f"| {fmt(r.get('cpu_ms_per_10k'), 1)} "
                             f"| {fmt(r.get('other_cpu_lat_pct'), 1)} / {fmt(r.get('other_cpu_pct'), 1)} |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------


def preflight():
    for tool in ("taskset", "nginx", "haproxy", "wrk", "h2load", "oha"):
        if not shutil.which(tool):
            die(f"{tool} not found on PATH (bench/run.sh installs it)")
    if any(sc.startswith("trellis") for sc in SELECTED_SCENARIOS):
        if not os.access(TRELLIS_BIN, os.X_OK):
            die(f"trellis binary not found at {TRELLIS_BIN}; build it with "
                f"`cargo build --release -p trellis-cli`, or set BENCH_SCENARIOS to skip the trellis scenarios")
    oha_json_flags()
    check_ports()


def main():
    preflight()
    started = datetime.datetime.now().strftime("%H:%M:%S")
    load_start = os.getloadavg()[0]
    t0 = time.monotonic()
    base_dir = os.environ.get("BENCH_TMPDIR") or tempfile.mkdtemp(prefix="trellis-bench-")
    plan = [(proto, sc) for proto in SELECTED_PROTOCOLS for sc in SELECTED_SCENARIOS]
    results = {proto: {sc: [] for sc in SELECTED_SCENARIOS} for proto in SELECTED_PROTOCOLS}
    per_run = WARMUP + LAT_DURATION + DURATION + 1.5
    log(f"{ROUNDS} round(s) × {len(plan)} runs, ~{ROUNDS * len(plan) * per_run / 60:.1f} min; configs and logs in {base_dir}")
    try:
        for rnd in range(ROUNDS):
            order = plan if rnd % 2 == 0 else list(reversed(plan))
            for n, (proto, sc) in enumerate(order):
                log(f"round {rnd + 1}/{ROUNDS} [{n + 1}/{len(order)}] {proto} {sc}")
                r = measure(sc, proto, base_dir, f"r{rnd + 1}-{proto}-{sc}")
                if "failed" not in r:
                    log(f"  {fmt(r['rps'], 0)} req/s, p50 {fmt(r['p50'], 3)} ms, p99 {fmt(r['p99'], 3)} ms, "
                        f"p99.9 {fmt(r['p999'], 3)} ms"
                        + (f", peak RSS {fmt(r.get('peak_rss'), 1)} MiB, CPU {fmt(r.get('cpu_ms_per_10k'), 1)} ms/10k"
                           if r.get("peak_rss") is not None else "")
                        + f", other CPU {fmt(r.get('other_cpu_lat_pct'), 1)} / {fmt(r.get('other_cpu_pct'), 1)} %")
                results[proto][sc].append(r)
    finally:
        stop_all()
    elapsed = time.monotonic() - t0
    load_end = os.getloadavg()[0]
    summary = summarize(results)
    text = report(summary, results, started, elapsed, load_start, load_end) + "\n" + raw_section(results)
    save_report(OUT, text, results, base_dir, elapsed)
    failed = any(s["failed"] for p in summary.values() for s in p.values())
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
