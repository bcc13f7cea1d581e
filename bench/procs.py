"""Processes the benchmarks drive: the fake provider server, Parley and the tutorial app, with /proc readings."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
QUIET_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Process:
    """A child process in its own session, stopped by its process group id."""

    proc: subprocess.Popen | None = None

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name, self.argv = name, argv
        self.env = {**os.environ, **QUIET_ENV, **env}
        self.log_path = log_dir / f"{name}.log"

    def spawn(self) -> float:
        """Start it; returns the perf_counter stamp taken just before the fork."""
        self._log = open(self.log_path, "ab")
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return started

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()


class FakeProvider(Process):
    """`python -m tests.fakes --port 0`, separate process; the URL comes from its READY line."""

    def __init__(self, log_dir: Path):
        super().__init__("fake", [sys.executable, "-m", "tests.fakes", "--port", "0", "--key", "test-key"], {}, log_dir)
        self.url = ""

    def start(self) -> FakeProvider:
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]  # stdout=PIPE: never None
        if not line.startswith("READY "):
            raise RuntimeError(f"fake server did not start: {line}")
        self.url = line.split()[1].rstrip("/")
        return self

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/openai/v1"


class App(Process):
    """A Gradio app as a process; `start()` returns the seconds from fork to the first 200 from /config."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.port = free_port()
        super().__init__(name, [*argv, "--port", str(self.port)], {**env, "GRADIO_SERVER_PORT": str(self.port)}, log_dir)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> float:
        started = self.spawn()
        deadline = started + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() < deadline:
                try:
                    if client.get(f"{self.url}/config").status_code == 200:
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{self.output()}")

    def settle(self, below: float = 0.15, window: float = 0.5, timeout: float = 20.0) -> float:
        """Wait until the process uses less than `below` of a core over `window` s (its start-up tail ends).

        Parley keeps working for a second or two after /config first answers; measuring then would charge
        that work to the first scenario. Returns the last measured share.
        """
        deadline = time.perf_counter() + timeout
        share = 1.0
        while time.perf_counter() < deadline:
            c0 = self.cpu()
            time.sleep(window)
            share = (self.cpu() - c0) / window
            if share < below:
                break
        return share

    def idle_share(self, seconds: float = 3.0) -> float:
        """Share of one core the idle server uses (Gradio's queue loop polls every 1 ms)."""
        c0 = self.cpu()
        time.sleep(seconds)
        return (self.cpu() - c0) / seconds


class Parley(App):
    """`python app.py` with its own fresh SQLite database, every provider pointed at the fake."""

    def __init__(self, fake: FakeProvider, log_dir: Path, name: str = "parley", **extra: str):
        from tests.apphelpers import app_env

        self.db_dir = Path(tempfile.mkdtemp(prefix="parley-bench-db-"))
        self.db_path = self.db_dir / "parley.db"
        fake_urls = type("F", (), {"openai_base_url": fake.openai_base_url, "anthropic_base_url": f"{fake.url}/anthropic",
                                   "gemini_base_url": f"{fake.url}/gemini"})()
        env = app_env(fake_urls, f"sqlite:///{self.db_path}", RATE_LIMIT="off", LOG_LEVEL="WARNING", **extra)
        super().__init__(name, [sys.executable, "app.py"], env, log_dir)

    def saved_replies(self) -> int:
        """Assistant messages saved with finish_reason 'stop'."""
        with sqlite3.connect(self.db_path) as db:
            return db.execute("SELECT count(*) FROM message WHERE role = 'assistant' AND finish_reason = 'stop'").fetchone()[0]


class Tutorial(App):
    """bench/tutorial_app.py: the baseline a user would otherwise write."""

    def __init__(self, fake: FakeProvider, log_dir: Path, name: str = "tutorial", **extra: str):
        env = {"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": "test-key", **extra}
        super().__init__(name, [sys.executable, "bench/tutorial_app.py"], env, log_dir)
