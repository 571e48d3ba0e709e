"""From a rule's text to Python expression text, and positions back to the rule's text.

mercure accepts the legacy form ``@Name@`` for a tag; we rewrite it to ``tags["Name"]`` before
parsing, and leading whitespace is dropped (Python would call it an indentation error). Error
positions must still point into what the user wrote, so the rewrite keeps a map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LEGACY_TAG = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)@")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LEADING_SPACE = " \t\f\r\n"


@dataclass(frozen=True)
class _Replacement:
    """One ``@Name@`` (columns orig_start..orig_end) now at new_start..new_end of its line."""

    new_start: int
    new_end: int
    orig_start: int
    orig_end: int


@dataclass
class SourceMap:
    """The text handed to the parser, and how its positions map back to the user's text."""

    original: str
    text: str = ""
    legacy_tags: list[str] = field(default_factory=list)
    _skipped_lines: int = 0
    _skipped_columns: int = 0
    _replacements: dict[int, list[_Replacement]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stripped = self.original.lstrip(_LEADING_SPACE)
        lead = self.original[: len(self.original) - len(stripped)]
        breaks = list(_LINE_BREAK.finditer(lead))
        self._skipped_lines = len(breaks)
        self._skipped_columns = len(lead) - breaks[-1].end() if breaks else len(lead)
        self.text = self._rewrite_legacy_tags(stripped)

    def _rewrite_legacy_tags(self, text: str) -> str:
        """Replace ``@Name@`` outside string literals and comments, recording each replacement."""
        out: list[str] = []
        line, column, new_column = 1, 0, 0
        quote: str | None = None
        i = 0

        previous = ""

        def emit(chunk: str) -> None:
            nonlocal line, column, new_column, previous
            out.append(chunk)
            for char in chunk:
                if char == "\n" and previous == "\r":
                    pass  # the second half of a CRLF already counted
                elif char in "\r\n":
                    line, column, new_column = line + 1, 0, 0
                else:
                    column += 1
                    new_column += 1
                previous = char

        while i < len(text):
            char = text[i]
            if quote is not None:
                if char == "\\":
                    emit(text[i : i + 2])
                    i += 2
                elif text.startswith(quote, i):
                    emit(quote)
                    i += len(quote)
                    quote = None
                else:
                    if char in "\r\n" and len(quote) == 1:
                        quote = None  # unterminated: leave the complaint to the parser
                    emit(char)
                    i += 1
                continue
            if char in "'\"":
                quote = char * 3 if text.startswith(char * 3, i) else char
                emit(quote)
                i += len(quote)
                continue
            if char == "#":
                end = _LINE_BREAK.search(text, i)
                stop = end.start() if end else len(text)
                emit(text[i:stop])
                i = stop
                continue
            match = _LEGACY_TAG.match(text, i) if char == "@" else None
            if match is None:
                emit(char)
                i += 1
                continue
            name = match.group(1)
            replacement = f'tags["{name}"]'
            self.legacy_tags.append(name)
            self._replacements.setdefault(line, []).append(
                _Replacement(
                    new_start=new_column,
                    new_end=new_column + len(replacement),
                    orig_start=column,
                    orig_end=column + len(match.group(0)),
                )
            )
            out.append(replacement)
            column += len(match.group(0))
            new_column += len(replacement)
            previous = "@"
            i = match.end()
        return "".join(out)

    def lines(self) -> list[str]:
        """The parser's text split into lines the way Python's tokenizer splits them."""
        return _LINE_BREAK.split(self.text)

    def position(self, line: int, column: int) -> tuple[int, int]:
        """Map a 1-based (line, character column) of the parser's text to the user's text."""
        line = max(line, 1)
        col0 = max(column - 1, 0)
        mapped = col0
        for repl in self._replacements.get(line, []):
            if col0 >= repl.new_end:
                mapped = col0 - repl.new_end + repl.orig_end
            elif col0 >= repl.new_start:
                mapped = repl.orig_start
                break
            else:
                break
        if line == 1:
            mapped += self._skipped_columns
        return line + self._skipped_lines, mapped + 1

    def node_position(self, lineno: int, col_offset: int) -> tuple[int, int]:
        """Map an AST position (1-based line, UTF-8 byte offset) to the user's text."""
        lines = self.lines()
        text = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
        chars = len(text.encode("utf-8")[:col_offset].decode("utf-8", errors="ignore"))
        return self.position(lineno, chars + 1)

    def end_position(self, lineno: int) -> tuple[int, int]:
        """The column just after the last non-blank character of a line (for 'unexpected end')."""
        lines = self.lines()
        lineno = min(max(lineno, 1), len(lines))
        return self.position(lineno, len(lines[lineno - 1].rstrip()) + 1)
