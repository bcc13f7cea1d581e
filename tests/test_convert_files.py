"""ui/convert.py with files: Gradio's message and history shapes (browser and gradio_client) and stored attachments."""

from __future__ import annotations

from types import SimpleNamespace

from ui.convert import REFUSED_MARK, history_has_files, message_files, refusal_notice, stored_to_chatbot, to_messages, user_texts

BROWSER = [  # what Chatbot.preprocess hands the chat function
    {"role": "user", "content": [{"type": "file", "file": {"path": "/tmp/gradio/a/chart.png"}}, {"type": "file", "file": {"path": "/tmp/gradio/b/x.pdf"}}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A chart and a paper."}]},
]
CLIENT = [  # the server-side history of a gradio_client session
    {"role": "user", "content": [{"path": "/tmp/gradio/a/chart.png"}, "What is it?"]},
    {"role": "assistant", "content": "A chart."},
]


def test_the_new_messages_files_in_every_shape():
    assert message_files("plain text") == []
    assert message_files({"text": "hi", "files": ["/tmp/gradio/a/chart.png"]}) == ["/tmp/gradio/a/chart.png"]
    assert message_files({"text": "hi", "files": [{"path": "/tmp/gradio/a/c.png", "meta": {"_type": "gradio.FileData"}}]}) == ["/tmp/gradio/a/c.png"]
    assert message_files({"text": "hi", "files": "not a list"}) == []


def test_a_message_of_files_only_stays_in_the_context_so_its_stored_files_can_be_put_back():
    messages = to_messages(BROWSER)
    assert [(m.role, m.content) for m in messages] == [("user", ""), ("assistant", "A chart and a paper.")]
    assert user_texts(BROWSER) == [""]
    assert history_has_files(BROWSER) and history_has_files(CLIENT)
    assert not history_has_files([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])


def test_a_refused_message_with_files_does_not_count():
    refused = [CLIENT[0], refusal_notice("chart.png is an image...", REFUSED_MARK)]
    assert not history_has_files(refused)
    assert to_messages(refused) == []


def test_stored_attachments_render_as_files_or_name_themselves_when_not_written():
    ref = SimpleNamespace(id="id-1", name="chart.png", mime="image/png", size=2048)
    gone = SimpleNamespace(id="id-2", name="paper.pdf", mime="application/pdf", size=1_300_000)
    row = SimpleNamespace(role="user", content="Look", attachments=[ref, gone])
    [bubble] = stored_to_chatbot([row], files={"id-1": "/tmp/gradio/parley-attachments/x/chart.png"})
    file_part, missing, text = bubble["content"]
    assert file_part == {"type": "file", "file": {"path": "/tmp/gradio/parley-attachments/x/chart.png", "orig_name": "chart.png",
                                                  "size": 2048, "mime_type": "image/png"}}
    assert missing["text"].startswith("📎 paper.pdf (1.2 MB")
    assert text == {"type": "text", "text": "Look"}
