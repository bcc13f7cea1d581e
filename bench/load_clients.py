"""Load: 100 concurrent gradio_client users x 5 turns each against Parley and the fake providers.

    python -m bench.load_clients [--users 100] [--turns 5] [--model openai:rate-50-tokens-200]

Counts errors, checks that every turn was persisted (rows in Parley's database) and reports time
to first token. gradio_client is a heavy client (about a core for 20 users here), so the users
are spread over worker processes; the report gives the clients' own CPU beside the server's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.loadgen import pct
from bench.procs import FakeProvider, Parley, cpu_seconds


def _connect(url: str, attempts: int = 5):
    """A gradio_client Client (fetching /config and the API info), retried: this is set-up, not load."""
    from gradio_client import Client

    for i in range(attempts):
        try:
            return Client(url, verbose=False)
        except Exception:  # noqa: BLE001 - set-up retries on any failure, the last one is raised
            if i == attempts - 1:
                raise
            time.sleep(1 + i)


def _user(client, model: str, turns: int, out: list, barrier: threading.Barrier) -> None:
    barrier.wait()
    for t in range(turns):
        start = time.perf_counter()
        first = None
        try:
            job = client.submit(message=f"load turn {t}", model=model, system_prompt="", api_name="/chat")
            for update in job:
                if first is None and any(isinstance(m, dict) and m.get("content") and not (m.get("metadata") or {}).get("title") for m in update):
                    first = time.perf_counter() - start
            final = job.result()
            ok = any("lorem" in str(m.get("content", "")) for m in final if isinstance(m, dict))
            out.append((first, None if ok else f"no answer: {str(final)[:200]}"))
        except Exception as e:  # the load test counts failures, it does not stop at one
            out.append((first, f"{type(e).__name__}: {e}"))


def _worker(url: str, model: str, users: int, turns: int, queue: mp.Queue) -> None:
    results: list = []
    # Clients connect one after another (set-up), then every user starts at once (the load).
    clients = [_connect(url) for _ in range(users)]
    barrier = threading.Barrier(users)
    threads = [threading.Thread(target=_user, args=(c, model, turns, results, barrier)) for c in clients]
    cpu0 = time.process_time()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    queue.put((results, time.process_time() - cpu0))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--model", default="openai:rate-50-tokens-200")
    ap.add_argument("--procs", type=int, default=4, help="client worker processes")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="parley-load-"))
    fake = FakeProvider(work).start()
    app = Parley(fake, work)
    app.start()
    app.settle()
    server_cpu0 = cpu_seconds(app.pid)
    queue: mp.Queue = mp.Queue()
    per = [args.users // args.procs + (1 if i < args.users % args.procs else 0) for i in range(args.procs)]
    wall0 = time.perf_counter()
    procs = [mp.Process(target=_worker, args=(app.url, args.model, n, args.turns, queue)) for n in per if n]
    for p in procs:
        p.start()
    results, client_cpu = [], 0.0
    for _ in procs:
        r, c = queue.get()
        results.extend(r)
        client_cpu += c
    for p in procs:
        p.join()
    wall = time.perf_counter() - wall0
    server_cpu = cpu_seconds(app.pid) - server_cpu0
    time.sleep(1.0)
    with sqlite3.connect(app.db_path) as c:
        saved = c.execute("select count(*) from message where role='assistant' and finish_reason='stop'").fetchone()[0]
        users_rows = c.execute("select count(*) from message where role='user'").fetchone()[0]
    app.stop()
    fake.stop()

    ttft = [f for f, _ in results if f is not None]
    errors = [e for _, e in results if e]
    expected = args.users * args.turns
    print("| users × turns | turns done | errors | saved replies | saved user messages | TTFT p50 | TTFT p95 | wall | server CPU | clients' CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.users} × {args.turns} | {len(results)}/{expected} | {len(errors)} | {saved}/{expected} | {users_rows}/{expected} | "
          f"{statistics.median(ttft):.3f} s | {pct(ttft, 95):.3f} s | {wall:.1f} s | {server_cpu:.1f} s | {client_cpu:.1f} s |")
    for e in errors[:5]:
        print("error:", e)


if __name__ == "__main__":
    main()
