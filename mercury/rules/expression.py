"""mercure's rule expressions: compile once (with positions for errors), evaluate safely.

A rule is a Python expression over a series' tags (MERCURE-COMPAT.md section 2). The text is
parsed once with Python's parser, checked against an allow-list, and the same tree is then
evaluated by simpleeval for every series; user text is never passed to eval() or exec().
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

from mercury.rules.errors import RuleSyntaxError
from mercury.rules.evaluator import MissingTag, RuleEvaluator, TagView
from mercury.rules.limits import MAX_RULE_LENGTH, Guard, LimitExceeded
from mercury.rules.source import SourceMap
from mercury.rules.validate import Violation, check_tree

__all__ = ["CompiledRule", "RuleOutcome", "RuleSyntaxError", "compile_rule"]

_MAX_ERROR_LENGTH = 300


@dataclass(frozen=True)
class RuleOutcome:
    """What one evaluation found.

    `missing` lists tags the rule looked up that the series lacks; that makes the rule false
    but is not an error. `error` is set for any other failure (also false), so the operator
    can be told that the rule, not the series, needs attention.
    """

    value: bool
    tags_read: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class CompiledRule:
    """A parsed and checked rule, ready to be evaluated any number of times, from any thread."""

    text: str
    tag_names: frozenset[str]
    _tree: ast.Expression = field(repr=False, compare=False)

    def evaluate(self, tags: Mapping[str, str]) -> RuleOutcome:
        """Evaluate against one set of tag values; never raises."""
        view = TagView(tags)
        error: str | None = None
        value = False
        try:
            evaluator = RuleEvaluator(view, Guard(), self.text)
            value = bool(evaluator.run(self._tree.body))
        except MissingTag:
            value = False
        except LimitExceeded as exc:
            error = str(exc)
        except (RecursionError, MemoryError):
            error = "rule exceeded its time/size limit (too complex)"
        except Exception as exc:
            error = _describe(exc)
        return RuleOutcome(
            value=value if error is None else False,
            tags_read=tuple(view.read),
            missing=tuple(view.missing),
            error=error,
        )


def _describe(exc: Exception) -> str:
    try:
        message = f"{type(exc).__name__}: {exc}"
    except Exception:
        message = type(exc).__name__
    if len(message) > _MAX_ERROR_LENGTH:
        message = message[: _MAX_ERROR_LENGTH - 3] + "..."
    return message


def compile_rule(text: str) -> CompiledRule:
    """Parse and check a rule; raise RuleSyntaxError (with line and column) if it is not one."""
    if not isinstance(text, str):
        raise RuleSyntaxError("the rule must be text")
    if len(text) > MAX_RULE_LENGTH:
        raise RuleSyntaxError(f"the rule is longer than {MAX_RULE_LENGTH} characters")
    source = SourceMap(text)
    if not source.text.strip():
        raise RuleSyntaxError("the rule is empty", *source.position(1, 1))
    tree = _parse(source)
    try:
        names = check_tree(tree)
    except Violation as violation:
        line, column = source.node_position(violation.lineno, violation.col_offset)
        raise RuleSyntaxError(violation.message, line, column) from None
    return CompiledRule(text=text, tag_names=frozenset(names), _tree=tree)


def _parse(source: SourceMap) -> ast.Expression:
    """Python's parser, with its failures turned into positioned RuleSyntaxErrors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences
            return ast.parse(source.text, mode="eval")
    except SyntaxError as exc:
        raise _positioned(source, exc) from None
    except (RecursionError, MemoryError):
        raise RuleSyntaxError("the rule is nested too deeply", *source.position(1, 1)) from None
    except ValueError as exc:
        raise RuleSyntaxError(str(exc), *source.position(1, 1)) from None


def _positioned(source: SourceMap, exc: SyntaxError) -> RuleSyntaxError:
    message = exc.msg or "invalid syntax"
    if "null bytes" in message:
        index = source.text.find("\0")
        before = source.text[: max(index, 0)]
        lines = before.split("\n")
        return RuleSyntaxError(message, *source.position(len(lines), len(lines[-1]) + 1))
    lineno = exc.lineno or 1
    if not exc.offset or exc.offset < 1 or lineno > len(source.lines()):
        return RuleSyntaxError(message, *source.end_position(lineno))
    return RuleSyntaxError(message, *source.position(lineno, exc.offset))
