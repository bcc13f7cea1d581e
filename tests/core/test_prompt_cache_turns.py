"""Anthropic prompt caching over a long conversation (issue 18), through the chat use case: turn N+1 reads what
turn N wrote, the stored usage says so, and the cost uses the cache prices. Real storage on SQLite and PostgreSQL;
the real anthropic SDK against the fake, which reports cache usage as the real API does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from chat.types import Message
from compare.pricing import PriceTable
from core.chat import ChatTurns, Update
from core.usage import usage_of
from tests.core.test_chat_turns import make_services, owner, run
from tests.fakes import FakeServer, Scenario

MODEL = "claude-sonnet-4-6"


@pytest.fixture
def own_fake() -> Iterator[FakeServer]:
    """A fake of this test's own: its prompt cache starts empty."""
    with FakeServer(api_key="test-key") as srv:
        srv.set_scenario(MODEL, Scenario(tokens=12))
        yield srv


def conversation(turns: int) -> list[Message]:
    """`turns` earlier exchanges of about twenty words each way."""
    out: list[Message] = []
    for i in range(turns):
        out.append(Message(role="user", content=f"Question {i}: " + " ".join(f"about{i}-{w}" for w in range(18))))
        out.append(Message(role="assistant", content=f"Answer {i}: " + " ".join(f"because{i}-{w}" for w in range(18))))
    return out


def stored_usage(services, who: str) -> list[tuple]:
    with services.engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(
            "select m.input_tokens, m.cached_input_tokens, m.cache_write_tokens from message m join conversation c "
            "on c.id = m.conversation_id where c.owner = :o and m.role = 'assistant' order by c.created_at"), {"o": who})]


async def test_the_second_turn_of_a_30_turn_conversation_is_billed_mostly_as_cache_reads(own_fake, engine):
    services = make_services(own_fake, engine)
    try:
        who, turns = owner(), ChatTurns(services)
        history = conversation(30)
        first = (await run(turns, who, "Question 30: what next?", model=f"anthropic:{MODEL}", context=history,
                           system_prompt="You are a careful assistant."))[-1]
        assert isinstance(first, Update)
        one = usage_of(first.result)
        assert one.cache_write_tokens and one.cache_write_tokens > 0.8 * one.input_tokens, "turn N writes the prefix"
        history += [Message(role="user", content="Question 30: what next?"), Message(role="assistant", content=first.result.text)]
        second = (await run(turns, who, "Question 31: and then?", model=f"anthropic:{MODEL}", context=history,
                            system_prompt="You are a careful assistant."))[-1]
        assert isinstance(second, Update)
        two = usage_of(second.result)
        assert not two.estimated and two.input_tokens and two.cached_input_tokens
        assert two.cached_input_tokens / two.input_tokens > 0.8, f"turn N+1 reads what turn N wrote: {two}"
        assert two.cached_input_tokens == one.input_tokens, "exactly the previous request's prompt is read back"
        assert stored_usage(services, who) == [(one.input_tokens, 0, one.cache_write_tokens),
                                               (two.input_tokens, two.cached_input_tokens, two.cache_write_tokens)]
        # The cost with the cache prices (Sonnet: input 3, reads 0.30, writes 3.75, output 15 USD per million).
        plain = two.input_tokens - two.cached_input_tokens - (two.cache_write_tokens or 0)
        expected = (plain * 3 + two.cached_input_tokens * 0.30 + (two.cache_write_tokens or 0) * 3.75
                    + two.output_tokens * 15) / 1e6
        cost = PriceTable().usage_cost(f"anthropic:{MODEL}", two)
        assert cost == pytest.approx(expected)
        uncached = PriceTable().cost(f"anthropic:{MODEL}", two.input_tokens, two.output_tokens)
        assert cost is not None and uncached is not None and cost < 0.35 * uncached
    finally:
        services.close()
