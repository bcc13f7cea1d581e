"""Checks applied to every value before it is written; each failure is an InvalidInput or NotFound."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Literal, cast, overload

from storage.errors import InvalidInput, NotFound
from storage.models import AUTO_TITLE_MAX, DEFAULT_TITLE, MAX_CONTENT_CHARS, OWNER_MAX, TITLE_MAX

MAX_PARAMS_CHARS = 10_000
MAX_METRIC = 2**31 - 1  # fits an INTEGER column on every backend
# Parameter names that would hold credentials. Nothing in these tables may store a secret, so a
# caller that passes one by mistake is stopped here rather than having it saved and exported.
_SECRET_NAME = re.compile(r"(?:^|[_\-.])(?:api[_\-]?key|secret|password|passwd|authorization|bearer|credentials?)(?:$|[_\-.])", re.I)
_SPACE = re.compile(r"\s+")
# A lone UTF-16 surrogate: Python text can hold one (JSON "\\ud800" decodes to it), but no database
# driver, pydantic model or JSON encoder downstream accepts it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def no_surrogates(value: str) -> str:
    """The text with each lone surrogate replaced by U+FFFD, so it can be stored and sent back."""
    return _SURROGATE.sub("\ufffd", value)


def check_owner(owner: object) -> str:
    """The owner as given, once known to be a usable non-empty string."""
    if not isinstance(owner, str) or not owner.strip() or len(owner) > OWNER_MAX or "\x00" in owner:
        raise InvalidInput(f"The owner must be a non-empty text of at most {OWNER_MAX} characters.")
    return owner


def parse_id(value: object, what: str = "conversation") -> uuid.UUID:
    """A UUID from a UUID or its text; anything else is simply not found."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
    shown = repr(value)[:80]
    raise NotFound(f"No {what} with id {shown}.")


@overload
def clean_text(value: object, what: str, *, limit: int = ..., optional: Literal[False] = ...) -> str: ...
@overload
def clean_text(value: object, what: str, *, limit: int = ..., optional: bool) -> str | None: ...
def clean_text(value: object, what: str, *, limit: int = MAX_CONTENT_CHARS, optional: bool = False) -> str | None:
    """Text as stored: NUL characters (which PostgreSQL refuses) replaced, length checked."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"The {what} must be text.")
    if len(value) > limit:
        raise InvalidInput(f"The {what} is {len(value):,} characters long; the limit is {limit:,}.")
    return no_surrogates(value.replace("\x00", "\ufffd"))


def clean_title(title: object) -> str:
    """A title given by a user: one line, not empty, at most TITLE_MAX characters (else an error)."""
    if not isinstance(title, str):
        raise InvalidInput("The title must be text.")
    title = _SPACE.sub(" ", no_surrogates(title).replace("\x00", " ")).strip()
    if not title:
        raise InvalidInput("The title cannot be empty.")
    if len(title) > TITLE_MAX:
        raise InvalidInput(f"The title is {len(title)} characters long; the limit is {TITLE_MAX}.")
    return title


def auto_title(prompt: str | None) -> str:
    """A title cut from the first prompt: one line, at most AUTO_TITLE_MAX characters, on a word break."""
    text = _SPACE.sub(" ", no_surrogates(prompt or "").replace("\x00", " ")).strip()
    if not text:
        return DEFAULT_TITLE
    if len(text) <= AUTO_TITLE_MAX:
        return text
    cut = text[: AUTO_TITLE_MAX - 1]
    space = cut.rfind(" ")
    if space >= AUTO_TITLE_MAX // 2:
        cut = cut[:space]
    return cut.rstrip(" .,;:") + "…"


def check_params(params: object) -> dict[str, Any] | None:
    """Generation parameters as a small JSON object without anything that looks like a credential."""
    if params is None:
        return None
    if hasattr(params, "model_dump"):
        params = params.model_dump(exclude_none=True)
    if not isinstance(params, dict):
        raise InvalidInput("The parameters must be a JSON object.")
    try:
        encoded = json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"The parameters are not plain JSON: {e}") from e
    if len(encoded) > MAX_PARAMS_CHARS:
        raise InvalidInput(f"The parameters take {len(encoded):,} characters; the limit is {MAX_PARAMS_CHARS:,}.")
    _refuse_secrets(params)
    return cast(dict[str, Any], json.loads(encoded))  # a JSON object was encoded, so an object decodes


def _refuse_secrets(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if _SECRET_NAME.search(str(key)):
                raise InvalidInput(f"Parameter {str(key)[:40]!r} looks like a credential; secrets are never stored.")
            _refuse_secrets(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_secrets(item)


def check_metric(value: object, what: str) -> int | None:
    """A count or a duration: None or a whole number from 0 to 2**31-1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidInput(f"The {what} must be a whole number.")
    if value < 0 or value > MAX_METRIC:
        raise InvalidInput(f"The {what} must be between 0 and {MAX_METRIC}.")
    return int(round(value))


def check_name(value: object, what: str, limit: int = 200) -> str | None:
    """A provider, model or version name: None or one short line of text."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise InvalidInput(f"The {what} must be text of at most {limit} characters.")
    return value
