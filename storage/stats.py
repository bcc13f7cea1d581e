"""Usage statistics per provider+model (the dashboard): one period, or every time bucket of a chart at once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from storage import blind
from storage.errors import InvalidInput
from storage.guard import aware, guarded
from storage.models import PENDING, Message, ModelStats, table_of
from storage.validation import check_owner

#: chat.types.MIN_RATE_TOKENS (storage does not import chat; a test keeps the two equal).
MIN_RATE_TOKENS = 10
#: The most buckets one usage_over_time call may ask for (the dashboard asks for at most 30).
MAX_BUCKETS = 1000
#: Finish reasons of a reply refused for its content, by Parley's moderation or the provider's filter.
REFUSED_REASONS = ("content_filter", "refusal")
#: Finish reasons of a reply that was cut off: the token limit, or a stream that ended without finishing.
TRUNCATED_REASONS = ("length", "truncated")


@guarded
def usage_stats(
    *,
    session: Session,
    owner: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ModelStats]:
    """Per provider+model usage of finished replies in [since, until); `owner=None` means everyone.

    Error rate is replies that ended in "error" over all finished replies; refused (moderation, a
    provider's safety filter) and truncated (token limit, a stream that ended early) are counted apart. Tokens per second is
    chat.types.tokens_per_second's definition, token-weighted over replies: output tokens (reasoning
    included) over generation time (duration minus time to first token), summed over the replies
    that have both and at least MIN_RATE_TOKENS output tokens. Percentiles interpolate linearly
    (PostgreSQL's percentile_cont). The pane replies of a blind comparison count once it has its
    vote: before, their figures would tell which model wrote which pane.
    """
    if owner is not None:
        owner = check_owner(owner)
    since, until = aware(since, "start"), aware(until, "end")
    return _grouped(session, owner, since, until, None).get(0, [])


@guarded
def usage_over_time(*, session: Session, owner: str | None, edges: Sequence[datetime]) -> list[list[ModelStats]]:
    """usage_stats of every bucket [edges[i], edges[i+1]) at once: one grouped query, not one per bucket.

    `edges` are the n+1 increasing bounds of n consecutive buckets; the result has one list per
    bucket (empty where nothing was replied), each exactly what usage_stats(since=edges[i],
    until=edges[i+1]) returns, blind secrecy included.
    """
    if owner is not None:
        owner = check_owner(owner)
    if isinstance(edges, str | bytes) or not isinstance(edges, Sequence) or not 2 <= len(edges) <= MAX_BUCKETS + 1:
        raise InvalidInput(f"Give the bounds of 1 to {MAX_BUCKETS} buckets.")
    bounds = [aware(edge, "bucket bound") for edge in edges]
    if any(a is None or b is None or not a < b for a, b in zip(bounds, bounds[1:])):
        raise InvalidInput("The bucket bounds must increase.")
    found = _grouped(session, owner, bounds[0], bounds[-1], [b for b in bounds if b is not None])
    return [found.get(i, []) for i in range(len(bounds) - 1)]


def _grouped(
    session: Session, owner: str | None, since: datetime | None, until: datetime | None, edges: list[datetime] | None
) -> dict[int, list[ModelStats]]:
    """The stats by bucket index (all in bucket 0 without `edges`), models in provider, model order."""
    m = table_of(Message).c
    conditions = [m.role == "assistant", m.provider.is_not(None), m.finish_reason.is_not(None), m.finish_reason != PENDING,
                  ~blind.secret_reply(m.id)]
    if owner is not None:
        conditions.append(m.owner == owner)
    if since is not None:
        conditions.append(m.created_at >= since)
    if until is not None:
        conditions.append(m.created_at < until)
    bucket: ColumnElement[Any] = sa.literal_column("0")
    if edges is not None and len(edges) > 2:
        # Inside [edges[0], edges[-1]) the first upper bound a reply is below names its bucket.
        bucket = sa.case(*((m.created_at < upper, i) for i, upper in enumerate(edges[1:-1])), else_=len(edges) - 2)
    # The replies with their bucket as a subquery, so both dialects group by a plain column rather
    # than by a CASE repeated with its bound parameters.
    reply = (
        sa.select(m.provider, sa.func.coalesce(m.model, "").label("model"), m.finish_reason, m.input_tokens,
                  m.output_tokens, m.ttft_ms, m.duration_ms, bucket.label("bucket"))
        .where(*conditions)
        .subquery("reply")
    )  # fmt: skip
    r = reply.c
    generating = sa.and_(r.output_tokens >= MIN_RATE_TOKENS, r.ttft_ms.is_not(None), r.duration_ms > r.ttft_ms)
    columns = [
        r.bucket,
        r.provider,
        r.model,
        sa.func.count().label("count"),
        sa.func.coalesce(sa.func.sum(r.input_tokens), 0).label("input_tokens"),
        sa.func.coalesce(sa.func.sum(r.output_tokens), 0).label("output_tokens"),
        sa.func.sum(sa.case((r.finish_reason == "error", 1), else_=0)).label("errors"),
        sa.func.sum(sa.case((r.finish_reason.in_(REFUSED_REASONS), 1), else_=0)).label("refused"),
        sa.func.sum(sa.case((r.finish_reason.in_(TRUNCATED_REASONS), 1), else_=0)).label("truncated"),
        sa.func.sum(sa.case((generating, r.output_tokens), else_=0)).label("gen_tokens"),
        sa.func.sum(sa.case((generating, r.duration_ms - r.ttft_ms), else_=0)).label("gen_ms"),
    ]
    is_pg = session.get_bind().dialect.name == "postgresql"
    if is_pg:
        columns += [
            sa.func.percentile_cont(0.5).within_group(r.ttft_ms).label("p50"),
            sa.func.percentile_cont(0.95).within_group(r.ttft_ms).label("p95"),
        ]
    keys = (r.bucket, r.provider, r.model)
    rows = session.execute(sa.select(*columns).group_by(*keys).order_by(*keys)).mappings().all()
    percentiles: dict[tuple[int, str, str], tuple[float | None, float | None]] = {}
    if not is_pg:
        # SQLite has no percentile function: read the (already filtered) times in order instead.
        ttfts: dict[tuple[int, str, str], list[int]] = {}
        times = sa.select(*keys, r.ttft_ms).where(r.ttft_ms.is_not(None)).order_by(r.ttft_ms)
        for index, provider, model_name, ttft in session.execute(times):
            ttfts.setdefault((index, provider, model_name), []).append(ttft)
        percentiles = {k: (_percentile(v, 0.5), _percentile(v, 0.95)) for k, v in ttfts.items()}
    stats: dict[int, list[ModelStats]] = {}
    for row in rows:
        key = (int(row["bucket"]), row["provider"], row["model"])
        p50, p95 = (row["p50"], row["p95"]) if is_pg else percentiles.get(key, (None, None))
        stats.setdefault(key[0], []).append(
            ModelStats(
                provider=row["provider"],
                model=row["model"],
                count=row["count"],
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                ttft_p50_ms=None if p50 is None else float(p50),
                ttft_p95_ms=None if p95 is None else float(p95),
                error_rate=(row["errors"] or 0) / row["count"],
                refused_rate=(row["refused"] or 0) / row["count"],
                truncated_rate=(row["truncated"] or 0) / row["count"],
                tokens_per_second=(row["gen_tokens"] * 1000 / row["gen_ms"]) if row["gen_ms"] else None,
            )
        )
    return stats


def _percentile(ordered: list[int], fraction: float) -> float | None:
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
