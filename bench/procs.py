"""Server processes for the benchmark: started in their own process group, pinned to
the server CPU, stopped with their children; the waits for them to listen; their CPU
accounting; and the small helpers every runner shares."""

import datetime
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"
PIDFILE = os.environ.get("BENCH_PIDFILE", "")
NCPU = os.cpu_count() or 1
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "1" if NCPU >= 2 else "0")
STARTUP_TIMEOUT = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Proc:
    """A server process we started, in its own process group, pinned to SERVER_CPU."""

    def __init__(self, name, argv, workdir, env=None):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log_file = open(self.log_path, "wb")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU] + argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=full_env,
            cwd=workdir,
        )
        self.pid = self.popen.pid  # taskset execs, so this is the server's pid
        if PIDFILE:
            with open(PIDFILE, "a") as f:
                f.write(f"{self.pid}\n")

    def alive(self):
        return self.popen.poll() is None

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join("    " + l for l in lines[-n:])
        except OSError:
            return ""

    def tree(self):
        """pid of this process and all its descendants (nginx master + workers)."""
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children") as f:
                        todo.extend(int(x) for x in f.read().split())
            except OSError:
                pass
        return out

    def stop(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left in the group (e.g. nginx workers) goes too
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log_file.close()


RUNNING = []


def start(name, argv, workdir, env=None):
    p = Proc(name, argv, workdir, env)
    RUNNING.append(p)
    return p


def stop_all():
    while RUNNING:
        RUNNING.pop().stop()


def wait_port(proc, port, timeout=STARTUP_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited (code {proc.popen.returncode}) before listening on {port}:\n{proc.log_tail()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not listening on {port} after {timeout:.0f}s:\n{proc.log_tail()}")


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def http_get(port, path="/", timeout=2.0):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_ready(proc, admin_port, timeout=STARTUP_TIMEOUT):
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited (code {proc.popen.returncode}) during startup:\n{proc.log_tail()}")
        try:
            status, _ = http_get(admin_port, "/ready", timeout=0.5)
            if status == 200:
                return
            last = f"/ready answered {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready on admin {admin_port} after {timeout:.0f}s ({last}):\n{proc.log_tail()}")


# --------------------------------------------------------------------------
# CPU accounting


def cpus_busy_ticks(cpus):
    """Non-idle ticks (incl. steal) of the given CPUs, from /proc/stat."""
    want = {f"cpu{c}" for c in cpus}
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in want:
                v = [int(x) for x in parts[1:9]]
                # user nice system idle iowait irq softirq steal
                total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return total


def children_cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class OtherCpu:
    """Noise gauge: share of the benchmark CPUs used by anything other than
    the load generator (a reaped child), the origin and the proxies: other
    tasks, interrupts, steal. Percent, over the time since construction."""

    def __init__(self, cpus, server_pids):
        self.cpus = cpus
        self.pids = server_pids
        self.busy = cpus_busy_ticks(cpus)
        self.srv = sum(proc_cpu_ticks(pid) for pid in server_pids)
        self.gen = children_cpu_seconds()
        self.t = time.monotonic()

    def read(self):
        busy = cpus_busy_ticks(self.cpus) - self.busy
        srv = sum(proc_cpu_ticks(pid) for pid in self.pids) - self.srv
        gen = (children_cpu_seconds() - self.gen) * CLK_TCK
        span = (time.monotonic() - self.t) * CLK_TCK * len(self.cpus)
        return max(0.0, (busy - srv - gen) / span * 100.0) if span > 0 else None


def proc_cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        fields = data[data.rindex(")") + 2:].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return 0


# --------------------------------------------------------------------------
# shared helpers


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def cmd_version(argv, pattern=None):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    line = text.splitlines()[0] if text else "?"
    if pattern:
        m = re.search(pattern, text)
        if m:
            line = m.group(0)
    return line.strip()


def run_pinned(cpu, argv, timeout):
    """Runs a load generator on `cpu` to its end; returns its stdout."""
    r = subprocess.run(["taskset", "-c", str(cpu)] + argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed (code {r.returncode}): {(r.stderr or r.stdout).strip()[-400:]}")
    return r.stdout


def start_control_plane(trellis_bin, workdir, http_port, grpc_port, resources):
    """`trellis control` on the embedded store in `workdir`, with `resources` (YAML
    documents) applied through its HTTP API; returns (its URL, the admin token)."""
    data = os.path.join(workdir, "control-data")
    cp = start("trellis-control", [trellis_bin, "control", "--data-dir", data,
                                   "--http-addr", f"{HOST}:{http_port}",
                                   "--grpc-addr", f"{HOST}:{grpc_port}"], workdir)
    wait_port(cp, http_port)
    with open(os.path.join(data, "admin-token")) as f:
        token = f.read().strip()
    c = http.client.HTTPConnection(HOST, http_port, timeout=5)
    try:
        c.request("POST", "/api/v1/apply", body=resources, headers={"authorization": f"Bearer {token}"})
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError(f"applying the mesh's resources: {r.status} {r.read()!r}")
    finally:
        c.close()
    return f"http://{HOST}:{http_port}", token


def run_main(main):
    """Runs a runner's `main`, turning SIGTERM, SIGHUP and Ctrl-C into an exit that
    stops every process it started."""
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    finally:
        stop_all()
    sys.exit(code)


def save_report(path, text, results, workdir, elapsed):
    """Writes the report to `path` and prints it; the raw results go beside the logs."""
    write(path, text)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(text)
    log(f"done in {elapsed / 60:.1f} min; written to {path}")


def trellis_version(trellis_bin, repo):
    """The commit the benchmark runs at, and when the binary it measures was built."""
    rev = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    v = f"git {rev or '?'}{' (uncommitted changes)' if dirty else ''}"
    if os.path.exists(trellis_bin):
        mtime = datetime.datetime.fromtimestamp(os.path.getmtime(trellis_bin)).strftime("%Y-%m-%d %H:%M")
        v += f", binary built {mtime}"
    return v
