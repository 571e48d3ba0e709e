"""Running a checked rule tree with simpleeval, inside the bounds of limits.Guard.

simpleeval walks the tree node by node; we subclass it to look tags up (recording which),
to bind comprehension variables without rebinding its handlers (so generators can be lazy,
as in Python, and `any(...)` stops at the first match), to call only allowed methods, and to
check the deadline and allocation budget at every node.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from typing import Any

from simpleeval import (  # type: ignore[import-untyped]
    EvalWithCompoundTypes,
    FeatureNotAvailable,
    FunctionNotDefined,
    NameNotDefined,
)

from mercury.rules import library
from mercury.rules.limits import OPERATORS, Guard, check_method_call

_UNSET = object()


class MissingTag(Exception):
    """The series has no such tag: the rule is false, which is not an error."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the series has no tag {name!r}")
        self.name = name


class TagView:
    """The `tags` name: read-only lookups that record which tags were asked for."""

    def __init__(self, tags: Mapping[str, str]) -> None:
        self._tags = tags
        self.read: dict[str, None] = {}
        self.missing: dict[str, None] = {}

    def attribute(self, name: str) -> str:
        """``tags.Name``: exact name first, then the first name equal ignoring case."""
        if name in self._tags:
            return self._found(name)
        folded = name.casefold()
        for key in self._tags:
            if key.casefold() == folded:
                return self._found(key)
        return self._absent(name)

    def __getitem__(self, name: object) -> str:
        """``tags["Name"]`` and ``@Name@``: exact name only."""
        if not isinstance(name, str):
            raise TypeError("tag names are strings")
        if name in self._tags:
            return self._found(name)
        return self._absent(name)

    def __contains__(self, name: object) -> bool:
        """``'Name' in tags``: whether the series has the tag (never 'missing')."""
        if not isinstance(name, str):
            return False
        self.read.setdefault(name)
        return name in self._tags

    def __len__(self) -> int:
        return len(self._tags)

    def __iter__(self) -> Iterator[str]:
        raise TypeError("tags cannot be iterated; name the tag you need")

    def __repr__(self) -> str:
        return "<tags>"

    def _found(self, name: str) -> str:
        self.read.setdefault(name)
        value = self._tags[name]
        return value if isinstance(value, str) else str(value)

    def _absent(self, name: str) -> str:
        self.read.setdefault(name)
        self.missing.setdefault(name)
        raise MissingTag(name)


class RuleEvaluator(EvalWithCompoundTypes):  # type: ignore[misc]
    """One evaluation of one rule; not shared between threads or evaluations."""

    def __init__(self, tags: TagView, guard: Guard, text: str) -> None:
        names: dict[str, Any] = library.constants()
        names["tags"] = tags
        super().__init__(
            operators=dict(OPERATORS),
            functions=library.functions(guard),
            names=names,
            allowed_attrs=library.METHODS_BY_TYPE,
        )
        self.expr = text
        self.tags = tags
        self.guard = guard
        self.scope: dict[str, Any] = {}
        self.nodes.update(
            {
                ast.ListComp: self._eval_comprehension,
                ast.SetComp: self._eval_comprehension,
                ast.DictComp: self._eval_comprehension,
                ast.GeneratorExp: self._eval_comprehension,
                ast.FormattedValue: self._eval_formattedvalue,
            }
        )

    def run(self, node: ast.expr) -> Any:
        """Evaluate an already checked tree."""
        return self._eval(node)

    def _eval(self, node: ast.AST) -> Any:
        self.guard.tick()
        handler = self.nodes.get(type(node))
        if handler is None:
            raise FeatureNotAvailable(f"{type(node).__name__} is not available in rules")
        result = handler(node)
        self.guard.charge(result)
        return result

    def _check_disallowed_items(self, item: Any) -> None:
        """Not needed: values can only come from allow-listed names and methods.

        (simpleeval's version walks every nested container, which a hostile rule can make
        cost billions of steps.)
        """

    def _eval_name(self, node: ast.Name) -> Any:
        if node.id in self.scope:
            return self.scope[node.id]
        if node.id in self.names:
            return self.names[node.id]
        if node.id in self.functions:
            return self.functions[node.id]
        raise NameNotDefined(node.id, self.expr)

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        if isinstance(node.value, ast.Name) and node.value.id == "tags":
            return self.tags.attribute(node.attr)
        raise FeatureNotAvailable(f"'.{node.attr}' is only allowed as a method call")

    def _eval_call(self, node: ast.Call) -> Any:
        func = node.func
        if isinstance(func, ast.Attribute):
            target = self._eval(func.value)
            allowed = library.METHODS_BY_TYPE.get(type(target), frozenset())
            if func.attr not in allowed:
                raise FeatureNotAvailable(
                    f"'{type(target).__name__}' values have no method '{func.attr}' in rules"
                )
            args, kwargs = self._arguments(node)
            if func.attr == "join" and isinstance(target, str) and len(args) == 1 and not kwargs:
                return self.guard.join(target, args[0])
            check_method_call(target, func.attr, args, kwargs)
            return getattr(target, func.attr)(*args, **kwargs)
        if not isinstance(func, ast.Name) or func.id not in self.functions:
            name = func.id if isinstance(func, ast.Name) else "?"
            raise FunctionNotDefined(name, self.expr)
        function = self.functions[func.id]
        args, kwargs = self._arguments(node)
        return function(*args, **kwargs)

    def _arguments(self, node: ast.Call) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args = tuple(self._eval(arg) for arg in node.args)
        kwargs = {str(keyword.arg): self._eval(keyword.value) for keyword in node.keywords}
        return args, kwargs

    def _eval_formattedvalue(self, node: ast.FormattedValue) -> Any:
        return self.functions["str"](self._eval(node.value))

    # ---- comprehensions -------------------------------------------------------------------

    def _in_scope(self, node: ast.AST, scope: dict[str, Any]) -> Any:
        """Evaluate node with the comprehension variables of `scope` bound."""
        saved, self.scope = self.scope, scope
        try:
            return self._eval(node)
        finally:
            self.scope = saved

    def _bindings(
        self,
        generators: list[ast.comprehension],
        index: int,
        scope: dict[str, Any],
        iterable: Any = _UNSET,
    ) -> Iterator[dict[str, Any]]:
        generator = generators[index]
        if iterable is _UNSET:
            iterable = self._in_scope(generator.iter, scope)
        for item in iterable:
            self.guard.step()
            inner = dict(scope)
            _bind(generator.target, item, inner)
            if all(self._in_scope(condition, inner) for condition in generator.ifs):
                if index + 1 < len(generators):
                    yield from self._bindings(generators, index + 1, inner)
                else:
                    yield inner

    def _eval_comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
    ) -> Any:
        scope = dict(self.scope)
        # As in Python, the first iterable is evaluated at once, even for a generator.
        first = self._in_scope(node.generators[0].iter, scope)
        bindings = self._bindings(node.generators, 0, scope, first)
        if isinstance(node, ast.DictComp):
            return {
                self._in_scope(node.key, inner): self._in_scope(node.value, inner)
                for inner in bindings
            }
        elements = (self._in_scope(node.elt, inner) for inner in bindings)
        if isinstance(node, ast.GeneratorExp):
            return elements
        if isinstance(node, ast.SetComp):
            return set(elements)
        return list(elements)


def _bind(target: ast.expr, value: Any, scope: dict[str, Any]) -> None:
    """Assign a comprehension variable (or unpack into a tuple of them)."""
    if isinstance(target, ast.Name):
        scope[target.id] = value
        return
    assert isinstance(target, ast.Tuple | ast.List)
    values = list(value) if not isinstance(value, tuple | list) else value
    if len(values) != len(target.elts):
        raise ValueError(
            f"cannot unpack {len(values)} values into {len(target.elts)} loop variables"
        )
    for element, item in zip(target.elts, values, strict=True):
        _bind(element, item, scope)
