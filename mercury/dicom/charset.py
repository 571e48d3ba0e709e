"""Character sets: turn (0008,0005) Specific Character Set and encoded text into ``str``.

Getting this wrong is the most reported way images get stranded on receive, so decoding
here never raises: an unknown charset term falls back to the default repertoire, bytes that
do not decode are replaced, and the problem is reported alongside the text instead. The
tables (DICOM terms to Python codecs, ISO 2022 escape sequences) are pydicom's; the
decoding follows PS3.5 6.1.2.5 like pydicom's, with these differences:

* it is silent (no warnings on the receive path) and independent of pydicom's global
  validation mode;
* ISO 2022 IR 58 (Chinese GB 2312 as a code extension) has its escape sequences removed
  (pydicom 3.0 leaves them in the text);
* code extensions are reset at every delimiter the standard names (CR, LF, TAB, FF, the
  value delimiter and, in person names, ``^`` and ``=``);
* an escape sequence pydicom knows is honoured even if the charset does not declare it
  (the text is clearly in that charset; the omission is reported);
* text without a declared charset that is not ASCII is read as UTF-8 when it is valid
  UTF-8, else as Latin-1 (both are common from devices that do not set the charset), and
  text declared UTF-8 that is not is read as Latin-1 (a common misconfiguration).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from functools import lru_cache

from pydicom.charset import (
    CODES_TO_ENCODINGS,
    STAND_ALONE_ENCODINGS,
    default_encoding,
    python_encoding,
)

ESC = 0x1B
TEXT_DELIMITERS = frozenset(b"\r\n\t\f")
VALUE_DELIMITERS = TEXT_DELIMITERS | frozenset(b"\\")
PERSON_NAME_DELIMITERS = VALUE_DELIMITERS | frozenset(b"^=")

_FRAGMENTS = re.compile(rb"(^[^\x1b]+|\x1b[^\x1b]*)")
# Python codecs that read ISO 2022 escape sequences themselves. (pydicom also counts
# GB2312 for ISO 2022 IR 58 here, but Python's GB2312 codec leaves the escape sequence in
# the text, so for it we strip the sequence like for the single-byte sets.)
_HANDLED = frozenset({"iso2022_jp", "iso2022_jp_2"})
_CODEC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\- ]{0,31}")


def _normal_form(term: str) -> str:
    return re.sub(r"[\s_\-]", "", term.upper())


# Misspellings seen in the wild ("ISO-IR 100", "ISO_IR100", "ISO 2022 IR87") map to the term.
_BY_NORMAL_FORM = {_normal_form(term): term for term in python_encoding if term}


@dataclass(frozen=True, slots=True)
class Charset:
    """A parsed Specific Character Set.

    ``encodings`` are Python codec names, the first being the one active at the start of
    every value; ``problem`` says what was assumed if the declared value was not valid.
    """

    encodings: tuple[str, ...]
    problem: str | None = None

    @property
    def is_default(self) -> bool:
        """True for the default repertoire (no Specific Character Set, or ISO_IR 6)."""
        return self.encodings == (default_encoding,)


DEFAULT_CHARSET = Charset((default_encoding,))


def _ascii_compatible(codec: str) -> bool:
    """True for codecs that read ASCII as ASCII (not UTF-16, UTF-7, rot13, base64...)."""
    sample = bytes(range(0x20, 0x7F)) + b"\r\n\t"
    try:
        return sample.decode(codec) == sample.decode("ascii")
    except (UnicodeDecodeError, LookupError, TypeError):
        return False


def _codec_for_term(term: str) -> tuple[str, str | None]:
    """The Python codec for one DICOM term, and a note if the term had to be interpreted."""
    codec = python_encoding.get(term)
    if codec is not None:
        return codec, None
    corrected = _BY_NORMAL_FORM.get(_normal_form(term))
    if corrected is not None:
        return python_encoding[corrected], f"'{term}' read as '{corrected}'"
    info = None
    if _CODEC_NAME.fullmatch(term):
        try:
            info = codecs.lookup(term)
        except (LookupError, ValueError):
            info = None
    if info is not None and _ascii_compatible(info.name):
        return info.name, f"'{term}' is not a DICOM term; used the codec of that name"
    return default_encoding, f"unknown character set '{term}'; used the default repertoire"


@lru_cache(maxsize=512)
def parse_charset(value: bytes) -> Charset:
    """The :class:`Charset` for the raw value of (0008,0005); cached, values repeat."""
    text = value.decode("latin-1")
    terms = [term.strip(" \x00") for term in text.split("\\")]
    if not terms[0]:
        terms[0] = "ISO_IR 6"
    if len(terms) > 1 and not any(terms[1:]):
        terms = terms[:1]
    problems: list[str] = []
    encodings: list[str] = []
    for index, term in enumerate(terms):
        if not term:
            problems.append(f"empty value {index + 1} ignored")
            continue
        if index > 0 and term in STAND_ALONE_ENCODINGS:
            problems.append(f"'{term}' cannot be a code extension; ignored")
            continue
        codec, problem = _codec_for_term(term)
        if problem:
            problems.append(problem)
        encodings.append(codec)
        if index == 0 and term in STAND_ALONE_ENCODINGS and len(terms) > 1:
            problems.append(f"'{term}' allows no code extensions; ignored the other values")
            break
    return Charset(tuple(encodings), "; ".join(problems) or None)


def _strict(raw: bytes, codec: str) -> str | None:
    try:
        return raw.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _lenient(raw: bytes, codec: str) -> str:
    try:
        return raw.decode(codec, errors="replace")
    except LookupError:
        return raw.decode(default_encoding, errors="replace")


def _decode_unmarked(raw: bytes, charset: Charset) -> tuple[str, bool]:
    """Decode text that contains no escape sequence with the initial codec."""
    codec = charset.encodings[0]
    if charset.is_default and not raw.isascii():
        text = _strict(raw, "utf-8")
        if text is not None:
            return text, False
        return raw.decode("latin-1"), False
    text = _strict(raw, codec)
    if text is not None:
        return text, True
    if codec.replace("-", "").replace("_", "").lower() == "utf8":
        # Declared UTF-8 but not UTF-8: almost always Latin-1 text; keeps every byte.
        return raw.decode("latin-1"), False
    return _lenient(raw, codec), False


def _decode_escaped(
    fragment: bytes, charset: Charset, delimiters: frozenset[int]
) -> tuple[str, bool]:
    """Decode one fragment that starts with an escape sequence (PS3.5 6.1.2.5)."""
    first = charset.encodings[0]
    length = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
    codec = CODES_TO_ENCODINGS.get(fragment[:length])
    if codec is None:
        return _lenient(fragment, first), False
    declared = codec in charset.encodings or codec == default_encoding
    if codec in _HANDLED:
        # Python's ISO 2022 codecs read the escape sequences themselves.
        text = _strict(fragment, codec)
        return (text, declared) if text is not None else (_lenient(fragment, codec), False)
    body = fragment[length:]
    cut = next((i for i, byte in enumerate(body) if byte in delimiters), len(body))
    head, tail = _strict(body[:cut], codec), _strict(body[cut:], first)
    if head is None or tail is None:
        return _lenient(body[:cut], codec) + _lenient(body[cut:], first), False
    return head + tail, declared


def decode_text(
    raw: bytes, charset: Charset, delimiters: frozenset[int] = VALUE_DELIMITERS
) -> tuple[str, bool]:
    """Decode an encoded value; returns the text and whether it decoded cleanly.

    Never raises: undecodable bytes become U+FFFD and the flag is False.
    """
    if ESC not in raw:
        return _decode_unmarked(raw, charset)
    clean = True
    parts: list[str] = []
    for fragment in _FRAGMENTS.findall(raw):
        if fragment[0] == ESC:
            text, ok = _decode_escaped(fragment, charset, delimiters)
        else:
            text, ok = _decode_unmarked(fragment, charset)
        parts.append(text)
        clean = clean and ok
    return "".join(parts), clean
