"""The one error a rule's text can cause before it is ever run."""

from __future__ import annotations


class RuleSyntaxError(ValueError):
    """A rule (or series expression) that cannot be compiled, with its 1-based position.

    The position lets the configuration check and the user interface point at the exact spot,
    which matters because rules are written by hand in a one-line text field.
    """

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.message = message
        self.line = line
        self.column = column

    def __reduce__(self) -> tuple[type[RuleSyntaxError], tuple[str, int, int]]:
        """Keep the three attributes when the error crosses a process boundary."""
        return (type(self), (self.message, self.line, self.column))
