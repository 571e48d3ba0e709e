"""Header extraction for every received instance: UIDs, mercure's tag set, extra tags.

Runs once per received instance, on the raw dataset bytes as they came over the network
(no preamble, no file meta). Only element headers are walked; only the wanted values are
copied and decoded; reading stops before the pixel data (see :mod:`mercury.dicom.scan`).
Text is decoded from the Specific Character Set without ever failing on it (see
:mod:`mercury.dicom.charset`), and formatted like mercure's tag files
(see :mod:`mercury.dicom.values`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from functools import lru_cache
from types import MappingProxyType

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag
from pydicom.tag import BaseTag

from mercury.dicom.charset import DEFAULT_CHARSET, Charset, parse_charset
from mercury.dicom.scan import (
    KNOWN_VRS,
    PIXEL_DATA_START,
    Found,
    ScanError,
    ScanResult,
    Truncated,
    scan,
)
from mercury.dicom.syntax import DatasetEncoding, dataset_encoding
from mercury.dicom.values import value_text

MERCURE_TAGS: tuple[str, ...] = (
    "SpecificCharacterSet", "SeriesInstanceUID", "SOPInstanceUID", "StudyInstanceUID",
    "Modality", "BodyPartExamined", "ProtocolName", "RetrieveAETitle", "StationAETitle",
    "Manufacturer", "ManufacturerModelName", "StudyDescription", "CodeValue", "CodeMeaning",
    "SeriesDescription", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "ReferringPhysicianName", "StudyID", "SeriesNumber", "SeriesDate",
    "SeriesTime", "AcquisitionDate", "AcquisitionTime", "SequenceName", "ScanningSequence",
    "SequenceVariant", "MagneticFieldStrength", "StationName", "DeviceSerialNumber",
    "DeviceUID", "SoftwareVersions", "ContrastBolusAgent", "ImageComments", "SliceThickness",
    "InstanceNumber", "AcquisitionNumber", "InstitutionName", "AcquisitionType", "ImageType",
    "MediaStorageSOPClassUID",
)  # fmt: skip
"""The dataset-derived tag names of mercure's tag files, in mercure's order.

SenderAddress, SenderAET and ReceiverAET come from the association and are added by the
receiver. MediaStorageSOPClassUID is the SOP Class UID (0008,0016); CodeValue and
CodeMeaning are read at the top level only, as mercure does.
"""

# Tag names whose value comes from a differently named element.
_SOURCE_KEYWORD = {"MediaStorageSOPClassUID": "SOPClassUID"}

_SPECIFIC_CHARACTER_SET = 0x00080005
_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_INSTANCE_NUMBER = 0x00200013
_IMAGES_IN_ACQUISITION = 0x00201002
_NUMBER_OF_SERIES_RELATED_INSTANCES = 0x00201209
_NUMBER_OF_FRAMES = 0x00280008
_PIXEL_REPRESENTATION = 0x00280103
_STUDY_DATE = 0x00080020
_INTEGER_TAGS = (
    _INSTANCE_NUMBER,
    _IMAGES_IN_ACQUISITION,
    _NUMBER_OF_SERIES_RELATED_INSTANCES,
    _NUMBER_OF_FRAMES,
)
# Groups that never occur in a dataset: command (0000), file meta (0002), items (FFFE).
_NOT_IN_DATASET = frozenset({0x0000, 0x0002, 0xFFFE})
# VR for elements whose VR is unknown (private tags in implicit VR, UN of unknown tags).
_UNKNOWN_VR = "UT"
_INFLATE_START = 16 * 1024

_SPEC_GROUP_ELEMENT = re.compile(r"\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?")
_SPEC_HEX = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{8})")


class HeaderError(ValueError):
    """The dataset cannot be parsed; the message says what is wrong and where."""


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """What the receiver needs from one instance, read without touching its pixel data.

    UIDs are '' if absent (padding removed, not otherwise validated: see
    :func:`mercury.dicom.uids.is_valid_uid`). ``tags`` holds every :data:`MERCURE_TAGS`
    name present in the dataset and every additional tag present, as ``str``; a tag absent
    from the dataset is absent from ``tags``, an empty one is ''. ``header_length`` is the
    number of dataset bytes before the pixel data (all of them if there is none; for a
    deflated dataset, of the inflated bytes). ``charset_problem`` says what was assumed to
    decode the text, None if the text decoded as declared.
    """

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    tags: dict[str, str]
    instance_number: int | None
    number_of_frames: int | None
    images_in_acquisition: int | None
    number_of_series_related_instances: int | None
    header_length: int
    charset_problem: str | None
    study_date: str = ""
    """StudyDate for the index (not one of mercure's tags, so not in ``tags`` unless added)."""


# A wanted tag: (tag, name, dictionary VR or None, VR to use when the dataset gives none,
# or None if that depends on the pixel representation). A tuple: read once per tag per call.
_Wanted = tuple[int, str, str | None, str | None]


@dataclass(frozen=True, slots=True)
class _Selection:
    """The tags to collect and the names they get, in output order."""

    named: tuple[_Wanted, ...]
    tags: frozenset[int]


def _tag_name(tag: int) -> str:
    """The keyword, or "(gggg,eeee)" in lower-case hex as DCMTK names unknown tags."""
    return keyword_for_tag(tag) or f"({tag >> 16:04x},{tag & 0xFFFF:04x})"


def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def parse_tag_spec(spec: str) -> BaseTag:
    """A tag from a keyword ("PatientAge"), "(0010,1010)", "0010,1010" or "00101010".

    Raises ValueError, with a suggestion for misspelt keywords, for anything else and for
    tags that are never part of a received dataset's header (command and file meta groups,
    item tags, the pixel data and everything after it).
    """
    text = spec.strip() if isinstance(spec, str) else ""
    if not text:
        raise ValueError(f"{spec!r} is not a DICOM tag: give a keyword or (gggg,eeee)")
    tag: int | None = None
    match = _SPEC_GROUP_ELEMENT.fullmatch(text)
    if match and text.startswith("(") == text.endswith(")"):
        tag = int(match.group(1), 16) << 16 | int(match.group(2), 16)
    elif match := _SPEC_HEX.fullmatch(text):
        tag = int(match.group(1), 16)
    elif re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", text):
        tag = keyword_dict.get(text)
        if tag is None:
            close = get_close_matches(text, keyword_dict, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"'{text}' is not a DICOM keyword{hint}")
    if tag is None:
        raise ValueError(f"'{text}' is not a DICOM tag: give a keyword (PatientAge) or (gggg,eeee)")
    if tag >> 16 in _NOT_IN_DATASET or tag >= PIXEL_DATA_START:
        raise ValueError(
            f"{_tag_name(tag)} {BaseTag(tag)} is not read from received datasets "
            "(command, file meta, item and pixel data tags, and tags after the pixel data)"
        )
    return BaseTag(tag)


def _wanted(tag: int, name: str) -> _Wanted:
    dictionary_vr = _dictionary_vr(tag)
    if dictionary_vr is None:
        return tag, name, None, _UNKNOWN_VR
    return tag, name, dictionary_vr, None if " or " in dictionary_vr else dictionary_vr


@lru_cache(maxsize=32)
def _selection(additional: tuple[str, ...]) -> _Selection:
    named = [_wanted(keyword_dict[_SOURCE_KEYWORD.get(name, name)], name) for name in MERCURE_TAGS]
    for spec in additional:
        tag = int(parse_tag_spec(spec))
        named.append(_wanted(tag, _tag_name(tag)))
    tags = {item[0] for item in named}
    tags.update(_INTEGER_TAGS)
    tags.add(_PIXEL_REPRESENTATION)
    tags.add(_STUDY_DATE)
    return _Selection(tuple(named), frozenset(tags))


_BASE_SELECTION = _selection(())
_NO_ADDITIONAL_TAGS: Mapping[str, str] = MappingProxyType({})


def _inflate_and_scan(data: bytes | memoryview, wanted: frozenset[int]) -> tuple[bytes, ScanResult]:
    """Inflate a deflated dataset only as far as the header needs (not the pixel data)."""
    last_error: zlib.error | None = None
    for wbits in (-zlib.MAX_WBITS, zlib.MAX_WBITS | 32):  # raw deflate; zlib/gzip wrapped
        inflater = zlib.decompressobj(wbits)
        inflated = b""
        pending: bytes | memoryview = data
        limit = _INFLATE_START
        try:
            while True:
                want = limit - len(inflated)
                chunk = inflater.decompress(pending, want)
                inflated += chunk
                pending = inflater.unconsumed_tail
                finished = inflater.eof or (not pending and len(chunk) < want)
                try:
                    result = scan(inflated, False, True, wanted)
                except Truncated:
                    if finished:
                        raise
                    limit *= 4
                    continue
                if result.stopped_at is None and not finished:
                    limit *= 4
                    continue
                return inflated, result
        except zlib.error as exc:
            last_error = exc
    raise HeaderError(f"the deflated dataset does not inflate ({last_error})")


# Explicit VRs taken as they are; UN (and implicit VR) means "ask the dictionary".
_VR_NAMES = {vr: vr.decode("ascii") for vr in KNOWN_VRS if vr != b"UN"}


def _resolve_vr(explicit_vr: bytes | None, dictionary_vr: str | None, pixel_signed: bool) -> str:
    """The VR to read a value as: the explicit one, else (implicit VR, UN) the dictionary's."""
    if explicit_vr is not None and explicit_vr != b"UN":
        return _VR_NAMES.get(explicit_vr) or explicit_vr.decode("ascii", "replace")
    if dictionary_vr is None:
        return _UNKNOWN_VR
    if " or " in dictionary_vr:  # e.g. "US or SS", "OB or OW": depends on pixel data
        choices = dictionary_vr.split(" or ")
        return "SS" if pixel_signed and "SS" in choices else choices[0]
    return dictionary_vr


def _to_int(text: str | None) -> int | None:
    if not text:
        return None
    first = text.split("\\", 1)[0].strip()
    try:
        return int(first)
    except ValueError:
        try:
            number = float(first)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None


def _transfer_syntax_name(uid: str) -> str:
    entry = UID_dictionary.get(uid)
    return f"{entry[0]} ({uid})" if entry else repr(uid)


def read_header(
    dataset: bytes | memoryview,
    transfer_syntax_uid: str,
    additional_tags: Mapping[str, str] = _NO_ADDITIONAL_TAGS,
) -> InstanceHeader:
    """Read the header of a received dataset (raw bytes in the given transfer syntax).

    ``additional_tags`` is mercure's ``dicom_receiver.additional_tags``: its keys are tag
    specs (see :func:`parse_tag_spec`; validate configuration with it, an invalid key
    raises ValueError here), its values are ignored. Raises :class:`HeaderError` if the
    dataset cannot be parsed; text that does not decode never raises.
    """
    try:
        encoding = dataset_encoding(transfer_syntax_uid)
    except ValueError as exc:
        raise HeaderError(str(exc)) from None
    selection = _selection(tuple(additional_tags)) if additional_tags else _BASE_SELECTION
    try:
        buf, result = _scan(dataset, encoding, selection.tags)
    except ScanError as exc:
        raise HeaderError(
            f"malformed dataset in {_transfer_syntax_name(transfer_syntax_uid)}: {exc}"
        ) from None
    return _build_header(buf, result, encoding.little_endian, selection)


def _scan(
    dataset: bytes | memoryview, encoding: DatasetEncoding, wanted: frozenset[int]
) -> tuple[bytes | memoryview, ScanResult]:
    if not isinstance(dataset, bytes | memoryview | bytearray):
        raise HeaderError(f"expected the dataset as bytes, got {type(dataset).__name__}")
    if isinstance(dataset, memoryview) and (dataset.ndim != 1 or dataset.itemsize != 1):
        dataset = dataset.cast("B")
    if encoding.deflated:
        return _inflate_and_scan(dataset, wanted)
    return dataset, scan(dataset, encoding.implicit_vr, encoding.little_endian, wanted)


def _study_date(buf: bytes | memoryview, found: Mapping[int, Found]) -> str:
    """StudyDate as YYYYMMDD, or '' when absent or not a DA value (ASCII digits only)."""
    item = found.get(_STUDY_DATE)
    if item is None:
        return ""
    _, start, end = item
    value = bytes(buf[start:end]).strip(b" \x00")
    return value.decode("ascii") if len(value) == 8 and value.isdigit() else ""


def _build_header(
    buf: bytes | memoryview, result: ScanResult, little: bool, selection: _Selection
) -> InstanceHeader:
    found = result.found
    charset: Charset = DEFAULT_CHARSET
    if _SPECIFIC_CHARACTER_SET in found:
        _, start, end = found[_SPECIFIC_CHARACTER_SET]
        if end > start:
            charset = parse_charset(bytes(buf[start:end]))
    pixel_signed = False
    if _PIXEL_REPRESENTATION in found:
        _, start, end = found[_PIXEL_REPRESENTATION]
        pixel_signed = bytes(buf[start:end]) in (b"\x01\x00", b"\x00\x01")
    texts: dict[int, str] = {}
    unclean: list[str] = []
    tags: dict[str, str] = {}
    found_get, vr_names = found.get, _VR_NAMES
    for tag, name, dictionary_vr, implicit_vr in selection.named:
        item = found_get(tag)
        if item is None:
            continue
        text = texts.get(tag)
        if text is None:
            explicit_vr, start, end = item
            vr = vr_names.get(explicit_vr) if explicit_vr is not None else implicit_vr
            if vr is None:
                vr = _resolve_vr(explicit_vr, dictionary_vr, pixel_signed)
            converted = value_text(bytes(buf[start:end]), vr, charset, little)
            if converted is None:
                continue
            text, clean = converted
            texts[tag] = text
            if not clean:
                unclean.append(name)
        tags[name] = text
    for tag in _INTEGER_TAGS:
        if tag not in texts and tag in found:
            explicit_vr, start, end = found[tag]
            vr = _resolve_vr(explicit_vr, "IS", pixel_signed)
            converted = value_text(bytes(buf[start:end]), vr, charset, little)
            texts[tag] = converted[0] if converted else ""
    problems = [charset.problem] if charset.problem else []
    if unclean:
        problems.append("text not valid in the character set: " + ", ".join(unclean))
    return InstanceHeader(
        sop_class_uid=texts.get(_SOP_CLASS_UID, ""),
        sop_instance_uid=texts.get(_SOP_INSTANCE_UID, ""),
        series_instance_uid=texts.get(_SERIES_INSTANCE_UID, ""),
        study_instance_uid=texts.get(_STUDY_INSTANCE_UID, ""),
        tags=tags,
        instance_number=_to_int(texts.get(_INSTANCE_NUMBER)),
        number_of_frames=_to_int(texts.get(_NUMBER_OF_FRAMES)),
        images_in_acquisition=_to_int(texts.get(_IMAGES_IN_ACQUISITION)),
        number_of_series_related_instances=_to_int(texts.get(_NUMBER_OF_SERIES_RELATED_INSTANCES)),
        header_length=len(buf) if result.stopped_at is None else result.stopped_at,
        charset_problem="; ".join(problems) or None,
        study_date=_study_date(buf, found),
    )
