"""compare/judging.py: templates, verdict parsing, both-orders combination, agreement and kappa worked out by hand,
position consistency and the flagging rule."""

from __future__ import annotations

import pytest

from compare.judging import (
    DEFAULT_PAIR_TEMPLATE,
    DEFAULT_RUBRIC_TEMPLATE,
    FLAG_MIN_N,
    JudgedPair,
    TemplateError,
    audit,
    check_template,
    cohen_kappa,
    combine,
    human_outcome,
    pair_prompt,
    parse_score,
    parse_verdict,
    win_rates,
)


def test_agreement_and_kappa_equal_a_hand_calculation() -> None:
    # (judge, human), n = 10: 7 agree.
    pairs = [("a", "a")] * 4 + [("b", "b")] * 2 + [("tie", "tie")] + [("a", "b"), ("b", "a"), ("tie", "a")]
    # Judge marginals a .5, b .3, tie .2; human a .6, b .3, tie .1.
    # p_o = 7/10 = 0.7; p_e = .5·.6 + .3·.3 + .2·.1 = .30 + .09 + .02 = .41; κ = (.7 − .41)/(1 − .41) = .29/.59.
    got = cohen_kappa(pairs)
    assert got.n == 10 and got.agree == 7 and got.agreement == pytest.approx(0.7)
    assert got.kappa == pytest.approx(0.29 / 0.59)
    # The same pairs through the audit, as stored verdicts: kappa ≈ .49 ≥ .4 and 70% ≥ 60%: not flagged.
    rows = [JudgedPair("j", j, True, h) for j, h in pairs]
    a = audit("j", rows)
    assert a.agreement.kappa == pytest.approx(0.29 / 0.59) and a.consistency == 1.0 and not a.flagged


def test_kappa_of_a_judge_no_better_than_chance_is_zero_and_undefined_when_both_never_vary() -> None:
    # Judge a/b half each, independent of the human's a/b half each: p_o = .5 = p_e → κ = 0.
    pairs = [("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")] * 3
    got = cohen_kappa(pairs)
    assert got.agreement == pytest.approx(0.5) and got.kappa == pytest.approx(0.0)
    assert cohen_kappa([("tie", "tie")] * 3).kappa is None  # p_e = 1
    assert cohen_kappa([]).n == 0 and cohen_kappa([]).kappa is None


def test_low_agreement_flags_a_judge_only_with_enough_verdicts() -> None:
    few = [JudgedPair("j", "b", True, "a")] * (FLAG_MIN_N - 1)
    assert not audit("j", few).flagged
    many = [*few, JudgedPair("j", "b", True, "a")]
    a = audit("j", many)
    assert a.flagged and a.reasons == ("low agreement with your votes",)
    # 8 of 10 agree, but the judge says "a" every time the human does and "a" otherwise too: κ below 0.4.
    skewed = [JudgedPair("j", "a", True, "a")] * 8 + [JudgedPair("j", "a", True, "b")] * 2
    assert audit("j", skewed).agreement.kappa == pytest.approx(0.0) and audit("j", skewed).flagged


def test_verdicts_are_parsed_from_the_last_bracket_and_unparseable_is_none() -> None:
    assert parse_verdict("Answer [[1]] if ... Final verdict: [[2]]") == "2"
    assert parse_verdict("[[ Tie ]]") == "tie" and parse_verdict("[[A]]") == "1" and parse_verdict("[[b]]") == "2"
    assert parse_verdict("I think answer 1 is better.") is None and parse_verdict("") is None
    assert parse_verdict("[[3]]") is None
    assert parse_score("Rating: [[7]]") == pytest.approx(6 / 9)
    assert parse_score("[[10]]") == 1.0 and parse_score("[[1]]") == 0.0 and parse_score("[[8/10]]") == pytest.approx(7 / 9)
    assert parse_score("[[11]]") is None and parse_score("seven") is None


def test_both_orders_combine_into_a_consistent_verdict_or_a_tie() -> None:
    # ab: model_a shown first; ba: model_b shown first.
    assert combine("1", "2") == ("a", True)  # a wins in both orders
    assert combine("2", "1") == ("b", True)
    assert combine("tie", "tie") == ("tie", True)
    assert combine("1", "1") == ("tie", False)  # always the first answer: position bias
    assert combine("2", "2") == ("tie", False)
    assert combine("1", "tie") == ("tie", False)
    assert combine(None, "1") == ("none", None) and combine("1", None) == ("none", None)


def test_a_human_vote_says_something_about_a_pair_only_when_it_involves_it() -> None:
    assert human_outcome("slot", 2, 0, 2) == "b" and human_outcome("slot", 0, 0, 2) == "a"
    assert human_outcome("slot", 1, 0, 2) is None
    assert human_outcome("tie", None, 0, 1) == "tie" and human_outcome("both_bad", None, 0, 1) == "tie"


def test_templates_keep_their_placeholders_and_answers_are_put_in_verbatim() -> None:
    assert check_template("") == DEFAULT_PAIR_TEMPLATE and check_template(None, rubric=True) == DEFAULT_RUBRIC_TEMPLATE
    with pytest.raises(TemplateError, match="answer_2"):
        check_template("Q {question} A {answer_1}")
    with pytest.raises(TemplateError, match="answer"):
        check_template("Q {question}", rubric=True)
    text = pair_prompt("{question}|{answer_1}|{answer_2}", "q {answer_2}", "one {question}", "two")
    assert text == "q {answer_2}|one {question}|two", "one pass: text inside an answer is not a placeholder"
    for name in ("model", "gpt", "claude"):
        assert name not in DEFAULT_PAIR_TEMPLATE.lower().replace("any name", "")


def test_win_rates_count_ties_half_and_leave_out_no_verdict() -> None:
    rows = [{"judge": "j", "model_a": "x", "model_b": "y", "final": f} for f in ("a", "a", "tie", "b", "none")]
    got = win_rates(rows)["j"]
    assert got["x"] == {"wins": 2, "losses": 1, "ties": 1, "n": 4, "win_rate": 0.625}
    assert got["y"]["win_rate"] == 0.375
