"""mercure rule expressions: each syntax, each function, and what a missing tag means."""

from __future__ import annotations

import pickle

import pytest

from mercury.rules import RuleSyntaxError, compile_rule

TAGS: dict[str, str] = {
    "Modality": "CT",
    "SeriesDescription": "CINE short axis",
    "SliceThickness": "1.5",
    "ImageType": "ORIGINAL\\PRIMARY\\AXIAL",
    "PatientSex": "F",
    "SeriesNumber": "12",
    "BodyPartExamined": "HEART",
    "MagneticFieldStrength": "3",
    "StudyDescription": "Cardiac MR",
    "Manufacturer": "SIEMENS",
}

# (rule, expected truth value)
CASES: list[tuple[str, bool]] = [
    # the three ways to name a tag
    ("tags.Modality == 'CT'", True),
    ("tags.Modality == 'MR'", False),
    ("tags['Modality'] == 'CT'", True),
    ('tags["Modality"] == "CT"', True),
    ("@Modality@ == 'CT'", True),
    ("@Modality@ == 'MR'", False),
    ("'@Modality@' == '@' + 'Modality@'", True),  # not rewritten inside a string
    # attribute form falls back to a case-insensitive match; the other forms are exact
    ("tags.modality == 'CT'", True),
    ("tags.SERIESDESCRIPTION.startswith('CINE')", True),
    # mercure's documented examples
    ("'CINE' in tags.SeriesDescription", True),
    ("tags.Modality == 'CT' and float(tags.SliceThickness) < 2.0", True),
    ("float(tags.SliceThickness) > 2.0", False),
    ("'ORIGINAL' in tags.ImageType.split('\\\\')", True),
    ("'DERIVED' in tags.ImageType.split('\\\\')", False),
    # string methods
    ("tags.SeriesDescription.lower().startswith('cine')", True),
    ("tags.SeriesDescription.upper() == 'CINE SHORT AXIS'", True),
    ("tags.StudyDescription.endswith('MR')", True),
    ("tags.SeriesDescription.find('short') == 5", True),
    ("tags.Manufacturer.strip().title() == 'Siemens'", True),
    ("tags.SeriesDescription.replace(' ', '_') == 'CINE_short_axis'", True),
    ("'-'.join(tags.ImageType.split('\\\\')) == 'ORIGINAL-PRIMARY-AXIAL'", True),
    ("tags.SeriesNumber.isdigit()", True),
    ("tags.ImageType.split('\\\\').count('AXIAL') == 1", True),
    ("tags.PatientSex.center(3) == ' F '", True),
    # built-in functions, each at least once
    ("bool(tags.Modality)", True),
    ("int(tags.SeriesNumber) == 12", True),
    ("str(12) == tags.SeriesNumber", True),
    ("complex(1, 2) == 1 + 2j", True),
    ("len(tags.Modality) == 2", True),
    ("sum([1, 2, 3]) == 6", True),
    ("min(3, 1, 2) == 1 and max([3, 1, 2]) == 3", True),
    ("abs(-2) == 2", True),
    ("all(c.isalpha() for c in tags.Modality)", True),
    ("any(word in tags.SeriesDescription for word in ['CINE', 'LGE'])", True),
    ("any(word in tags.SeriesDescription for word in ['T1', 'LGE'])", False),
    ("sorted(['b', 'a']) == ['a', 'b']", True),
    ("list(reversed([1, 2])) == [2, 1]", True),
    ("list(range(3)) == [0, 1, 2]", True),
    ("[i for i, c in enumerate('ab')] == [0, 1]", True),
    ("list(zip('ab', 'cd')) == [('a', 'c'), ('b', 'd')]", True),
    ("list(filter(None, [0, 1, 2])) == [1, 2]", True),
    ("list(map(str, [1, 2])) == ['1', '2']", True),
    ("round(2.567, 1) == 2.6", True),
    ("pow(2, 10) == 1024 and 2 ** 3 == 8", True),
    ("divmod(7, 2) == (3, 1)", True),
    ("chr(65) == 'A' and ord('A') == 65", True),
    ("hex(255) == '0xff' and oct(8) == '0o10' and bin(2) == '0b10'", True),
    ("format(3.14159, '.2f') == '3.14'", True),
    ("repr('x') == \"'x'\"", True),
    ("tuple([1]) == (1,) and set([1]) == {1} and frozenset([1]) == {1}", True),
    ("dict(a=1) == {'a': 1}", True),
    ("sqrt(16) == 4", True),
    ("ceil(1.2) == 2 and floor(1.8) == 1 and trunc(-1.5) == -1", True),
    ("log(e) == 1 and log10(100) == 2 and log2(8) == 3 and exp(0) == 1", True),
    ("sin(0) == 0 and cos(0) == 1 and tan(0) == 0", True),
    ("asin(0) == 0 and acos(1) == 0 and atan(0) == 0 and atan2(0, 1) == 0", True),
    ("pi > 3.14 and e > 2.71", True),
    ("isinf(float('inf')) and isnan(float('nan'))", True),
    ("fabs(-1.5) == 1.5", True),
    ("factorial(5) == 120", True),
    ("float(tags.MagneticFieldStrength) >= 3 if tags.Modality == 'MR' else True", True),
    # comprehensions and other expressions
    ("{k: v for k, v in [('a', 1)]} == {'a': 1}", True),
    ("{c for c in 'aab'} == {'a', 'b'}", True),
    ("[c for c in 'abc' if c != 'b'] == ['a', 'c']", True),
    ("f'{tags.Modality}-{tags.PatientSex}' == 'CT-F'", True),
    ("tags.SeriesDescription[:4] == 'CINE'", True),
    ("'Modality' in tags", True),
    ("'Missing' not in tags", True),
    ("None is None and True", True),
    ("''", False),
    ("[]", False),
    ("1", True),
]


@pytest.mark.parametrize(("rule", "expected"), CASES)
def test_rule_table(rule: str, expected: bool) -> None:
    outcome = compile_rule(rule).evaluate(TAGS)
    assert outcome.value is expected
    if expected:
        assert outcome.error is None
        assert outcome.missing == ()


def test_method_of_the_wrong_type_is_an_error() -> None:
    outcome = compile_rule("(1).lower() == 1").evaluate(TAGS)
    assert outcome.value is False
    assert outcome.error is not None


@pytest.mark.parametrize(
    "rule",
    ["tags.Missing == 'x'", "tags['Missing'] == 'x'", "@Missing@ == 'x'", "'x' in tags.Missing"],
)
def test_missing_tag_is_false_not_an_error(rule: str) -> None:
    outcome = compile_rule(rule).evaluate(TAGS)
    assert outcome.value is False
    assert outcome.error is None
    assert outcome.missing == ("Missing",)
    assert outcome.tags_read == ("Missing",)


def test_missing_tag_even_when_rest_would_be_true() -> None:
    outcome = compile_rule("tags.Missing == 'x' or True").evaluate(TAGS)
    assert (outcome.value, outcome.missing, outcome.error) == (False, ("Missing",), None)


def test_short_circuit_skips_later_lookups() -> None:
    outcome = compile_rule("tags.Modality == 'MR' and tags.Missing == 'x'").evaluate(TAGS)
    assert (outcome.value, outcome.missing, outcome.tags_read) == (False, (), ("Modality",))


def test_generators_are_lazy_like_python() -> None:
    rule = compile_rule("any(tags[name] == 'CT' for name in ['Modality', 'Missing'])")
    outcome = rule.evaluate(TAGS)
    assert (outcome.value, outcome.missing) == (True, ())


def test_exact_forms_do_not_fold_case() -> None:
    for rule in ("tags['modality'] == 'CT'", "@modality@ == 'CT'"):
        outcome = compile_rule(rule).evaluate(TAGS)
        assert (outcome.value, outcome.missing) == (False, ("modality",))


def test_runtime_error_is_false_with_error() -> None:
    outcome = compile_rule("float('abc') > 1").evaluate(TAGS)
    assert outcome.value is False
    assert outcome.error is not None
    assert "ValueError" in outcome.error
    assert outcome.missing == ()


def test_non_numeric_tag_converted_is_error() -> None:
    outcome = compile_rule("float(tags.Modality) > 1").evaluate(TAGS)
    assert (outcome.value, outcome.tags_read) == (False, ("Modality",))
    assert outcome.error is not None


def test_tags_read_in_first_use_order_and_resolved_names() -> None:
    rule = compile_rule("tags.seriesdescription and tags.Modality and tags.SeriesDescription")
    outcome = rule.evaluate(TAGS)
    assert outcome.tags_read == ("SeriesDescription", "Modality")


def test_static_tag_names() -> None:
    rule = compile_rule("tags.A == @B@ or tags['C'] == 'x' or 'D' in tags or len(tags.A) > 1")
    assert rule.tag_names == frozenset({"A", "B", "C", "D"})


def test_compiled_rule_is_reusable() -> None:
    rule = compile_rule("tags.Modality == 'CT'")
    assert rule.evaluate({"Modality": "CT"}).value is True
    assert rule.evaluate({"Modality": "MR"}).value is False
    assert rule.evaluate({}).missing == ("Modality",)


@pytest.mark.parametrize(
    ("rule", "line", "column"),
    [
        ("tags.Modality == ", 1, 17),
        ("tags.Modality = 'CT'", 1, 15),
        ("tags.Modality == 'CT' and (", 1, 27),
        ("'unterminated", 1, 1),
        ("  @Modality@ == 'CT' and open('x')", 1, 26),
        ("@Modality@ == 'CT' and tags.__class__", 1, 24),
        ("tags.Modality == 'CT' and\n  foo", 1, 26),
        ("(tags.Modality == 'CT' and\n  foo)", 2, 3),
        ("", 1, 1),
        ("tags.Modality == 'CT' @ 1", 1, 18),
    ],
)
def test_syntax_error_positions(rule: str, line: int, column: int) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        compile_rule(rule)
    assert (caught.value.line, caught.value.column) == (line, column), str(caught.value)
    assert str(caught.value).startswith(f"line {line}, column {column}: ")


def test_syntax_error_message_and_pickling() -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        compile_rule("tags.Modality == ")
    error = caught.value
    assert error.message == "invalid syntax"
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.line, copy.column, str(copy)) == (
        error.message,
        error.line,
        error.column,
        str(error),
    )


def test_positions_count_characters_not_bytes() -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        compile_rule("'é' == tags.Modality and bogus")
    assert caught.value.column == 26
