"""Server processes for the benchmark: started in their own process group, pinned to
the server CPU, stopped with their children; and the waits for them to listen."""

import http.client
import os
import signal
import socket
import subprocess
import time

HOST = "127.0.0.1"
PIDFILE = os.environ.get("BENCH_PIDFILE", "")
NCPU = os.cpu_count() or 1
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "1" if NCPU >= 2 else "0")
STARTUP_TIMEOUT = 15.0


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
