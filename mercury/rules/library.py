"""The names a rule may use: exactly mercure's list (MERCURE-COMPAT.md section 2).

Functions that could be made to work for long or build big values are replaced by the
checked versions in limits.Guard; the rest are the plain built-ins or math functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mercury.rules.limits import Guard

# Names that are values, not functions. `tags` is bound per evaluation.
CONSTANT_NAMES: frozenset[str] = frozenset({"True", "False", "None", "tags", "pi", "e"})

_PLAIN: dict[str, Callable[..., Any]] = {
    "bool": bool,
    "int": int,
    "float": float,
    "complex": complex,
    "len": len,
    "abs": abs,
    "reversed": reversed,
    "enumerate": enumerate,
    "zip": zip,
    "filter": filter,
    "map": map,
    "divmod": divmod,
    "chr": chr,
    "ord": ord,
    "hex": hex,
    "oct": oct,
    "bin": bin,
    "sqrt": math.sqrt,
    "ceil": math.ceil,
    "floor": math.floor,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "isinf": math.isinf,
    "isnan": math.isnan,
    "fabs": math.fabs,
    "trunc": math.trunc,
}

_CHECKED: tuple[str, ...] = (
    "str",
    "list",
    "tuple",
    "dict",
    "set",
    "frozenset",
    "sum",
    "min",
    "max",
    "all",
    "any",
    "sorted",
    "range",
    "round",
    "pow",
    "format",
    "repr",
    "factorial",
)

FUNCTION_NAMES: frozenset[str] = frozenset(_PLAIN) | frozenset(_CHECKED)
ALLOWED_NAMES: frozenset[str] = CONSTANT_NAMES | FUNCTION_NAMES

# Methods a rule may call on values: string methods, minus the ones that can reach into
# objects (format, format_map) or that only make sense with bytes (encode, translate,
# maketrans). count and index also exist on lists and tuples.
STRING_METHODS: frozenset[str] = frozenset(
    {
        "capitalize",
        "casefold",
        "center",
        "count",
        "endswith",
        "expandtabs",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isascii",
        "isdecimal",
        "isdigit",
        "isidentifier",
        "islower",
        "isnumeric",
        "isprintable",
        "isspace",
        "istitle",
        "isupper",
        "join",
        "ljust",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "replace",
        "rfind",
        "rindex",
        "rjust",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
        "zfill",
    }
)

# Which of those methods exist on which value types at run time.
METHODS_BY_TYPE: dict[type, frozenset[str]] = {
    str: STRING_METHODS,
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
}


def constants() -> dict[str, Any]:
    """The value names other than `tags`."""
    return {"True": True, "False": False, "None": None, "pi": math.pi, "e": math.e}


def functions(guard: Guard) -> dict[str, Callable[..., Any]]:
    """Every function name, bound to this evaluation's guard where it needs one."""
    bound: dict[str, Callable[..., Any]] = dict(_PLAIN)
    for name in _CHECKED:
        bound[name] = getattr(guard, f"{name}_")
    return bound
