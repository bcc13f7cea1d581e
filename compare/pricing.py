"""A small, editable table of token prices, and the cost of a reply.

Prices are USD per million tokens, keyed by "provider:model". A key may hold `*` wildcards
("demo:*", "ollama:*", "openai:gpt-4.1-mini*"); an exact key wins, then the pattern with the most
literal characters. Dated snapshots fall back to their base name ("gpt-4o-mini-2024-07-18" →
"gpt-4o-mini", "claude-sonnet-4-5-20250929" → "claude-sonnet-4-5"). Unknown models cost None:
a guess would look like a fact in a comparison table.

Overrides come from a TOML or JSON file named by PARLEY_PRICES_FILE (else ./prices.toml if present):

    # prices.toml: USD per million tokens
    [prices]
    "openai:gpt-4o-mini" = { input = 0.15, output = 0.60 }
    "ollama:*" = { input = 0, output = 0, note = "local" }

JSON takes the same shape ({"prices": {"openai:gpt-4o-mini": {"input": 0.15, "output": 0.6}}}, or the
inner mapping alone). File entries are merged over the built-in table; `replace = true` at the top
level drops the built-in table instead.

Prompt caching: an entry may add `cache_read` (USD per million prompt tokens read from the cache)
and `cache_write` (per million written to it; Anthropic bills these above the input price). A reply's
usage (chat.types.Usage) counts those tokens as parts of its input tokens; the rest of the prompt is
priced at `input`. Where the table has no cache price, that part stays unpriced: it adds nothing to
the cost rather than a guessed price (so a cost with cached tokens but no cache price is a lower bound);
except for Anthropic models, whose cache prices are fixed multiples of the input price for every model
(reads 0.1x, 5-minute writes 1.25x: platform.claude.com pricing), so those are used when an entry has none.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chat.errors import InvalidInput
from chat.types import Usage

PRICES_ENV = "PARLEY_PRICES_FILE"
DEFAULT_PRICES_FILE = "prices.toml"
# The cache columns come last so that rows written before them (lists of four) still read the same.
ROW_COLUMNS = ("model", "input_per_m", "output_per_m", "note", "cache_read_per_m", "cache_write_per_m")

_KEY = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9_.*-]*:\S+$")
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


class PriceError(InvalidInput, ValueError):
    """A price table or file that cannot be used; the message says which row and why."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million input and output tokens, and cache reads and writes when the vendor prices them."""

    input: float
    output: float
    note: str = ""
    cache_read: float | None = None  # None: not known (those tokens stay unpriced)
    cache_write: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, cache_write_tokens: int = 0) -> float:
        """USD for these tokens; cached and cache-write tokens are parts of `input_tokens`."""
        plain = max(input_tokens - cached_input_tokens - cache_write_tokens, 0)
        total = plain * self.input + output_tokens * self.output
        if self.cache_read is not None:
            total += cached_input_tokens * self.cache_read
        if self.cache_write is not None:
            total += cache_write_tokens * self.cache_write
        return total / 1_000_000


#: Anthropic's cache prices as multiples of the input price (reads, 5-minute writes), the same for every model.
ANTHROPIC_CACHE_READ, ANTHROPIC_CACHE_WRITE = 0.1, 1.25


def _p(input: float, output: float, note: str = "", *, read: float | None = None, write: float | None = None) -> Price:
    return Price(input, output, note, read, write)


# Approximate list prices (standard tier, short prompts, no batch discounts), as published by the
# providers and last checked in mid-2026. They change: verify before relying on them, and override them
# in prices.toml or from the UI's table. Cache prices: OpenAI's cached input (writes cost nothing extra
# and are not reported); Anthropic's cache reads (0.1x input) and 5-minute cache writes (1.25x input);
# Gemini's implicit-cache reads (explicit caches also bill storage per hour, which no reply reports).
DEFAULT_PRICES: dict[str, Price] = {
    "demo:*": _p(0, 0, "offline demo, free"),
    # OpenAI
    "openai:gpt-5.4": _p(2.50, 15.00, read=0.25),
    "openai:gpt-5.4-mini": _p(0.75, 4.50, read=0.075),
    "openai:gpt-5.4-nano": _p(0.20, 1.25, read=0.02),
    "openai:gpt-5": _p(1.25, 10.00, read=0.125),
    "openai:gpt-5-mini": _p(0.25, 2.00, read=0.025),
    "openai:gpt-5-nano": _p(0.05, 0.40, read=0.005),
    "openai:gpt-4.1": _p(2.00, 8.00, read=0.50),
    "openai:gpt-4.1-mini": _p(0.40, 1.60, read=0.10),
    "openai:gpt-4.1-nano": _p(0.10, 0.40, read=0.025),
    "openai:gpt-4o": _p(2.50, 10.00, read=1.25),
    "openai:gpt-4o-mini": _p(0.15, 0.60, read=0.075),
    "openai:o3": _p(2.00, 8.00, read=0.50),
    "openai:o4-mini": _p(1.10, 4.40, read=0.275),
    # Anthropic (Opus 4.5 and later are cheaper than Opus 4 and 4.1)
    "anthropic:claude-opus-4-7": _p(5.00, 25.00, read=0.50, write=6.25),
    "anthropic:claude-opus-4-6": _p(5.00, 25.00, read=0.50, write=6.25),
    "anthropic:claude-opus-4-5": _p(5.00, 25.00, read=0.50, write=6.25),
    "anthropic:claude-opus-4-1": _p(15.00, 75.00, read=1.50, write=18.75),
    "anthropic:claude-opus-4-0": _p(15.00, 75.00, read=1.50, write=18.75),
    "anthropic:claude-sonnet-4*": _p(3.00, 15.00, "up to 200k input tokens", read=0.30, write=3.75),
    "anthropic:claude-haiku-4-5": _p(1.00, 5.00, read=0.10, write=1.25),
    "anthropic:claude-3-5-haiku*": _p(0.80, 4.00, read=0.08, write=1.00),
    # Google Gemini (paid tier)
    "gemini:gemini-2.5-pro": _p(1.25, 10.00, "up to 200k input tokens", read=0.125),
    "gemini:gemini-2.5-flash": _p(0.30, 2.50, read=0.03),
    "gemini:gemini-2.5-flash-lite": _p(0.10, 0.40, read=0.01),
    "gemini:gemini-2.0-flash": _p(0.10, 0.40, read=0.025),
    "gemini:gemini-2.0-flash-lite": _p(0.075, 0.30),
}


def _specificity(pattern: str) -> int:
    return len(pattern.replace("*", ""))


class PriceTable:
    """Prices by "provider:model" pattern. Immutable: edits build a new table."""

    def __init__(self, prices: Mapping[str, Price] | None = None, *, problems: Sequence[str] = ()):
        source = DEFAULT_PRICES if prices is None else prices
        self._prices: dict[str, Price] = {}
        for key, price in source.items():
            self._prices[_check_key(key, where=f"'{key}'")] = price
        self._patterns = sorted((k for k in self._prices if "*" in k), key=_specificity, reverse=True)
        #: Problems met while loading a prices file, for the UI to show (the table is usable regardless).
        self.problems: tuple[str, ...] = tuple(problems)

    @property
    def prices(self) -> dict[str, Price]:
        return dict(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PriceTable) and self._prices == other._prices

    # -- lookup ---------------------------------------------------------------------------------

    def lookup(self, ref: str) -> Price | None:
        """The price for "provider:model", or None when the table does not know it."""
        ref = (ref or "").strip()
        candidates = [ref]
        undated = _DATE_SUFFIX.sub("", ref)
        if undated != ref:
            candidates.append(undated)
        for c in candidates:
            if c in self._prices:
                return self._prices[c]
        for c in candidates:
            for pattern in self._patterns:
                if fnmatch.fnmatchcase(c, pattern):
                    return self._prices[pattern]
        return None

    def cost(
        self,
        ref: str,
        input_tokens: int | None,
        output_tokens: int | None,
        *,
        cached_input_tokens: int | None = None,
        cache_write_tokens: int | None = None,
    ) -> float | None:
        """USD for one reply; None when the price or a token count is unknown (a free model costs 0 regardless).

        Cached and cache-write tokens are parts of `input_tokens` (chat.types.Usage); see the module
        docstring for how they are priced.
        """
        price = self.lookup(ref)
        if price is None:
            return None
        if price.input == 0 and price.output == 0:
            return 0.0
        if input_tokens is None or output_tokens is None:
            return None
        if ref.strip().startswith("anthropic:") and (price.cache_read is None or price.cache_write is None):
            price = Price(price.input, price.output, price.note,
                          price.input * ANTHROPIC_CACHE_READ if price.cache_read is None else price.cache_read,
                          price.input * ANTHROPIC_CACHE_WRITE if price.cache_write is None else price.cache_write)
        return price.cost(input_tokens, output_tokens, cached_input_tokens or 0, cache_write_tokens or 0)

    def usage_cost(self, ref: str, usage: Usage) -> float | None:
        """USD for one reply's usage (an estimated usage is priced too: the caller shows it as an estimate)."""
        return self.cost(ref, usage.input_tokens, usage.output_tokens,
                         cached_input_tokens=usage.cached_input_tokens, cache_write_tokens=usage.cache_write_tokens)

    # -- editing (the UI's table) ---------------------------------------------------------------

    def to_rows(self) -> list[dict[str, Any]]:
        """Rows for an editable table: ROW_COLUMNS, sorted by model (cache prices None when unknown)."""
        return [
            {"model": k, "input_per_m": p.input, "output_per_m": p.output, "note": p.note,
             "cache_read_per_m": p.cache_read, "cache_write_per_m": p.cache_write}
            for k, p in sorted(self._prices.items())
        ]  # fmt: skip

    @classmethod
    def from_rows(cls, rows: Any) -> PriceTable:
        """A table from edited rows: dicts with ROW_COLUMNS keys, or lists in that order, or a DataFrame.

        Blank rows are skipped; anything else wrong raises PriceError naming the row.
        """
        if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a pandas DataFrame from gr.Dataframe
            rows = rows.to_dict("records")
        prices: dict[str, Price] = {}
        seen_at: dict[str, int] = {}
        for n, row in enumerate(rows or [], 1):
            where = f"Row {n}"
            if isinstance(row, Mapping):
                values = [row.get(c) for c in ROW_COLUMNS]
            elif isinstance(row, (list, tuple)):
                values = list(row[: len(ROW_COLUMNS)]) + [None] * (len(ROW_COLUMNS) - len(row))
            else:
                raise PriceError(f"{where} is not a row of a price table: {row!r}.")
            if all(_blank(v) for v in values):
                continue
            model, input_price, output_price, note, read, write = values
            key = _check_key(model, where=where)
            if key in seen_at:
                raise PriceError(f"{where} repeats '{key}' (first on row {seen_at[key]}); keep one.")
            seen_at[key] = n
            prices[key] = Price(
                _number(input_price, f"{where} ({key}): the input price"),
                _number(output_price, f"{where} ({key}): the output price"),
                "" if _blank(note) else str(note).strip(),
                None if _blank(read) else _number(read, f"{where} ({key}): the cache read price"),
                None if _blank(write) else _number(write, f"{where} ({key}): the cache write price"),
            )
        return cls(prices)

    def merged(self, overrides: Mapping[str, Price]) -> PriceTable:
        """A new table with `overrides` replacing or adding entries."""
        return PriceTable({**self._prices, **overrides}, problems=self.problems)

    # -- files ----------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, base: PriceTable | None = None) -> PriceTable:
        """`base` (default: the built-in table) with a TOML or JSON prices file applied; PriceError when it is bad."""
        overrides, replace = read_prices_file(path)
        if replace:
            return cls(overrides)
        return (base if base is not None else cls()).merged(overrides)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, cwd: str | os.PathLike[str] | None = None) -> PriceTable:
        """The built-in table with PARLEY_PRICES_FILE (or ./prices.toml) applied; a bad file is reported in `problems`."""
        env = os.environ if env is None else env
        root = Path(cwd) if cwd is not None else Path.cwd()
        named = (env.get(PRICES_ENV) or "").strip()
        if named:
            path = Path(named) if Path(named).is_absolute() else root / named
            if not path.is_file():
                return cls(problems=[f"{PRICES_ENV} points to {path}, which does not exist; using the built-in prices."])
        else:
            path = root / DEFAULT_PRICES_FILE
            if not path.is_file():
                return cls()
        try:
            return cls.from_file(path)
        except PriceError as e:
            return cls(problems=[f"{e} The built-in prices are used instead."])


def read_prices_file(path: str | os.PathLike[str]) -> tuple[dict[str, Price], bool]:
    """(prices, replace) from a TOML or JSON file (by extension; .json is JSON, anything else TOML)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise PriceError(f"Could not read the prices file {p}: {e.strerror or e}.") from e
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PriceError(f"{p} is not valid {'JSON' if p.suffix.lower() == '.json' else 'TOML'}: {e}.") from e
    return _parse_prices(data, str(p))


def _parse_prices(data: Any, where: str) -> tuple[dict[str, Price], bool]:
    if not isinstance(data, dict):
        raise PriceError(f"{where}: expected a table of prices at the top level.")
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        raise PriceError(f"{where}: `replace` must be true or false.")
    entries = data.get("prices", {k: v for k, v in data.items() if k != "replace"})
    if not isinstance(entries, dict):
        raise PriceError(f"{where}: `prices` must be a table of \"provider:model\" = {{ input = ..., output = ... }}.")
    prices: dict[str, Price] = {}
    for key, entry in entries.items():
        at = f"{where}: '{key}'"
        _check_key(key, where=at)
        if not isinstance(entry, dict):
            raise PriceError(f"{at} must be a table like {{ input = 0.15, output = 0.60 }}.")
        unknown = set(entry) - {"input", "output", "note", "cache_read", "cache_write"}
        if unknown:
            raise PriceError(f"{at} has unknown keys {', '.join(sorted(unknown))} "
                             "(expected input, output, note, cache_read, cache_write).")
        if "input" not in entry or "output" not in entry:
            raise PriceError(f"{at} needs both `input` and `output` (USD per million tokens).")
        note = entry.get("note", "")
        cache = {k: _number(entry[k], f"{at}: {k}") if k in entry else None for k in ("cache_read", "cache_write")}
        prices[key] = Price(_number(entry["input"], f"{at}: input"), _number(entry["output"], f"{at}: output"),
                            note if isinstance(note, str) else str(note), **cache)
    return prices, replace


# -- validation helpers ---------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):  # empty cells of a DataFrame
        return True
    return isinstance(value, str) and not value.strip()


def _check_key(key: Any, *, where: str) -> str:
    if _blank(key):
        raise PriceError(f"{where}: the model is empty; write it as provider:model (e.g. openai:gpt-4o-mini).")
    if not isinstance(key, str):
        raise PriceError(f"{where}: the model must be text like provider:model, got {key!r}.")
    ref = key.strip()
    if not _KEY.match(ref):
        raise PriceError(f"{where}: '{ref}' is not a provider:model reference (e.g. openai:gpt-4o-mini or ollama:*).")
    return ref


def _number(value: Any, what: str) -> float:
    if _blank(value):
        raise PriceError(f"{what} is empty; enter USD per million tokens (0 for free).")
    if isinstance(value, bool):
        raise PriceError(f"{what} must be a number, got {value!r}.")
    try:
        number = float(value.strip().lstrip("$").replace(",", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError) as e:
        raise PriceError(f"{what} must be a number of USD per million tokens, got {value!r}.") from e
    if not math.isfinite(number):
        raise PriceError(f"{what} must be a finite number, got {value!r}.")
    if number < 0:
        raise PriceError(f"{what} cannot be negative (got {number:g}).")
    return number


def cost(ref: str, input_tokens: int | None, output_tokens: int | None, *, table: PriceTable | None = None) -> float | None:
    """USD for one reply at `table`'s prices (default: the built-in table); None when unknown."""
    return (table if table is not None else PriceTable()).cost(ref, input_tokens, output_tokens)
