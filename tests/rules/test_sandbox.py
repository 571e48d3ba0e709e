"""Hostile rules: refused when compiled, or bounded (false with an error) when evaluated."""

from __future__ import annotations

import ast
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mercury.rules import RuleSyntaxError, compile_rule

TAGS = {"Modality": "CT", "SeriesDescription": "x" * 50}

REFUSED = [
    "__import__('os')",
    "__import__('os').system('true')",
    "tags.__class__",
    "tags._tags",
    "().__class__.__bases__",
    "().__class__.__bases__[0].__subclasses__()",
    "open('/etc/passwd')",
    "lambda: 1",
    "(lambda: 1)()",
    "exec('1')",
    "eval('1')",
    "compile('1', 'x', 'eval')",
    "getattr(tags, 'x')",
    "globals()",
    "locals()",
    "vars()",
    "type(1)",
    "[x for x in ().__class__.__mro__]",
    "(x := 1)",
    "[y := 1 for x in 'a']",
    "'{0.__class__}'.format(1)",
    "'{x}'.format_map({})",
    "str.format('{}', 1)",
    "'x'.lower",
    "tags.Modality.__len__()",
    "tags.Modality()",
    "max(*[1, 2])",
    "dict(**{'a': 1})",
    "{**{}}",
    "f'{1:{2}}'",
    "f'{tags!r}'",
    "[x for __x in 'a']",
    "[1 for tags in 'a']",
    "[1 for len in 'a']",
    "[x(1) for x in [abs]]",
    "pi()",
    "1 @ 2",
    "...",
    "import os",
    "yield 1",
    "not " * 200 + "1",
    "+".join(["1"] * 3000),
    "-" * 9000 + "1",
    "(" * 300 + "1" + ")" * 300,
    "1" + " " * 20000,
]


@pytest.mark.parametrize("rule", REFUSED)
def test_refused_at_compile_time(rule: str) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        compile_rule(rule)
    assert caught.value.line >= 1
    assert caught.value.column >= 1


BOUNDED = [
    "9**9**9",
    "2**10**7",
    "'x'*10**10",
    "10**10*'x'",
    "b'x'*10**10",
    "[1]*10**9",
    "(1,)*10**9",
    "list(range(10**10))",
    "sum(range(10**12))",
    "max(range(10**12))",
    "sorted(range(10**9))",
    "-1 in range(0, 10**18, 1)",
    "'a' in range(10**9)",
    "factorial(10**6)",
    "pow(10, 10**8)",
    "pow(3, 2**10000, 2**10000 + 1)",
    "1 << 10**9",
    "round(1, -10**9)",
    "[x for x in range(10**5)]",
    "[[y for y in range(10**4)] for x in range(10**4)]",
    "[1 for a in 'x'*10000 for b in 'x'*10000]",
    "sum(sum(range(100000)) for x in range(10000))",
    "[[1]*100000 for i in range(10000)]",
    "['x'*100000 + str(i) for i in range(10000)]",
    "str(['x'*100000]*100000)",
    "repr(['x'*100000]*100000)",
    "f\"{['x'*100000]*100000}\"",
    "format(1, '>1000000000')",
    "format(1.0, '.1000000000f')",
    "','.join(['x'*100000]*10000)",
    "'x'.ljust(10**10)",
    "'x'.center(10**10)",
    "'x'.zfill(10**10)",
    "('\\t'*10000).expandtabs(10**6)",
    "('x'*100000).replace('', 'y'*1000)",
    "'%1000000000d' % 1",
    "sum([[1]]*100000, [])",
    "sum(map(factorial, range(5000))) > 0",
    "dict(zip(range(10**9), range(10**9)))",
    "set(range(10**9))",
    "tuple(x for x in range(10**9))",
    "len(str(factorial(5000)**20))",
    "all(len(str(x)) for x in range(10**9))",
    "any(x < 0 for x in range(10**9))",
]


@pytest.mark.parametrize("rule", BOUNDED)
def test_bounded_at_run_time(rule: str) -> None:
    compiled = compile_rule(rule)
    started = time.monotonic()
    outcome = compiled.evaluate(TAGS)
    elapsed = time.monotonic() - started
    assert elapsed < 5, "the rule must end (not a speed test)"
    assert outcome.value is False
    assert outcome.error is not None


# Big but within the bounds: these simply finish (false, without an error).
FINISHES = [
    "'y' in map(str, range(10**5)) and 'z' in map(str, range(10**5))",
    "-1 in [x for x in range(10000)]",
    "pow(3, 10**100, 10**100 + 1) < 0",
    "len('x' * 100000) < 0",
]


@pytest.mark.parametrize("rule", FINISHES)
def test_big_but_bounded(rule: str) -> None:
    started = time.monotonic()
    outcome = compile_rule(rule).evaluate(TAGS)
    assert time.monotonic() - started < 5
    assert (outcome.value, outcome.error) == (False, None)


def test_limit_message() -> None:
    outcome = compile_rule("'x'*10**10").evaluate(TAGS)
    assert outcome.error is not None
    assert outcome.error.startswith("rule exceeded its time/size limit")


def test_error_messages_are_short() -> None:
    outcome = compile_rule("{}['k' * 50000]").evaluate(TAGS)
    assert outcome.error is not None
    assert len(outcome.error) <= 300


# ---- property tests: never anything but RuleSyntaxError, and evaluate never raises ----------

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.text(max_size=80))
def test_random_text(text: str) -> None:
    try:
        rule = compile_rule(text)
    except RuleSyntaxError as error:
        position = (error.line, error.column)
    else:
        rule.evaluate(TAGS)
        return
    assert min(position) >= 1


_ALPHABET = st.sampled_from(
    [
        *"()[]{}'\"@.,:*+-/%<>=!~ \n\\_",
        *("tags", "and", "or", "not", "for", "in", "if", "x", "1", "0", "len"),
        *("@Modality@", "tags.Modality", "__class__", "lambda", "sum"),
    ]
)


@SETTINGS
@given(st.lists(_ALPHABET, max_size=25).map(" ".join))
def test_random_token_soup(text: str) -> None:
    try:
        rule = compile_rule(text)
    except RuleSyntaxError:
        return
    rule.evaluate(TAGS)


_LEAVES = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6).map(ast.Constant),
    st.text(max_size=5).map(ast.Constant),
    st.sampled_from(["tags", "len", "sum", "x", "open", "pi", "range", "str"]).map(
        lambda n: ast.Name(n, ast.Load())
    ),
    st.sampled_from(["Modality", "Missing", "modality", "__class__"]).map(
        lambda n: ast.Attribute(ast.Name("tags", ast.Load()), n, ast.Load())
    ),
)
_BINOPS = st.sampled_from([ast.Add(), ast.Mult(), ast.Pow(), ast.Mod(), ast.Sub(), ast.LShift()])


def _extend(children: st.SearchStrategy[ast.expr]) -> st.SearchStrategy[ast.expr]:
    return st.one_of(
        st.builds(ast.BinOp, children, _BINOPS, children),
        st.builds(ast.Compare, children, st.just([ast.In()]), children.map(lambda c: [c])),
        st.builds(
            ast.BoolOp,
            st.sampled_from([ast.And(), ast.Or()]),
            st.lists(children, min_size=2, max_size=3),
        ),
        st.builds(ast.UnaryOp, st.sampled_from([ast.Not(), ast.USub()]), children),
        st.builds(
            ast.Call,
            st.sampled_from(["len", "str", "sum", "range", "list", "pow", "sorted", "foo"]).map(
                lambda n: ast.Name(n, ast.Load())
            ),
            st.lists(children, max_size=2),
            st.just([]),
        ),
        st.builds(
            ast.Call,
            st.builds(
                ast.Attribute,
                children,
                st.sampled_from(["lower", "split", "join", "ljust", "mro", "__class__"]),
                st.just(ast.Load()),
            ),
            st.lists(children, max_size=2),
            st.just([]),
        ),
        st.builds(ast.List, st.lists(children, max_size=3), st.just(ast.Load())),
        st.builds(ast.Subscript, children, children, st.just(ast.Load())),
        st.builds(
            ast.ListComp,
            st.just(ast.Name("x", ast.Load())),
            st.builds(
                ast.comprehension,
                st.just(ast.Name("x", ast.Store())),
                children,
                st.just([]),
                st.just(0),
            ).map(lambda c: [c]),
        ),
    )


@SETTINGS
@given(st.recursive(_LEAVES, _extend, max_leaves=12))
def test_random_small_trees(tree: ast.expr) -> None:
    text = ast.unparse(ast.fix_missing_locations(ast.Expression(tree)))
    try:
        rule = compile_rule(text)
    except RuleSyntaxError:
        return
    started = time.monotonic()
    rule.evaluate(TAGS)
    assert time.monotonic() - started < 5
