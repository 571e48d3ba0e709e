"""Bounds on what one rule evaluation may cost, and the checked operations that enforce them.

A rule is configuration, but configuration can be wrong or hostile, and the router evaluates
every rule for every series. So every operation that could take long or allocate a lot checks
its size before it runs, and a wall-clock deadline is checked at every step; a rule that
exceeds a bound is false with an error instead of stalling the router.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

TIME_LIMIT_SECONDS = 0.5
MAX_RULE_LENGTH = 10_000  # characters of rule text
MAX_DEPTH = 64  # nesting of the expression tree
MAX_STRING_LENGTH = 100_000  # characters (or bytes) of any string built during evaluation
MAX_ITEMS = 100_000  # elements of any list, tuple, set, dict or range
MAX_INT_BITS = 65_536  # size of any integer computed
MAX_ITERATIONS = 10_000  # comprehension steps per evaluation, all comprehensions together
MAX_ALLOCATION = 5_000_000  # characters plus elements of all values built, per evaluation
MAX_FACTORIAL = 5_000
MAX_FORMAT_NUMBER = 1_000  # widths and precisions in format specifications
MAX_ROUND_DIGITS = 1_000

_SEQUENCES = (str, bytes, list, tuple)
_SIZED = (str, bytes, list, tuple, dict, set, frozenset)
_DIGIT_RUN = re.compile(r"\d+")


class LimitExceeded(Exception):
    """The rule went over a time or size bound; it is false and reported."""


def _too_big(what: str) -> LimitExceeded:
    return LimitExceeded(f"rule exceeded its time/size limit ({what})")


def check_length(length: int, what: str = "value too long") -> None:
    """Refuse a string or container longer than the bounds allow."""
    if length > max(MAX_STRING_LENGTH, MAX_ITEMS):
        raise _too_big(what)


def check_int_bits(bits: int) -> None:
    """Refuse an integer bigger than the bound, before computing it."""
    if bits > MAX_INT_BITS:
        raise _too_big("number too large")


def text_size(value: Any, limit: int = MAX_STRING_LENGTH) -> int:
    """Roughly how many characters str() or repr() of value has; stops counting past limit.

    Needed because a list of many references to one long string is small in memory but its
    text is not; this walk visits at most about `limit` elements.
    """
    total = 0
    stack: list[Any] = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 * len(item) + 2
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, dict):
            total += 4 * len(item) + 2
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        else:
            total += 64
    return total


def _format_spec_ok(spec: str) -> None:
    if "*" in spec:
        raise _too_big("computed widths are not allowed")
    for run in _DIGIT_RUN.findall(spec):
        if len(run) > 4 or int(run) > MAX_FORMAT_NUMBER:
            raise _too_big("format width or precision too large")


# ---- checked operators -------------------------------------------------------------------


def checked_add(left: Any, right: Any) -> Any:
    """``+``: sequences may not grow past the bounds."""
    if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        check_length(len(left) + len(right))
    elif isinstance(left, int) and isinstance(right, int):
        check_int_bits(max(left.bit_length(), right.bit_length()) + 1)
    return left + right


def checked_mult(left: Any, right: Any) -> Any:
    """``*``: bound repeated sequences and the size of products."""
    if isinstance(left, _SEQUENCES) and isinstance(right, int):
        check_length(len(left) * max(right, 0))
    elif isinstance(right, _SEQUENCES) and isinstance(left, int):
        check_length(len(right) * max(left, 0))
    elif isinstance(left, int) and isinstance(right, int):
        check_int_bits(left.bit_length() + right.bit_length())
    return left * right


def checked_pow(base: Any, exponent: Any, modulus: Any = None) -> Any:
    """``**`` and pow(): estimate the result's size before computing it."""
    if modulus is not None:
        huge = (
            isinstance(modulus, int)
            and isinstance(exponent, int)
            and (modulus.bit_length() > 4096 or exponent.bit_length() > 4096)
        )
        if huge:
            raise _too_big("modular power too large")
        return pow(base, exponent, modulus)
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        check_int_bits(base.bit_length() * exponent)
    return base**exponent


def checked_lshift(left: Any, right: Any) -> Any:
    """``<<``: the shifted number may not exceed the integer bound."""
    if isinstance(left, int) and isinstance(right, int) and right > 0 and left != 0:
        check_int_bits(left.bit_length() + right)
    return left << right


def checked_mod(left: Any, right: Any) -> Any:
    """``%``: numbers only; %-formatting of strings can build text of any size."""
    if isinstance(left, str | bytes):
        raise TypeError("the % operator works on numbers only in rules")
    return left % right


def _contains(container: Any, item: Any) -> bool:
    return operator.contains(container, item)


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: checked_add,
    ast.Sub: operator.sub,
    ast.Mult: checked_mult,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: checked_mod,
    ast.Pow: checked_pow,
    ast.LShift: checked_lshift,
    ast.RShift: operator.rshift,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
    ast.BitAnd: operator.and_,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda left, right: _contains(right, left),
    ast.NotIn: lambda left, right: not _contains(right, left),
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
}


# ---- checked string methods --------------------------------------------------------------


def _argument(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


def check_method_call(
    target: Any, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    """Refuse string method calls whose result would exceed the bounds."""
    if not isinstance(target, str):
        return
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _argument(args, kwargs, 0, "width")
        if isinstance(width, int):
            check_length(width)
    elif name == "expandtabs":
        size = _argument(args, kwargs, 0, "tabsize")
        size = 8 if size is None else size
        if isinstance(size, int):
            check_length(len(target) * max(size, 1))
    elif name == "replace":
        old, new = _argument(args, kwargs, 0, "old"), _argument(args, kwargs, 1, "new")
        if isinstance(old, str) and isinstance(new, str):
            count = len(target) + 1 if old == "" else len(target) // len(old)
            limit = _argument(args, kwargs, 2, "count")
            if isinstance(limit, int) and limit >= 0:
                count = min(count, limit)
            check_length(len(target) + count * max(len(new) - len(old), 0))


# ---- the per-evaluation guard and the functions rules may call ----------------------------


class Guard:
    """Deadline and allocation budget of one evaluation, and the checked functions.

    The functions are bound to one guard so that work done inside them (summing, sorting,
    converting) counts against the same evaluation's deadline.
    """

    def __init__(self, seconds: float = TIME_LIMIT_SECONDS) -> None:
        self.deadline = time.monotonic() + seconds
        self.allocated = 0
        self.iterations = 0

    def tick(self) -> None:
        """Stop the evaluation once its deadline has passed."""
        if time.monotonic() > self.deadline:
            raise _too_big("took too long")

    def charge(self, value: Any) -> None:
        """Count what a step built against the allocation budget."""
        if isinstance(value, _SIZED):
            self.allocated += len(value)
            if self.allocated > MAX_ALLOCATION:
                raise _too_big("built too much data")
        elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise _too_big("number too large")

    def step(self) -> None:
        """One comprehension step."""
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise _too_big("comprehension too long")
        self.tick()

    def items(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Iterate at most MAX_ITEMS elements, watching the deadline."""
        for count, item in enumerate(iterable):
            if count >= MAX_ITEMS:
                raise _too_big("too many elements")
            if count % 256 == 0:
                self.tick()
            yield item

    def materialize(self, iterable: Iterable[Any]) -> list[Any]:
        """A bounded list of the iterable's elements, counted against the budget."""
        result = list(self.items(iterable))
        self.charge(result)
        return result

    # The functions below are what rules call by name; see library.py for the mapping.

    def list_(self, iterable: Iterable[Any] = ()) -> list[Any]:
        return self.materialize(iterable)

    def tuple_(self, iterable: Iterable[Any] = ()) -> tuple[Any, ...]:
        return tuple(self.materialize(iterable))

    def set_(self, iterable: Iterable[Any] = ()) -> set[Any]:
        return set(self.materialize(iterable))

    def frozenset_(self, iterable: Iterable[Any] = ()) -> frozenset[Any]:
        return frozenset(self.materialize(iterable))

    def dict_(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        if len(args) > 1:
            raise TypeError(f"dict expected at most 1 argument, got {len(args)}")
        source: Any = ()
        if args:
            source = args[0]
            if isinstance(source, Mapping):
                check_length(len(source))
            else:
                source = self.materialize(source)
        result = dict(source, **kwargs)
        self.charge(result)
        return result

    def sum_(self, iterable: Iterable[Any], start: Any = 0) -> Any:
        total = start
        for item in self.items(iterable):
            total = checked_add(total, item)
            self.charge(total)
        return total

    def min_(self, *args: Any, **kwargs: Any) -> Any:
        return min(*self._extremum_args(args), **kwargs)

    def max_(self, *args: Any, **kwargs: Any) -> Any:
        return max(*self._extremum_args(args), **kwargs)

    def _extremum_args(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (self.materialize(args[0]),) if len(args) == 1 else args

    def all_(self, iterable: Iterable[Any]) -> bool:
        return all(self.items(iterable))

    def any_(self, iterable: Iterable[Any]) -> bool:
        return any(self.items(iterable))

    def sorted_(self, iterable: Iterable[Any], **kwargs: Any) -> list[Any]:
        return sorted(self.materialize(iterable), **kwargs)

    def range_(self, *args: Any) -> range:
        result = range(*args)
        try:
            length = len(result)
        except OverflowError:
            raise _too_big("range too long") from None
        if length > MAX_ITEMS:
            raise _too_big("range too long")
        return result

    def str_(self, *args: Any, **kwargs: Any) -> str:
        if len(args) == 1 and not kwargs and text_size(args[0]) > MAX_STRING_LENGTH:
            raise _too_big("text too long")
        return str(*args, **kwargs)

    def repr_(self, value: Any) -> str:
        if text_size(value) > MAX_STRING_LENGTH:
            raise _too_big("text too long")
        return repr(value)

    def format_(self, value: Any, spec: str = "") -> str:
        if not isinstance(spec, str):
            raise TypeError("format() argument 2 must be str")
        _format_spec_ok(spec)
        if text_size(value) > MAX_STRING_LENGTH:
            raise _too_big("text too long")
        return format(value, spec)

    def pow_(self, base: Any, exponent: Any, mod: Any = None) -> Any:
        return checked_pow(base, exponent, mod)

    def round_(self, number: Any, ndigits: Any = None) -> Any:
        if isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
            raise _too_big("too many digits")
        return round(number, ndigits)

    def factorial_(self, number: Any) -> int:
        if isinstance(number, int) and number > MAX_FACTORIAL:
            raise _too_big("factorial too large")
        return math.factorial(number)

    def join(self, separator: str, iterable: Iterable[Any]) -> str:
        """``separator.join(...)`` with its result's length checked first."""
        parts = self.materialize(iterable)
        length = len(separator) * max(len(parts) - 1, 0)
        for part in parts:
            length += len(part) if isinstance(part, str) else 0
            check_length(length)
        return separator.join(parts)
