"""Output moderation (issue 18, core.moderation): a reply checked beside its stream and at its end, through the
real openai SDK against the fake's moderation endpoint (flags any text with FLAGME); real storage on SQLite and
PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import aclosing

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from chat.types import Params
from core.chat import ChatTurns, Flagged, Update
from core.compare_run import CompareRun, Pane
from core.moderation import ModerationSettings, Moderator
from core.ratelimit import Identity
from core.services import Services
from core.store import FLAGGED_ERROR
from storage.stats import usage_stats
from tests.core.test_chat_turns import make_services, owner, run
from tests.fakes import FakeServer, Scenario

MODERATION = "omni-moderation-latest"  # the moderation model the SDK names by default: its scenario steers the fake


@pytest.fixture
def own_fake() -> Iterator[FakeServer]:
    """A fake of this test's own: its moderation endpoint is slowed or broken without touching other tests."""
    with FakeServer(api_key="test-key") as srv:
        yield srv


def model(srv: FakeServer, provider: str = "openai", **knobs) -> str:
    name = f"modout-{uuid.uuid4().hex[:8]}"
    srv.set_scenario(name, Scenario(**knobs))
    return f"{provider}:{name}"


async def snapshots(turns: ChatTurns, who: str, text: str, **kwargs) -> tuple[list[tuple[str, bool]], object]:
    """(text, done) of every Update as it was yielded (the result is one object updated in place), and the last event."""
    shown: list[tuple[str, bool]] = []
    last = None
    async with aclosing(turns.send(owner=who, identity=Identity(who), text=text, **kwargs)) as events:
        async for last in events:
            if isinstance(last, Update):
                shown.append((last.result.text, last.result.done))
    return shown, last


def replies(services: Services, who: str) -> list[dict]:
    with services.engine.connect() as c:
        return [dict(r) for r in c.execute(sa.text(
            "select m.content, m.reasoning, m.finish_reason, m.error, m.output_tokens from message m "
            "join conversation c on c.id = m.conversation_id where c.owner = :o and m.role = 'assistant' "
            "order by c.created_at, m.position"), {"o": who}).mappings()]


def moderation_inputs(srv: FakeServer) -> list[str]:
    return [str(r.json.get("input")) for r in srv.requests if r.path.endswith("/moderations")]


async def test_a_flagged_reply_is_withheld_stored_flagged_and_counted_apart_from_errors(fake_server, engine):
    services = make_services(fake_server, engine, MODERATION="openai", MODERATION_EVERY_CHARS="0")
    try:
        who, turns = owner(), ChatTurns(services)
        fine = await run(turns, who, "hello", model=model(fake_server, text="A harmless answer."))
        bad = model(fake_server, "anthropic", text="Here is something you should not read: FLAGME and more",
                    reasoning="private thoughts")
        streamed, last = await snapshots(turns, who, "tell me", model=bad, conversation_id=fine[-1].conversation_id,
                                         shown=["hello"])
        assert isinstance(last, Flagged) and last.categories == ("harassment",)
        assert "withheld" in last.reply and "FLAGME" not in last.reply
        # MODERATION_EVERY_CHARS=0: one check, of the whole reply, before its final update goes out.
        assert not any(done for _, done in streamed), "the finished reply never went out"
        assert moderation_inputs(fake_server)[-1] == "Here is something you should not read: FLAGME and more"
        stored = replies(services, who)
        assert stored[0]["finish_reason"] == "stop" and stored[0]["content"] == "A harmless answer."
        flagged = stored[1]
        assert flagged["content"] == last.reply and flagged["reasoning"] is None
        assert flagged["finish_reason"] == "content_filter" and flagged["error"] == f"{FLAGGED_ERROR}: harassment"
        assert flagged["output_tokens"] >= 10, "the billed usage stays with the withheld reply"
        with Session(services.engine) as session:
            [stats] = [s for s in usage_stats(session=session, owner=who) if s.model == bad.split(":")[1]]
        assert stats.refused_rate == 1.0 and stats.error_rate == 0.0, "a withheld reply is refused, not an error"
    finally:
        services.close()


async def test_an_in_stream_check_stops_the_reply_and_replaces_what_was_shown(fake_server, engine):
    services = make_services(fake_server, engine, MODERATION="openai", MODERATION_EVERY_CHARS="30")
    try:
        who = owner()
        words = ["FLAGME"] + [f"word{i}" for i in range(400)]
        bad = model(fake_server, text=" ".join(words), rate=100)
        streamed, last = await snapshots(ChatTurns(services), who, "go on", model=bad)
        assert isinstance(last, Flagged) and "withheld" in last.reply
        assert streamed and streamed[0][0].startswith("FLAGME"), "what streamed before the verdict was shown..."
        record = [r for r in fake_server.stream_log if r.model == bad.split(":")[1]][-1]
        fake_server.wait_for(lambda: record.ended is not None, timeout=10)  # the fake sees the hang-up a moment later
        assert record.client_closed and record.tokens_sent < len(words), "...and the verdict stopped the stream"
        [stored] = replies(services, who)
        assert stored["content"] == last.reply and stored["finish_reason"] == "content_filter"
        assert "FLAGME" not in stored["content"]
    finally:
        services.close()


async def test_a_slow_moderation_endpoint_does_not_hold_the_stream(own_fake, engine, monkeypatch):
    own_fake.set_scenario(MODERATION, Scenario(delay=3.0))
    services = make_services(own_fake, engine, MODERATION="openai", MODERATION_EVERY_CHARS="10")
    order: list[tuple[str, int]] = []
    check = Moderator.check

    async def spy(self, text: str, what: str = "message"):
        order.append(("check-start", len(text)))
        try:
            return await check(self, text, what)
        finally:
            order.append(("check-end", len(text)))

    monkeypatch.setattr(Moderator, "check", spy)
    try:
        who = owner()
        name = model(own_fake, text=" ".join(f"w{i}" for i in range(30)), rate=20)
        async with aclosing(ChatTurns(services).send(owner=who, identity=Identity(who), text="hi", model=name)) as feed:
            async for event in feed:
                if isinstance(event, Update):
                    order.append(("update", len(event.result.text)))
        first = next(i for i, e in enumerate(order) if e[0] == "update")  # the message's own check comes before
        start = next(i for i in range(first, len(order)) if order[i][0] == "check-start")
        end = next(i for i in range(start, len(order)) if order[i] == ("check-end", order[start][1]))
        during = [n for kind, n in order[start:end] if kind == "update"]
        assert len(during) >= 3 and during == sorted(during) and during[-1] > during[0], \
            f"the reply kept streaming while its first check was out: {order}"
        # The final update waits for the check of the whole reply. Updates share one result object, so
        # the last streamed update can already read as done and be held by that check too: then the
        # final one follows it, with nothing left to check (a CI run saw that order).
        whole = order[-1][1]
        ended = max((i for i, e in enumerate(order) if e == ("check-end", whole)), default=None)
        assert ended is not None and order[ended + 1:] and set(order[ended + 1:]) == {("update", whole)}, \
            f"the final update waits for the check of the whole reply: {order}"
    finally:
        services.close()


async def test_a_moderation_endpoint_that_is_down_lets_the_reply_through_with_a_warning(own_fake, engine, caplog):
    own_fake.set_scenario(MODERATION, Scenario(fail_status=500, fail_times=1000))
    services = make_services(own_fake, engine, MODERATION="openai", MODERATION_EVERY_CHARS="5")
    caplog.set_level(logging.WARNING, logger="parley.moderation")
    try:
        who = owner()
        events = await run(ChatTurns(services), who, "hi", model=model(own_fake, text="FLAGME but nobody can check it"))
        assert isinstance(events[-1], Update) and events[-1].result.text == "FLAGME but nobody can check it"
        assert replies(services, who)[0]["finish_reason"] == "stop"
        assert moderation_inputs(own_fake), "the check was tried"
        assert any("let through" in r.getMessage() for r in caplog.records if r.name == "parley.moderation")
    finally:
        services.close()


async def test_a_flagged_compare_pane_is_withheld_and_the_other_pane_is_not(fake_server, engine):
    services = make_services(fake_server, engine, MODERATION="openai", MODERATION_EVERY_CHARS="0")
    try:
        refs = [model(fake_server, text="A fine answer."), model(fake_server, text="A FLAGME answer.")]
        panes = [Pane(*services.registry.resolve(ref), Params()) for ref in refs]
        good, bad = await CompareRun(services, owner(), "compare this", panes).run()
        assert good.text == "A fine answer." and good.finish_reason.value == "stop"
        assert "withheld" in bad.text and "FLAGME" not in bad.text
        assert bad.finish_reason.value == "content_filter" and bad.error and bad.error.message == f"{FLAGGED_ERROR}: harassment"
        with services.engine.connect() as c:
            stored = {r[0]: r[1:] for r in c.execute(sa.text(
                "select content, finish_reason, error from message where role = 'assistant' and content like '%answer%' "
                "or content like '%withheld%'"))}
        assert stored[bad.text] == ("content_filter", f"{FLAGGED_ERROR}: harassment")
        assert not any("FLAGME" in content for content in stored)
    finally:
        services.close()


def test_moderation_settings_read_from_the_environment():
    assert ModerationSettings.from_env({}) == ModerationSettings(every_chars=2000, timeout=10.0)
    assert ModerationSettings.from_env({"MODERATION_EVERY_CHARS": "0", "MODERATION_TIMEOUT": "2.5"}) == \
        ModerationSettings(every_chars=0, timeout=2.5)
    with pytest.raises(ValueError, match="MODERATION_EVERY_CHARS"):
        ModerationSettings.from_env({"MODERATION_EVERY_CHARS": "-1"})
