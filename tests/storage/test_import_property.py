"""Property: any JSON-shaped import either imports or is refused with InvalidInput, writing nothing."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import repository as repo
from storage.errors import InvalidInput

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**6, max_value=10**6) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "<b>x</b>", 3]), "content": st.one_of(st.text(max_size=50), st.integers(), st.none())},
    optional={"position": st.integers(-2, 5), "finish_reason": st.one_of(st.sampled_from(["stop", "pending", "weird"]), st.none()),
              "extra": json_values, "ttft_ms": st.one_of(st.integers(-5, 10**6), st.text(max_size=5))},
)
conversation = st.fixed_dictionaries(
    {"title": st.one_of(st.text(max_size=40), st.integers(), st.none()), "messages": st.lists(message, max_size=4)},
    optional={"model": json_values, "params": json_values, "pinned": json_values, "unknown": json_values},
)
payload = st.one_of(
    json_values,
    st.fixed_dictionaries({"conversations": st.lists(conversation, max_size=3)}, optional={"version": json_values}),
    st.lists(conversation, max_size=3),
)


@given(data=payload)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_imports_either_succeed_or_are_refused_cleanly(session, count_rows, data):
    before = count_rows()
    try:
        ids = repo.import_json(session=session, owner="prop-owner", data=json.dumps(data))
    except InvalidInput as e:
        assert str(e), "a refusal says why"
        assert count_rows() == before, "a refused import writes nothing"
    else:
        convs, msgs = count_rows()
        assert convs == before[0] + len(ids)
        for cid in ids:
            detail = repo.get_conversation(session=session, owner="prop-owner", conversation_id=cid)
            assert all(m.role in ("user", "assistant", "system", "tool") for m in detail.messages)
