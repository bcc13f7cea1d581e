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
