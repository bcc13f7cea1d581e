"""Storage benchmark: the repository's hot paths on a large synthetic database.

Targets (full size: 100,000 conversations, 1,000,000 messages, 1,000 owners):
list one owner's 50 newest ≤ 20 ms, search one owner's messages ≤ 100 ms,
open a 1,000-message conversation ≤ 50 ms, append a turn ≤ 5 ms (median).
The same again on a 1,000-message conversation with 200 branches (retries and edits; a 700-message
current path), whose owner's list and search are timed too; "pre-tree read" times the one-query read
that opened a conversation before messages formed a tree, in the same run, for comparison.

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

import uuid  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

import sqlalchemy as sa  # noqa: E402
from gen_storage_data import BIG_OWNER, TextSource, engine_for, generate, owner_name, word_of_rank  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from storage import repository as repo  # noqa: E402
from storage.guard import owned_conversation  # noqa: E402
from storage.models import Conversation, Message, table_of  # noqa: E402
from storage.tree import messages_of  # noqa: E402

BRANCHED_TITLE = "Benchmark: 1,000 messages, 200 branches"
BRANCHES = 200

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


def branched_conversation(engine: Engine) -> uuid.UUID:
    """BIG_OWNER's 1,000-message tree (made once, kept with the data): a 700-message chain with 100
    edits (a sibling user message and its reply) and 100 retries (a sibling reply) along it."""
    with Session(engine) as session:
        found = session.exec(select(Conversation.id).where(Conversation.owner == BIG_OWNER, Conversation.title == BRANCHED_TITLE)).first()
        if found is not None:
            return found
    rnd, source, cid = random.Random(15), TextSource(15), uuid.uuid4()
    moment = datetime.now(UTC) - timedelta(days=400)  # old: the owner's list of newest stays as it was
    rows: list[dict[str, object]] = []

    def add(parent: uuid.UUID | None, role: str) -> uuid.UUID:
        nonlocal moment
        moment += timedelta(seconds=30)
        mid = uuid.uuid4()
        rows.append(dict(id=mid, conversation_id=cid, owner=BIG_OWNER, position=len(rows), role=role, content=source.message(),
                         parent_id=parent, created_at=moment, attachment_count=0,
                         **({"provider": "openai", "model": "model-a", "finish_reason": "stop", "ttft_ms": 300, "duration_ms": 2000}
                            if role == "assistant" else {})))  # fmt: skip
        return mid

    chain: list[uuid.UUID] = []
    for i in range(1_000 - BRANCHES * 3 // 2):
        chain.append(add(chain[-1] if chain else None, "assistant" if i % 2 else "user"))
    for k in range(BRANCHES):
        j = rnd.randrange(len(chain) // 2) * 2  # a user message of the chain
        if k % 2:  # Retry: another reply to it
            add(chain[j], "assistant")
        else:  # Edit: another user message in its place, with its reply
            add(add(chain[j - 1] if j else None, "user"), "assistant")
    with Session(engine) as session:
        session.execute(sa.insert(table_of(Conversation)).values(
            id=cid, owner=BIG_OWNER, kind="chat", title=BRANCHED_TITLE, model="openai:model-a", pinned=False, archived=False,
            created_at=moment, updated_at=moment, current_leaf_id=chain[-1]))  # fmt: skip
        session.execute(sa.insert(table_of(Message)), rows)
        session.commit()
    return cid


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

    branched_id = branched_conversation(engine)
    with Session(engine) as session:
        shape = repo.get_conversation(session=session, owner=BIG_OWNER, conversation_id=branched_id)
        assert len(shape.messages) + shape.other_messages == 1_000 and len(shape.versions) > 50, "not the benchmark's tree"

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

    def open_big_pre_tree(_i: int) -> None:
        with Session(engine) as session:  # what get_conversation did before the tree: the owner check, one query
            conversation = owned_conversation(session, BIG_OWNER, big_id)
            assert len(messages_of(session, BIG_OWNER, [conversation.id])[conversation.id]) >= 1000

    def open_branched(_i: int) -> None:
        with Session(engine) as session:
            assert len(repo.get_conversation(session=session, owner=BIG_OWNER, conversation_id=branched_id).versions) > 50

    def list_branched_owner(_i: int) -> None:
        with Session(engine) as session:
            assert len(repo.list_conversations(session=session, owner=BIG_OWNER, limit=50)) == 50

    def search_branched_owner(_i: int) -> None:
        with Session(engine) as session:
            repo.search_messages(session=session, owner=BIG_OWNER, query=word_of_rank(2))

    with Session(engine) as session:
        targets = [repo.list_conversations(session=session, owner=o, limit=1)[0].id for o in owner_ids]
    appended: list[tuple[str, uuid.UUID]] = []

    def append(owner: str, conversation_id: uuid.UUID) -> None:
        with Session(engine) as session:
            ids = repo.begin_turn(session=session, owner=owner, conversation_id=conversation_id, content="benchmark prompt words")
            repo.finish_turn(
                session=session, owner=owner, message_id=ids.assistant_message_id, content="benchmark reply " * 50,
                finish_reason="stop", input_tokens=10, output_tokens=100, ttft_ms=300, duration_ms=2000,
            )  # fmt: skip
            assert ids.user_message_id is not None
            appended.append((owner, ids.user_message_id))

    def append_turn(i: int) -> None:
        append(owner_ids[i], targets[i])

    def append_branched(_i: int) -> None:
        append(BIG_OWNER, branched_id)

    results = [
        ("list 50 newest", *measure(list_newest, args.runs)),
        (f"search: common word ({word_of_rank(2)}, rank 2)", *measure(search(word_of_rank(2)), args.runs)),
        (f"search: mid word ({word_of_rank(200)}, rank 200)", *measure(search(word_of_rank(200)), args.runs)),
        (f"search: rare word ({word_of_rank(5000)}, rank 5000)", *measure(search(word_of_rank(5000)), args.runs)),
        (f"search: two words ({word_of_rank(30)} {word_of_rank(300)})", *measure(search(f"{word_of_rank(30)} {word_of_rank(300)}"), args.runs)),
        ("open 1,000 messages", *measure(open_big, max(20, args.runs // 2))),
        ("open 1,000 messages, pre-tree read (same run)", *measure(open_big_pre_tree, max(20, args.runs // 2))),
        ("open 1,000 messages, 200 branches (700 shown)", *measure(open_branched, max(20, args.runs // 2))),
        ("list 50 newest of the branched chat's owner", *measure(list_branched_owner, args.runs)),
        (f"search: common word ({word_of_rank(2)}), the branched chat's owner", *measure(search_branched_owner, args.runs)),
        ("append a turn", *measure(append_turn, args.runs)),
        ("append a turn to the branched chat", *measure(append_branched, args.runs)),
    ]
    # Leave the data as generated, so runs can be repeated (each appended turn is a branch of its own).
    with Session(engine) as session:
        for owner, user_message_id in reversed(appended):
            repo.delete_branch(session=session, owner=owner, message_id=user_message_id)

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
