"""Generation parameters from widgets, the API or a CLI: one parser whose every refusal names the parameter.

Every surface hands the raw values to `params_from_inputs` (the UI through `ui.params.unchecked`
components, which skip Gradio's own type check), so a wrong value is refused with a message that
says which parameter is wrong and why, and nothing is sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import ValidationError

from chat.types import Params, param_bounds

#: What the effort widget may send; "default" (or nothing) leaves the provider's own default.
EFFORT_CHOICES: tuple[str, ...] = ("default", *get_args(get_args(Params.model_fields["effort"].annotation)[0]))
_WHOLE = frozenset({"max_tokens", "seed"})


class ParamsProblem(ValueError):
    """Parameters that cannot be used; the text names each bad one and says what it must be."""


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


def expected(name: str) -> str:
    """What a parameter must be, from the same bounds as the sliders ("a number from 0 to 2")."""
    if name == "effort":
        return "one of " + ", ".join(EFFORT_CHOICES)
    lo, hi = param_bounds(name)
    kind = "a whole number" if name in _WHOLE else "a number"
    text = f"{kind} from {_number(lo)} to {_number(hi)}" if lo is not None and hi is not None else kind
    return text + " (0 for random)" if name == "seed" else text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _problem(name: str, value: Any) -> str:
    return f"{name} must be {expected(name)}, got {_shown(value)}"


def _as_number(name: str, value: Any) -> float | int:
    """A finite number within the parameter's bounds (whole where it must be), else ParamsProblem."""
    number: float
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ParamsProblem(_problem(name, value))
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        raise ParamsProblem(_problem(name, value)) from None
    lo, hi = param_bounds(name)
    if not math.isfinite(number) or (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ParamsProblem(_problem(name, value))
    if name in _WHOLE:
        if not number.is_integer():
            raise ParamsProblem(_problem(name, value))
        return int(number)
    return number


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def params_from_inputs(temperature: Any, top_p: Any, max_tokens: Any, seed: Any, effort: Any) -> Params:
    """Params from raw widget or API values; ParamsProblem names every bad one (nothing is sent)."""
    raw = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in raw.items():
        if _unset(value):
            continue
        try:
            values[name] = _as_number(name, value)
        except ParamsProblem as e:
            problems.append(str(e))
    if values.get("seed") == 0:  # the widget's "random"
        del values["seed"]
    if not _unset(effort):
        chosen = effort.strip().lower() if isinstance(effort, str) else effort
        if chosen not in EFFORT_CHOICES:
            problems.append(_problem("effort", effort))
        elif chosen != "default":
            values["effort"] = chosen
    if problems:
        raise ParamsProblem("; ".join(problems))
    try:
        return Params(**values)
    except ValidationError as e:  # only if Params gains a rule the checks above do not know yet
        raise ParamsProblem(_validation_text(e)) from e


def _validation_text(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = err.get("loc", ())
        name = str(loc[0]) if loc else "parameters"
        if name in Params.model_fields:
            parts.append(_problem(name, err.get("input")))
        else:
            parts.append(f"{name}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def params_error(e: ValidationError | ParamsProblem) -> str:
    """The notice for refused parameters: which ones, what they must be, and that nothing was sent."""
    text = _validation_text(e) if isinstance(e, ValidationError) else str(e)
    return f"Invalid parameters: {text}. Nothing was sent."


@dataclass(frozen=True)
class ParamInputs:
    """The raw parameter values of one request, as a widget or an API client sent them (checked by `parse`)."""

    temperature: Any = None
    top_p: Any = None
    max_tokens: Any = None
    seed: Any = None
    effort: Any = "default"

    def parse(self) -> Params:
        """The checked Params; ParamsProblem names every bad value."""
        return params_from_inputs(self.temperature, self.top_p, self.max_tokens, self.seed, self.effort)
