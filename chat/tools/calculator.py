"""A calculator that parses arithmetic itself (never `eval`), with limits on size, depth and magnitude."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from pydantic import BaseModel, Field

from chat.tools.base import Tool, ToolError

MAX_LENGTH = 500  # characters of expression
MAX_DEPTH = 40  # nested parentheses, calls and unary signs
MAX_ARGS = 50  # arguments of min/max
MAX_ABS = 10**300  # largest magnitude of any intermediate or final value
_MAX_BITS = MAX_ABS.bit_length()

Number = int | float

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>\*\*|//|[-+*/%^(),]))"
)
# Typographic signs people paste from documents.
_SIGNS = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-"})

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
FUNCTIONS = ("sqrt", "sin", "cos", "tan", "log", "exp", "abs", "round", "min", "max")


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; raises ToolError (and nothing else) for anything it refuses."""
    if not isinstance(expression, str):
        raise ToolError("The expression must be text.")
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"The expression is longer than {MAX_LENGTH} characters.")
    text = expression.translate(_SIGNS)
    if not text.strip():
        raise ToolError("The expression is empty.")
    parser = _Parser(_tokenize(text))
    try:
        return parser.parse()
    except RecursionError as e:  # unreachable with MAX_DEPTH, kept so no input can escape as another type
        raise ToolError("The expression is nested too deeply.") from e


def format_number(value: Number) -> str:
    """A result as people write it: integers exactly, other values to 15 significant digits."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:.15g}"


def calculate(expression: str) -> str:
    """The formatted value of an expression (what the tool returns)."""
    return format_number(evaluate(expression))


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            rest = text[pos:].lstrip()
            if not rest:
                break
            where = end - len(rest)
            raise ToolError(f"Unexpected character {rest[0]!r} at position {where + 1}. "
                            "Use numbers, + - * / // % ** ( ), pi, e and " + ", ".join(FUNCTIONS) + ".")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent over the grammar below, evaluating as it goes (Python's precedence and associativity).

    expr  := term (('+' | '-') term)*
    term  := unary (('*' | '/' | '//' | '%') unary)*
    unary := ('+' | '-') unary | power
    power := atom (('**' | '^') unary)?
    atom  := number | constant | function '(' expr (',' expr)* ')' | '(' expr ')'
    """

    def __init__(self, tokens: list[tuple[str, str, int]]):
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def parse(self) -> Number:
        value = self._expr()
        if self.i < len(self.tokens):
            _, text, pos = self.tokens[self.i]
            raise ToolError(f"Unexpected {text!r} at position {pos + 1}.")
        return value

    # -- token helpers

    def _peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def _take(self) -> tuple[str, str, int]:
        if self.i >= len(self.tokens):
            raise ToolError("The expression ends too early.")
        token = self.tokens[self.i]
        self.i += 1
        return token

    def _expect(self, text: str) -> None:
        kind, got, pos = self._take()
        if got != text or kind != "op":
            raise ToolError(f"Expected {text!r} at position {pos + 1}, found {got!r}.")

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ToolError(f"The expression is nested more than {MAX_DEPTH} levels deep.")

    # -- grammar

    def _expr(self) -> Number:
        value = self._term()
        while self._peek() in ("+", "-"):
            op = self._take()[1]
            right = self._term()
            value = _check(value + right if op == "+" else value - right)
        return value

    def _term(self) -> Number:
        value = self._unary()
        while self._peek() in ("*", "/", "//", "%"):
            op = self._take()[1]
            right = self._unary()
            value = _binary(op, value, right)
        return value

    def _unary(self) -> Number:
        if self._peek() in ("+", "-"):
            op = self._take()[1]
            self._enter()
            value = self._unary()
            self.depth -= 1
            return -value if op == "-" else value
        return self._power()

    def _power(self) -> Number:
        base = self._atom()
        if self._peek() in ("**", "^"):
            self._take()
            self._enter()
            exponent = self._unary()  # right-associative: 2**3**2 is 2**9
            self.depth -= 1
            return _power(base, exponent)
        return base

    def _atom(self) -> Number:
        kind, text, pos = self._take()
        if kind == "num":
            return _number(text)
        if kind == "name":
            if self._peek() == "(":
                return self._call(text, pos)
            if text in CONSTANTS:
                return CONSTANTS[text]
            if text in FUNCTIONS:
                raise ToolError(f"{text} is a function: write {text}(...).")
            raise ToolError(f"Unknown name {text!r}. Only pi, e and the functions {', '.join(FUNCTIONS)} are known.")
        if text == "(":
            self._enter()
            value = self._expr()
            self._expect(")")
            self.depth -= 1
            return value
        raise ToolError(f"Unexpected {text!r} at position {pos + 1}.")

    def _call(self, name: str, pos: int) -> Number:
        fn = _FUNCS.get(name)
        if fn is None:
            raise ToolError(f"Unknown function {name!r} at position {pos + 1}. Known: {', '.join(FUNCTIONS)}.")
        self._expect("(")
        self._enter()
        args = [self._expr()]
        while self._peek() == ",":
            self._take()
            if len(args) >= MAX_ARGS:
                raise ToolError(f"{name} takes at most {MAX_ARGS} arguments.")
            args.append(self._expr())
        self._expect(")")
        self.depth -= 1
        return _check(fn(name, args))


# -- arithmetic with limits ---------------------------------------------------------------------


def _number(text: str) -> Number:
    value: Number = float(text) if any(c in text for c in ".eE") else int(text)
    return _check(value, "A number in the expression is too large.")


def _check(value: Number, message: str = "The result is too large.") -> Number:
    if isinstance(value, float):
        if math.isnan(value):
            raise ToolError("The result is undefined (not a number).")
        if math.isinf(value) or abs(value) > MAX_ABS:
            raise ToolError(message)
    elif abs(value) > MAX_ABS:
        raise ToolError(message)
    return value


def _binary(op: str, a: Number, b: Number) -> Number:
    if op == "*":
        return _check(a * b)
    if b == 0:
        raise ToolError("Division by zero.")
    try:
        if op == "/":
            return _check(a / b)
        if op == "//":
            return _check(a // b)
        return _check(a % b)
    except OverflowError as e:  # an integer quotient too large for a float
        raise ToolError("The result is too large.") from e


def _power(base: Number, exponent: Number) -> Number:
    if isinstance(base, int) and isinstance(exponent, int) and exponent >= 0:
        if abs(base) > 1 and (abs(base).bit_length() - 1) * exponent > _MAX_BITS:
            raise ToolError("The result is too large.")  # known before computing it
        return _check(base**exponent)
    if base == 0 and exponent < 0:
        raise ToolError("Zero cannot be raised to a negative power.")
    if base < 0 and not float(exponent).is_integer():
        raise ToolError("A negative number to a fractional power is not a real number.")
    try:
        return _check(math.pow(float(base), float(exponent)))
    except OverflowError as e:
        raise ToolError("The result is too large.") from e
    except ValueError as e:
        raise ToolError("The result is undefined.") from e


def _arity(name: str, args: list[Number], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise ToolError(f"{name} takes {want} argument{'s' if high > 1 else ''}, not {len(args)}.")


def _unary_fn(f: Callable[[float], float]) -> Callable[[str, list[Number]], Number]:
    def call(name: str, args: list[Number]) -> Number:
        _arity(name, args, 1, 1)
        try:
            return f(float(args[0]))
        except OverflowError as e:
            raise ToolError(f"{name} of that value is too large.") from e
        except ValueError as e:
            raise ToolError(f"{name} is not defined for {format_number(args[0])}.") from e

    return call


def _sqrt(name: str, args: list[Number]) -> Number:
    _arity(name, args, 1, 1)
    (x,) = args
    if x < 0:
        raise ToolError("The square root of a negative number is not a real number.")
    if isinstance(x, int) and math.isqrt(x) ** 2 == x:
        return math.isqrt(x)  # exact for perfect squares of any size
    return math.sqrt(x)


def _log(name: str, args: list[Number]) -> Number:
    _arity(name, args, 1, 2)
    x = args[0]
    if x <= 0:
        raise ToolError("The logarithm is defined only for positive numbers.")
    if len(args) == 1:
        return math.log(x)
    base = args[1]
    if base <= 0 or base == 1:
        raise ToolError("The base of a logarithm must be positive and not 1.")
    return math.log(x, base)


def _round(name: str, args: list[Number]) -> Number:
    _arity(name, args, 1, 2)
    if len(args) == 1:
        return round(args[0]) if math.isfinite(args[0]) else args[0]
    digits = args[1]
    if not isinstance(digits, int) or not -300 <= digits <= 300:
        raise ToolError("round(x, n) takes a whole number n between -300 and 300.")
    return round(args[0], digits)


def _extreme(name: str, args: list[Number]) -> Number:
    return min(args) if name == "min" else max(args)


def _abs(name: str, args: list[Number]) -> Number:
    _arity(name, args, 1, 1)
    return abs(args[0])


_FUNCS: dict[str, Callable[[str, list[Number]], Number]] = {
    "sqrt": _sqrt,
    "sin": _unary_fn(math.sin),
    "cos": _unary_fn(math.cos),
    "tan": _unary_fn(math.tan),
    "log": _log,
    "exp": _unary_fn(math.exp),
    "abs": _abs,
    "round": _round,
    "min": _extreme,
    "max": _extreme,
}


class CalculatorArgs(BaseModel):
    expression: str = Field(
        max_length=MAX_LENGTH,
        description="Arithmetic, e.g. '(2 + 3) * sqrt(16) / 7'. Operators + - * / // % ** (or ^); "
        "functions sqrt, sin, cos, tan (radians), log(x) or log(x, base), exp, abs, round(x[, n]), min, max; "
        "constants pi and e.",
    )


def _calculator(args: CalculatorArgs) -> str:
    return calculate(args.expression)


calculator = Tool.from_function(
    _calculator,
    name="calculator",
    description="Evaluate an arithmetic expression exactly and return its value. Use it for any arithmetic "
    "instead of computing in your head.",
    timeout=5.0,
)
