"""chat.offload: file work runs in a separate process, its errors come back, and a dead or stuck worker is replaced."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from chat import offload
from chat.attachments import AttachmentError, ingest


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(offload.WORKERS_ENV, "1")
    offload.shutdown()
    yield
    offload.shutdown()


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def test_the_work_runs_in_another_process_and_gives_what_it_would_give_here() -> None:
    assert offload.run(os.getpid) != os.getpid()
    there = offload.run(ingest, "chart.png", png())
    here = ingest("chart.png", png())
    assert there == here and (there.width, there.height) == (64, 48)


def test_one_worker_serves_call_after_call() -> None:
    pids = {offload.run(os.getpid) for _ in range(3)}
    assert len(pids) == 1


def test_the_work_s_own_error_comes_back_with_its_message() -> None:
    with pytest.raises(AttachmentError, match=r"empty\.png is empty"):
        offload.run(ingest, "empty.png", b"")


def test_a_stuck_call_is_stopped_and_the_next_call_gets_a_new_worker() -> None:
    first = offload.run(os.getpid)
    with pytest.raises(offload.OffloadError, match="took too long"):
        offload.run(time.sleep, 30, timeout=0.5)
    second = offload.run(os.getpid)
    assert second != first and second != os.getpid()


def test_a_worker_that_dies_is_reported_and_replaced() -> None:
    with pytest.raises(offload.OffloadError, match="could not be processed"):
        offload.run(os._exit, 3)
    assert offload.run(sum, [1, 2, 3]) == 6


def test_zero_workers_runs_the_work_in_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(offload.WORKERS_ENV, "0")
    assert offload.run(os.getpid) == os.getpid()


def test_a_bad_setting_falls_back_to_one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(offload.WORKERS_ENV, "many")
    assert offload.workers() == 1


def test_the_worker_runs_below_the_server_s_cpu_priority() -> None:
    assert offload.run(os.nice, 0) == min(os.nice(0) + 10, 19)
