"""Parameters from widgets or the API go through the same bounds as the sliders."""

from __future__ import annotations

import pytest

from chat.types import Params, param_bounds
from core.params import ParamsProblem, params_error, params_from_inputs


def test_widget_values_become_params():
    p = params_from_inputs(0.7, 0.9, 512, 0, "default")
    assert (p.temperature, p.top_p, p.max_tokens, p.seed, p.effort) == (0.7, 0.9, 512, None, None)
    assert params_from_inputs(None, None, None, 42, "high").seed == 42
    assert params_from_inputs(None, None, None, 42, "high").effort == "high"


@pytest.mark.parametrize("field,value", [("temperature", 2.5), ("top_p", -0.1), ("max_tokens", 0), ("seed", -5)])
def test_out_of_range_values_are_refused_with_the_field_named(field, value):
    args = {"temperature": None, "top_p": None, "max_tokens": None, "seed": None, "effort": None, field: value}
    with pytest.raises(ParamsProblem) as e:
        params_from_inputs(**args)
    assert field in params_error(e.value) and "Nothing was sent" in params_error(e.value)


def test_slider_bounds_come_from_params():
    assert param_bounds("temperature") == (0.0, 2.0)
    assert param_bounds("top_p") == (0.0, 1.0)
    lo, hi = param_bounds("max_tokens")
    assert lo == 1 and hi == Params.model_fields["max_tokens"].metadata[-1].le
