"""Plan the presentation contexts of a send.

Each (SOP class, transfer syntax) pair among the files gets its own context, so a file can
be sent exactly as stored (no decoding, byte for byte); each SOP class also gets one
fallback context offering uncompressed syntaxes, used when the peer refuses the file's own
transfer syntax. An association carries at most 128 contexts (PS3.8 9.3.2.2, odd context
IDs 1 to 255), so SOP classes are packed into as few associations as fit: one, unless the
files span more than about sixty SOP classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mercury.dicom.syntax import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

MAX_CONTEXTS = 128
FALLBACK_SYNTAXES: tuple[str, ...] = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


@dataclass(frozen=True, slots=True)
class Context:
    """One presentation context to request: an abstract syntax and its transfer syntaxes."""

    sop_class_uid: str
    transfer_syntaxes: tuple[str, ...]


def _contexts_for(sop_class: str, syntaxes: Sequence[str]) -> list[Context]:
    contexts = [Context(sop_class, (syntax,)) for syntax in syntaxes]
    contexts.append(Context(sop_class, FALLBACK_SYNTAXES))
    return contexts


def plan_associations(pairs: Sequence[tuple[str, str]]) -> list[list[Context]]:
    """Group the contexts for these (SOP class, transfer syntax) pairs into associations.

    Pairs keep their first-seen order; each group holds whole SOP classes and at most
    :data:`MAX_CONTEXTS` contexts.
    """
    by_class: dict[str, list[str]] = {}
    for sop_class, syntax in pairs:
        syntaxes = by_class.setdefault(sop_class, [])
        if syntax not in syntaxes:
            syntaxes.append(syntax)
    groups: list[list[Context]] = []
    current: list[Context] = []
    for sop_class, syntaxes in by_class.items():
        contexts = _contexts_for(sop_class, syntaxes)
        if len(contexts) > MAX_CONTEXTS:  # cannot happen with real transfer syntaxes
            raise ValueError(f"{sop_class} needs {len(contexts)} presentation contexts")
        if len(current) + len(contexts) > MAX_CONTEXTS:
            groups.append(current)
            current = []
        current.extend(contexts)
    if current:
        groups.append(current)
    return groups
