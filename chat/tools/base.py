"""What a tool is: a typed function, a description and a pydantic argument model; and a set of them."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar, overload

from pydantic import BaseModel, ValidationError, create_model

from chat.errors import ChatError
from chat.tools.schema import SchemaError, argument_schema
from chat.types import ToolSpec

log = logging.getLogger("parley.tools")

#: Seconds a tool may run before the loop stops waiting for it.
DEFAULT_TIMEOUT = 10.0
#: Longest tool result sent back to the model; the rest is cut with a note.
MAX_RESULT_CHARS = 20_000

# The strictest name rule of the three APIs (Gemini: a letter or underscore first; 64 characters).
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")

#: `search(owner, query, limit)` over the owner's saved conversations, sync or async, supplied by the UI.
SearchFn = Callable[[str, str, int], Awaitable[list[dict[str, Any]]] | list[dict[str, Any]]]


class ToolError(ChatError):
    """A tool could not do what was asked; the message goes back to the model, which may try again."""

    kind = "tool"


class ToolsModuleError(ChatError):
    """The operator's tools module (PARLEY_TOOLS_MODULE) could not be loaded or is malformed."""

    kind = "tools_module"


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What one run of the loop lends its tools: whose data they may touch and how to reach it.

    Built per request by the UI, so a tool never reads the owner from the model's arguments.
    """

    owner: str | None = None
    search: SearchFn | None = None
    #: The current time as an aware datetime (tests pin it); None means the real clock.
    now: Callable[[], datetime] | None = None


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, eq=False)
class Tool:
    """A tool the model may call. Build one with the `@tool` decorator or `Tool.from_function`."""

    name: str
    description: str
    args: type[BaseModel]
    fn: Callable[..., Any]
    timeout: float = DEFAULT_TIMEOUT
    #: Whether the tool can work in a given context (e.g. search needs an owner); unavailable tools are not offered.
    available: Callable[[ToolContext], bool] | None = None
    # How `fn` takes its arguments: one pydantic model ("model") or keyword arguments ("kwargs").
    _style: str = field(default="kwargs", repr=False)
    _ctx_param: str | None = field(default=None, repr=False)
    _schema: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        available: Callable[[ToolContext], bool] | None = None,
    ) -> Tool:
        """A tool from a typed function: either `fn(args: SomeModel)` or `fn(a: int, b: str = "x")`.

        A parameter annotated `ToolContext` receives the run's context. The description defaults to the
        docstring. Raises TypeError when the function cannot be described to a model.
        """
        name = name or str(getattr(fn, "__name__", ""))
        if not _NAME.match(name):
            raise TypeError(
                f"tool name {name!r} must be letters, digits, '_' or '-' (a letter or '_' first, 64 at most); "
                "pass name=..."
            )
        description = (description or inspect.getdoc(fn) or "").strip()
        if not description:
            raise TypeError(f"tool {name!r} needs a description (a docstring or description=...)")
        if not timeout > 0:
            raise TypeError(f"tool {name!r} needs a positive timeout")
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as e:  # noqa: BLE001 - any failure to resolve annotations is the same mistake
            raise TypeError(f"tool {name!r}: cannot read its type hints ({e})") from e
        ctx_param: str | None = None
        params: list[inspect.Parameter] = []
        for p in inspect.signature(fn).parameters.values():
            if hints.get(p.name) is ToolContext:
                ctx_param = p.name
            elif p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"tool {name!r}: *args and **kwargs cannot be described to a model")
            else:
                params.append(p)
        model_param = (
            len(params) == 1
            and isinstance(hints.get(params[0].name), type)
            and issubclass(hints[params[0].name], BaseModel)
        )
        if model_param:
            args_model: type[BaseModel] = hints[params[0].name]
            style = "model"
        else:
            fields: dict[str, Any] = {}
            for p in params:
                if p.name not in hints:
                    raise TypeError(f"tool {name!r}: parameter {p.name!r} needs a type annotation")
                fields[p.name] = (hints[p.name], ... if p.default is inspect.Parameter.empty else p.default)
            args_model = create_model(f"{name}_arguments", **fields)
            style = "kwargs"
        try:
            schema = argument_schema(args_model)
        except SchemaError as e:
            raise TypeError(f"tool {name!r}: {e}") from e
        return cls(name=name, description=description, args=args_model, fn=fn, timeout=timeout,
                   available=available, _style=style, _ctx_param=ctx_param, _schema=schema)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (a decorated function stays usable as a function)."""
        return self.fn(*args, **kwargs)

    def spec(self) -> ToolSpec:
        """What the providers send: name, description and the cleaned JSON schema of the arguments."""
        return ToolSpec(name=self.name, description=self.description, parameters=json.loads(json.dumps(self._schema)))

    def is_available(self, ctx: ToolContext) -> bool:
        return self.available is None or bool(self.available(ctx))

    def validate(self, arguments: str | Mapping[str, Any] | None) -> BaseModel:
        """The arguments as the tool's model; raises ToolError with a message the model can act on."""
        if isinstance(arguments, str) or arguments is None:
            text = (arguments or "").strip() or "{}"
            try:
                data = json.loads(text)
            except ValueError as e:
                raise ToolError(f"The arguments for {self.name} are not valid JSON ({e}). "
                                "Call the tool again with a JSON object.") from e
        else:
            data = dict(arguments)
        if not isinstance(data, dict):
            raise ToolError(f"The arguments for {self.name} must be a JSON object, not {type(data).__name__}.")
        try:
            return self.args.model_validate(data)
        except ValidationError as e:
            raise ToolError(f"Invalid arguments for {self.name}: {_describe(e)}. "
                            "Call the tool again with corrected arguments.") from e

    async def invoke(self, args: BaseModel, ctx: ToolContext) -> Any:
        """Run the function on validated arguments: awaited if async, in a worker thread if not (no timeout)."""
        if self._style == "model":
            call_args: tuple[Any, ...] = (args,)
            call_kwargs: dict[str, Any] = {}
        else:
            call_args = ()
            call_kwargs = {k: getattr(args, k) for k in type(args).model_fields}
        if self._ctx_param:
            call_kwargs[self._ctx_param] = ctx
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(*call_args, **call_kwargs)
        value = await asyncio.to_thread(self.fn, *call_args, **call_kwargs)
        if inspect.isawaitable(value):  # a sync wrapper around a coroutine
            value = await value
        return value

    async def run(self, arguments: str | Mapping[str, Any] | None, ctx: ToolContext | None = None,
                  *, timeout: float | None = None) -> str:
        """Validate, run under the timeout and render the result as text; every failure is a ToolError.

        A sync tool that overruns keeps its worker thread until it returns (threads cannot be stopped):
        its result is discarded. Cancellation propagates.
        """
        ctx = ctx or ToolContext()
        args = self.validate(arguments)
        limit = self.timeout if timeout is None else timeout
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                value = await self.invoke(args, ctx)
        except ToolError:
            raise
        except ChatError as e:  # a tool that calls something of ours: its message is already for people
            raise ToolError(e.message) from e
        except TimeoutError as e:
            if deadline.expired():
                raise ToolError(f"{self.name} took longer than {limit:g} s and was stopped.") from e
            log.exception("tool %s failed", self.name)
            raise ToolError(f"{self.name} failed unexpectedly (TimeoutError).") from e
        except Exception as e:  # noqa: BLE001 - a tool bug must reach the model as an error, not end the reply
            log.exception("tool %s failed", self.name)
            raise ToolError(f"{self.name} failed unexpectedly ({type(e).__name__}).") from e
        return result_text(value)


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False)[:8]:
        where = ".".join(str(x) for x in err.get("loc", ())) or "(arguments)"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def result_text(value: Any) -> str:
    """A tool's return value as the text the model reads (JSON for data), cut to MAX_RESULT_CHARS."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, BaseModel):
        text = value.model_dump_json()
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = str(value)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n[result cut: {len(text) - MAX_RESULT_CHARS} more characters]"
    return text


@overload
def tool(fn: F, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    available: Callable[[ToolContext], bool] | None = None,
) -> Callable[[F], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    available: Callable[[ToolContext], bool] | None = None,
) -> Tool | Callable[[F], Tool]:
    """Make a typed function a `Tool`: `@tool` or `@tool(name=..., description=..., timeout=...)`."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(f, name=name, description=description, timeout=timeout, available=available)

    return wrap(fn) if fn is not None else wrap


class ToolSource(Protocol):
    """Tools that come and go while the app runs (an MCP server's): read at the start of each reply."""

    def tools(self) -> list[Tool]:
        """The tools offered now (never blocks: a source that is still connecting offers none yet)."""
        ...

    def notices(self) -> list[str]:
        """What the user should know about it now (a server that could not start), else nothing."""
        ...


class Toolbox:
    """The tools a deployment offers, by name: fixed ones built at start-up, then those of its sources."""

    def __init__(self, tools: Iterable[Tool] = (), sources: Iterable[ToolSource] = ()):
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)
        self.sources: list[ToolSource] = list(sources)

    def add(self, t: Tool) -> None:
        if not isinstance(t, Tool):
            raise TypeError(f"{t!r} is not a Tool: decorate the function with @tool")
        if t.name in self._tools:
            raise ValueError(f"two tools are named {t.name!r}")
        self._tools[t.name] = t

    def _all(self) -> dict[str, Tool]:
        """The fixed tools, then the sources' (a source's tool never shadows one already named)."""
        if not self.sources:
            return self._tools
        tools = dict(self._tools)
        for source in self.sources:
            for t in source.tools():
                tools.setdefault(t.name, t)
        return tools

    def get(self, name: str) -> Tool | None:
        return self._all().get(name)

    @property
    def names(self) -> list[str]:
        return list(self._all())

    def available(self, ctx: ToolContext) -> list[Tool]:
        """The tools that can work in this context, in the order they were added."""
        return [t for t in self._all().values() if t.is_available(ctx)]

    def notices(self) -> list[str]:
        """The sources' notices (servers that are down), for the reply's notes."""
        return [n for source in self.sources for n in source.notices()]

    def specs(self, ctx: ToolContext | None = None) -> list[ToolSpec]:
        return [t.spec() for t in self.available(ctx or ToolContext())]

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._all().values())

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, name: object) -> bool:
        return name in self._all()
