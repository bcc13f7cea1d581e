"""Reading a slow stream at the reader's pace (chat/pace.py): the OpenAI reader takes the body straight from aiohttp,
rests between reads until the chat's next update, and still reads the first token and the end at once."""

from __future__ import annotations

import asyncio
import time

from chat.pace import PACE, Pace
from chat.providers.openai import OpenAIProvider, _AiohttpBody, direct_body
from chat.providers.openai_stream import sse_data
from chat.turn import Turn, TurnPolicy
from chat.types import Message, Params
from tests.fakes.scenarios import default_tokens

MSGS = [Message(role="user", content="hi")]


class Pieces:
    """A Body that hands out scripted reads and records the rests it is asked for."""

    def __init__(self, *pieces: bytes):
        self.pieces = list(pieces)
        self.rests: list[float] = []

    async def read(self) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""

    async def rest(self, until: float) -> None:
        self.rests.append(until)


def event(text: str) -> bytes:
    return b'data: {"t": "' + text.encode() + b'"}\n\n'


async def _read(body, pace=None):
    token = PACE.set(pace)
    try:
        return [d async for d in sse_data(None, body)]
    finally:
        PACE.reset(token)


async def test_without_a_pace_nothing_rests():
    body = Pieces(event("a"), event("b") + event("c"), b"data: [DONE]\n\n")
    assert await _read(body) == [b'{"t": "a"}', b'{"t": "b"}', b'{"t": "c"}']
    assert body.rests == []


async def test_a_slow_stream_rests_until_the_next_update_and_a_fast_one_stops_resting():
    pace = Pace()
    pace.due = asyncio.get_running_loop().time() + 60
    big = event("x" * 40_000)
    body = Pieces(event("a"), event("b"), big, event("c"), b"data: [DONE]\n\n")
    assert len(await _read(body, pace)) == 4
    assert body.rests == [pace.due, pace.due]  # after "a" and "b"; after the 40 kB read, never again


async def test_a_due_time_already_past_reads_on():
    pace = Pace()  # due 0: before the first update
    body = Pieces(event("a"), event("b"), b"data: [DONE]\n\n")
    assert len(await _read(body, pace)) == 2
    assert body.rests == []


async def test_framing_keeps_split_lines_multi_line_data_and_a_last_event_without_its_blank_line():
    body = Pieces(b"data: {\"a\"", b": 1}\r\n\r\n: keep-alive\n\nevent: x\ndata: one\ndata: two\n\n", b"data: last")
    assert await _read(body) == [b'{"a": 1}', b"one\ntwo", b"last"]


def test_only_an_unencoded_aiohttp_body_is_read_directly():
    class Content:
        def readany(self): ...

        def on_eof(self, callback): ...

    present = Content()

    def response(encoding=None, content=present):
        inner = type("S", (), {"_aiohttp_response": type("R", (), {"content": content})()})()
        headers = {"content-encoding": encoding} if encoding else {}
        return type("Resp", (), {"stream": type("B", (), {"_stream": inner})(), "headers": headers})()

    assert isinstance(direct_body(response()), _AiohttpBody)
    assert isinstance(direct_body(response("identity")), _AiohttpBody)
    assert direct_body(response("gzip")) is None
    assert direct_body(response(content=None)) is None
    assert direct_body(type("Resp", (), {"stream": object(), "headers": {}})()) is None


async def _updates(fake_server, model, interval):
    provider = OpenAIProvider(api_key="test-key", base_url=fake_server.openai_base_url)
    turn = Turn(provider, provider.model_info(model), MSGS, Params(), policy=TurnPolicy())
    seen, started = [], time.perf_counter()
    async for r in turn.updates(interval):
        seen.append((time.perf_counter() - started, r.text))
    return turn.result, seen


def _count_reads(monkeypatch) -> list[int]:
    """The size of every read of an aiohttp body from now on (the test's monkeypatch undoes it)."""
    reads: list[int] = []
    read = _AiohttpBody.read

    async def counting(self):
        data = await read(self)
        reads.append(len(data))
        return data

    monkeypatch.setattr(_AiohttpBody, "read", counting)
    return reads


def _body_ends(monkeypatch) -> list[float]:
    """When (time.perf_counter) each aiohttp body read from now on reached its end."""
    ends: list[float] = []
    on_eof = _AiohttpBody._on_eof

    def noting(self):
        ends.append(time.perf_counter())
        on_eof(self)

    monkeypatch.setattr(_AiohttpBody, "_on_eof", noting)
    return ends


async def test_a_slow_reply_is_read_in_fewer_reads_with_its_first_token_at_once(fake_server, monkeypatch):
    """20 tokens at 20 a second, updates every 0.25 s: a handful of reads instead of one per token, and the first
    token shown at once (the end waking a resting reader: test_the_end_of_the_body_wakes_a_resting_reader)."""
    reads = _count_reads(monkeypatch)
    result, seen = await _updates(fake_server, "rate-20-tokens-20", 0.25)
    assert result.text == "".join(default_tokens(20))
    assert result.finish_reason.value == "stop"
    assert seen[0][1].startswith("lorem0") and seen[0][0] < 0.5
    assert len(reads) <= 12, f"{len(reads)} reads for 20 tokens"


def _count_packets(monkeypatch) -> list[int]:
    """How many times aiohttp's client protocol has been handed bytes from the socket from now on."""
    from aiohttp import client_proto

    packets = [0]
    received = client_proto.ResponseHandler.data_received

    def counting(self, data):
        packets[0] += bool(data)  # an empty call is aiohttp resuming its decompression, not the socket
        return received(self, data)

    monkeypatch.setattr(client_proto.ResponseHandler, "data_received", counting)
    return packets


async def test_without_updates_every_token_is_read_as_it_comes(fake_server, monkeypatch):
    """No pace: the reader never rests, and takes each packet as it arrives (a busy machine may put several tokens
    in one packet, so the reads are counted against the packets, not the tokens)."""
    reads, packets = _count_reads(monkeypatch), _count_packets(monkeypatch)
    rests: list[float] = []

    async def resting(self, until):
        rests.append(until)

    monkeypatch.setattr(_AiohttpBody, "rest", resting)
    provider = OpenAIProvider(api_key="test-key", base_url=fake_server.openai_base_url)
    turn = Turn(provider, provider.model_info("rate-20-tokens-20"), MSGS, Params(), policy=TurnPolicy())
    result = await turn.run()
    assert len(result.text.split()) == 20
    assert rests == []
    assert len(reads) >= packets[0] - 1 >= 2  # one read per packet of the body (the first packet is the headers)


async def test_the_end_of_the_body_wakes_a_resting_reader(fake_server, monkeypatch):
    """5 tokens at 10 a second with updates 2 s apart: the reader rests after the first token, and the body's end
    (about 0.5 s in) must wake it, not the 2 s rest running out."""
    ends = _body_ends(monkeypatch)
    before = time.perf_counter()
    result, seen = await _updates(fake_server, "rate-10-tokens-5", 2.0)
    assert result.text == "".join(default_tokens(5))
    assert seen[0][1].startswith(default_tokens(1)[0])  # the first token at once (a busy loop may find more with it)
    [end] = ends
    assert end - before < 1.9, "the body ended within the first rest (else this test shows nothing)"
    assert seen[-1][0] - (end - before) < 0.5, seen  # woken by the end, not by the 2 s rest running out


async def test_a_paced_body_has_no_packet_timer_and_a_stalled_one_still_ends_at_the_idle_timeout(fake_server, monkeypatch):
    """Under a pace aiohttp's read timer is off (it was cancelled and made again for every packet): the turn's own
    idle deadline is what ends a stream that stops, and a stream read without a pace keeps aiohttp's timer."""
    from aiohttp import client_proto

    armed: list[int] = [0]  # packets after which aiohttp's read timer was made again
    reschedule = client_proto.ResponseHandler._reschedule_timeout

    def spy(self):
        armed[0] += self._read_timeout is not None
        return reschedule(self)

    monkeypatch.setattr(client_proto.ResponseHandler, "_reschedule_timeout", spy)
    packets = _count_packets(monkeypatch)  # a busy machine may put several tokens in one packet: count packets
    provider = OpenAIProvider(api_key="test-key", base_url=fake_server.openai_base_url)
    turn = Turn(provider, provider.model_info("rate-50-tokens-20"), MSGS, Params(), policy=TurnPolicy())
    assert len((await turn.run()).text.split()) == 20
    assert armed[0] >= packets[0] >= 3, "without a pace aiohttp's read timer stays, made again per packet"

    armed[0] = packets[0] = 0
    result, _ = await _updates(fake_server, "rate-50-tokens-20", 0.05)
    assert len(result.text.split()) == 20
    assert armed[0] <= 2 < packets[0], f"aiohttp's timer was made again {armed[0]} times for a paced body of {packets[0]} packets"

    started = time.perf_counter()
    turn = Turn(provider, provider.model_info("stall-after-3"), MSGS, Params(), policy=TurnPolicy(idle_timeout=0.5))
    async for _ in turn.updates(0.1):
        pass
    assert turn.result.error is not None and turn.result.error.kind == "idle_timeout"
    assert turn.result.text == "".join(default_tokens(3))
    assert time.perf_counter() - started < 5


async def test_a_lost_connection_hands_over_the_bytes_before_it_then_fails():
    """aiohttp raises a lost connection's error ahead of the bytes it still holds (its readany checks the error
    first). The body hands those over first, and the next read fails as the SDK's own stream would."""
    import httpx2
    from aiohttp import StreamReader
    from aiohttp.base_protocol import BaseProtocol
    from aiohttp.client_exceptions import ClientPayloadError
    from openai._vendor.httpx_aiohttp.transport import map_aiohttp_exceptions

    loop = asyncio.get_running_loop()
    content = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    body = _AiohttpBody(content, map_aiohttp_exceptions)
    content.feed_data(event("four"))
    content.feed_data(event("five"))
    content.set_exception(ClientPayloadError("Response payload is not completed"))
    await asyncio.wait_for(body.rest(loop.time() + 60), 1)  # a lost connection ends a rest at once
    assert await body.read() == event("four") + event("five")
    try:
        await body.read()
    except httpx2.HTTPError as e:
        assert "not completed" in str(e)
    else:
        raise AssertionError("the lost connection was not raised")


async def test_a_connection_lost_while_the_reader_rests_keeps_the_tokens_before_it(fake_server):
    """The same through a turn: tokens 2-5 arrive during the rest after the first, then the server drops the
    socket. They stay, then the error ends the turn (it cut the partial reply to the first token before)."""
    from tests.fakes.scenarios import Scenario

    fake_server.set_scenario("rate-10-drop-5", Scenario(rate=10, tokens=20, drop_after=5))
    result, seen = await _updates(fake_server, "rate-10-drop-5", 2.0)
    assert result.text == "".join(default_tokens(5))
    assert result.error is not None and result.finish_reason.value == "error"
    assert seen[-1][1] == result.text
