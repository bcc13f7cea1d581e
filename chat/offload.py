"""CPU-heavy file work (decoding, re-encoding, scaling, PDF reading) in worker processes of its own.

Pillow and pypdf hold the GIL for much of their work, so in a thread they still slow every stream
of the process: bench/upload.py measured a 10 MB PNG adding 150-290 ms to other users' p95 time to
first token while it was decoded and scaled in a thread. A separate process shares no GIL.

The workers are plain `python -m chat.offload` processes speaking length-prefixed pickles over
their stdin and stdout (the pipe is private to this process and its child). multiprocessing is
not used because its spawn and forkserver modes re-import the parent's `__main__`, which for
`python app.py` means importing Gradio in every worker, and fork is unsafe in a threaded server.

`run(fn, *args)` blocks its caller, so call it from a worker thread (asyncio.to_thread), as every
caller does: the waiting thread holds no GIL. `PARLEY_FILE_WORKERS` sets how many processes may
run at once (default 1: a 2-core machine keeps a core for the streams); 0 runs the work in the
calling thread instead. Workers run at a lower CPU priority (nice 10) than the server.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

log = logging.getLogger("parley.offload")

T = TypeVar("T")

WORKERS_ENV = "PARLEY_FILE_WORKERS"
#: A call that runs longer is stopped (its worker is killed): no file may hold a worker forever.
TIMEOUT_S = 120.0
_HEADER = struct.Struct("!Q")
_ROOT = str(Path(__file__).resolve().parent.parent)


class OffloadError(RuntimeError):
    """The worker process died or timed out (the message says which); the call did not complete."""


def workers() -> int:
    raw = os.environ.get(WORKERS_ENV, "").strip()
    try:
        return max(int(raw), 0) if raw else 1
    except ValueError:
        log.warning("%s=%r is not a number: using 1", WORKERS_ENV, raw)
        return 1


def _send(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


class _Worker:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "chat.offload"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, cwd=_ROOT)

    def call(self, fn: Callable[..., T], args: tuple[Any, ...], timeout: float) -> T:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        timer = threading.Timer(timeout, self.proc.kill)
        timer.daemon = True
        timer.start()
        try:
            _send(self.proc.stdin, pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL))
            reply = _receive(self.proc.stdout)
        except OSError as e:  # a broken pipe: the worker died
            reply = None
            log.warning("file worker failed: %s", e)
        finally:
            timer.cancel()
        if reply is None:
            self.close()
            timed_out = self.proc.returncode is not None and self.proc.returncode < 0
            raise OffloadError("The file took too long to process." if timed_out else "The file could not be processed.")
        ok, value = pickle.loads(reply)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]  # what fn returned, through pickle

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class _Pool:
    """Up to `size` workers, started on first use; a call takes an idle one or waits for one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self.started = 0
        self.lock = threading.Lock()

    def take(self) -> _Worker:
        with self.lock:
            if self.idle.empty() and self.started < self.size:
                self.started += 1
                try:
                    return _Worker()
                except BaseException:
                    self.started -= 1
                    raise
        return self.idle.get()

    def give(self, worker: _Worker) -> None:
        if worker.alive:
            self.idle.put(worker)
        else:
            with self.lock:
                self.started -= 1

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get().close()
        self.started = 0


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def run(fn: Callable[..., T], *args: Any, timeout: float = TIMEOUT_S) -> T:
    """`fn(*args)` in a worker process (blocking: call it from a thread); its exceptions are raised here.

    `fn` and the arguments must pickle (a module-level function, plain data).
    """
    global _pool
    size = workers()
    if size == 0:
        return fn(*args)
    with _pool_lock:
        if _pool is None or _pool.size != size:
            if _pool is not None:
                _pool.close()
            _pool = _Pool(size)
        pool = _pool
    worker = pool.take()
    try:
        return worker.call(fn, args, timeout)
    finally:
        pool.give(worker)


def shutdown() -> None:
    """Stop the idle workers (tests, and the app's shutdown)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None


def _serve() -> None:
    """The worker's loop: one call at a time, until its parent closes the pipe."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        # Below the server's priority: on a small machine the streams get the CPU first, the file waits.
        os.nice(10)
    except (AttributeError, OSError):  # no nice() on Windows
        pass
    sys.stdout = sys.stderr  # a stray print must not corrupt the reply stream
    while (request := _receive(stdin)) is not None:
        try:
            fn, args = pickle.loads(request)
            reply = (True, fn(*args))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            reply = (False, e)
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - an exception that does not pickle
            payload = pickle.dumps((False, RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
            del e
        _send(stdout, payload)


if __name__ == "__main__":
    _serve()
