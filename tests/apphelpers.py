"""Start Parley for tests: in-process (gradio_client tests) or as a process (browser, restart tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(fake, database_url: str, **extra: str) -> dict[str, str]:
    """Environment pointing every provider at the fake server, with a private database."""
    env = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": fake.openai_base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "GEMINI_API_KEY": "test-key",
        "GOOGLE_GEMINI_BASE_URL": fake.gemini_base_url,
        "DATABASE_URL": database_url,
        "RATE_LIMIT": "1000/minute",
        "DEFAULT_MODEL": "openai:gpt-test",
        "PARLEY_MODELS_FILE": "",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    # CI runs the app tests once more with Gradio as shipped (PARLEY_GRADIO_PATCHES=off).
    if os.environ.get("PARLEY_GRADIO_PATCHES"):
        env["PARLEY_GRADIO_PATCHES"] = os.environ["PARLEY_GRADIO_PATCHES"]
    env.update(extra)
    return env


def wait_ready(url: str, timeout: float = 60.0, auth: tuple[str, str] | None = None) -> None:
    """Poll until Gradio answers (any status counts: 401 means the login page is up)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/gradio_api/info", timeout=2.0)
            return
        except httpx.HTTPError as e:
            last = e
            time.sleep(0.2)
    raise TimeoutError(f"app at {url} not ready: {last}")


def _patient_url_ok(url: str) -> bool:
    """Gradio's launch() checks that its page answers, giving up at the first request over 3 s; on a busy
    machine (parallel test workers on two cores) a fresh app's first answer can take longer."""
    try:
        wait_ready(url.rstrip("/"))
        return True
    except TimeoutError:
        return False


@contextlib.contextmanager
def in_process_app(env: dict[str, str]) -> Iterator[tuple[str, object]]:
    """Launch create_app(env) in this process; yields (url, services)."""
    import app as app_module

    demo, services = app_module.create_app(env)
    kwargs = app_module.launch_kwargs(services)
    port = free_port()
    with mock.patch("gradio.networking.url_ok", _patient_url_ok):
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield url.rstrip("/"), services
    finally:
        demo.close()
        services.close()  # stops the replica heartbeat thread
        services.engine.dispose()


class AppProcess:
    """`python app.py` as a child process, with its output kept for failure messages."""

    def __init__(self, env: dict[str, str], port: int | None = None, log_path: Path | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "GRADIO_SERVER_PORT": str(self.port)}
        self.log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"parley-app-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> AppProcess:
        return self.spawn().wait_ready(timeout)

    def spawn(self) -> AppProcess:
        """Start the process and return at once: its imports (seconds of CPU) can overlap other set-up."""
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(self.port)], cwd=ROOT, env=self.env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 90.0) -> AppProcess:
        """Block until the spawned app answers; a process that died or never answered is stopped and reported."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"app exited with {self.proc.returncode} before it answered:\n{self.output()}")
            try:
                wait_ready(self.url, min(2.0, max(deadline - time.monotonic(), 0.1)))
                return self
            except TimeoutError as e:
                if time.monotonic() >= deadline:
                    self.stop()
                    raise RuntimeError(f"app did not start:\n{self.output()}") from e

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the server dies mid-whatever, as in a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
