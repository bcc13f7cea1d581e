"""Issue 17's rough edges that need no browser: error notices that are not cut off (item 3), the advice for a
wrong pasted key (item 6), a prompt the provider filtered counted as a refusal (item 7), and charts with
nothing to draw sent as no chart at all (item 7: Vega's "Infinite extent" warning)."""

from __future__ import annotations

import pandas as pd
import pytest

from chat.errors import AuthError, SafetyBlocked, StreamError
from chat.providers.anthropic import AnthropicProvider
from chat.providers.gemini import GeminiProvider
from chat.providers.openai import OpenAIProvider
from chat.registry import Registry, Settings
from chat.turn import Turn, TurnPolicy, TurnResult
from chat.types import FinishReason, Message, Params
from ui.chat import notice, refused
from ui.compare.view import reply_bubbles as pane_bubbles
from ui.convert import reply_bubbles, stored_to_chatbot
from ui.dashboard import plot_update
from ui.notices import notice_title

MID_REPLY = ("OpenAI reported an error mid-reply (The server had an error while processing your request. Sorry about "
             "that!); the reply was cut off. Press Retry to try again.")


def titles(bubbles) -> list[str]:
    return [(b.metadata if hasattr(b, "metadata") else b.get("metadata") or {}).get("title", "") for b in bubbles]


def test_a_folded_notice_shows_its_whole_first_sentence_and_the_advice():
    # Every place that folds a notice: a live or stored chat reply, a plain notice, a compare pane.
    live = reply_bubbles(text="lorem", reasoning="", label="m", finished=False, finish_reason="error", error=MID_REPLY,
                         ttft_ms=None, tokens_per_second=None, output_tokens=None)
    stored = stored_to_chatbot([{"role": "assistant", "content": "lorem", "provider": "openai", "model": "m",
                                 "finish_reason": "error", "error": MID_REPLY}])
    result = TurnResult(provider="openai", model="m", finish_reason=FinishReason.ERROR, error=StreamError(MID_REPLY))
    pane = pane_bubbles(result)
    for bubbles in (live, stored, notice(MID_REPLY), pane):
        [title] = [t for t in titles(bubbles) if t.startswith("⚠️ ")]
        assert "Sorry about that!)" in title, "the bracket the vendor's message opened is closed"
        assert title.endswith("Press Retry to try again."), "the advice shows without unfolding"


def test_a_long_notice_keeps_its_advice_and_closes_what_it_cuts():
    vendor = "x " * 200
    text = f"OpenAI refused the request (HTTP 400: {vendor}). Press Retry to try again."
    title = notice_title(text)
    assert len(title) <= 240 and title.endswith(". Press Retry to try again.")
    assert title.count("(") == title.count(")"), title


def test_a_refusal_says_why_and_what_to_do_in_its_title():
    [bubble] = refused("This message is 12,345 characters long; the limit is 40. Shorten it and send again.")
    title = bubble.metadata["title"]
    assert title.startswith("⚠️ Not sent: This message is 12,345 characters long; the limit is 40.")
    assert title.endswith("Shorten it and send again."), title
    assert "Undo" in bubble.content, "how to get the text back stays in the notice's body"


# -- item 6: a wrong pasted key ---------------------------------------------------------------------------

PROVIDERS = {
    "openai": ("OpenAI", lambda srv: OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url)),
    "anthropic": ("Anthropic", lambda srv: AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url)),
    "gemini": ("Google Gemini", lambda srv: GeminiProvider(api_key="test-key", base_url=srv.gemini_base_url)),
}


@pytest.mark.parametrize("name", sorted(PROVIDERS))
async def test_a_wrong_pasted_key_gets_advice_about_that_key_not_the_env(fake_server, name):
    label, make = PROVIDERS[name]
    registry = Registry(Settings())
    registry.register(make(fake_server))
    provider, info = registry.resolve_with_key(f"{name}:fast", "sk-pasted-but-wrong")
    r = await Turn(provider, info, [Message(role="user", content="hi")], Params(), policy=TurnPolicy(max_attempts=1)).run()
    await provider.aclose()
    assert isinstance(r.error, AuthError), r.error
    message = r.error.message
    assert f"The {label} API key you pasted was refused" in message, message
    assert ".env" not in message and "_API_KEY" not in message, message

    # The server's own key, refused, still points at the variable it came from.
    server = make(fake_server)
    server._api_key = "wrong-server-key"  # noqa: SLF001 - the server's key as read from a bad .env
    r = await Turn(server, info, [Message(role="user", content="hi")], Params(), policy=TurnPolicy(max_attempts=1)).run()
    await server.aclose()
    assert isinstance(r.error, AuthError) and server.key_env_var in r.error.message and "pasted" not in r.error.message


# -- item 7: a filtered prompt is a refusal; no empty chart is drawn ------------------------------------------

async def test_a_prompt_the_provider_filtered_ends_as_a_refusal_not_an_error(fake_server):
    provider = OpenAIProvider(api_key="test-key", base_url=fake_server.openai_base_url)
    r = await Turn(provider, provider.model_info("prompt-blocked"), [Message(role="user", content="hi")], Params(),
                   policy=TurnPolicy(max_attempts=1)).run()
    await provider.aclose()
    assert isinstance(r.error, SafetyBlocked), r.error
    assert r.finish_reason == FinishReason.CONTENT_FILTER, "the dashboard counts it with the refusals"
    assert "Rephrase" in r.error.message


def test_a_chart_with_nothing_to_draw_is_hidden_without_a_value():
    empty = plot_update(pd.DataFrame(columns=["Label", "Tok/s"]))
    assert empty["visible"] is False and empty["value"] is None
    full = plot_update(pd.DataFrame([{"Label": "a:b", "Tok/s": 3.0}]), title="t")
    assert full["visible"] is True and len(full["value"]) == 1 and full["title"] == "t"
