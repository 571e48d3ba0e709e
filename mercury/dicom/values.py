"""Element values as the strings rules and ``.tags`` files see.

mercure reads each value as DCMTK's string form: every value of a multi-valued element
joined by ``\\``, padding removed, converted to UTF-8 from the Specific Character Set, and
then CR replaced by ``;``, LF by a space and ``"`` by ``'``. We produce the same strings
(the replacements happen after decoding, so they cannot corrupt multi-byte characters the
way a byte-level replacement does). Binary numbers are written the way Python prints them;
float32 values with the fewest digits that read back to the same float32.
"""

from __future__ import annotations

import math
import struct

from mercury.dicom.charset import (
    PERSON_NAME_DELIMITERS,
    TEXT_DELIMITERS,
    VALUE_DELIMITERS,
    Charset,
    decode_text,
)

# How each VR's text is cut and trimmed: several values with leading and trailing spaces
# insignificant; several values with only trailing padding insignificant (UIDs are padded
# with NUL, person names may start with a space); one value, trailing padding only.
_MULTI, _MULTI_TRAILING, _SINGLE = 0, 1, 2
_TEXT_KIND = {
    **dict.fromkeys(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UC"), _MULTI),
    **dict.fromkeys(("UI", "PN"), _MULTI_TRAILING),
    **dict.fromkeys(("LT", "ST", "UT", "UR"), _SINGLE),
}
_DELIMITERS = {
    vr: PERSON_NAME_DELIMITERS
    if vr == "PN"
    else TEXT_DELIMITERS
    if kind == _SINGLE
    else (VALUE_DELIMITERS)
    for vr, kind in _TEXT_KIND.items()
}
_NUMBER_FORMATS = {
    "US": "H", "SS": "h", "UL": "I", "SL": "i", "UV": "Q", "SV": "q", "FL": "f", "FD": "d",
}  # fmt: skip
NUMBER_VRS = frozenset(_NUMBER_FORMATS) | {"AT"}

_MERCURE_REPLACEMENTS = str.maketrans({"\r": ";", "\n": " ", '"': "'"})


def _float32_text(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    for digits in range(6, 10):
        text = f"{value:.{digits}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == value:
            return str(float(text))
    return str(value)  # pragma: no cover - 9 significant digits always round-trip


def _numbers_text(raw: bytes, vr: str, little: bool) -> tuple[str, bool]:
    order = "<" if little else ">"
    if vr == "AT":
        count = len(raw) // 4
        pairs = struct.unpack(f"{order}{count * 2}H", raw[: count * 4])
        text = "\\".join(f"({pairs[i]:04X},{pairs[i + 1]:04X})" for i in range(0, len(pairs), 2))
        return text, len(raw) == count * 4
    code = _NUMBER_FORMATS[vr]
    size = struct.calcsize(code)
    count = len(raw) // size
    numbers = struct.unpack(f"{order}{count}{code}", raw[: count * size])
    if vr == "FL":
        text = "\\".join(_float32_text(number) for number in numbers)
    else:
        text = "\\".join(map(str, numbers))
    return text, len(raw) == count * size


def value_text(raw: bytes, vr: str, charset: Charset, little: bool) -> tuple[str, bool] | None:
    """The string form of an element value, and whether it decoded cleanly.

    None for values without a string form (sequences and bulk binary data: OB, OW, OF,
    OD, OL, OV, SQ, UN).
    """
    kind = _TEXT_KIND.get(vr)
    if kind is None:
        return _numbers_text(raw, vr, little) if vr in NUMBER_VRS else None
    if raw.isascii() and b"\x1b" not in raw:
        # Every DICOM character set reads ASCII as ASCII (escape sequences aside).
        text, clean = raw.decode("ascii"), True
    else:
        text, clean = decode_text(raw, charset, _DELIMITERS[vr])
    if kind == _SINGLE:
        text = text.rstrip(" \x00")
    elif "\\" in text:
        if kind == _MULTI:
            text = "\\".join([part.strip(" \x00") for part in text.split("\\")])
        else:
            text = "\\".join([part.rstrip(" \x00") for part in text.split("\\")])
    else:
        text = text.strip(" \x00") if kind == _MULTI else text.rstrip(" \x00")
    if "\r" in text or "\n" in text or '"' in text:
        text = text.translate(_MERCURE_REPLACEMENTS)
    return text, clean
