"""CPU per token of an OpenAI reply read from Chat Completions and from the Responses API, in one run.

    python -m bench.bench_responses [--tokens 4000] [--rounds 5]

Both go through the fake server (tests/fakes, in this process, so its CPU is counted too: its Responses events
are larger) and the same provider; rounds alternate so machine noise falls on both alike. The median of the
rounds' process CPU is printed per token.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from chat.providers.openai import OpenAIProvider
from chat.types import Message, Params
from tests.fakes import FakeServer, Scenario


async def _once(provider: OpenAIProvider, model: str) -> float:
    start = time.process_time()
    async for _ in provider.stream(model, [Message(role="user", content="hi")], Params()):
        pass
    return time.process_time() - start


async def _bench(srv: FakeServer, tokens: int, rounds: int) -> dict[str, float]:
    model = "o3-bench"  # a reasoning model's name, so both ways send the same parameters
    srv.set_scenario(model, Scenario(tokens=tokens))
    ways = {api: OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url, official=True, api=api)
            for api in ("chat", "responses")}
    cpu: dict[str, list[float]] = {api: [] for api in ways}
    try:
        for provider in ways.values():
            await _once(provider, model)  # warm: imports, the connection
        for _ in range(rounds):
            for api, provider in ways.items():
                cpu[api].append(await _once(provider, model))
    finally:
        for provider in ways.values():
            await provider.aclose()
    return {api: statistics.median(values) / tokens * 1e6 for api, values in cpu.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with FakeServer() as srv:
        result = asyncio.run(_bench(srv, args.tokens, args.rounds))
    for api, us in result.items():
        print(f"{api:>9}: {us:6.1f} µs CPU per token (median of {args.rounds} rounds, {args.tokens} tokens)")


if __name__ == "__main__":
    main()
