"""Character sets: every case decodes to the exact text, and nothing ever raises.

The files come from pydicom's character set test data (examples from DICOM PS3.5 Annexes
H, I, J and K, and David Clunie's charset samples); the built datasets cover what those
files do not: ISO 2022 IR 58, misspelt and unknown terms, bytes invalid in the charset.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset

from mercury.dicom.charset import (
    PERSON_NAME_DELIMITERS,
    VALUE_DELIMITERS,
    decode_text,
    parse_charset,
)
from tests.dicom.build import EXPLICIT_LE, IMPLICIT_LE, encode, file_dataset, quiet_read

# Building datasets with invalid charsets makes pydicom warn (reading them must not:
# quiet_read turns every warning into an error).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _charset_file(name: str) -> bytes:
    [path] = get_charset_files(name)
    return file_dataset(path)


@pytest.mark.parametrize(
    ("name", "charset", "patient_name"),
    [
        ("chrArab.dcm", "ISO_IR 127", "قباني^لنزار"),
        ("chrFren.dcm", "ISO_IR 100", "Buc^Jérôme"),
        ("chrGerm.dcm", "ISO_IR 100", "Äneas^Rüdiger"),
        ("chrGreek.dcm", "ISO_IR 126", "Διονυσιος"),
        ("chrHbrw.dcm", "ISO_IR 138", "שרון^דבורה"),
        # The sample mixes Cyrillic and Latin letters (c, e, y, p are ASCII in the file).
        ("chrRuss.dcm", "ISO_IR 144", "Люкceмбypг"),  # noqa: RUF001
        ("chrH31.dcm", "\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("chrH32.dcm", "ISO 2022 IR 13\\ISO 2022 IR 87", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
        ("chrI2.dcm", "\\ISO 2022 IR 149", "Hong^Gildong=洪^吉洞=홍^길동"),
        ("chrX1.dcm", "ISO_IR 192", "Wang^XiaoDong=王^小東="),
        ("chrX2.dcm", "GB18030", "Wang^XiaoDong=王^小东="),
        ("chrJapMulti.dcm", "\\ISO 2022 IR 87", "やまだ^たろう"),
        ("chrJapMultiExplicitIR6.dcm", "ISO 2022 IR 6\\ISO 2022 IR 87", "やまだ^たろう"),
        ("chrKoreanMulti.dcm", "\\ISO 2022 IR 149", "김희중"),
    ],
)
def test_pydicom_charset_files(name: str, charset: str, patient_name: str) -> None:
    header = quiet_read(_charset_file(name), EXPLICIT_LE)
    assert header.tags["SpecificCharacterSet"] == charset
    # The DICOM string form, as written (a trailing empty component group included).
    assert header.tags["PatientName"] == patient_name
    assert header.charset_problem is None


@pytest.mark.parametrize(
    ("name", "other_names"),
    [
        ("chrJapMulti.dcm", "やまだ^たろう\\やまだ^たろう"),
        ("chrJapMultiExplicitIR6.dcm", "やまだ^たろう\\やまだ^たろう"),
        ("chrKoreanMulti.dcm", "김희중\\김희중"),
        ("chrFrenMulti.dcm", "Buc^Jérôme\\Buc^Jérôme"),
    ],
)
def test_multi_valued_person_names_in_code_extensions(name: str, other_names: str) -> None:
    header = quiet_read(_charset_file(name), EXPLICIT_LE, {"OtherPatientNames": ""})
    assert header.tags["OtherPatientNames"] == other_names


def test_charset_of_a_nested_sequence_does_not_leak_to_the_top_level() -> None:
    # chrSQEncoding: UTF-8 dataset with a sequence item declaring ISO 2022 IR 13/87.
    header = quiet_read(_charset_file("chrSQEncoding.dcm"), EXPLICIT_LE)
    assert header.tags["SpecificCharacterSet"] == "ISO_IR 192"
    assert header.charset_problem is None


def _header_for(charset: str | list[str] | None, raw_name: bytes, vr: str = "PN") -> dict[str, str]:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPInstanceUID = "1.2.3"
    tag = 0x00100010 if vr == "PN" else 0x0008103E
    ds.add_new(tag, vr, raw_name)
    return quiet_read(encode(ds, IMPLICIT_LE), IMPLICIT_LE).tags


def test_iso_2022_ir_58_chinese_escape_sequences_are_removed() -> None:
    # PS3.5 Annex K.2: GB 2312 as a code extension.
    raw = b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="
    tags = _header_for(["", "ISO 2022 IR 58"], raw)
    assert tags["PatientName"] == "Zhang^XiaoDong=张^小东="


def test_gb18030_four_byte_characters() -> None:
    text = "Wang^XiaoDong=王^小东𠀀"  # U+20000 needs a four-byte GB18030 sequence
    tags = _header_for("GB18030", text.encode("gb18030"))
    assert tags["PatientName"] == text


def test_utf8() -> None:
    tags = _header_for("ISO_IR 192", "Müller^Zoë=山田".encode(), vr="LO")
    assert tags["SeriesDescription"] == "Müller^Zoë=山田"


def test_japanese_multi_valued_lo_splits_after_decoding() -> None:
    # In JIS X 0208, 0x5C (backslash) can be the second byte of a kanji: split text, not bytes.
    kanji = "俑"  # JIS X 0208 0x50 0x5C
    assert b"\\" in kanji.encode("iso2022_jp")
    raw = "\\".join([f"{kanji}山", "二"]).encode("iso2022_jp")
    tags = _header_for(["", "ISO 2022 IR 87"], raw, vr="LO")
    assert tags["SeriesDescription"] == "俑山\\二"


@pytest.mark.parametrize(
    ("declared", "expected_problem"),
    [
        ("ISO-IR 100", "read as 'ISO_IR 100'"),
        ("ISO_IR100", "read as 'ISO_IR 100'"),
        ("iso_ir 100", "read as 'ISO_IR 100'"),
        ("ISO 2022 IR100", "read as 'ISO 2022 IR 100'"),
        ("latin1", "not a DICOM term"),
    ],
)
def test_misspelt_terms_are_corrected_and_reported(declared: str, expected_problem: str) -> None:
    ds = Dataset()
    ds.add_new(0x00080005, "CS", declared)
    ds.PatientName = "Buc^Jérôme".encode("latin-1")
    header = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE)
    assert header.tags["PatientName"] == "Buc^Jérôme"
    assert header.tags["SpecificCharacterSet"] == declared
    assert header.charset_problem is not None
    assert expected_problem in header.charset_problem


@pytest.mark.parametrize("declared", ["ISO_IR 999", "FOOBAR", "utf-16", "base64", "rot13", "\x7f"])
def test_unknown_terms_fall_back_to_the_default_and_never_raise(declared: str) -> None:
    ds = Dataset()
    ds.add_new(0x00080005, "CS", declared)
    ds.PatientName = b"Doe^John"
    ds.SeriesDescription = b"Caf\xe9"
    header = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE)
    assert header.tags["PatientName"] == "Doe^John"
    assert header.tags["SeriesDescription"] == "Café"
    assert header.charset_problem is not None


def test_invalid_bytes_are_replaced_not_fatal() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 149"]
    ds.PatientName = b"Bad\x1b$)C\xff\xffName"
    ds.Modality = "MR"
    header = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE)
    assert header.tags["PatientName"].startswith("Bad")
    assert "\ufffd" in header.tags["PatientName"]
    assert header.tags["Modality"] == "MR"
    assert header.charset_problem is not None
    assert "PatientName" in header.charset_problem


def test_declared_utf8_that_is_latin1() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen".encode("latin-1")
    header = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE)
    assert header.tags["PatientName"] == "Müller^Jürgen"
    assert "PatientName" in (header.charset_problem or "")


def test_no_charset_with_utf8_bytes_reads_utf8() -> None:
    tags = _header_for(None, "Ærøskøbing".encode(), vr="LO")
    assert tags["SeriesDescription"] == "Ærøskøbing"


def test_no_charset_with_latin1_bytes_reads_latin1() -> None:
    tags = _header_for(None, "Ærøskøbing".encode("latin-1"), vr="LO")
    assert tags["SeriesDescription"] == "Ærøskøbing"


def test_stand_alone_charset_with_extensions_ignores_the_extensions() -> None:
    ds = Dataset()
    ds.add_new(0x00080005, "CS", ["ISO_IR 192", "ISO 2022 IR 87"])
    ds.PatientName = "山田^太郎".encode()
    header = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE)
    assert header.tags["PatientName"] == "山田^太郎"
    assert header.tags["SpecificCharacterSet"] == "ISO_IR 192\\ISO 2022 IR 87"
    assert "no code extensions" in (header.charset_problem or "")


def test_undeclared_escape_sequence_is_still_decoded() -> None:
    raw = "やまだ".encode("iso2022_jp")
    tags = _header_for("ISO_IR 100", raw)
    assert tags["PatientName"] == "やまだ"


def test_unknown_escape_sequence_is_replaced() -> None:
    text, clean = decode_text(b"abc\x1b%Zdef", parse_charset(b"ISO 2022 IR 6"))
    assert not clean
    assert text.startswith("abc")


def test_korean_reset_at_person_name_delimiters() -> None:
    # After ^ the initial charset (ASCII) is active again (PS3.5 6.1.2.5.3).
    charset = parse_charset(b"\\ISO 2022 IR 149")
    raw = "홍".encode("euc_kr")
    text, clean = decode_text(b"\x1b$)C" + raw + b"^Gildong", charset, PERSON_NAME_DELIMITERS)
    assert (text, clean) == ("홍^Gildong", True)


@pytest.mark.parametrize(
    ("raw", "encodings"),
    [
        (b"ISO_IR 100", ("latin_1",)),
        (b"ISO_IR 100 ", ("latin_1",)),
        (b"\\ISO 2022 IR 87", ("iso8859", "iso2022_jp")),
        (b"ISO 2022 IR 6\\ISO 2022 IR 87", ("iso8859", "iso2022_jp")),
        (b"ISO 2022 IR 13\\ISO 2022 IR 87", ("shift_jis", "iso2022_jp")),
        (b"\\ISO 2022 IR 149", ("iso8859", "euc_kr")),
        (b"\\ISO 2022 IR 58", ("iso8859", "iso_ir_58")),
        (b"ISO_IR 192", ("UTF8",)),
        (b"GB18030", ("GB18030",)),
        (b"", ("iso8859",)),
        (b"\\", ("iso8859",)),
    ],
)
def test_parse_charset(raw: bytes, encodings: tuple[str, ...]) -> None:
    assert parse_charset(raw).encodings == encodings


@given(st.binary(max_size=64), st.binary(max_size=200))
@settings(max_examples=1000)
def test_decoding_never_raises(charset_value: bytes, text: bytes) -> None:
    charset = parse_charset(charset_value)
    for delimiters in (VALUE_DELIMITERS, PERSON_NAME_DELIMITERS):
        decoded, _ = decode_text(text, charset, delimiters)
        assert isinstance(decoded, str)
