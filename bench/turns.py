"""Server CPU of one turn where this wave's features could cost it (issue 20): a reply in a long branched
conversation, and a 4-pane comparison, each against a same-run baseline.

`python -m bench.turns [--runs 15] [--url sqlite:///...]` runs Parley's application core in this process
(the services a UI handler calls: core.chat.ChatTurns, core.compare.Comparisons) over its own database, with
the fake provider as a separate process, and times each turn as CPU of this process (`time.process_time`;
the fake's work is not in it), so the machine's other load moves the numbers little. The variants are
interleaved turn by turn and the medians reported:

- a chat turn that starts a new conversation (the baseline), and one appended to the 1,000-message
  conversation with 200 branches that bench/bench_storage.py also opens (700 messages on its current path,
  sent as the context as the chat tab does);
- a 2-pane and a 4-pane comparison, per pane, against the chat turn above.

Every reply is 200 tokens streamed unthrottled, so the figures are per-turn work, not waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import Session  # noqa: E402

from bench.bench_storage import BIG_OWNER, branched_conversation  # noqa: E402
from bench.loadgen import last_word  # noqa: E402
from bench.procs import FakeProvider  # noqa: E402
from chat.registry import Registry, Settings  # noqa: E402
from chat.types import Message  # noqa: E402
from compare.pricing import PriceTable  # noqa: E402
from core.chat import ChatTurns, Update  # noqa: E402
from core.compare import Comparisons  # noqa: E402
from core.config import AppConfig  # noqa: E402
from core.ratelimit import Identity  # noqa: E402
from core.services import Services  # noqa: E402
from storage import repository as repo  # noqa: E402
from storage.db import init_db, make_engine  # noqa: E402
from tests.apphelpers import app_env  # noqa: E402

MODEL = "openai:rate-0-tokens-200"
LAST = last_word(MODEL)
PANES = ["openai:rate-0-tokens-200", "anthropic:rate-0-tokens-200", "openai:rate-0-tokens-200", "anthropic:rate-0-tokens-200"]


def services_for(fake: FakeProvider, url: str) -> Services:
    urls = type("F", (), {"openai_base_url": fake.openai_base_url, "anthropic_base_url": f"{fake.url}/anthropic",
                          "gemini_base_url": f"{fake.url}/gemini"})()
    env = app_env(urls, url, RATE_LIMIT="off", LOG_LEVEL="WARNING")
    engine = make_engine(url)
    init_db(engine)
    return Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)


async def chat_turn(turns: ChatTurns, conversation_id: str | None, context: list[Message], shown: list[str]) -> None:
    events = turns.send(owner=BIG_OWNER, identity=Identity(BIG_OWNER), text="hello", model=MODEL, context=context,
                        shown=shown, conversation_id=conversation_id)
    async with aclosing(events) as stream:
        last = [e async for e in stream][-1]
    assert isinstance(last, Update) and last.saved is not None and LAST in last.result.text, last.result.error


async def compare_turn(comparisons: Comparisons, models: list[str]) -> None:
    items = await comparisons.compare(owner=BIG_OWNER, request=None, message="hello", models=models)
    assert all(LAST in item["text"] for item in items), [item.get("error") for item in items]


async def measure(services: Services, runs: int) -> dict[str, list[float]]:
    turns, comparisons = ChatTurns(services), Comparisons(services, PriceTable.from_env())
    branched = branched_conversation(services.engine)
    with Session(services.engine) as session:
        path = repo.get_conversation(session=session, owner=BIG_OWNER, conversation_id=branched).messages
    context = [Message(role=m.role, content=m.content) for m in path]  # type: ignore[arg-type]
    shown = [m.content for m in path if m.role == "user"]
    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "chat turn, new conversation": lambda: chat_turn(turns, None, [], []),
        "chat turn, 1,000 messages with 200 branches": lambda: chat_turn(turns, str(branched), context, shown),
        "2-pane comparison": lambda: compare_turn(comparisons, PANES[:2]),
        "4-pane comparison": lambda: compare_turn(comparisons, PANES),
    }
    for fn in variants.values():  # warm-up: SDK clients, connections, caches
        await fn()
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(runs):
        for name in list(variants) if i % 2 == 0 else list(reversed(variants)):
            c0 = time.process_time()
            await variants[name]()
            cpu[name].append(time.process_time() - c0)
    await services.registry.aclose()  # on the loop its clients' pools belong to (else aiohttp warns at exit)
    return cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-turns-"))
    fake = FakeProvider(workdir).start()
    services = services_for(fake, args.url or f"sqlite:///{workdir / 'parley.db'}")
    try:
        cpu = asyncio.run(measure(services, args.runs))
    finally:
        services.close()
        services.engine.dispose()
        fake.stop()
    base = statistics.median(cpu["chat turn, new conversation"])
    print(f"| turn ({args.runs} runs each, interleaved) | CPU ms median | vs a new chat's turn |\n|---|---:|---:|")
    for name, values in cpu.items():
        med = statistics.median(values)
        per = f"{med / int(name[0]) * 1000:.1f} per pane, " if name[0].isdigit() else ""
        print(f"| {name} | {med * 1000:.1f} | {per}{med / base:.2f}× |")


if __name__ == "__main__":
    main()
