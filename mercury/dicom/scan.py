"""Walk an encoded dataset's top-level elements without decoding or copying their values.

This is the receive hot path: for every instance we need a few dozen short values from
the header, so the walk only reads element headers, notes where the wanted values are,
jumps over everything else (sequences included) and stops before the pixel data. Nested
sequences of undefined length are walked with an explicit stack, so a hostile nesting
depth cannot exhaust the interpreter's recursion limit.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass

UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
ITEM_GROUP = 0xFFFE
# (7FE0,0001) onwards: extended offset table, float/double/int pixel data, padding.
PIXEL_DATA_START = 0x7FE00001
MAX_NESTING = 128  # open sequences plus open items: 64 levels of nesting

# Explicit VR elements whose length field is 4 bytes after 2 reserved bytes (PS3.5 7.1.2).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
SHORT_VRS = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
KNOWN_VRS = LONG_VRS | SHORT_VRS


class ScanError(ValueError):
    """The bytes are not a well-formed dataset; ``offset`` is where the problem is."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at byte offset {offset}")
        self.reason = reason
        self.offset = offset


class Truncated(ScanError):
    """The dataset ends inside an element (more bytes may make it parse)."""


# Where a wanted element's value is: its explicit VR (None if implicit), start and end.
# A plain tuple: this is created for every wanted element of every received instance.
Found = tuple[bytes | None, int, int]


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The wanted elements found; where reading stopped (the pixel data, or None if the
    walk reached the end) and whether the dataset turned out to be implicit VR."""

    found: dict[int, Found]
    stopped_at: int | None
    implicit: bool


_READERS = {
    little: (
        struct.Struct(order + "HHI").unpack_from,
        struct.Struct(order + "HH2sH").unpack_from,
        struct.Struct(order + "I").unpack_from,
    )
    for little, order in ((True, "<"), (False, ">"))
}


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _looks_like_vr(two: bytes) -> bool:
    return len(two) == 2 and 0x40 < two[0] < 0x5B and 0x40 < two[1] < 0x5B


class _Walker:
    """One walk over one buffer; struct readers are bound once for the byte order."""

    __slots__ = ("buf", "end", "explicit_header", "implicit_header", "little", "u32")

    def __init__(self, buf: bytes | memoryview, little: bool) -> None:
        self.buf = buf
        self.end = len(buf)
        self.little = little
        self.implicit_header, self.explicit_header, self.u32 = _READERS[little]

    def element(self, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """Tag, VR (None if implicit), value length and header size of the element at pos."""
        if pos + 8 > self.end:
            raise Truncated("dataset ends inside an element header", pos)
        if implicit:
            group, elem, length = self.implicit_header(self.buf, pos)
            return group << 16 | elem, None, length, 8
        group, elem, vr, length = self.explicit_header(self.buf, pos)
        if vr in LONG_VRS:
            if pos + 12 > self.end:
                raise Truncated("dataset ends inside an element header", pos)
            return group << 16 | elem, vr, self.u32(self.buf, pos + 8)[0], 12
        if vr in SHORT_VRS or group == ITEM_GROUP:
            return group << 16 | elem, vr, length, 8
        if not _looks_like_vr(vr):
            # Some writers switch to implicit VR inside explicit datasets; read it as such.
            group, elem, length = self.implicit_header(self.buf, pos)
            return group << 16 | elem, None, length, 8
        # An unknown VR of two capital letters: read with a 2-byte length, like pydicom.
        return group << 16 | elem, vr, length, 8

    def skip_undefined(self, pos: int, implicit: bool, vr: bytes | None) -> int:
        """Skip the value of an undefined-length element starting at pos; return its end.

        Such a value is a list of items closed by a sequence delimiter (a sequence, or
        encapsulated data). Items of defined length are jumped over; items of undefined
        length are walked element by element until their item delimiter. ``vr`` is the
        element's explicit VR: UN of undefined length is always implicit VR little endian
        (PS3.5 6.2.2), whatever the transfer syntax.
        """
        if vr == b"UN":
            if not self.little:
                return _Walker(self.buf, little=True).skip_undefined(pos, True, None)
            implicit = True
        # Stack entries: (inside an item?, implicit VR?)
        stack: list[tuple[bool, bool]] = [(False, implicit)]
        header = self.implicit_header
        buf, end = self.buf, self.end
        while stack:
            in_item, item_implicit = stack[-1]
            if pos + 8 > end:
                raise Truncated("dataset ends inside a sequence", pos)
            if not in_item:
                group, elem, length = header(buf, pos)
                tag = group << 16 | elem
                pos += 8
                if tag == SEQUENCE_DELIMITER:
                    stack.pop()
                elif tag != ITEM:
                    raise ScanError(f"expected a sequence item, found {_tag_text(tag)}", pos - 8)
                elif length == UNDEFINED_LENGTH:
                    if len(stack) >= MAX_NESTING:
                        raise ScanError("sequences nested too deeply", pos)
                    stack.append((True, item_implicit))
                else:
                    pos += length
                    if pos > end:
                        raise Truncated("dataset ends inside a sequence item", pos - length - 8)
                continue
            tag, vr, length, size = self.element(pos, item_implicit)
            if tag == ITEM_DELIMITER:
                stack.pop()
                pos += 8
            elif tag >> 16 == ITEM_GROUP:
                raise ScanError(f"unexpected {_tag_text(tag)} inside a sequence item", pos)
            elif length == UNDEFINED_LENGTH:
                if len(stack) >= MAX_NESTING:
                    raise ScanError("sequences nested too deeply", pos)
                pos += size
                if vr == b"UN" and not self.little:
                    pos = _Walker(buf, little=True).skip_undefined(pos, True, None)
                else:
                    stack.append((False, item_implicit or vr == b"UN"))
            else:
                pos += size + length
                if pos > end:
                    raise Truncated(f"value of {_tag_text(tag)} runs past the end", pos - length)
        return pos


def scan(
    buf: bytes | memoryview,
    implicit: bool,
    little: bool,
    wanted: Container[int],
    stop_at: int = PIXEL_DATA_START,
) -> ScanResult:
    """Find the top-level elements whose tags are in ``wanted``, up to ``stop_at``.

    If the declared VR encoding contradicts the first element (an explicit dataset whose
    first VR is not letters, or an implicit one that starts with a known VR), the encoding
    found is used, as pydicom and DCMTK do.
    """
    walker = _Walker(buf, little)
    end = len(buf)
    if end >= 6:
        first_vr = bytes(buf[4:6])
        if not implicit and not _looks_like_vr(first_vr):
            implicit = True
        elif implicit and first_vr in KNOWN_VRS:
            implicit = False
    found: dict[int, Found] = {}
    # The loops below are the hot path: element headers are read inline, not via
    # _Walker.element, which is kept for the rarer nested walk.
    pos = 0
    if implicit:
        header = walker.implicit_header
        while pos < end:
            if pos + 8 > end:
                raise Truncated("dataset ends inside an element header", pos)
            group, elem, length = header(buf, pos)
            tag = group << 16 | elem
            if tag >= stop_at:
                return _stopped(found, pos, tag, implicit)
            start = pos + 8
            if length == UNDEFINED_LENGTH:
                pos = _skip_sequence(walker, start, True, None, tag)
                continue
            pos = start + length
            if pos > end:
                raise Truncated(f"value of {_tag_text(tag)} runs past the end", start)
            if tag in wanted:
                found[tag] = (None, start, pos)
        return ScanResult(found, None, implicit)
    explicit_header, u32, element = walker.explicit_header, walker.u32, walker.element
    while pos < end:
        if pos + 8 > end:
            raise Truncated("dataset ends inside an element header", pos)
        group, elem, vr, length = explicit_header(buf, pos)
        if vr in SHORT_VRS:
            size = 8
        elif vr in LONG_VRS:
            if pos + 12 > end:
                raise Truncated("dataset ends inside an element header", pos)
            length = u32(buf, pos + 8)[0]
            size = 12
        else:
            tag, vr, length, size = element(pos, False)
        tag = group << 16 | elem
        if tag >= stop_at:
            return _stopped(found, pos, tag, implicit)
        start = pos + size
        if length == UNDEFINED_LENGTH:
            pos = _skip_sequence(walker, start, vr is None, vr, tag)
            continue
        pos = start + length
        if pos > end:
            raise Truncated(f"value of {_tag_text(tag)} runs past the end", start)
        if tag in wanted:
            found[tag] = (vr, start, pos)
    return ScanResult(found, None, implicit)


def _skip_sequence(walker: _Walker, pos: int, implicit: bool, vr: bytes | None, tag: int) -> int:
    """Skip a top-level value of undefined length; errors name the element they are in."""
    try:
        return walker.skip_undefined(pos, implicit, vr)
    except ScanError as exc:
        raise type(exc)(f"inside the sequence {_tag_text(tag)}: {exc.reason}", exc.offset) from None


def _stopped(found: dict[int, Found], pos: int, tag: int, implicit: bool) -> ScanResult:
    if tag >> 16 == ITEM_GROUP:
        raise ScanError(f"{_tag_text(tag)} outside a sequence", pos)
    return ScanResult(found, pos, implicit)
