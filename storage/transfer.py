"""The export file format: JSON, validated on import, files as base64 (the Markdown export is storage/markdown.py).

A conversation is a tree (storage/tree.py): its `messages` are every version of every message, in the
order they were made, each with `parent`, the index in that list of the message it follows (null:
a root), and the conversation's `current` is the index of the last message of the path shown. A
file written before trees has no `parent` at all: an absent `parent` means the message before, so
such a file is one chain, as it always was.

Pure functions: the repository reads and writes the rows, this module only shapes them.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from storage.errors import InvalidInput
from storage.models import (
    ATTACHMENT_NAME_MAX,
    FINISH_REASONS,
    MAX_ATTACHMENT_BYTES,
    MAX_CONTENT_CHARS,
    MAX_MESSAGE_ATTACHMENTS,
    MIME_MAX,
    NAME_MAX,
    PENDING,
    TITLE_MAX,
    ConversationDetail,
    MessagePublic,
    utcnow,
)
from storage.validation import check_params

FORMAT: Final = "parley.conversations"
VERSION: Final = 1
#: The largest import (and so the largest JSON export, which must import back). Files travel in it
#: as base64 (4/3 of their size): 128 MiB holds a message with the 50 MB of files a message may
#: carry (67 MB as base64) plus 20 MB of text and room to spare, while parsing one stays within a
#: few hundred MB of memory (the text, the decoded bytes and their checked copies at once).
MAX_IMPORT_BYTES = 128 * 1024 * 1024
MAX_IMPORT_CONVERSATIONS = 1_000
MAX_IMPORT_MESSAGES = 10_000  # per conversation
MAX_IMPORT_TOTAL_MESSAGES = 100_000
_METRIC = Field(default=None, ge=0, le=2**31 - 1)
_NAME = Field(default=None, max_length=NAME_MAX)

FinishReason = Literal[
    "stop", "length", "tool_calls", "content_filter", "refusal", "error",
    "cancelled", "truncated", "interrupted", "pending",
]  # fmt: skip
assert set(get_args(FinishReason)) == FINISH_REASONS | {PENDING}


class _Strict(BaseModel):
    # Unknown keys and loose types (a number given as text, a list given as an object) are errors.
    model_config = ConfigDict(extra="forbid", strict=True)


class FileToolCall(_Strict):
    id: str = Field(max_length=NAME_MAX)
    name: str = Field(max_length=NAME_MAX)
    arguments: str = Field(default="{}", max_length=100_000)
    result: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    error: str | None = Field(default=None, max_length=100_000)
    duration_ms: int | None = _METRIC


class FileUsage(_Strict):
    """An assistant reply's usage, as chat.types.Usage defines it (input_tokens is the whole prompt,
    the cache figures are parts of it; output_tokens includes reasoning; estimated: Parley's guess)."""

    input_tokens: int | None = _METRIC
    output_tokens: int | None = _METRIC
    reasoning_tokens: int | None = _METRIC
    cached_input_tokens: int | None = _METRIC
    cache_write_tokens: int | None = _METRIC
    estimated: bool | None = None

    @model_validator(mode="after")
    def _parts_fit(self) -> FileUsage:
        parts = (self.cached_input_tokens or 0) + (self.cache_write_tokens or 0)
        if self.input_tokens is not None and parts > self.input_tokens:
            raise ValueError("cached_input_tokens and cache_write_tokens are parts of input_tokens and cannot exceed it")
        return self


#: Message columns that the file carries inside `usage` only.
USAGE_ONLY_COLUMNS = ("cached_input_tokens", "cache_write_tokens", "usage_estimated")


class FileAttachment(_Strict):
    """A file of a user message, its bytes as standard base64 (`data`)."""

    name: str = Field(min_length=1, max_length=ATTACHMENT_NAME_MAX)
    mime: str = Field(min_length=1, max_length=MIME_MAX)
    size: int = Field(ge=1, le=MAX_ATTACHMENT_BYTES)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    width: int | None = _METRIC
    height: int | None = _METRIC
    pages: int | None = _METRIC
    data: str = Field(max_length=(MAX_ATTACHMENT_BYTES + 2) // 3 * 4)

    def decoded(self) -> bytes:
        """The bytes, once they are known to be the ones the file says (size and sha256)."""
        try:
            raw = base64.b64decode(self.data, validate=True)
        except ValueError as e:
            raise InvalidInput(f"{self.name}: its data is not base64.") from e
        if len(raw) != self.size or hashlib.sha256(raw).hexdigest() != self.sha256:
            raise InvalidInput(f"{self.name}: its data does not match its size and sha256 (the file is damaged).")
        return raw


class FileMessage(_Strict):
    id: str | None = Field(default=None, max_length=64)  # informative only: imports get new ids
    #: The index (from 0) of the message this one follows, always an earlier one; null: a root (the
    #: first message, or an edited version of it); absent: the message just before (older files).
    parent: int | None = None
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(default="", max_length=MAX_CONTENT_CHARS)
    reasoning: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    provider: str | None = _NAME
    model: str | None = _NAME
    model_version: str | None = _NAME
    params: dict[str, Any] | None = None
    input_tokens: int | None = _METRIC
    output_tokens: int | None = _METRIC
    reasoning_tokens: int | None = _METRIC
    ttft_ms: int | None = _METRIC
    duration_ms: int | None = _METRIC
    finish_reason: FinishReason | None = None
    error: str | None = Field(default=None, max_length=100_000)
    feedback: Literal["like", "dislike"] | None = None
    tool_calls: list[FileToolCall] | None = Field(default=None, max_length=256)
    created_at: datetime | None = None
    usage: FileUsage | None = None  # assistant replies; files written before it have none
    # The reproducibility card's own fields (core/repro.py); files written before it have none.
    request_id: str | None = Field(default=None, max_length=200)
    sdk_version: str | None = Field(default=None, max_length=64)
    system_prompt_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")
    # User messages' files; absent (not written at all) when a message has none, so a file without
    # attachments is exactly what Parley wrote before they existed.
    attachments: list[FileAttachment] | None = Field(default=None, max_length=MAX_MESSAGE_ATTACHMENTS)

    _params = field_validator("params")(lambda v: _params_or_error(v))

    @model_validator(mode="after")
    def _files_on_prompts(self) -> FileMessage:
        if self.attachments and self.role != "user":
            raise ValueError("only a user message can carry attachments")
        return self

    @model_serializer(mode="wrap")
    def _omit_no_files(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("attachments") is None:
            data.pop("attachments", None)
        return data

    @model_validator(mode="after")
    def _usage_agrees(self) -> FileMessage:
        # The flat counts stay for older readers; a file whose two copies disagree is not ours to guess about.
        if self.usage is not None:
            for name in ("input_tokens", "output_tokens", "reasoning_tokens"):
                flat, nested = getattr(self, name), getattr(self.usage, name)
                if flat is not None and nested is not None and flat != nested:
                    raise ValueError(f"{name} is {flat} but usage.{name} is {nested}")
        return self

    def parent_index(self, index: int) -> int | None:
        """The index of this message's parent when it is the `index`-th of its conversation."""
        if "parent" in self.model_fields_set:
            return self.parent
        return index - 1 if index > 0 else None

    def usage_columns(self) -> dict[str, Any]:
        """The message columns `usage` fills in on import (the flat counts when it is absent)."""
        u = self.usage
        if u is None:
            return {"cached_input_tokens": None, "cache_write_tokens": None, "usage_estimated": None}
        return {
            "input_tokens": u.input_tokens if u.input_tokens is not None else self.input_tokens,
            "output_tokens": u.output_tokens if u.output_tokens is not None else self.output_tokens,
            "reasoning_tokens": u.reasoning_tokens if u.reasoning_tokens is not None else self.reasoning_tokens,
            "cached_input_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "usage_estimated": u.estimated,
        }


class FileConversation(_Strict):
    id: str | None = Field(default=None, max_length=64)  # informative only
    title: str = Field(min_length=1, max_length=TITLE_MAX)
    model: str | None = _NAME
    system_prompt: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    params: dict[str, Any] | None = None
    pinned: bool = False
    archived: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: The index of the last message of the path shown; null or absent: the newest; -1: nothing shown.
    current: int | None = None
    messages: list[FileMessage] = Field(default_factory=list, max_length=MAX_IMPORT_MESSAGES)

    _params = field_validator("params")(lambda v: _params_or_error(v))

    @model_validator(mode="after")
    def _a_tree(self) -> FileConversation:
        # A parent before its child rules out loops and keeps positions growing along every path.
        for index, message in enumerate(self.messages):
            parent = message.parent_index(index)
            if parent is not None and not 0 <= parent < index:
                raise ValueError(f"message {index + 1}: its parent {parent} is not the index (counted from 0) "
                                 "of a message before it")
        if self.current is not None and not -1 <= self.current < len(self.messages):
            raise ValueError(f"current {self.current} is not the index of one of its {len(self.messages)} messages "
                             "(-1: none shown)")
        return self


class ExportFile(_Strict):
    format: Literal["parley.conversations"] = FORMAT
    version: Literal[1] = VERSION
    exported_at: datetime | None = None
    conversations: list[FileConversation] = Field(max_length=MAX_IMPORT_CONVERSATIONS)


def _params_or_error(value: dict[str, Any] | None) -> dict[str, Any] | None:
    try:
        return check_params(value)
    except InvalidInput as e:
        raise ValueError(e.message) from e


def parse_import(data: str | bytes) -> ExportFile:
    """The validated contents of an export file, or InvalidInput saying what is wrong with it."""
    if not isinstance(data, str | bytes):
        raise InvalidInput("The import must be the text of a Parley JSON export.")
    size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
    if size > MAX_IMPORT_BYTES:
        raise InvalidInput(f"The file is {size / 1e6:.1f} MB; imports are limited to {MAX_IMPORT_BYTES / 1e6:.0f} MB.")
    try:
        parsed = ExportFile.model_validate_json(data)
    except ValidationError as e:
        raise InvalidInput(_describe(e)) from e
    except (ValueError, RecursionError) as e:
        raise InvalidInput(f"The file is not valid JSON: {str(e)[:200]}") from e
    total = sum(len(c.messages) for c in parsed.conversations)
    if total > MAX_IMPORT_TOTAL_MESSAGES:
        raise InvalidInput(f"The file holds {total:,} messages; imports are limited to {MAX_IMPORT_TOTAL_MESSAGES:,}.")
    return parsed


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "file"
        problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    more = error.error_count() - len(problems)
    suffix = f" (and {more} more)" if more > 0 else ""
    return "This is not a valid Parley export: " + "; ".join(problems) + suffix


def build_export(details: list[ConversationDetail], files: Mapping[uuid.UUID, bytes] | None = None) -> ExportFile:
    """The export document for these conversations (no owner, nothing secret: see models).

    Each detail's `messages` are its whole tree by position (storage.tree.tree_of) and its
    `current_leaf_id` the last message of the path shown (None: nothing shown). `files` holds the
    bytes of each attachment the messages link (by attachment id).
    """
    files = files or {}
    return ExportFile(
        exported_at=utcnow(),
        conversations=[
            FileConversation(
                current=_current(d),
                id=str(d.conversation.id),
                title=d.conversation.title,
                model=d.conversation.model,
                system_prompt=d.conversation.system_prompt,
                params=d.conversation.params,
                pinned=d.conversation.pinned,
                archived=d.conversation.archived,
                created_at=d.conversation.created_at,
                updated_at=d.conversation.updated_at,
                messages=_file_messages(d.messages, files),
            )
            for d in details
        ],
    )


def _current(d: ConversationDetail) -> int | None:
    if not d.messages:
        return None
    if d.current_leaf_id is None:
        return -1
    return next((i for i, m in enumerate(d.messages) if m.id == d.current_leaf_id), None)


def _file_messages(messages: list[MessagePublic], files: Mapping[uuid.UUID, bytes]) -> list[FileMessage]:
    index = {m.id: i for i, m in enumerate(messages)}
    # Written for every message, null included: a file with `parent` nowhere reads as a chain.
    return [_file_message(m, files, None if m.parent_id is None else index[m.parent_id]) for m in messages]


def _file_message(m: MessagePublic, files: Mapping[uuid.UUID, bytes], parent: int | None) -> FileMessage:
    data = m.model_dump(exclude={"conversation_id", "position", "parent_id", "attachments", *USAGE_ONLY_COLUMNS})
    data["id"] = str(m.id)
    data["parent"] = parent
    if m.attachments:
        data["attachments"] = [
            {**a.model_dump(exclude={"id"}), "data": base64.b64encode(files[a.id]).decode("ascii")}
            for a in m.attachments
        ]
    if m.role == "assistant":
        data["usage"] = {
            "input_tokens": m.input_tokens, "output_tokens": m.output_tokens, "reasoning_tokens": m.reasoning_tokens,
            "cached_input_tokens": m.cached_input_tokens, "cache_write_tokens": m.cache_write_tokens,
            "estimated": m.usage_estimated,
        }  # fmt: skip
    return FileMessage.model_validate(data, strict=False)


def to_json(document: ExportFile) -> str:
    """The export as indented JSON text."""
    return document.model_dump_json(indent=2)


def export_filename(title: str | None, extension: str) -> str:
    """A safe download name such as `parley-my-chat.md`."""
    stem = "".join(ch if ch.isalnum() else "-" for ch in (title or "conversations").lower())
    stem = "-".join(filter(None, stem.split("-")))[:60] or "conversations"
    return f"parley-{stem}.{extension}"

