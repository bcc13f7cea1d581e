"""Server CPU per 1,000 streamed tokens, alone: the quick loop for working on that one target.

`python -m bench.cpu [--users 50 --spread 5 --runs 3 --profile --env KEY=VALUE ...]` starts the fake
provider and Parley, then measures (a) the idle server's CPU share, (b) one user at a time and (c) users
arriving over `spread` seconds, each streaming 200 tokens at 50 tokens/s. `--profile` also samples (c)
with py-spy and prints where the time went. The full benchmark (`python -m bench`) has the same rows.

`--ab KEY=VALUE` starts a second Parley with that setting too and alternates the loads between the
two, so a change is judged against the same machine noise (e.g. `--ab PARLEY_GRADIO_PATCHES=off`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import profile  # noqa: E402
from bench.loadgen import GradioChat, load, median, new_client, pct  # noqa: E402
from bench.procs import FakeProvider, Parley  # noqa: E402

CHAT = "openai:rate-50-tokens-200"
TOKENS = 200


async def measure(parley: Parley, users: int, spread: float, runs: int, workdir: Path, sample: bool) -> None:
    async with new_client() as client:
        chat = await GradioChat(client, parley.url).discover()
        for _ in range(3):  # warm-up: imports, connections, SDK clients
            await chat.turn("openai:rate-2000-tokens-200")
        parley.settle()
        idle = parley.idle_share()
        print(f"idle server: {100 * idle:.1f}% of a core")

        single = []
        for _ in range(runs):
            c0 = parley.cpu()
            lr = await load(lambda: chat.turn(CHAT), 1)
            single.append((parley.cpu() - c0) / (TOKENS / 1000))
            assert not lr.errors, lr.errors
        print(f"one user, {TOKENS} tokens at 50 tok/s: {median(single):.3f} s per 1,000 tokens "
              f"(runs {[round(x, 3) for x in single]}; of which idle polling ≈ {idle * 4.0 / (TOKENS / 1000):.3f})")

        loaded = []
        for i in range(runs):
            sampler = profile.Sampler(parley.pid, workdir / f"cpu{i}.pyspy.txt") if sample and i == 0 else None
            t0 = time.perf_counter()
            c0 = parley.cpu()
            lr = await load(lambda: chat.turn(CHAT), users, spread)
            cpu = parley.cpu() - c0
            seconds = time.perf_counter() - t0
            ok = users - len(lr.errors)
            per = cpu / (TOKENS * ok / 1000) if ok else float("nan")
            if sampler is None:
                loaded.append(per)
            print(f"{users} users over {spread:.0f} s{' (under py-spy, not counted)' if sampler else ''}: "
                  f"{per:.3f} s per 1,000 tokens, server CPU {cpu:.2f} s in {seconds:.1f} s, errors {len(lr.errors)}, "
                  f"TTFT p95 {pct(lr.ttfts(), 95) or 0:.3f} s")
            for error in sorted(set(lr.errors)):  # a burst's errors are rare and need their text to be explained
                print(f"  error ×{lr.errors.count(error)}: {error}")
            if sampler is not None:
                out = sampler.stop()
                print(profile.markdown(profile.summarise(out), seconds, 100))
        if loaded:
            print(f"under load: median {median(loaded):.3f} s per 1,000 tokens (target ≤ 0.3)")


async def ab(apps: dict[str, Parley], users: int, spread: float, runs: int) -> None:
    """The loaded measure on two Parleys, alternating, median of `runs` each."""
    async with new_client() as client:
        chats = {name: await GradioChat(client, app.url).discover() for name, app in apps.items()}
        for chat in chats.values():
            for _ in range(3):
                await chat.turn("openai:rate-2000-tokens-200")
        for app in apps.values():
            app.settle()
        per: dict[str, list[float]] = {name: [] for name in apps}
        for i in range(runs):
            for name in (list(apps) if i % 2 == 0 else list(reversed(apps))):
                app, chat = apps[name], chats[name]
                c0 = app.cpu()
                lr = await load(lambda chat=chat: chat.turn(CHAT), users, spread)
                ok = users - len(lr.errors)
                per[name].append((app.cpu() - c0) / (TOKENS * ok / 1000) if ok else float("nan"))
                print(f"  {name}: {per[name][-1]:.3f} s per 1,000 tokens, errors {len(lr.errors)}, "
                      f"TTFT p95 {pct(lr.ttfts(), 95) or 0:.3f} s")
                for error in sorted(set(lr.errors)):
                    print(f"    error ×{lr.errors.count(error)}: {error}")
        for name, values in per.items():
            print(f"{name}: median {median(values):.3f} s per 1,000 tokens over {runs} runs {[round(v, 3) for v in values]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spread", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="sample one extra loaded run with py-spy")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for Parley's environment")
    parser.add_argument("--ab", help="KEY=VALUE[ KEY=VALUE...]: compare against a second Parley with these settings")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-cpu-"))
    extra = dict(kv.split("=", 1) for kv in args.env)
    fake = FakeProvider(workdir).start()
    parley = Parley(fake, workdir, **extra)
    # "--ab 'A=1 B=2'": several settings changed together
    other = Parley(fake, workdir, name="parley-b", **{**extra, **dict(kv.split("=", 1) for kv in args.ab.split())}) if args.ab else None
    try:
        parley.start()
        if other is not None:
            other.start()
            asyncio.run(ab({"as configured": parley, args.ab: other}, args.users, args.spread, args.runs))
            return
        asyncio.run(measure(parley, args.users, args.spread, args.runs + (1 if args.profile else 0), workdir, args.profile))
    finally:
        parley.stop()
        if other is not None:
            other.stop()
        fake.stop()
        if os.environ.get("BENCH_KEEP"):
            print(f"work directory: {workdir}")


if __name__ == "__main__":
    main()
