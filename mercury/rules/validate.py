"""The allow-list check of a parsed rule: only what mercure's rule language needs passes.

Checking the tree once at compile time means a rule that could reach Python internals is
refused with a position when the configuration is loaded, instead of failing (or worse, not
failing) while images arrive. The evaluator enforces the same limits again at run time.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from mercury.rules.library import ALLOWED_NAMES, FUNCTION_NAMES, STRING_METHODS
from mercury.rules.limits import MAX_DEPTH


class Violation(Exception):
    """A refused construct, with the AST position (line, UTF-8 byte column) of the node."""

    def __init__(self, message: str, node: ast.AST | None) -> None:
        super().__init__(message)
        self.message = message
        self.lineno: int = getattr(node, "lineno", 1)
        self.col_offset: int = getattr(node, "col_offset", 0)


_NODES: tuple[type[ast.AST], ...] = (
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.Constant,
    ast.Name,
    ast.Attribute,
    ast.Subscript,
    ast.Slice,
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.Dict,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.JoinedStr,
    ast.FormattedValue,
)

_REFUSALS: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda is not allowed in a rule",
    ast.NamedExpr: "assignment expressions (:=) are not allowed in a rule",
    ast.Starred: "* unpacking is not allowed in a rule",
    ast.Await: "await is not allowed in a rule",
    ast.Yield: "yield is not allowed in a rule",
    ast.YieldFrom: "yield is not allowed in a rule",
}

_OPERATORS: tuple[type[ast.AST], ...] = (
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.LShift,
    ast.RShift,
    ast.BitOr,
    ast.BitXor,
    ast.BitAnd,
)

_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _private(name: str) -> bool:
    return name.startswith("_")


@dataclass
class _Checker:
    """Walks the tree, tracking comprehension variables in scope and the tags named."""

    tag_names: list[str] = field(default_factory=list)

    def check(self, node: ast.AST, scope: frozenset[str], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Violation("the rule is nested too deeply", node)
        if not isinstance(node, _NODES):
            message = _REFUSALS.get(type(node), f"{type(node).__name__} is not allowed in a rule")
            raise Violation(message, node)
        handler = getattr(self, f"_check_{type(node).__name__.lower()}", None)
        if handler is not None:
            handler(node, scope, depth)
        else:
            self._children(node, scope, depth)

    def _children(self, node: ast.AST, scope: frozenset[str], depth: int) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.check(child, scope, depth + 1)
            elif isinstance(child, ast.keyword):
                self._keyword(child, scope, depth + 1)
            elif isinstance(child, ast.unaryop | ast.boolop | ast.cmpop | ast.expr_context):
                continue
            elif isinstance(child, ast.operator):
                if not isinstance(child, _OPERATORS):
                    raise Violation(
                        "the @ operator is not allowed (a legacy tag is written @Name@)", node
                    )
            else:
                raise Violation(f"{type(child).__name__} is not allowed in a rule", node)

    def _keyword(self, node: ast.keyword, scope: frozenset[str], depth: int) -> None:
        if node.arg is None:
            raise Violation("** unpacking is not allowed in a rule", node)
        if _private(node.arg):
            raise Violation("names starting with an underscore are not allowed", node)
        self.check(node.value, scope, depth)

    def _check_constant(self, node: ast.Constant, scope: frozenset[str], depth: int) -> None:
        if node.value is Ellipsis:
            raise Violation("... is not allowed in a rule", node)

    def _check_name(self, node: ast.Name, scope: frozenset[str], depth: int) -> None:
        if _private(node.id):
            raise Violation("names starting with an underscore are not allowed", node)
        if node.id not in ALLOWED_NAMES and node.id not in scope:
            raise Violation(f"unknown name '{node.id}'", node)

    def _check_attribute(self, node: ast.Attribute, scope: frozenset[str], depth: int) -> None:
        if _private(node.attr):
            raise Violation("names starting with an underscore are not allowed", node)
        if isinstance(node.value, ast.Name) and node.value.id == "tags":
            self.tag_names.append(node.attr)
            return
        raise Violation(
            f"'.{node.attr}' is not allowed: only tags.<Name> and calls of string methods are",
            node,
        )

    def _check_subscript(self, node: ast.Subscript, scope: frozenset[str], depth: int) -> None:
        is_tags = isinstance(node.value, ast.Name) and node.value.id == "tags"
        if is_tags and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            self.tag_names.append(node.slice.value)
        self._children(node, scope, depth)

    def _check_compare(self, node: ast.Compare, scope: frozenset[str], depth: int) -> None:
        operands = [node.left, *node.comparators]
        for index, op in enumerate(node.ops):
            right, left = operands[index + 1], operands[index]
            if (
                isinstance(op, ast.In | ast.NotIn)
                and isinstance(right, ast.Name)
                and right.id == "tags"
                and isinstance(left, ast.Constant)
                and isinstance(left.value, str)
            ):
                self.tag_names.append(left.value)
        self._children(node, scope, depth)

    def _check_call(self, node: ast.Call, scope: frozenset[str], depth: int) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id not in FUNCTION_NAMES:
                self._check_name(func, scope, depth + 1)
                raise Violation(f"'{func.id}' is not a function", func)
        elif isinstance(func, ast.Attribute):
            if _private(func.attr):
                raise Violation("names starting with an underscore are not allowed", func)
            if isinstance(func.value, ast.Name) and func.value.id == "tags":
                raise Violation("a tag value cannot be called", func)
            if func.attr not in STRING_METHODS:
                raise Violation(f"'.{func.attr}()' is not an allowed string method", func)
            self.check(func.value, scope, depth + 1)
        else:
            raise Violation("only named functions and string methods can be called", func)
        for arg in node.args:
            self.check(arg, scope, depth + 1)
        for keyword in node.keywords:
            self._keyword(keyword, scope, depth + 1)

    def _check_formattedvalue(
        self, node: ast.FormattedValue, scope: frozenset[str], depth: int
    ) -> None:
        if node.format_spec is not None or node.conversion != -1:
            raise Violation(
                "conversions and format specifications in f-strings are not allowed", node
            )
        self.check(node.value, scope, depth + 1)

    def _check_dict(self, node: ast.Dict, scope: frozenset[str], depth: int) -> None:
        if any(key is None for key in node.keys):
            raise Violation("** unpacking is not allowed in a rule", node)
        self._children(node, scope, depth)

    def _comprehension(
        self,
        node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp,
        scope: frozenset[str],
        depth: int,
    ) -> None:
        inner = scope
        for generator in node.generators:
            if generator.is_async:
                raise Violation("async comprehensions are not allowed", node)
            self.check(generator.iter, inner, depth + 1)
            inner = inner | self._targets(generator.target)
            for condition in generator.ifs:
                self.check(condition, inner, depth + 1)
        if isinstance(node, ast.DictComp):
            self.check(node.key, inner, depth + 1)
            self.check(node.value, inner, depth + 1)
        else:
            self.check(node.elt, inner, depth + 1)

    _check_listcomp = _comprehension
    _check_setcomp = _comprehension
    _check_dictcomp = _comprehension
    _check_generatorexp = _comprehension

    def _targets(self, target: ast.expr) -> frozenset[str]:
        if isinstance(target, ast.Name):
            if _private(target.id):
                raise Violation("names starting with an underscore are not allowed", target)
            if target.id in ALLOWED_NAMES:
                raise Violation(f"'{target.id}' cannot be used as a loop variable", target)
            return frozenset({target.id})
        if isinstance(target, ast.Tuple | ast.List):
            names: frozenset[str] = frozenset()
            for element in target.elts:
                names |= self._targets(element)
            return names
        raise Violation("a loop variable must be a name or a tuple of names", target)


def check_tree(tree: ast.Expression) -> tuple[str, ...]:
    """Raise Violation for anything outside the rule language; return the tag names used."""
    checker = _Checker()
    checker.check(tree.body, frozenset(), 1)
    return tuple(checker.tag_names)
