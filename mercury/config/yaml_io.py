"""Reading and writing YAML the way a configuration file needs it.

PyYAML follows YAML 1.1, where ``offpeak_start: 22:00`` is the number 1320 and
``password: no`` is ``False``. The loader here resolves plain scalars by the YAML 1.2 core
schema instead (only true/false, null, decimal/0o/0x integers and floats are special),
refuses duplicate keys (the second ``pacs:`` would silently replace the first), and
remembers where each key sits so validation errors can name a line.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mercury.config.issues import Loc

Position = tuple[int, int]
"""1-based line and column."""


class LineIndex:
    """Where each key path of a document starts: its key and its value."""

    def __init__(self) -> None:
        self._keys: dict[Loc, Position] = {}
        self._values: dict[Loc, Position] = {}

    def add(self, loc: Loc, key: Position, value: Position) -> None:
        """Record one entry (used while walking the parsed document)."""
        self._keys[loc] = key
        self._values[loc] = value

    def find(self, loc: Loc, *, key: bool = False) -> Position | None:
        """The position of ``loc``, or of its nearest ancestor present in the document."""
        table = self._keys if key else self._values
        for end in range(len(loc), 0, -1):
            position = table.get(loc[:end])
            if position is not None:
                return position
        return None


def _position(node: Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars and duplicate-key detection."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice; each key may appear only once",
                    key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)


ConfigLoader.add_constructor("tag:yaml.org,2002:int", ConfigLoader.construct_yaml_int)
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _index(node: Node, loc: Loc, lines: LineIndex) -> None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode):
                child = (*loc, str(key_node.value))
                lines.add(child, _position(key_node), _position(value_node))
                _index(value_node, child, lines)
    elif isinstance(node, SequenceNode):
        for number, item in enumerate(node.value):
            child = (*loc, number)
            lines.add(child, _position(item), _position(item))
            _index(item, child, lines)


def load_yaml(text: str) -> tuple[Any, LineIndex]:
    """Parse one YAML document; raises ``yaml.YAMLError`` (with marks) when it is invalid."""
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        lines = LineIndex()
        if node is None:
            return None, lines
        _index(node, (), lines)
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


class ConfigDumper(yaml.SafeDumper):
    """SafeDumper writing multi-line text as literal blocks and never using aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _looks_like_a_value(text: str) -> bool:
    """Would :class:`ConfigLoader` read this plain text as something other than text?"""
    resolvers = ConfigLoader.yaml_implicit_resolvers.get(text[:1] if text else "", [])
    return any(pattern.match(text) for _, pattern in resolvers)


_LINE_BREAKS = frozenset("\r\x85\u2028\u2029")


def _needs_escapes(text: str) -> bool:
    """Characters YAML would fold or refuse unless written as escapes in double quotes."""
    return any(char in _LINE_BREAKS or not (char.isprintable() or char in "\n\t") for char in text)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # The dumper quotes what YAML 1.1 would misread; quote what our 1.2 loader would too.
    if _needs_escapes(value):
        style: str | None = '"'
    elif "\n" in value:
        style = "|"
    else:
        style = "'" if _looks_like_a_value(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    """Short lists of plain values on one line (``target: [pacs, archive]``)."""
    scalars = all(isinstance(item, str | int | float | bool) for item in value)
    short = scalars and sum(len(str(item)) + 2 for item in value) <= 72
    plain = short and not any(isinstance(item, str) and "\n" in item for item in value)
    return dumper.represent_sequence(
        "tag:yaml.org,2002:seq", value, flow_style=plain and bool(value)
    )


ConfigDumper.add_representer(str, _represent_str)
ConfigDumper.add_representer(list, _represent_list)


def dump_yaml(data: Any) -> str:
    """YAML text for plain data, keys in the order given, readable by YAML 1.1 and 1.2 parsers."""
    return yaml.dump(
        data,
        Dumper=ConfigDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=4096,
        indent=2,
    )
