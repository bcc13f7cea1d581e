"""chat.context: trimming a conversation to the context budget, files first (oldest first), then messages."""

from __future__ import annotations

import pytest

import chat.context as context
from chat.attachments import attachment_tokens
from chat.context import left_out_note, message_tokens, trim_messages
from chat.providers.demo import DemoProvider
from chat.turn import Turn
from chat.types import PDF_MIME, Attachment, Message, ModelInfo, Params


def image(name: str, side: int = 2000) -> Attachment:
    return Attachment(name=name, mime="image/png", width=side, height=side, size=1000, sha256=name)


def user(text: str, *files: Attachment) -> Message:
    return Message(role="user", content=text, attachments=files)


def reply(text: str) -> Message:
    return Message(role="assistant", content=text)


def test_text_only_trimming_is_as_before_and_never_prices_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "attachment_tokens", lambda *a: pytest.fail("priced a file in a text-only chat"))
    system = Message(role="system", content="be brief")
    msgs = [system, user("a" * 400), reply("b" * 400), user("c" * 400), reply("d" * 400), user("e" * 40)]
    # 104 tokens each for the long ones, 14 for the last, 6 for the system prompt: 230 fit the newest three.
    kept, dropped = trim_messages(msgs, 230 + 100, 100)
    assert kept == [system, msgs[3], msgs[4], msgs[5]] and dropped == 2
    kept, dropped = trim_messages(msgs, 100_000, 100, provider="anthropic")
    assert kept == msgs and dropped == 0


def test_a_tool_result_is_not_kept_without_its_call() -> None:
    call = Message(role="assistant", content="", tool_calls=())
    tool = Message(role="tool", content="r" * 400, tool_call_id="t1")
    msgs = [user("q"), call, tool, user("next")]
    # Room for the tool result (104) and the last message (5) but not the call (4) that asked for it.
    kept, dropped = trim_messages(msgs, 111 + 50, 50)
    assert kept == [msgs[3]] and dropped == 3


def test_message_tokens_count_files_with_the_provider_formula() -> None:
    m = user("look", image("a.png"))
    assert message_tokens(m, "openai") == 4 + 1 + attachment_tokens(image("a.png"), "openai")
    assert message_tokens(m, "gemini") - message_tokens(m, "openai") == 9 * 258 - 765


def test_oldest_files_go_first_with_a_note_and_the_newest_message_keeps_its_files() -> None:
    a, b, c = image("a.png"), image("b.png"), image("c.png")
    msgs = [user("first", a), reply("ok"), user("second", b), reply("ok"), user("third", c)]
    per_image = attachment_tokens(a, "openai")  # 765
    text = sum(message_tokens(m.model_copy(update={"attachments": ()}), "openai") for m in msgs)
    # Room for the text and two images (plus the note line): only the oldest file goes.
    budget = text + 2 * per_image + 20
    kept, dropped = trim_messages(msgs, budget + 10, 10, provider="openai")
    assert dropped == 0
    assert kept[0].content == "first\n\n" + left_out_note("a.png") == "first\n\n[a.png was left out to fit the context window]"
    assert kept[0].attachments == () and kept[2].attachments == (b,) and kept[4].attachments == (c,)
    # Room for one image: both older files go, oldest first; the newest message's file stays.
    kept, dropped = trim_messages(msgs, text + per_image + 40 + 10, 10, provider="openai")
    assert dropped == 0 and [m.attachments for m in kept] == [(), (), (), (), (c,)]
    assert kept[2].content == "second\n\n[b.png was left out to fit the context window]"
    # Not even room for the newest file: it is still sent (the provider says if it is too long).
    kept, _ = trim_messages(msgs, 100 + 10, 10, provider="openai")
    assert kept[-1].attachments == (c,)


def test_several_files_in_one_message_go_in_order_and_share_one_note_block() -> None:
    a, b = image("a.png"), image("b.png")
    msgs = [user("both", a, b), reply("ok"), user("now")]
    per_image = attachment_tokens(a, "openai")
    text = sum(message_tokens(m.model_copy(update={"attachments": ()}), "openai") for m in msgs)
    kept, _ = trim_messages(msgs, text + per_image + 20 + 10, 10, provider="openai")
    assert kept[0].attachments == (b,)
    assert kept[0].content == "both\n\n[a.png was left out to fit the context window]"
    kept, _ = trim_messages(msgs, text + 40 + 10, 10, provider="openai")
    assert kept[0].attachments == ()
    assert kept[0].content == "both\n\n" + left_out_note("a.png") + "\n" + left_out_note("b.png")


def test_files_go_before_any_message_then_messages_as_before() -> None:
    big = Attachment(name="p.pdf", mime=PDF_MIME, pages=50, text="x" * 40_000)
    msgs = [user("old " + "o" * 4000, big), reply("r" * 4000), user("new")]
    kept, dropped = trim_messages(msgs, 1500, 10, provider="anthropic")
    # The PDF went first; then the text still did not fit, so the oldest message went as before.
    assert dropped == 1 and kept == [msgs[1], msgs[2]]
    kept, dropped = trim_messages(msgs, 2 * 1010 + 20 + 100, 10, provider="anthropic")
    assert dropped == 0 and kept[0].attachments == () and kept[0].content.endswith(left_out_note("p.pdf"))


def test_the_provider_decides_what_fits() -> None:
    msgs = [user("x", image("a.png")), reply("ok"), user("y")]
    budget = 1700 + 10  # Anthropic: about 1,600 tokens for this image; Gemini: 9 tiles of 258
    assert trim_messages(msgs, budget, 10, provider="anthropic")[0][0].attachments
    assert not trim_messages(msgs, budget, 10, provider="gemini")[0][0].attachments


def test_a_turn_trims_with_its_model_s_provider() -> None:
    msgs = [user("x", image("a.png")), reply("ok"), user("y")]
    for provider, kept_file in (("anthropic", True), ("gemini", False)):
        info = ModelInfo(provider=provider, id="m", context_window=1700 + 2048)
        turn = Turn(DemoProvider(), info, msgs, Params(max_tokens=2048))
        assert bool(turn.messages[0].attachments) is kept_file
