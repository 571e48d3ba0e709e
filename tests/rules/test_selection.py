"""Which rules fire: mercure's order, discard, fallback semantics, plus stop_after."""

from __future__ import annotations

import pytest

from mercury.rules import RuleSpec, Selection, compile_rule, select_rules

TAGS = {"Modality": "CT", "SeriesDescription": "CINE"}

TRUE = "tags.Modality == 'CT'"
FALSE = "tags.Modality == 'MR'"
MISSING = "tags.Missing == 'x'"
BROKEN = "float('abc') > 1"


def spec(
    name: str,
    rule: str,
    action: str = "route",
    *,
    disabled: bool = False,
    fallback: bool = False,
    stop_after: bool = False,
) -> RuleSpec:
    return RuleSpec(
        name=name,
        expression=compile_rule(rule),
        action=action,
        disabled=disabled,
        fallback=fallback,
        stop_after=stop_after,
    )


# (rules, triggered, discarded, discarded_by, evaluated rule names)
CASES: list[tuple[str, list[RuleSpec], tuple[str, ...], bool, str | None, set[str]]] = [
    (
        "all true fire in order",
        [spec("a", TRUE), spec("b", TRUE)],
        ("a", "b"),
        False,
        None,
        {"a", "b"},
    ),
    ("false does not fire", [spec("a", FALSE), spec("b", TRUE)], ("b",), False, None, {"a", "b"}),
    ("nothing fires: discard", [spec("a", FALSE), spec("b", MISSING)], (), True, None, {"a", "b"}),
    ("no rules: discard", [], (), True, None, set()),
    (
        "disabled is skipped",
        [spec("a", TRUE, disabled=True), spec("b", TRUE)],
        ("b",),
        False,
        None,
        {"b"},
    ),
    ("disabled true rule alone: discard", [spec("a", TRUE, disabled=True)], (), True, None, set()),
    (
        "discard in the middle drops earlier matches and stops",
        [spec("a", TRUE), spec("d", TRUE, "discard"), spec("c", TRUE)],
        ("d",),
        True,
        "d",
        {"a", "d"},
    ),
    (
        "false discard rule does nothing",
        [spec("a", TRUE), spec("d", FALSE, "discard"), spec("c", TRUE)],
        ("a", "c"),
        False,
        None,
        {"a", "d", "c"},
    ),
    (
        "stop_after keeps earlier matches",
        [spec("a", TRUE), spec("s", TRUE, stop_after=True), spec("c", TRUE)],
        ("a", "s"),
        False,
        None,
        {"a", "s"},
    ),
    (
        "stop_after on a false rule does not stop",
        [spec("s", FALSE, stop_after=True), spec("c", TRUE)],
        ("c",),
        False,
        None,
        {"s", "c"},
    ),
    (
        "fallback not evaluated when another rule fired",
        [spec("f", TRUE, fallback=True), spec("a", TRUE)],
        ("a",),
        False,
        None,
        {"a"},
    ),
    (
        "fallback fires when nothing else did",
        [spec("a", FALSE), spec("f", TRUE, fallback=True)],
        ("f",),
        False,
        None,
        {"a", "f"},
    ),
    (
        "several fallbacks in order",
        [spec("f1", TRUE, fallback=True), spec("a", FALSE), spec("f2", TRUE, fallback=True)],
        ("f1", "f2"),
        False,
        None,
        {"a", "f1", "f2"},
    ),
    (
        "false fallback: discard",
        [spec("a", FALSE), spec("f", FALSE, fallback=True)],
        (),
        True,
        None,
        {"a", "f"},
    ),
    (
        "fallback with stop_after",
        [spec("f1", TRUE, fallback=True, stop_after=True), spec("f2", TRUE, fallback=True)],
        ("f1",),
        False,
        None,
        {"f1"},
    ),
    (
        "discarding fallback",
        [spec("a", FALSE), spec("f", TRUE, "discard", fallback=True)],
        ("f",),
        True,
        "f",
        {"a", "f"},
    ),
    (
        "a discard rule stops before fallbacks are considered",
        [spec("d", TRUE, "discard"), spec("f", TRUE, fallback=True)],
        ("d",),
        True,
        "d",
        {"d"},
    ),
    (
        "disabled fallback is skipped",
        [spec("a", FALSE), spec("f", TRUE, fallback=True, disabled=True)],
        (),
        True,
        None,
        {"a"},
    ),
    (
        "notification rules count as fired",
        [spec("n", TRUE, "notification"), spec("f", TRUE, fallback=True)],
        ("n",),
        False,
        None,
        {"n"},
    ),
    (
        "broken rule is false, the others still run",
        [spec("x", BROKEN), spec("a", TRUE)],
        ("a",),
        False,
        None,
        {"x", "a"},
    ),
]


@pytest.mark.parametrize(
    ("rules", "triggered", "discarded", "discarded_by", "evaluated"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_selection_table(
    rules: list[RuleSpec],
    triggered: tuple[str, ...],
    discarded: bool,
    discarded_by: str | None,
    evaluated: set[str],
) -> None:
    selection = select_rules(rules, TAGS)
    assert isinstance(selection, Selection)
    assert selection.triggered == triggered
    assert selection.discarded is discarded
    assert selection.discarded_by == discarded_by
    assert set(selection.outcomes) == evaluated


def test_errors_recorded() -> None:
    selection = select_rules([spec("x", BROKEN), spec("m", MISSING), spec("a", TRUE)], TAGS)
    assert set(selection.errors) == {"x"}
    assert "ValueError" in selection.errors["x"]
    assert selection.outcomes["m"].missing == ("Missing",)
    assert selection.outcomes["m"].error is None
    assert selection.triggered == ("a",)


def test_limit_errors_recorded() -> None:
    selection = select_rules([spec("bomb", "'x' * 10**10"), spec("a", TRUE)], TAGS)
    assert selection.errors["bomb"].startswith("rule exceeded its time/size limit")
    assert selection.triggered == ("a",)
