"""The reproducibility card under a reply: folded into the metrics line (chat) or a folded bubble (compare), never
sent as context, and under a blind pane only once the vote has named the model."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from chat.providers.demo import DemoProvider
from chat.turn import TurnResult
from chat.types import FinishReason
from core.chat import Update
from ui.chat import bubbles
from ui.convert import stored_to_chatbot, to_messages
from ui.repro_card import CARD_TITLE, pane_card_bubble

STORED = [
    SimpleNamespace(role="user", content="hi", attachments=[]),
    SimpleNamespace(role="assistant", content="hello", reasoning=None, provider="openai", model="gpt-x",
                    model_version="gpt-x-2026", params={"temperature": 0.5}, finish_reason="stop", error=None, ttft_ms=100,
                    duration_ms=500, output_tokens=10, input_tokens=5, usage_estimated=False, cached_input_tokens=None,
                    tool_calls=None, request_id="req_abc123", sdk_version="openai 3.57.0",
                    system_prompt_sha256="0123456789abcdef", created_at=datetime(2026, 12, 2, 12, 0, tzinfo=UTC)),
]


def test_a_stored_reply_folds_its_card_into_the_metrics_line_and_it_is_never_context() -> None:
    value = stored_to_chatbot(STORED)
    metrics = value[-1]
    assert metrics["metadata"]["title"].startswith("openai:gpt-x") and metrics["metadata"]["status"] == "done"
    for shown in ("`req_abc123`", "`openai 3.57.0`", "`0123456789abcdef`", "`gpt-x-2026`", '`{"temperature": 0.5}`',
                  "2026-12-02T12:00:00+00:00"):
        assert shown in metrics["content"]
    assert len(value) == 3, "no extra chat message: the branches page matches messages to the stored path"
    assert [(m.role, m.content) for m in to_messages(value)] == [("user", "hi"), ("assistant", "hello")]


def test_a_live_reply_shows_its_card_once_it_has_finished() -> None:
    result = TurnResult(provider="demo", model="parley-demo")
    result.add_text("Hello")
    card = {"provider": "demo", "model": "parley-demo", "model_version": "demo/parley-demo", "params": {},
            "system_prompt_sha256": None, "request_id": None, "time": "2026-12-02T12:00:00+00:00", "sdk_version": "demo"}
    streaming = bubbles(Update(result, "Demo", (), None))
    assert all("SDK" not in (b.content or "") for b in streaming)
    result.finish_reason = FinishReason.STOP
    done = bubbles(Update(result, "Demo", (), None, card=card))
    assert "**SDK**: `demo`" in done[-1].content and "**Request id**: not recorded" in done[-1].content


def test_a_compare_pane_card_is_made_only_for_a_finished_reply() -> None:
    provider = DemoProvider()
    info = provider.model_info("parley-demo") if hasattr(provider, "model_info") else None
    result = TurnResult(provider="demo", model="parley-demo")
    pane = SimpleNamespace(provider=provider, info=info or SimpleNamespace(provider="demo", id="parley-demo"),
                           turn=SimpleNamespace(result=result), sent_params={"max_tokens": 64}, system_prompt="Be brief.")
    assert pane_card_bubble(pane) == []
    result.finish_reason = FinishReason.STOP
    (bubble,) = pane_card_bubble(pane)
    assert bubble["metadata"] == {"title": CARD_TITLE, "status": "done"}
    assert '`{"max_tokens": 64}`' in bubble["content"] and "**SDK**: `demo`" in bubble["content"]
