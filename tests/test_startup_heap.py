"""The server freezes what start-up built once the SDKs are warm (app.freeze_heap): full garbage collections
then scan only what came after, instead of pausing every stream for 50-300 ms (bench/README.md, "Issue 20")."""

from __future__ import annotations

import gc

import pytest


def test_warming_for_the_server_freezes_the_start_up_heap(fake_server, tmp_path):
    import app
    from tests.apphelpers import app_env

    demo, services = app.create_app(app_env(fake_server, f"sqlite:///{tmp_path / 'p.db'}"), warm=False)
    try:
        gc.unfreeze()  # in case an earlier test in this process froze it
        assert gc.get_freeze_count() == 0
        app.start_warming(services, freeze=True)
        assert services.warmed.wait(60)
        frozen = gc.get_freeze_count()
        gc.collect()
        scanned = len(gc.get_objects(generation=2))  # what a full collection still walks
        # Gradio, the UI and the SDKs: hundreds of thousands of objects are out of the collector's way,
        # and a full collection walks a small fraction of what it walked before.
        assert frozen > 100_000, frozen
        assert scanned < frozen / 10, (scanned, frozen)
    finally:
        gc.unfreeze()  # this is a test process: its later apps and tests must stay collectable
        services.close()
        services.engine.dispose()


def test_the_server_runs_no_full_collection_until_the_heap_is_frozen(fake_server, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    import app
    from tests.apphelpers import app_env

    # `python app.py`: the oldest generation is not collected while start-up builds the app ...
    code = ("import gc, json, runpy, sys; default = gc.get_threshold(); sys.argv = ['app.py', '--help']\n"
            "try:\n    runpy.run_path('app.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(json.dumps([default, gc.get_threshold()]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(app.__file__).parent)
    default, server = json.loads(run.stdout.strip().splitlines()[-1])
    assert server[:2] == default[:2] and server[2] >= 1_000_000 > default[2], (default, server)
    # ... and is again once freeze_heap has frozen what start-up built (an import of app changes nothing).
    assert app.GC_THRESHOLDS == gc.get_threshold()
    demo, services = app.create_app(app_env(fake_server, f"sqlite:///{tmp_path / 'p.db'}"), warm=False)
    before = gc.get_threshold()
    try:
        gc.set_threshold(before[0], before[1], 1_000_000_000)
        app.start_warming(services, freeze=True)
        assert services.warmed.wait(60)
        assert gc.get_threshold() == app.GC_THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        services.close()
        services.engine.dispose()


ARENAS = """
import ctypes, os, sys, tempfile, threading
import app
if sys.argv[1] == "cap":
    assert app.cap_malloc_arenas()
together = threading.Barrier(8)
def work():
    # malloc'd by glibc (over Python's small-object size), by eight threads alive at once
    chunks = [bytearray(200_000) for _ in range(5)]
    together.wait()
    chunks += [bytearray(200_000) for _ in range(5)]
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
path = os.path.join(tempfile.mkdtemp(), "malloc.xml")
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(fp))
libc.fclose(ctypes.c_void_p(fp))
print(open(path).read().count("<heap nr="))
"""


def test_the_server_caps_malloc_arenas_unless_the_environment_says(monkeypatch):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import app

    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's malloc arenas: Linux only")
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    root = Path(app.__file__).parent

    def arenas(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, check=True, cwd=root, env=env)
        return int(run.stdout.split()[-1])

    # Eight threads allocating: an arena each, as glibc does by default; two at most once capped.
    assert arenas("default") > 2
    assert arenas("cap") <= 2
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert app.cap_malloc_arenas() is False  # glibc has read the environment's own setting
