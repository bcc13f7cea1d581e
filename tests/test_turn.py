"""The turn runner: retries before the first token only, timeouts, truncation, metrics, coalescing."""

from __future__ import annotations

import asyncio

import pytest

from chat.errors import AuthError, Overloaded, RateLimited, StreamError
from chat.providers.base import Provider
from chat.turn import Turn, TurnPolicy
from chat.types import Finish, FinishReason, Message, ModelInfo, Params, ReasoningDelta, TextDelta, Usage

MSGS = [Message(role="user", content="hi")]


class Scripted(Provider):
    """A provider whose attempts follow a script: each item is a list of events/exceptions/sleeps."""

    name = "scripted"
    label = "Scripted"
    accepts = frozenset({"temperature", "max_tokens"})

    def __init__(self, *attempts):
        self.attempts = list(attempts)
        self.calls = 0
        self.closed = 0

    async def stream(self, model, messages, params, *, tools=()):
        script = self.attempts[min(self.calls, len(self.attempts) - 1)]
        self.calls += 1
        try:
            for step in script:
                if isinstance(step, BaseException):
                    raise step
                if isinstance(step, (int, float)):
                    await asyncio.sleep(step)
                    continue
                yield step
        finally:
            self.closed += 1


def make_turn(provider, policy=None, sleeps=None):
    info = ModelInfo(provider="scripted", id="m", params=provider.accepts)

    async def fake_sleep(seconds):
        if sleeps is not None:
            sleeps.append(seconds)

    return Turn(provider, info, MSGS, Params(), policy=policy or TurnPolicy(), sleep=fake_sleep)


OK = [TextDelta("Hel"), TextDelta("lo"), Usage(3, 2), Finish(FinishReason.STOP, "stop", "m-2024")]


async def test_happy_path_collects_text_usage_and_metrics():
    turn = make_turn(Scripted(OK))
    events = [e async for e in turn.events()]
    r = turn.result
    assert r.text == "Hello"
    assert (r.input_tokens, r.output_tokens) == (3, 2)
    assert r.finish_reason is FinishReason.STOP and r.model_version == "m-2024"
    assert r.error is None and r.attempts == 1
    assert r.ttft_ms is not None and r.duration_ms >= r.ttft_ms
    assert isinstance(events[-1], Finish) and events[-1].reason is FinishReason.STOP
    assert sum(isinstance(e, Finish) for e in events) == 1


async def test_retries_transient_failures_before_first_token_with_backoff():
    sleeps: list[float] = []
    provider = Scripted([Overloaded(provider="x")], [RateLimited(provider="x", retry_after=2.0)], OK)
    turn = make_turn(provider, sleeps=sleeps)
    r = await turn.run()
    assert r.text == "Hello" and r.error is None
    assert provider.calls == 3 and r.attempts == 3
    assert 0.5 * 0.75 <= sleeps[0] <= 0.5  # exponential backoff with jitter
    assert sleeps[1] == 2.0  # Retry-After honoured


async def test_retry_after_beyond_cap_is_reported_not_waited():
    sleeps: list[float] = []
    provider = Scripted([RateLimited(provider="x", retry_after=3600)], OK)
    r = await make_turn(provider, sleeps=sleeps).run()
    assert provider.calls == 1 and sleeps == []
    assert isinstance(r.error, RateLimited) and r.finish_reason is FinishReason.ERROR


async def test_gives_up_after_max_attempts():
    provider = Scripted([Overloaded(provider="x")])
    r = await make_turn(provider, policy=TurnPolicy(max_attempts=3)).run()
    assert provider.calls == 3
    assert isinstance(r.error, Overloaded)


async def test_non_retryable_errors_are_not_retried():
    provider = Scripted([AuthError(provider="openai", env_var="OPENAI_API_KEY")], OK)
    r = await make_turn(provider).run()
    assert provider.calls == 1
    assert "OPENAI_API_KEY" in r.error.message


async def test_never_retries_after_first_token_and_keeps_partial_text():
    provider = Scripted([TextDelta("partial "), Overloaded(provider="x")], OK)
    r = await make_turn(provider).run()
    assert provider.calls == 1
    assert r.text == "partial "
    assert r.finish_reason is FinishReason.ERROR and isinstance(r.error, Overloaded)


async def test_stream_without_finish_marker_is_truncated():
    provider = Scripted([TextDelta("cut "), TextDelta("off")])
    r = await make_turn(provider).run()
    assert r.text == "cut off"
    assert r.finish_reason is FinishReason.TRUNCATED
    assert isinstance(r.error, StreamError) and "cut off" in r.error.message


async def test_first_token_timeout_is_the_whole_wait_not_one_per_attempt():
    provider = Scripted([5.0, TextDelta("late")])
    policy = TurnPolicy(first_token_timeout=0.05, max_attempts=2)
    r = await make_turn(provider, policy=policy).run()
    assert provider.calls == 1 and r.text == ""  # the deadline covers every attempt: none is left for a retry
    assert r.error.kind == "first_token_timeout"
    assert provider.closed == 1  # the timed-out stream was closed


async def test_idle_timeout_after_first_token_keeps_text():
    provider = Scripted([TextDelta("some "), 5.0, TextDelta("never")])
    policy = TurnPolicy(idle_timeout=0.05)
    r = await make_turn(provider, policy=policy).run()
    assert r.text == "some " and r.error.kind == "idle_timeout"
    assert provider.calls == 1


async def test_unexpected_provider_bug_keeps_partial_text():
    provider = Scripted([TextDelta("ok "), KeyError("boom")])
    r = await make_turn(provider).run()
    assert r.text == "ok " and r.finish_reason is FinishReason.ERROR
    assert "KeyError" in r.error.message


async def test_tokens_per_second_counts_reasoning_from_the_first_token():
    # One definition everywhere (chat.types.tokens_per_second): reasoning is output, timed from the first token.
    provider = Scripted([ReasoningDelta("think"), 0.2, TextDelta("a"), 0.05, TextDelta("b"), Usage(1, 12, 2), Finish(FinishReason.STOP)])
    r = await make_turn(provider).run()
    assert r.reasoning == "think" and r.text == "ab"
    assert r.tokens_per_second == pytest.approx(12 * 1000 / (r.duration_ms - r.ttft_ms))


async def test_updates_coalesce_a_fast_stream():
    n = 2000

    class Fast(Provider):
        name = "fast"

        async def stream(self, model, messages, params, *, tools=()):
            for i in range(n):
                yield TextDelta("x")
                if i % 50 == 0:
                    await asyncio.sleep(0.005)  # ~0.2 s in all, like a 10k tok/s stream
            yield Finish(FinishReason.STOP)

    turn = Turn(Fast(), ModelInfo(provider="fast", id="m"), MSGS, Params(), policy=TurnPolicy(coalesce_interval=0.05))
    lengths = [len(r.text) async for r in turn.updates()]
    assert lengths[0] >= 1 and lengths[-1] == n
    assert turn.result.finish_reason is FinishReason.STOP
    assert len(lengths) < 30  # ~0.2 s / 50 ms, plus first and last: not 2,000 updates


async def test_updates_send_first_token_immediately():
    provider = Scripted([TextDelta("a"), 0.3, TextDelta("b"), Finish(FinishReason.STOP)])
    turn = make_turn(provider, policy=TurnPolicy(coalesce_interval=1.0))
    loop = asyncio.get_running_loop()
    start = loop.time()
    it = turn.updates()
    first = await it.__anext__()
    assert first.text == "a" and loop.time() - start < 0.25
    rest = [r.text async for r in it]
    assert rest[-1] == "ab"


async def test_cancelling_updates_closes_the_provider_stream_and_marks_cancelled():
    provider = Scripted([TextDelta("a"), 10.0, TextDelta("b")])
    turn = make_turn(provider)

    async def consume():
        async for _ in turn.updates():
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert turn.result.finish_reason is FinishReason.CANCELLED
    assert turn.result.text == "a"
    assert provider.closed == 1


async def test_closing_updates_early_cancels_the_turn():
    provider = Scripted([TextDelta("a"), 10.0, TextDelta("b")])
    turn = make_turn(provider)
    it = turn.updates()
    assert (await it.__anext__()).text == "a"
    await it.aclose()
    assert turn.result.finish_reason is FinishReason.CANCELLED
    assert provider.closed == 1


def test_backoff_grows_and_caps():
    p = TurnPolicy(backoff_base=0.5, backoff_max=4.0)
    assert p.backoff(1, None) <= 0.5 and p.backoff(3, None) <= 2.0
    assert 3.0 <= p.backoff(10, None) <= 4.0
    assert p.backoff(1, 100.0) is None and p.backoff(1, 5.0) == 5.0


async def test_a_rest_between_updates_ends_at_its_time_or_when_the_task_ends_and_never_cancels_the_task():
    from chat.turn import _rest

    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    task = asyncio.create_task(release.wait())
    t0 = loop.time()
    await _rest(loop, task, 0.05)
    assert 0.04 <= loop.time() - t0 < 1 and not task.done()
    resting = asyncio.create_task(_rest(loop, task, 30))
    await asyncio.sleep(0.01)
    resting.cancel()  # the consumer goes away (Stop): the task keeps running
    with pytest.raises(asyncio.CancelledError):
        await resting
    assert not task.cancelled() and not task.done()
    t0 = loop.time()
    loop.call_later(0.05, release.set)
    await _rest(loop, task, 30)  # woken by the task's end, not after 30 s
    assert loop.time() - t0 < 5 and task.done()
