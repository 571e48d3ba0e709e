"""The study completion expression: quoted strings, and, or, parentheses."""

from __future__ import annotations

import pytest

from mercury.rules import RuleSyntaxError, compile_series_expression

EXPR = "'Axial T2' and ('Sag T1 GRE' or 'Sag T1 TSE')"

CASES: list[tuple[str, list[str], bool]] = [
    (EXPR, ["Axial T2 FSE", "Sag T1 GRE"], True),
    (EXPR, ["axial t2", "SAG T1 TSE fs"], True),
    (EXPR, ["Axial T2"], False),
    (EXPR, ["Sag T1 GRE", "Sag T1 TSE"], False),
    (EXPR, [], False),
    ("'T2'", ["Axial T2 FSE"], True),
    ('"T2"', ["axial t2"], True),
    ("'T2' or 'T1'", ["T1 post"], True),
    ("'T2' and 'T1'", ["T1 post"], False),
    ("'T2' and 'T1'", ["T1 post", "T2 pre"], True),
    ("'T2' and 'T1'", ["T1 T2"], True),  # one description may satisfy both
    ("'a' or 'b' and 'c'", ["a"], True),  # and binds tighter than or
    ("('a' or 'b') and 'c'", ["a"], False),
    ("'a' AND 'b'", ["ab"], True),
    ("((('a')))", ["xAx"], True),
    ("''", ["anything"], True),
    ("''", [], False),
]


@pytest.mark.parametrize(("text", "descriptions", "expected"), CASES)
def test_series_table(text: str, descriptions: list[str], expected: bool) -> None:
    assert compile_series_expression(text).evaluate(descriptions) is expected


def test_required_strings_in_order() -> None:
    expression = compile_series_expression(EXPR)
    assert expression.required == ("Axial T2", "Sag T1 GRE", "Sag T1 TSE")


def test_evaluate_accepts_any_iterable() -> None:
    expression = compile_series_expression("'T2'")
    assert expression.evaluate(d for d in ["t2 axial"]) is True


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("", 1, 1),
        ("Axial", 1, 1),
        ("'a' and T2", 1, 9),
        ("'a' and 3", 1, 9),
        ("not 'a'", 1, 1),
        ("'a' and", 1, 8),
        ("'a' 'b'", 1, 5),
        ("('a' or 'b'", 1, 1),
        ("'a')", 1, 4),
        ("()", 1, 2),
        ("'a' and ('b' or 'c'", 1, 9),
        ("'unterminated", 1, 1),
        ("'a' or\n  'b' xor", 2, 7),
        ("'a' & 'b'", 1, 5),
        ("tags.Modality == 'CT'", 1, 1),
        ("'a' or ''.join('b')", 1, 10),
    ],
)
def test_series_syntax_errors(text: str, line: int, column: int) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        compile_series_expression(text)
    assert (caught.value.line, caught.value.column) == (line, column), str(caught.value)
