"""Run the fake provider server as a process: python -m tests.fakes --port 9100 [--key test-key]."""

from __future__ import annotations

import argparse
import signal
import threading

from .server import FakeServer


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; print `READY <url>` once listening."""
    ap = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100, help="0 picks a free port (printed in the READY line)")
    ap.add_argument("--key", default="test-key", help="the API key every provider accepts")
    ap.add_argument("--any-key", action="store_true", help="accept any API key")
    args = ap.parse_args(argv)

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    srv = FakeServer(api_key=None if args.any_key else args.key, host=args.host, port=args.port).start()
    print(f"READY {srv.url}", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
