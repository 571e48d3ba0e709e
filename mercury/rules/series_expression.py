"""The study completion expression: which series must have arrived before a study is complete.

``'Axial T2' and ('Sag T1 GRE' or 'Sag T1 TSE')``: quoted strings combined with and, or and
parentheses, nothing else. Each string matches when it is a case-insensitive substring of any
received SeriesDescription. A tiny parser of its own keeps this language from growing into
the rule language by accident.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mercury.rules.errors import RuleSyntaxError


@dataclass(frozen=True)
class _Token:
    kind: str  # "string", "and", "or", "(", ")", "end"
    text: str
    line: int
    column: int


@dataclass(frozen=True)
class _Required:
    text: str

    def holds(self, descriptions: tuple[str, ...]) -> bool:
        needle = self.text.casefold()
        return any(needle in description for description in descriptions)


@dataclass(frozen=True)
class _Combined:
    operator: str  # "and" or "or"
    parts: tuple[_Node, ...]

    def holds(self, descriptions: tuple[str, ...]) -> bool:
        if self.operator == "and":
            return all(part.holds(descriptions) for part in self.parts)
        return any(part.holds(descriptions) for part in self.parts)


_Node = _Required | _Combined


def _tokenize(text: str) -> list[_Token]:
    """Split into quoted strings, the words and/or, and parentheses, with 1-based positions."""
    tokens: list[_Token] = []
    line, line_start, i = 1, 0, 0
    while i < len(text):
        char = text[i]
        column = i - line_start + 1
        if char == "\n":
            line, line_start = line + 1, i + 1
            i += 1
        elif char.isspace():
            i += 1
        elif char in "()":
            tokens.append(_Token(char, char, line, column))
            i += 1
        elif char in "'\"":
            end = text.find(char, i + 1)
            newline = text.find("\n", i + 1)
            if end < 0 or (0 <= newline < end):
                raise RuleSyntaxError("unterminated string", line, column)
            tokens.append(_Token("string", text[i + 1 : end], line, column))
            i = end + 1
        elif char.isalpha() or char == "_":
            start = i
            while i < len(text) and (text[i].isalnum() or text[i] == "_"):
                i += 1
            word = text[start:i]
            if word.lower() not in ("and", "or"):
                raise RuleSyntaxError(
                    f"unexpected '{word}': only quoted series descriptions, and, or and "
                    "parentheses are allowed",
                    line,
                    column,
                )
            tokens.append(_Token(word.lower(), word, line, column))
        else:
            raise RuleSyntaxError(
                f"unexpected '{char}': only quoted series descriptions, and, or and "
                "parentheses are allowed",
                line,
                column,
            )
    tokens.append(_Token("end", "", line, len(text) - line_start + 1))
    return tokens


class _Parser:
    """expression := term ('or' term)* ; term := factor ('and' factor)* ;
    factor := STRING | '(' expression ')'"""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.required: list[str] = []

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def parse(self) -> _Node:
        node = self.expression()
        if self.current.kind != "end":
            raise self.unexpected()
        return node

    def expression(self) -> _Node:
        parts = [self.term()]
        while self.current.kind == "or":
            self.index += 1
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else _Combined("or", tuple(parts))

    def term(self) -> _Node:
        parts = [self.factor()]
        while self.current.kind == "and":
            self.index += 1
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else _Combined("and", tuple(parts))

    def factor(self) -> _Node:
        token = self.current
        if token.kind == "string":
            self.index += 1
            self.required.append(token.text)
            return _Required(token.text)
        if token.kind == "(":
            self.index += 1
            node = self.expression()
            if self.current.kind != ")":
                closing = self.current
                message = "'(' was never closed" if closing.kind == "end" else None
                if message is None:
                    raise self.unexpected()
                raise RuleSyntaxError(message, token.line, token.column)
            self.index += 1
            return node
        raise self.unexpected()

    def unexpected(self) -> RuleSyntaxError:
        token = self.current
        if token.kind == "end":
            return RuleSyntaxError(
                "unexpected end: a quoted series description is missing", token.line, token.column
            )
        return RuleSyntaxError(f"unexpected '{token.text}'", token.line, token.column)


@dataclass(frozen=True)
class SeriesExpression:
    """A compiled required-series expression."""

    text: str
    required: tuple[str, ...]
    _root: _Node

    def evaluate(self, descriptions: Iterable[str]) -> bool:
        """Whether the received SeriesDescriptions satisfy the expression."""
        folded = tuple(description.casefold() for description in descriptions)
        return self._root.holds(folded)


def compile_series_expression(text: str) -> SeriesExpression:
    """Parse a study_trigger_series expression; RuleSyntaxError (with position) if invalid."""
    tokens = _tokenize(text)
    if tokens[0].kind == "end":
        raise RuleSyntaxError("the expression is empty", 1, 1)
    parser = _Parser(tokens)
    root = parser.parse()
    return SeriesExpression(text=text, required=tuple(parser.required), _root=root)
