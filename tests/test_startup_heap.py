"""The server freezes what start-up built once the SDKs are warm (app.freeze_heap): full garbage collections
then scan only what came after, instead of pausing every stream for 50-250 ms (bench/README.md, "Issue 20")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import gc, json
import app
demo, services = app.create_app(warm=False)
before = gc.get_freeze_count()
app.start_warming(services, freeze=True)
assert services.warmed.wait(60)
frozen = gc.get_freeze_count()
gc.collect()
scanned = len(gc.get_objects(generation=2))  # what a full collection still walks
print(json.dumps({"before": before, "frozen": frozen, "scanned": scanned}))
services.close()
"""


def test_warming_for_the_server_freezes_the_start_up_heap(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
           "OPENAI_API_KEY": "sk-test", "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"] == 0
    # Gradio, the UI and the OpenAI SDK: hundreds of thousands of objects are out of the collector's way,
    # and a full collection walks a small fraction of what it walked before.
    assert seen["frozen"] > 100_000, seen
    assert seen["scanned"] < seen["frozen"] / 10, seen
