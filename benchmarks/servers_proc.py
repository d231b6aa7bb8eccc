"""Starting and stopping one benchmark server process (pinned with taskset)."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Server:
    def __init__(self, workload, variant, port, cpus):
        self.variant, self.port = variant, port
        fd, self.stats_file = tempfile.mkstemp(prefix="npaio-bench-", suffix=".json")
        os.close(fd)
        os.unlink(self.stats_file)
        if variant.loop == "c":
            cmd = [os.path.join(HERE, ".build", "echo_server_c"), str(port)]
        else:
            cmd = [sys.executable, os.path.join(HERE, "servers", workload.server + ".py"),
                   "--loop", variant.loop, "--port", str(port), "--stats-file", self.stats_file]
            if variant.pollers is not None:
                cmd += ["--pollers", str(variant.pollers)]
            if variant.balance:
                cmd += ["--balance", variant.balance]
        self.err = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if getattr(variant, "spin_us", None) is not None:
            env["NPAIO_SPIN_US"] = str(variant.spin_us)
        self.proc = subprocess.Popen(["taskset", "-c", cpus] + cmd, cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.pid = self.proc.pid          # taskset execs the server: same pid

    def wait_ready(self, timeout=30):
        """Block until the server prints READY; raise with its stderr if it dies."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if "READY" in line:
                return
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        self.err.seek(0)
        err = self.err.read()[-800:]
        raise RuntimeError(f"{self.variant.name} server did not start: {err.strip()}")

    def stop(self, timeout=15):
        """SIGTERM, wait, and return the stats it wrote (or {})."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            with open(self.stats_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}
        finally:
            if os.path.exists(self.stats_file):
                os.unlink(self.stats_file)
