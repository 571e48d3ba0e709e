"""Cross-references between rules, targets and modules.

The check reads plain mappings rather than models so the loader can run it on the raw
file even when other keys fail validation: the user then sees every problem at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

from mercury.config.issues import Loc


def _names(value: Any) -> list[str]:
    """A name or a list of names, as a rule may hold them; anything else names nothing."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str) and item]
    return []


def _unknown(kind: str, name: str, known: Collection[str]) -> str:
    message = f"unknown {kind} {name!r}"
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    if known:
        return f"{message}; defined {kind}s: {', '.join(sorted(known))}"
    return f"{message}; no {kind}s are defined"


def reference_issues(config: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Every rule key that names a target or module that does not exist."""
    targets = config.get("targets")
    modules = config.get("modules")
    rules = config.get("rules")
    target_names = set(targets) if isinstance(targets, Mapping) else set()
    module_names = set(modules) if isinstance(modules, Mapping) else set()
    if not isinstance(rules, Mapping):
        return []
    issues: list[tuple[Loc, str]] = []
    checks = (
        ("target", "target", target_names),
        ("processing_module", "module", module_names),
        ("dynamic_routing_allowed_targets", "target", target_names),
        ("conditional_alternate_target", "target", target_names),
    )
    for rule_name, rule in rules.items():
        if not isinstance(rule, Mapping):
            continue
        for key, kind, known in checks:
            for name in _names(rule.get(key)):
                if name not in known:
                    issues.append((("rules", rule_name, key), _unknown(kind, name, known)))
    return issues
