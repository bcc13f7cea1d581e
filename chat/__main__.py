"""Command line: `python -m chat "hello" --model demo:parley-demo [--system ...]` streams one reply to stdout."""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import aclosing

from chat.errors import ChatError
from chat.registry import Registry, Settings, load_dotenv_file
from chat.types import Message, Params, ReasoningDelta, TextDelta


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chat", description="Stream one reply from a configured model.")
    p.add_argument("prompt", nargs="?", help="what to ask (read from stdin when omitted)")
    p.add_argument("--model", "-m", help="provider:model (default: DEFAULT_MODEL or the first configured provider)")
    p.add_argument("--system", "-s", help="system prompt")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--effort", choices=["low", "medium", "high"])
    p.add_argument("--reasoning", action="store_true", help="also print the model's reasoning (to stderr)")
    p.add_argument("--list", action="store_true", help="list the models of every configured provider and exit")
    p.add_argument("--env-file", default=".env", help="the .env file to load (default: .env)")
    return p


async def _main(args: argparse.Namespace) -> int:
    registry = Registry.from_settings(Settings.from_env())
    try:
        for problem in registry.problems:
            print(f"warning: {problem}", file=sys.stderr)
        if args.list:
            for models in (await registry.list_models()).values():
                for info in models:
                    ctx = f"  ({info.context_window:,} tokens)" if info.context_window else ""
                    print(f"{info.ref}{ctx}")
            for name, label, reason in registry.unconfigured():
                print(f"# {label} ({name}) not configured: {reason}", file=sys.stderr)
            return 0
        prompt = args.prompt if args.prompt is not None else sys.stdin.read()
        try:
            provider, info = registry.resolve(args.model or registry.default_model)
            params = Params(
                **{k: v for k, v in {"temperature": args.temperature, "max_tokens": args.max_tokens,
                                     "effort": args.effort}.items() if v is not None}
            )
        except (ChatError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        messages = [Message(role="system", content=args.system)] if args.system else []
        messages.append(Message(role="user", content=prompt))

        from chat.turn import Turn  # the turn runner owns retries, timeouts and truncation checks

        turn = Turn(provider, info, messages, params)
        thinking = False
        async with aclosing(turn.events()) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    if thinking:
                        sys.stderr.write("\n\n")
                        thinking = False
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                elif isinstance(event, ReasoningDelta) and args.reasoning:
                    thinking = True
                    sys.stderr.write(event.text)
                    sys.stderr.flush()
        sys.stdout.write("\n")
        result = turn.result
        if result.error is not None:
            print(f"error: {result.error}", file=sys.stderr)
            return 1
        return 0
    finally:
        await registry.aclose()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_dotenv_file(args.env_file)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
