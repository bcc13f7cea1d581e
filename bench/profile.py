"""Sample a running server with py-spy and summarise where its CPU time goes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# What a sample was doing: the first activity whose marker appears anywhere in its stack.
ACTIVITIES = [
    ("storage (SQLAlchemy, SQLite; db threads)", re.compile(r"sqlalchemy|sqlite3|sqlmodel|/storage/")),
    ("provider stream (openai SDK parsing, httpx2)", re.compile(r"OpenAIProvider\.stream|/openai/|httpx2|httpcore2")),
    ("queue join (per new session: SessionState, Event)", re.compile(r"queue_join|Queue\.push")),
    ("input preprocessing (thread hops per input)", re.compile(r"preprocess_data")),
    ("Parley handler (ui/, chat/turn.py)", re.compile(r"ChatHandler|/ui/|chat/turn\.py|chat/context|chat/types")),
    ("Gradio per-update processing (process_api, postprocess, diff, messages)", re.compile(r"process_events|process_api|handle_streaming")),
    ("SSE delivery (queue/data stream)", re.compile(r"queue_data|StreamingResponse|sse_stream")),
    ("HTTP server (uvicorn, h11, starlette, fastapi)", re.compile(r"uvicorn/protocols|H11Protocol|starlette|fastapi")),
    ("Gradio queue loop and other tasks", re.compile(r"queueing\.py")),
]
# Leaf frames that mean "waiting", which py-spy's --nonblocking sampling does not always drop.
# SerialWriteConnection.take_for is a storage thread waiting for SQLite's writer lock (storage/sqlite_writes.py).
IDLE_LEAVES = re.compile(r"^(EpollSelector\.select|Condition\.wait|Event\.wait|Blocks\.block_thread|_worker|sleep|Thread\.join|"
                         r"SimpleQueue\.get|Queue\.get|_wait_for_tstate_lock|select|SerialWriteConnection\.take_for) ")
# Frames every sample of a thread shares (loop, server, middleware): left out of the inclusive list.
GENERIC = re.compile(r"\((threading|asyncio/|selectors|contextlib|uvicorn/|starlette/|fastapi/|anyio/|concurrent/|<frozen)|<module>|"
                     r"^(Handle\._run|Runner\.run|main) ")
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    return shutil.which("py-spy") or (str(Path(sys.executable).parent / "py-spy") if (Path(sys.executable).parent / "py-spy").exists() else None)


class Sampler:
    """`py-spy record --pid P --format raw` until stopped; non-blocking so the server is not paused."""

    def __init__(self, pid: int, out: Path, rate: int = 100):
        self.out = out
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--nonblocking",
             *(["--idle"] if os.environ.get("BENCH_PYSPY_IDLE") else []), "--output", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        time.sleep(1.0)  # let it attach
        if self.proc.poll() is not None:
            raise RuntimeError(f"py-spy failed: {self.proc.stdout.read().decode(errors='replace')[-500:]}")  # type: ignore[union-attr]  # stdout=PIPE: never None

    def stop(self) -> Path:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.out


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m['func']} ({file}{':' + m['line'] if m['line'] else ''})"


def summarise(raw: Path, top: int = 12) -> dict:
    """Totals, CPU share by bucket, and the top functions by self and by inclusive samples."""
    self_counts: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    activities: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames or IDLE_LEAVES.match(frames[-1]):
            continue
        total += count
        self_counts[short(frames[-1])] += count
        for f in {short(f) for f in frames}:
            incl[f] += count
        joined = ";".join(frames)
        for name, pattern in ACTIVITIES:
            if pattern.search(joined):
                activities[name] += count
                break
        else:
            activities["event loop and other"] += count
    return {"samples": total, "activities": activities.most_common(), "self": self_counts.most_common(top),
            "inclusive": [(f, c) for f, c in incl.most_common(top * 10) if not GENERIC.search(f)][:top]}


def markdown(summary: dict, seconds: float, rate: int) -> str:
    total = summary["samples"] or 1
    lines = [f"{summary['samples']} on-CPU samples at {rate} Hz over {seconds:.1f} s (≈ {summary['samples'] / rate:.1f} s of Python running; "
             "samples whose innermost frame is a wait are left out). Shares are of those samples.", "",
             "| activity (first match in the stack, in this order) | share |", "|---|---|"]
    lines += [f"| {name} | {100 * c / total:.0f}% |" for name, c in summary["activities"]]
    lines += ["", "| top self time | share |", "|---|---|"]
    lines += [f"| `{f}` | {100 * c / total:.1f}% |" for f, c in summary["self"]]
    lines += ["", "| top inclusive | share |", "|---|---|"]
    lines += [f"| `{f}` | {100 * c / total:.0f}% |" for f, c in summary["inclusive"]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(summarise(Path(sys.argv[1])), float(sys.argv[2]) if len(sys.argv) > 2 else 0, 100))
