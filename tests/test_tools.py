"""Tools: the decorator and schemas, the built-in calculator, clock and search, and the operator's module."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from chat.errors import ChatError
from chat.providers.anthropic import AnthropicProvider
from chat.providers.gemini import GeminiProvider
from chat.providers.openai import OpenAIProvider
from chat.tools import (
    MAX_RESULT_CHARS,
    Tool,
    Toolbox,
    ToolContext,
    ToolError,
    ToolsModuleError,
    builtin_tools,
    calculate,
    calculator,
    current_time,
    default_toolbox,
    evaluate,
    load_tools_module,
    result_text,
    search_conversations,
    tool,
    toolbox_from_env,
)
from chat.tools.calculator import MAX_DEPTH, MAX_LENGTH
from chat.types import Message, Params

# -- defining tools -----------------------------------------------------------------------------------


class Address(BaseModel):
    street: str = Field(description="Street and number")
    city: str


class Order(BaseModel):
    """Ignored: the tool's own description is used."""

    item: str = Field(description="What to order")
    quantity: int = Field(default=1, ge=1, le=10)
    ship_to: Address
    gift_note: str | None = Field(default=None, description="Optional note")
    speed: Literal["standard", "express"] = "standard"
    title: str = "a field called title stays"


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_a_model_argument_becomes_a_self_contained_schema():
    @tool
    def place_order(order: Order) -> str:
        """Place an order."""
        return "ok"

    spec = place_order.spec()
    assert (spec.name, spec.description) == ("place_order", "Place an order.")
    schema = spec.parameters
    keys = {k for node in _walk(schema) for k in node}
    assert not keys & {"$ref", "$defs", "$schema"}
    assert all("title" not in node or isinstance(node.get("title"), dict) for node in _walk(schema))
    props = schema["properties"]
    assert props["ship_to"]["properties"]["street"] == {"type": "string", "description": "Street and number"}
    assert props["gift_note"] == {"type": "string", "description": "Optional note"}  # X | None offered as X
    assert props["quantity"] == {"type": "integer", "default": 1, "minimum": 1, "maximum": 10}
    assert props["speed"]["enum"] == ["standard", "express"]
    assert props["title"]["type"] == "string"
    assert set(schema["required"]) == {"item", "ship_to"}
    # ... and still accepts an explicit null for the optional field.
    assert place_order.validate({"item": "tea", "ship_to": {"street": "1 Main", "city": "X"}, "gift_note": None})


def test_plain_typed_parameters_and_an_injected_context():
    @tool(name="greet", description="Greet someone.", timeout=3)
    def hello(name: Annotated[str, Field(description="Who")], times: int = 1, ctx: ToolContext = None) -> str:
        return f"{ctx.owner}: " + " ".join([f"hi {name}"] * times)

    assert isinstance(hello, Tool) and hello.timeout == 3
    assert hello.spec().parameters == {
        "type": "object",
        "properties": {"name": {"type": "string", "description": "Who"}, "times": {"type": "integer", "default": 1}},
        "required": ["name"],
    }
    assert asyncio.run(hello.run('{"name": "Ada", "times": 2}', ToolContext(owner="u1"))) == "u1: hi Ada hi Ada"
    assert hello("Bob", ctx=ToolContext(owner="me")) == "me: hi Bob"  # still callable as a function


def test_every_provider_accepts_the_specs():
    specs = [t.spec() for t in builtin_tools()]
    history = [Message(role="user", content="hi")]
    openai_tools = OpenAIProvider(api_key="k").request("gpt-4.1", history, Params(), specs)["tools"]
    assert [t["function"]["name"] for t in openai_tools] == ["calculator", "current_time", "search_conversations"]
    anthropic_tools = AnthropicProvider(api_key="k").request("claude-haiku-4-5", history, Params(), specs)["tools"]
    assert anthropic_tools[0]["input_schema"] == specs[0].parameters
    config = GeminiProvider(api_key="k").config("gemini-2.5-flash", history, Params(), specs)
    declarations = config.tools[0].function_declarations
    assert [d.name for d in declarations] == ["calculator", "current_time", "search_conversations"]


@pytest.mark.parametrize(
    ("define", "message"),
    [
        (lambda: tool(name="has space")(lambda: 1), "must be letters"),
        (lambda: Tool.from_function(lambda x: x, name="f", description="d"), "needs a type annotation"),
        (lambda: Tool.from_function(lambda: 1, name="f"), "needs a description"),
        (lambda: Tool.from_function(lambda *a: 1, name="f", description="d"), "*args"),
    ],
)
def test_functions_that_cannot_be_described_are_refused(define, message):
    with pytest.raises(TypeError, match=message.replace("*", r"\*")):
        define()


class Node(BaseModel):
    children: list[Node] = []


def test_recursive_argument_models_are_refused():
    with pytest.raises(TypeError, match="recursive"):

        @tool
        def walk(tree: Node) -> str:
            """Walk."""
            return ""


def test_argument_errors_are_tool_errors_a_model_can_act_on():
    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    assert asyncio.run(add.run('{"a": 2, "b": "3"}')) == "5"
    for bad, text in [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, not list"),
        ('{"a": 1}', "b: Field required"),
        ('{"a": "x", "b": 1}', "a: Input should be a valid integer"),
    ]:
        with pytest.raises(ToolError, match=text):
            add.validate(bad)


async def test_run_turns_every_failure_into_a_tool_error():
    @tool(timeout=0.05)
    async def slow() -> str:
        """Slow."""
        await asyncio.sleep(5)
        return "late"

    @tool
    async def buggy() -> str:
        """Buggy."""
        raise KeyError("password=hunter2")

    @tool
    async def own_timeout() -> str:
        """Raises TimeoutError itself (a network call timing out), which is a failure, not our deadline."""
        raise TimeoutError

    with pytest.raises(ToolError, match=r"slow took longer than 0.05 s"):
        await slow.run("{}")
    with pytest.raises(ToolError) as info:
        await buggy.run("{}")
    assert str(info.value) == "buggy failed unexpectedly (KeyError)." and "hunter2" not in str(info.value)
    with pytest.raises(ToolError, match=r"failed unexpectedly \(TimeoutError\)"):
        await own_timeout.run("{}")
    assert isinstance(ToolError("x"), ChatError)


def test_results_become_text_and_are_cut():
    assert result_text({"a": [1, "é"]}) == '{"a": [1, "é"]}'
    assert result_text(datetime(2025, 1, 2, tzinfo=UTC)) == '"2025-01-02 00:00:00+00:00"'
    long = result_text("x" * (MAX_RESULT_CHARS + 10))
    assert long.startswith("x" * MAX_RESULT_CHARS) and long.endswith("[result cut: 10 more characters]")


def test_toolbox_refuses_duplicates_and_offers_only_available_tools():
    box = default_toolbox()
    assert box.names == ["calculator", "current_time", "search_conversations"]
    assert [s.name for s in box.specs()] == ["calculator", "current_time"]  # no search lent
    lent = ToolContext(owner="u1", search=lambda owner, query, limit: [])
    assert [s.name for s in box.specs(lent)] == box.names
    with pytest.raises(ValueError, match="two tools are named 'calculator'"):
        Toolbox([calculator, calculator])


# -- the calculator ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("2 ** 3 ** 2", "512"),
        ("2 ^ 10", "1024"),
        ("-2 ** 2", "-4"),
        ("2 ** -1", "0.5"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("10 / 4", "2.5"),
        ("0.1 + 0.2", "0.3"),
        ("1e3 + .5", "1000.5"),
        ("sqrt(16) + sqrt(2)", "5.41421356237309"),
        ("sqrt(10**200)", "1" + "0" * 100),
        ("sin(pi / 2) + cos(0) + tan(0)", "2"),
        ("log(e) + log(8, 2) + exp(0)", "5"),
        ("abs(-3) + round(2.567, 2) + round(2.5)", "7.57"),
        ("min(3, 1, 2) + max(4, 9)", "10"),
        ("2 ** 64", "18446744073709551616"),
        ("3 × 4 ÷ 2 − 1", "5"),
        ("  +-+-1  ", "1"),
    ],
)
def test_calculator_values(expression, value):
    assert calculate(expression) == value


HOSTILE = [
    "9**9**9**9",
    "9**9**9",
    "2**100000",
    "10**301",
    "(10**300) * (10**300)",
    "2.0 ** 100000",
    "1e308 * 10",
    "1e999",
    "exp(1000)",
    "10**300 / 1e-300",
    "(-8) ** (1/3)",
    "0 ** -1",
    "1 / 0",
    "1 // 0",
    "1 % 0",
    "sqrt(-1)",
    "log(0)",
    "log(10, 1)",
    "round(1, 10**9)",
    "round(1.5, 0.5)",
    "min()",
    "sqrt(1, 2)",
    "(" * 1000 + "1" + ")" * 1000,
    "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1),
    "-" * 400 + "1",
    "2**" * 150 + "2",
    "1" * (MAX_LENGTH + 1),
    "9" * 400,
    "__import__('os').system('echo hi')",
    "().__class__.__bases__[0].__subclasses__()",
    "(1).real",
    "lambda: 1",
    "[x for x in range(10**9)]",
    "open('/etc/passwd')",
    "eval('1')",
    "x + 1",
    "sqrt",
    "pi()",
    "factorial(1000)",
    "1 if 1 else 2",
    "1 < 2",
    "1 + ",
    ")",
    "",
    "   ",
    "2(3)",
    "1..2",
    "'a' * 10**9",
    "\x00",
    "7 // 2, ",
    "１２３",  # Unicode digits are digits (int() reads them): allowed, and harmless
]


@pytest.mark.parametrize("expression", HOSTILE)
def test_calculator_refuses_hostile_input_quickly(expression):
    started = time.perf_counter()
    try:
        result = calculate(expression)
    except ToolError as e:
        assert str(e)  # a message the model can read
    else:
        assert expression == "１２３" and result == "123"  # Unicode digits are digits; harmless
    # A bound only a blow-up breaks (9**9**9 would run for minutes), not a speed: GC and a busy machine take ms.
    assert time.perf_counter() - started < 5.0


_ATOMS = st.sampled_from(["0", "1", "2", "9", "10", "0.5", "1e300", "1e-300", "99999999999", "pi", "e", "x",
                          "sqrt", "log", "round", "min", "exp", "abs", "sin", "lambda", "__import__", "."])
_OPS = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "^", "(", ")", ",", " ", "**-", "((", "))"])


@settings(max_examples=400, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_ATOMS, _OPS), max_size=80).map("".join))
def test_calculator_token_soup_only_ever_raises_tool_error(expression):
    try:
        value = evaluate(expression)
    except ToolError:
        return
    assert isinstance(value, (int, float)) and abs(value) <= 10**300


@settings(max_examples=300, deadline=500)
@given(st.text(max_size=600))
def test_calculator_arbitrary_text_only_ever_raises_tool_error(expression):
    try:
        evaluate(expression)
    except ToolError:
        pass


@settings(max_examples=200, deadline=500)
@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6), st.sampled_from(["+", "-", "*", "//", "%"]))
def test_calculator_agrees_with_python_on_integers(a, b, op):
    expected = {"+": a + b, "-": a - b, "*": a * b}.get(op)
    if op in ("//", "%"):
        if b == 0:
            with pytest.raises(ToolError, match="Division by zero"):
                evaluate(f"{a} {op} ({b})")
            return
        expected = a // b if op == "//" else a % b
    assert evaluate(f"{a} {op} ({b})") == expected


async def test_calculator_tool_reports_errors_as_tool_errors():
    assert await calculator.run('{"expression": "6 * 7"}') == "42"
    with pytest.raises(ToolError, match="too large"):
        await calculator.run('{"expression": "9**9**9**9"}')
    with pytest.raises(ToolError, match="at most 500 characters"):
        await calculator.run(json.dumps({"expression": "1+" * 300 + "1"}))


# -- the clock ----------------------------------------------------------------------------------------------

NOON_UTC = ToolContext(now=lambda: datetime(2025, 7, 14, 12, 0, 5, tzinfo=UTC))


async def test_current_time_in_a_known_zone():
    out = json.loads(await current_time.run('{"timezone": "America/New_York"}', NOON_UTC))
    assert out == {
        "timezone": "America/New_York",
        "datetime": "2025-07-14T08:00:05-04:00",
        "date": "2025-07-14",
        "time": "08:00:05",
        "weekday": "Monday",
        "utc_offset": "-04:00",
        "abbreviation": "EDT",
    }
    assert json.loads(await current_time.run("{}", NOON_UTC))["datetime"] == "2025-07-14T12:00:05+00:00"
    assert json.loads(await current_time.run('{"timezone": "Asia/Kolkata"}', NOON_UTC))["utc_offset"] == "+05:30"
    real = json.loads(await current_time.run('{"timezone": "UTC"}'))  # the real clock
    assert abs(datetime.fromisoformat(real["datetime"]) - datetime.now(UTC)).total_seconds() < 5


@pytest.mark.parametrize("zone", ["Europe/Pariss", "Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime",
                                  "America", "", "Europe/" + "x" * 200, "Europe\\Paris", "Europe/Paris\x00"])
async def test_current_time_refuses_unknown_zones_clearly(zone):
    with pytest.raises(ToolError) as info:
        await current_time.run(json.dumps({"timezone": zone}), NOON_UTC)
    message = str(info.value)
    assert message.startswith("Unknown time zone") and "Use an IANA name" in message or "at most 64" in message


async def test_current_time_suggests_close_names():
    with pytest.raises(ToolError, match="Did you mean 'Europe/Paris'"):
        await current_time.run('{"timezone": "Europe/Pariss"}', NOON_UTC)


# -- the conversation search ------------------------------------------------------------------------------------


async def test_search_uses_the_owner_of_the_run_not_the_model():
    seen: list[tuple[str, str, int]] = []

    async def search(owner: str, query: str, limit: int) -> list[dict[str, Any]]:
        seen.append((owner, query, limit))
        return [{"title": "Trip", "role": "user", "snippet": "the <mark>Oslo</mark> &amp; Bergen trains",
                 "created_at": datetime(2025, 1, 1, tzinfo=UTC), "conversation_id": 7}]

    ctx = ToolContext(owner="alice", search=search)
    out = json.loads(await search_conversations.run('{"query": "Oslo", "owner": "mallory", "limit": 3}', ctx))
    assert seen == [("alice", "Oslo", 3)]
    assert out == [{"title": "Trip", "role": "user", "snippet": "the Oslo & Bergen trains",
                    "created_at": "2025-01-01 00:00:00+00:00", "conversation_id": 7}]


async def test_search_with_a_sync_function_runs_in_a_thread_and_bounds_its_arguments():
    threads: list[int] = []

    def search(owner: str, query: str, limit: int) -> list[dict[str, Any]]:
        threads.append(threading.get_ident())
        return [{"title": f"hit {i}"} for i in range(50)]  # a search that ignores the limit

    ctx = ToolContext(owner="bob", search=search)
    out = json.loads(await search_conversations.run('{"query": "x", "limit": 2}', ctx))
    assert out == [{"title": "hit 0"}, {"title": "hit 1"}] and threads[0] != threading.get_ident()
    with pytest.raises(ToolError, match="limit"):
        await search_conversations.run('{"query": "x", "limit": 1000}', ctx)
    with pytest.raises(ToolError, match="query"):
        await search_conversations.run('{"query": ""}', ctx)
    empty = ToolContext(owner="bob", search=lambda o, q, n: [])
    assert await search_conversations.run('{"query": "nothing"}', empty) == "No saved messages match 'nothing'."
    with pytest.raises(ToolError, match="not available"):
        await search_conversations.run('{"query": "x"}', ToolContext(search=search))  # no owner


# -- the operator's module ---------------------------------------------------------------------------------------


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("optools")]:
        del sys.modules[name]


def write_module(root, name: str, body: str) -> None:
    package = root / "optools"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / f"{name}.py").write_text(textwrap.dedent(body))


def test_an_operator_module_adds_its_tools(module_dir):
    write_module(module_dir, "good", '''
        from pydantic import BaseModel
        from chat.tools import Tool, tool

        class Args(BaseModel):
            n: int

        @tool
        def double(args: Args) -> int:
            """Double a number."""
            return args.n * 2

        def shout(text: str) -> str:
            """Upper-case some text."""
            return text.upper()

        TOOLS = [double, shout, Tool.from_function(lambda: "pong", name="ping", description="Ping.")]
    ''')
    box = toolbox_from_env({"PARLEY_TOOLS_MODULE": "optools.good"})
    assert box.names == ["calculator", "current_time", "search_conversations", "double", "shout", "ping"]
    assert asyncio.run(box.get("double").run('{"n": 21}')) == "42"
    assert asyncio.run(box.get("shout").run('{"text": "hi"}')) == "HI"
    assert toolbox_from_env({}).names == ["calculator", "current_time", "search_conversations"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("X = 1\n", "must define TOOLS"),
        ("TOOLS = [42]\n", "not a tool"),
        ("def f(x):\n    'Doc.'\n    return x\nTOOLS = [f]\n", "parameter 'x' needs a type annotation"),
        ("raise RuntimeError('boom')\n", "could not be imported (RuntimeError: boom)"),
        ("from chat.tools import calculator\nTOOLS = [calculator]\n", "two tools are named 'calculator'"),
    ],
)
def test_a_broken_operator_module_is_a_clear_error(module_dir, body, message):
    write_module(module_dir, "bad", body)
    with pytest.raises(ToolsModuleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        default_toolbox("optools.bad")


def test_a_missing_operator_module_names_the_setting():
    with pytest.raises(ToolsModuleError, match="PARLEY_TOOLS_MODULE=no_such_pkg.tools could not be imported"):
        load_tools_module("no_such_pkg.tools")
