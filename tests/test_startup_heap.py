"""The server freezes what start-up built once the SDKs are warm (app.freeze_heap): full garbage collections
then scan only what came after, instead of pausing every stream for 50-300 ms (bench/README.md, "Issue 20")."""

from __future__ import annotations

import gc


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


def test_the_server_caps_malloc_arenas_unless_the_environment_says(monkeypatch):
    import sys

    import app

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert app.cap_malloc_arenas() is False  # glibc read the environment's own setting at start
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    if sys.platform.startswith("linux"):
        assert app.cap_malloc_arenas() is True  # glibc took it (mallopt answers 0 for a parameter it does not know)
