"""Tracing on against off (chat/tracing.py): the cost of a chat turn, and of the off hooks, in one run.

    python -m bench.tracing [--rounds 15] [--turns 10] [--model openai:rate-0-tokens-200]

One process runs chat turns through core.chat.ChatTurns (SQLite in a temporary folder, the fake provider server
in its own process): rounds alternate off and on, so noise on a shared machine hits both alike. "On" is the real
set-up path, an OTLP/HTTP exporter behind a BatchSpanProcessor, sending to a small sink in this process that
answers 200 to every POST (so the export's work is counted, in its thread). Reported: medians over rounds of the
wall time and of this process's CPU time per turn, and the cost of the hooks a turn calls when tracing is off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
import timeit
from contextlib import aclosing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.procs import FakeProvider


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that keeps nothing: it reads the body and says 200."""

    received = 0

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Sink.received += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


async def _turns(turns: object, model: str, n: int) -> None:
    from core.chat import ChatTurns
    from core.ratelimit import Identity

    assert isinstance(turns, ChatTurns)
    for _ in range(n):
        async with aclosing(turns.send(owner="user:bench", identity=Identity("user:bench"), text="hello", model=model)) as events:
            async for _event in events:
                pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of each mode (alternating)")
    parser.add_argument("--turns", type=int, default=10, help="chat turns per round")
    parser.add_argument("--model", default="openai:rate-0-tokens-200", help="the fake's model (default: 200 tokens, unthrottled)")
    args = parser.parse_args(argv)

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    work = Path(tempfile.mkdtemp(prefix="parley-bench-tracing-"))
    fake = FakeProvider(work).start()
    try:
        env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake.openai_base_url, "RATE_LIMIT": "off",
               "DATABASE_URL": f"sqlite:///{work / 'bench.db'}", "PARLEY_MODELS_FILE": ""}
        endpoint = f"http://127.0.0.1:{sink.server_port}"
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint  # the exporter reads it from the environment
        _run(env, endpoint, args)
    finally:
        fake.stop()
        sink.shutdown()


def _run(env: dict[str, str], endpoint: str, args: argparse.Namespace) -> None:
    from chat import tracing
    from chat.registry import Registry, Settings
    from chat.turn import Turn
    from chat.types import Message, Params
    from core.chat import ChatTurns
    from core.config import AppConfig
    from core.services import Services
    from storage.db import init_db, make_engine

    config = AppConfig.from_env(env)
    engine = make_engine(config.database_url)
    init_db(engine)
    services = Services.build(config, Registry.from_settings(Settings.from_env(env)), engine)
    turns = ChatTurns(services)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_turns(turns, args.model, 3))  # warm-up: SDK import, client, connection
    samples: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    try:
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                if mode == "on":
                    tracing.setup({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
                w0, c0 = time.perf_counter(), time.process_time()
                loop.run_until_complete(_turns(turns, args.model, args.turns))
                wall = time.perf_counter() - w0
                if mode == "on":
                    tracing.shutdown()  # flushes: the export's CPU is counted in the round (its wait is not)
                samples[mode].append((wall / args.turns, (time.process_time() - c0) / args.turns))
    finally:
        services.close()
        loop.close()

    # The hooks a chat turn calls when tracing is off (start + end); one turn of the model to hand them.
    provider, info = services.registry.resolve(args.model)
    turn = Turn(provider, info, [Message(role="user", content="hi")], Params())
    number = 200_000
    off_ns = min(timeit.repeat(lambda: tracing.end(tracing.start(turn)), number=number, repeat=5)) / number * 1e9
    # On: a finished turn's span opened, filled, ended and exported (the export thread's CPU counted; fewer
    # spans than the BatchSpanProcessor's queue of 2,048, so none is dropped).
    loop = asyncio.new_event_loop()
    loop.run_until_complete(turn.run())
    loop.close()
    spans = 2000
    on_us = []
    for _ in range(5):
        tracing.setup({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        c0 = time.process_time()
        for _ in range(spans):
            tracing.end(tracing.start(turn))
        tracing.shutdown()
        on_us.append((time.process_time() - c0) / spans * 1e6)

    def ms(values: list[float]) -> str:
        return f"{1000 * statistics.median(values):.2f}"

    print(f"model {args.model}, {args.rounds} rounds × {args.turns} turns per mode, alternating; "
          f"sink received {_Sink.received} OTLP requests")
    print("| tracing | wall ms per turn (median of rounds) | process CPU ms per turn (median) |")
    print("|---|---:|---:|")
    for mode in ("off", "on"):
        print(f"| {mode} | {ms([w for w, _ in samples[mode]])} | {ms([c for _, c in samples[mode]])} |")
    print(f"off: tracing.start + tracing.end (a turn's hooks) take {off_ns:.0f} ns together (best of 5 × {number:,})")
    print(f"on: one turn's span, made and exported over OTLP/HTTP, costs {statistics.median(on_us):.0f} µs of CPU "
          f"(median of 5 × {spans:,})")


if __name__ == "__main__":
    main()
