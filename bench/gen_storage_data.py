"""Fill a database with synthetic conversations for bench/bench_storage.py.

Full size (--scale 1): 1,000 owners × 100 conversations × 10 messages = 100,000 conversations and
1,000,000 messages, plus one 1,000-message conversation (owner "owner-0000") for the open test.
Text is drawn from a Zipf-distributed vocabulary of made-up words so that search terms of known
frequency exist: `word_of_rank(1)` is in most messages, `word_of_rank(5000)` in few.

    python bench/gen_storage_data.py --url sqlite:///bench/data/storage.db --scale 0.05
    python bench/gen_storage_data.py --url postgresql://postgres@127.0.0.1:5432/test --schema bench_storage

SQLite rows go in with executemany on the raw connection (the FTS triggers index them);
PostgreSQL rows go in with COPY, with the GIN index built afterwards.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from storage.db import init_db, make_engine, normalize_url  # noqa: E402

VOCABULARY = 20_000
CONVERSATIONS_PER_OWNER = 100
MESSAGES_PER_CONVERSATION = 10
BIG_CONVERSATION = 1_000
WORDS_PER_MESSAGE = (8, 70)  # uniform range: ~39 words, ~270 characters on average
BIG_OWNER = "owner-0000"
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def word_of_rank(rank: int) -> str:
    """The made-up word with this frequency rank (1 = most common); deterministic."""
    n, parts = rank, []
    while True:
        n, r = divmod(n, len(_SYLLABLES))
        parts.append(_SYLLABLES[r])
        if n == 0:
            break
    return "".join(parts) + ("x" if len(parts) == 1 else "")


def owner_name(i: int) -> str:
    return f"owner-{i:04d}"


def engine_for(url: str, schema: str | None) -> Engine:
    """An engine for `url`; on PostgreSQL with `schema`, that schema is created and used."""
    url = normalize_url(url)
    if schema and url.startswith("postgresql"):
        admin = make_engine(url)
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        admin.dispose()
        url = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    return make_engine(url)


class TextSource:
    """Random message texts from the Zipf vocabulary, generated in large batches for speed."""

    def __init__(self, seed: int):
        self.random = random.Random(seed)
        self.words = [word_of_rank(r) for r in range(1, VOCABULARY + 1)]
        self.cum_weights = list(itertools.accumulate(1 / r for r in range(1, VOCABULARY + 1)))
        self.buffer: list[str] = []
        self.cursor = 0

    def message(self) -> str:
        n = self.random.randint(*WORDS_PER_MESSAGE)
        if self.cursor + n > len(self.buffer):
            self.buffer = self.random.choices(self.words, cum_weights=self.cum_weights, k=1_000_000)
            self.cursor = 0
        self.cursor += n
        return " ".join(self.buffer[self.cursor - n : self.cursor])


def rows(scale: float, seed: int = 1):
    """Yield (conversations, messages) batches, one owner at a time."""
    owners = max(10, round(1_000 * scale))
    source = TextSource(seed)
    rnd = random.Random(seed + 1)
    now = datetime.now(UTC)
    for o in range(owners):
        owner = owner_name(o)
        conversations, messages = [], []
        for c in range(CONVERSATIONS_PER_OWNER):
            cid = uuid.UUID(int=rnd.getrandbits(128), version=4)
            created = now - timedelta(days=365 * rnd.random())
            big = o == 0 and c == 0
            count = BIG_CONVERSATION if big else MESSAGES_PER_CONVERSATION
            if o == 0 and not big:
                count = max(0, MESSAGES_PER_CONVERSATION - (BIG_CONVERSATION // CONVERSATIONS_PER_OWNER))
            moment = created
            parent = None  # each message follows the one before it: a one-branch tree
            for p in range(count):
                moment += timedelta(seconds=5 + rnd.random() * 60)
                assistant = p % 2 == 1
                ttft = int(rnd.lognormvariate(6, 0.5)) if assistant else None
                mid = uuid.UUID(int=rnd.getrandbits(128), version=4)
                messages.append(
                    dict(
                        id=mid,
                        parent_id=parent,
                        conversation_id=cid,
                        owner=owner,
                        position=p,
                        role="assistant" if assistant else "user",
                        content=source.message(),
                        provider=rnd.choice(["openai", "anthropic", "gemini"]) if assistant else None,
                        model="model-a" if assistant else None,
                        input_tokens=rnd.randint(10, 2000) if assistant else None,
                        output_tokens=rnd.randint(10, 800) if assistant else None,
                        ttft_ms=ttft,
                        duration_ms=(ttft + rnd.randint(200, 20_000)) if assistant else None,
                        finish_reason=("error" if rnd.random() < 0.02 else "stop") if assistant else None,
                        created_at=moment,
                    )
                )
                parent = mid
            conversations.append(
                dict(
                    id=cid, owner=owner, title=f"Conversation {o}-{c}", model="openai:model-a",
                    pinned=c < 2, archived=c % 25 == 24, created_at=created, updated_at=moment, current_leaf_id=parent,
                )
            )  # fmt: skip
        yield conversations, messages


CONV_COLUMNS = ["id", "owner", "title", "model", "pinned", "archived", "created_at", "updated_at", "current_leaf_id"]
MSG_COLUMNS = [
    "id", "parent_id", "conversation_id", "owner", "position", "role", "content", "provider", "model",
    "input_tokens", "output_tokens", "ttft_ms", "duration_ms", "finish_reason", "created_at",
]  # fmt: skip


def _sqlite_value(value):
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def load_sqlite(engine: Engine, scale: float) -> None:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        conv_sql = f"INSERT INTO conversation ({', '.join(CONV_COLUMNS)}) VALUES ({', '.join('?' * len(CONV_COLUMNS))})"
        msg_sql = f"INSERT INTO message ({', '.join(MSG_COLUMNS)}) VALUES ({', '.join('?' * len(MSG_COLUMNS))})"
        for i, (conversations, messages) in enumerate(rows(scale)):
            cursor.executemany(conv_sql, [[_sqlite_value(r[k]) for k in CONV_COLUMNS] for r in conversations])
            cursor.executemany(msg_sql, [[_sqlite_value(r.get(k)) for k in MSG_COLUMNS] for r in messages])
            if i % 50 == 49:
                raw.commit()
                print(f"  {i + 1} owners", flush=True)
        raw.commit()
        cursor.execute("INSERT INTO message_fts(message_fts) VALUES ('optimize')")
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def load_postgres(engine: Engine, scale: float) -> None:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        # A bulk load, not a request: make_engine's statement timeout (15 s) cut the index build short.
        cursor.execute("SET statement_timeout = 0")
        # Building the GIN index once at the end is far faster than updating it row by row.
        cursor.execute("DROP INDEX IF EXISTS ix_message_search")
        for i, (conversations, messages) in enumerate(rows(scale)):
            with cursor.copy(f"COPY conversation ({', '.join(CONV_COLUMNS)}) FROM STDIN") as copy:
                for r in conversations:
                    copy.write_row([r[k] for k in CONV_COLUMNS])
            with cursor.copy(f"COPY message ({', '.join(MSG_COLUMNS)}) FROM STDIN") as copy:
                for r in messages:
                    copy.write_row([r.get(k) for k in MSG_COLUMNS])
            if i % 50 == 49:
                raw.commit()
                print(f"  {i + 1} owners", flush=True)
        raw.commit()
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("CREATE INDEX ix_message_search ON message USING gin (search)")
        raw.commit()
        raw.driver_connection.autocommit = True
        cursor.execute("VACUUM ANALYZE conversation")
        cursor.execute("VACUUM ANALYZE message")
    finally:
        raw.close()


def generate(engine: Engine, scale: float) -> None:
    """Migrate the database and load the synthetic data into it (which must be empty)."""
    init_db(engine)
    with engine.connect() as connection:
        if connection.execute(text("SELECT count(*) FROM conversation")).scalar_one():
            raise SystemExit("The database already holds conversations; use an empty one.")
    started = time.perf_counter()
    (load_postgres if engine.dialect.name == "postgresql" else load_sqlite)(engine, scale)
    with engine.connect() as connection:
        conversations = connection.execute(text("SELECT count(*) FROM conversation")).scalar_one()
        messages = connection.execute(text("SELECT count(*) FROM message")).scalar_one()
    print(f"loaded {conversations:,} conversations and {messages:,} messages in {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="database URL (sqlite:///… or postgresql://…)")
    parser.add_argument("--schema", help="PostgreSQL schema to create and fill (default: the URL's search_path)")
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 1,000 owners / 100k conversations / 1M messages")
    args = parser.parse_args()
    engine = engine_for(args.url, args.schema)
    generate(engine, args.scale)
    engine.dispose()


if __name__ == "__main__":
    main()
