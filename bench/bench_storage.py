"""Storage benchmark: the repository's hot paths on a large synthetic database.

Targets (full size: 100,000 conversations, 1,000,000 messages, 1,000 owners):
list one owner's 50 newest ≤ 20 ms, search one owner's messages ≤ 100 ms,
open a 1,000-message conversation ≤ 50 ms, append a turn ≤ 5 ms (median).

    python bench/bench_storage.py --url sqlite:///bench/data/storage-1.db --scale 1
    python bench/bench_storage.py --url postgresql://postgres@127.0.0.1:5432/test --schema bench_storage --scale 0.05

The data is generated (bench/gen_storage_data.py) when the database is empty. Every operation
uses a fresh Session, as a UI handler would; timings include that.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_storage_data import BIG_OWNER, engine_for, generate, owner_name, word_of_rank  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from storage import repository as repo  # noqa: E402
from storage.models import Conversation  # noqa: E402

TARGETS_MS = {"list 50 newest": 20, "search": 100, "open 1,000 messages": 50, "append a turn": 5}


def measure(fn: Callable[[int], object], runs: int, warmup: int = 3) -> tuple[float, float]:
    """(median, p95) in milliseconds of fn(i) over `runs` calls."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", help="PostgreSQL schema holding (or to hold) the data")
    parser.add_argument("--scale", type=float, default=1.0, help="data size when generating (1 = full)")
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()

    engine = engine_for(args.url, args.schema)
    with engine.connect() as connection:
        has_data = connection.dialect.has_table(connection, "conversation") and connection.execute(
            text("SELECT count(*) FROM conversation")
        ).scalar_one()
    if not has_data:
        generate(engine, args.scale)
    with engine.connect() as connection:
        conversations = connection.execute(text("SELECT count(*) FROM conversation")).scalar_one()
        messages = connection.execute(text("SELECT count(*) FROM message")).scalar_one()
        owners = connection.execute(text("SELECT count(DISTINCT owner) FROM conversation")).scalar_one()
    with Session(engine) as session:
        big = session.exec(
            select(Conversation.id).where(Conversation.owner == BIG_OWNER).order_by(Conversation.created_at)
        ).all()
        big_id = next(c for c in big if len(repo.get_conversation(session=session, owner=BIG_OWNER, conversation_id=c).messages) >= 1000)

    rnd = random.Random(7)
    owner_ids = [owner_name(rnd.randrange(owners)) for _ in range(args.runs + 10)]

    def list_newest(i: int) -> None:
        with Session(engine) as session:
            assert len(repo.list_conversations(session=session, owner=owner_ids[i], limit=50)) == 50

    def search(query: str) -> Callable[[int], None]:
        def run(i: int) -> None:
            with Session(engine) as session:
                repo.search_messages(session=session, owner=owner_ids[i], query=query)

        return run

    def open_big(_i: int) -> None:
        with Session(engine) as session:
            assert len(repo.get_conversation(session=session, owner=BIG_OWNER, conversation_id=big_id).messages) >= 1000

    with Session(engine) as session:
        targets = [repo.list_conversations(session=session, owner=o, limit=1)[0].id for o in owner_ids]
    appended: list[tuple[str, object]] = []

    def append_turn(i: int) -> None:
        with Session(engine) as session:
            ids = repo.begin_turn(session=session, owner=owner_ids[i], conversation_id=targets[i], content="benchmark prompt words")
            repo.finish_turn(
                session=session, owner=owner_ids[i], message_id=ids.assistant_message_id, content="benchmark reply " * 50,
                finish_reason="stop", input_tokens=10, output_tokens=100, ttft_ms=300, duration_ms=2000,
            )  # fmt: skip
            appended.append((owner_ids[i], ids))

    results = [
        ("list 50 newest", *measure(list_newest, args.runs)),
        (f"search: common word ({word_of_rank(2)}, rank 2)", *measure(search(word_of_rank(2)), args.runs)),
        (f"search: mid word ({word_of_rank(200)}, rank 200)", *measure(search(word_of_rank(200)), args.runs)),
        (f"search: rare word ({word_of_rank(5000)}, rank 5000)", *measure(search(word_of_rank(5000)), args.runs)),
        (f"search: two words ({word_of_rank(30)} {word_of_rank(300)})", *measure(search(f"{word_of_rank(30)} {word_of_rank(300)}"), args.runs)),
        ("open 1,000 messages", *measure(open_big, max(20, args.runs // 2))),
        ("append a turn", *measure(append_turn, args.runs)),
    ]
    # Leave the data as generated, so runs can be repeated.
    with Session(engine) as session:
        for owner, ids in appended:
            repo.truncate_after(session=session, owner=owner, conversation_id=ids.conversation_id, position=ids.user_position)

    backend = engine.dialect.name
    version = engine.dialect.server_version_info
    print(f"\n{backend} {'.'.join(map(str, version or ()))} · {conversations:,} conversations · {messages:,} messages · {owners:,} owners")
    print(f"{platform.processor() or platform.machine()} · Python {platform.python_version()} · {args.runs} runs\n")
    print("| operation | median ms | p95 ms | target ms |")
    print("|---|---:|---:|---:|")
    for name, median, p95 in results:
        target = next((v for k, v in TARGETS_MS.items() if name.startswith(k)), None)
        flag = "" if target is None or median <= target else " **miss**"
        print(f"| {name} | {median:.2f} | {p95:.2f} | {target or ''}{flag} |")
    engine.dispose()


if __name__ == "__main__":
    main()
