"""The batch tab with files: a prompt's `"files"` are matched by name to the files uploaded beside the prompts file."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import uuid

import pytest
from PIL import Image

from tests.fakes import Scenario
from tests.test_batch_ui import ALICE, collect, make_view, prompts_file
from ui.files import upload_folder


@pytest.fixture
def uploads():
    """A folder inside Gradio's upload folder, where the tab's uploads are (the handler takes no other path)."""
    folder = upload_folder() / f"test-batch-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def chart(folder) -> str:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), "teal").save(out, "PNG")
    path = folder / "chart.png"
    path.write_bytes(out.getvalue())
    return str(path)


def run(view, file, models, attachments):
    return asyncio.run(collect(view.handlers.run(file, models, 2, "", None, None, None, ALICE, None, attachments)))


def test_a_prompt_naming_an_uploaded_file_sends_it(fake_server, tmp_path, uploads):
    fake_server.set_scenario("claude-sonnet-4-6", Scenario(text="A teal rectangle. ", tokens=4))
    view = make_view(fake_server, tmp_path)
    file = prompts_file(tmp_path, [json.dumps({"id": "c1", "prompt": "What is this?", "files": ["chart.png"]})])
    before = len(fake_server.requests)
    final = run(view, file, ["anthropic:claude-sonnet-4-6"], [chart(uploads)])[-1]
    assert "Finished" in final[view.status] and "1/1 done" in final[view.status], final[view.status]
    sent = [r for r in fake_server.requests[before:] if r.model == "claude-sonnet-4-6"]
    assert [b["type"] for b in sent[-1].json["messages"][-1]["content"]] == ["image", "text"]


def test_a_named_file_that_was_not_uploaded_refuses_the_run_before_any_call(fake_server, tmp_path, uploads):
    view = make_view(fake_server, tmp_path)
    file = prompts_file(tmp_path, [json.dumps({"prompt": "What is this?", "files": ["missing.png"]})])
    before = len(fake_server.requests)
    final = run(view, file, ["anthropic:claude-sonnet-4-6"], [chart(uploads)])[-1]
    assert "missing.png" in final[view.status]
    assert len(fake_server.requests) == before


def test_a_file_outside_the_upload_folder_is_refused(fake_server, tmp_path):
    view = make_view(fake_server, tmp_path)
    file = prompts_file(tmp_path, [json.dumps({"prompt": "What is this?", "files": ["passwd"]})])
    final = run(view, file, ["anthropic:claude-sonnet-4-6"], ["/etc/passwd"])[-1]
    assert "not an upload" in final[view.status]
