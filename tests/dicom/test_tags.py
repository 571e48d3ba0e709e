"""Header extraction: mercure's tag set, every transfer syntax, bad data, pixel data untouched."""

from __future__ import annotations

import contextlib
import statistics
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from mercury.dicom.tags import (
    MERCURE_TAGS,
    HeaderError,
    InstanceHeader,
    parse_tag_spec,
    read_header,
)
from tests.dicom.build import (
    CT_IMAGE_STORAGE,
    DEFLATED,
    EXPLICIT_BE,
    EXPLICIT_LE,
    HTJ2K,
    IMPLICIT_LE,
    JPEG_2000,
    JPEG_BASELINE,
    JPEG_LOSSLESS,
    JPEG_LS,
    MPEG4,
    RLE,
    ct_slice,
    encode,
    explicit_element,
    file_dataset,
    put_raw,
    quiet_read,
)

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")

ALL_SYNTAXES = [
    IMPLICIT_LE,
    EXPLICIT_LE,
    EXPLICIT_BE,
    DEFLATED,
    JPEG_BASELINE,
    JPEG_LOSSLESS,
    JPEG_LS,
    JPEG_2000,
    HTJ2K,
    RLE,
    MPEG4,
]


def test_mercure_tag_set_in_mercure_order() -> None:
    assert MERCURE_TAGS[:4] == (
        "SpecificCharacterSet",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
    )
    assert MERCURE_TAGS[-1] == "MediaStorageSOPClassUID"
    assert len(MERCURE_TAGS) == len(set(MERCURE_TAGS)) == 44
    assert not {"SenderAddress", "SenderAET", "ReceiverAET"} & set(MERCURE_TAGS)


@pytest.mark.parametrize("syntax", ALL_SYNTAXES)
def test_every_transfer_syntax(syntax: str) -> None:
    ds = ct_slice(rows=64, columns=64)
    header = quiet_read(encode(ds, syntax), syntax)
    assert header.sop_class_uid == CT_IMAGE_STORAGE
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.series_instance_uid == ds.SeriesInstanceUID
    assert header.study_instance_uid == ds.StudyInstanceUID
    assert header.instance_number == 1
    assert header.charset_problem is None
    assert header.tags == {
        "SpecificCharacterSet": "ISO_IR 100",
        "SeriesInstanceUID": ds.SeriesInstanceUID,
        "SOPInstanceUID": ds.SOPInstanceUID,
        "StudyInstanceUID": ds.StudyInstanceUID,
        "Modality": "CT",
        "BodyPartExamined": "CHEST",
        "ProtocolName": "Thorax Routine",
        "Manufacturer": "ACME Medical",
        "ManufacturerModelName": "Scanner 9000",
        "StudyDescription": "CT THORAX",
        "SeriesDescription": "Thorax 1.0 B30f",
        "PatientName": "Doe^Jane",
        "PatientID": "MRN0001",
        "PatientBirthDate": "19700101",
        "PatientSex": "F",
        "AccessionNumber": "ACC123456",
        "ReferringPhysicianName": "Smith^John",
        "StudyID": "1",
        "SeriesNumber": "2",
        "SeriesDate": "20260101",
        "SeriesTime": "120000.000000",
        "AcquisitionDate": "20260101",
        "AcquisitionTime": "120000.000000",
        "StationName": "CT01",
        "DeviceSerialNumber": "12345",
        "SoftwareVersions": "VA40\\SP1",
        "ContrastBolusAgent": "",
        "ImageComments": "Comment with 'quotes' and a second line",
        "SliceThickness": "1.0",
        "InstanceNumber": "1",
        "AcquisitionNumber": "1",
        "InstitutionName": "General Hospital",
        "ImageType": "ORIGINAL\\PRIMARY\\AXIAL",
        "MediaStorageSOPClassUID": CT_IMAGE_STORAGE,
    }
    assert list(header.tags) == [name for name in MERCURE_TAGS if name in header.tags]


def test_values_are_mercure_strings() -> None:
    ds = Dataset()
    ds.ImageType = ["DERIVED ", " SECONDARY", "MPR"]
    ds.StudyDescription = "  padded  "
    ds.ImageComments = 'line one\r\nline "two"  '
    ds.SOPInstanceUID = "1.2.3\x00"
    ds.SeriesNumber = " 7 "
    ds.SliceThickness = "2.50"
    ds.PatientName = "Yamada^Tarou"
    ds.AccessionNumber = ""
    tags = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE).tags
    assert tags["ImageType"] == "DERIVED\\SECONDARY\\MPR"
    assert tags["StudyDescription"] == "padded"
    assert tags["ImageComments"] == "line one; line 'two'"
    assert tags["SOPInstanceUID"] == "1.2.3"
    assert tags["SeriesNumber"] == "7"
    assert tags["SliceThickness"] == "2.50"  # the DICOM string, not a reformatted float
    assert tags["AccessionNumber"] == ""
    assert "Modality" not in tags


def test_missing_uids_are_empty_strings() -> None:
    ds = Dataset()
    ds.Modality = "OT"
    header = quiet_read(encode(ds, IMPLICIT_LE), IMPLICIT_LE)
    assert (header.sop_class_uid, header.sop_instance_uid) == ("", "")
    assert (header.series_instance_uid, header.study_instance_uid) == ("", "")
    assert header.tags == {"Modality": "OT"}
    assert header.instance_number is None
    assert header.number_of_frames is None


def test_study_date_is_read_for_the_index() -> None:
    ds = Dataset()
    ds.StudyDate = "20251224"
    header = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE)
    assert header.study_date == "20251224"
    assert "StudyDate" not in header.tags
    put_raw(ds, 0x00080020, "DA", b"yesterday ")
    assert quiet_read(encode(ds, IMPLICIT_LE), IMPLICIT_LE).study_date == ""
    assert quiet_read(encode(Dataset(), EXPLICIT_LE), EXPLICIT_LE).study_date == ""


def test_empty_dataset() -> None:
    header = quiet_read(b"", EXPLICIT_LE)
    assert header.tags == {}
    assert header.header_length == 0


def test_counts_are_integers() -> None:
    ds = Dataset()
    ds.NumberOfFrames = "12"
    ds.ImagesInAcquisition = "300"
    ds.NumberOfSeriesRelatedInstances = "  40 "
    put_raw(ds, 0x00200013, "IS", b"not a number")  # InstanceNumber, invalid
    header = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE)
    assert header.number_of_frames == 12
    assert header.images_in_acquisition == 300
    assert header.number_of_series_related_instances == 40
    assert header.instance_number is None
    assert header.tags["InstanceNumber"] == "not a number"


def test_code_value_and_meaning_only_at_the_top_level() -> None:
    ds = ct_slice(rows=8, columns=8)  # has ProcedureCodeSequence with a CodeValue inside
    tags = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE).tags
    assert "CodeValue" not in tags
    assert "CodeMeaning" not in tags
    ds.CodeValue = "IMG11291"
    ds.CodeMeaning = "MRI BRAIN"
    tags = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE).tags
    assert (tags["CodeValue"], tags["CodeMeaning"]) == ("IMG11291", "MRI BRAIN")


def test_tags_inside_sequences_are_not_taken_for_top_level_ones() -> None:
    ds = Dataset()
    inner = Dataset()
    inner.Modality = "MR"
    inner.PatientName = "Inner^Name"
    ds.ReferencedSeriesSequence = Sequence([inner])
    for syntax in (IMPLICIT_LE, EXPLICIT_LE):
        for undefined in (False, True):
            ds["ReferencedSeriesSequence"].is_undefined_length = undefined
            inner.is_undefined_length_sequence_item = undefined
            assert quiet_read(encode(ds, syntax), syntax).tags == {}


@pytest.mark.parametrize("syntax", [IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE])
def test_additional_tags_by_keyword_and_number(syntax: str) -> None:
    ds = ct_slice(rows=16, columns=16)
    ds.FloatPixelPaddingValue = 1.5  # FL (0028,0122)
    ds.FrameIncrementPointer = 0x00181063  # AT
    extra = {
        "PatientAge": "056Y",
        "(0018,0060)": "kVp",
        "00280010": "Rows",
        "0028,0011": "Columns",
        "PixelSpacing": "",
        "FloatPixelPaddingValue": "",
        "FrameIncrementPointer": "",
        "(0019,1002)": "private text",
        "(0019,1001)": "private number",
        "InstitutionAddress": "",
        "StudyComments": "absent",
        "ReferencedImageSequence": "a sequence has no string form",
    }
    tags = quiet_read(encode(ds, syntax), syntax, extra).tags
    assert tags["PatientAge"] == "056Y"
    assert tags["KVP"] == "120"
    assert tags["Rows"] == "16"
    assert tags["Columns"] == "16"
    assert tags["PixelSpacing"] == "0.7\\0.7"
    assert tags["FloatPixelPaddingValue"] == "1.5"
    assert tags["FrameIncrementPointer"] == "(0018,1063)"
    assert tags["(0019,1002)"] == "private text"
    assert tags["(0019,1001)"] == "1.5"
    assert tags["InstitutionAddress"] == "1 Hospital Road; Springfield"
    assert "StudyComments" not in tags
    assert "ReferencedImageSequence" not in tags
    assert list(tags)[-10:] == [
        "PatientAge",
        "KVP",
        "Rows",
        "Columns",
        "PixelSpacing",
        "FloatPixelPaddingValue",
        "FrameIncrementPointer",
        "(0019,1002)",
        "(0019,1001)",
        "InstitutionAddress",
    ]


def test_additional_tag_that_repeats_a_mercure_tag() -> None:
    ds = ct_slice(rows=8, columns=8)
    tags = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE, {"(0008,0060)": ""}).tags
    assert tags["Modality"] == "CT"


def test_invalid_additional_tag_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="PatientsAge"):
        read_header(b"", EXPLICIT_LE, {"PatientsAge": ""})


@pytest.mark.parametrize(
    ("spec", "tag"),
    [
        ("PatientAge", 0x00101010),
        ("(0010,1010)", 0x00101010),
        ("( 0010 , 1010 )", 0x00101010),
        ("0010,1010", 0x00101010),
        ("00101010", 0x00101010),
        ("0x00101010", 0x00101010),
        ("(0019,10aa)", 0x001910AA),
        ("  SeriesDescription ", 0x0008103E),
    ],
)
def test_parse_tag_spec(spec: str, tag: int) -> None:
    parsed = parse_tag_spec(spec)
    assert isinstance(parsed, BaseTag)
    assert parsed == tag


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("PatientsAge", "did you mean 'PatientAge'"),
        ("", "not a DICOM tag"),
        ("(0010,101)", "not a DICOM tag"),
        ("(0010,1010", "not a DICOM tag"),
        ("0010-1010", "not a DICOM tag"),
        ("(gggg,eeee)", "not a DICOM tag"),
        ("Patient Age", "not a DICOM tag"),
        ("PixelData", "not read from received datasets"),
        ("(7FE0,0010)", "not read from received datasets"),
        ("(0002,0010)", "not read from received datasets"),
        ("(FFFE,E000)", "not read from received datasets"),
        ("(0000,0100)", "not read from received datasets"),
    ],
)
def test_parse_tag_spec_rejects(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_tag_spec(spec)


@pytest.mark.parametrize("syntax", [IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, JPEG_2000])
def test_truncated_pixel_data_is_never_read(syntax: str) -> None:
    data = encode(ct_slice(), syntax)
    header = quiet_read(data, syntax)
    # Cut the dataset a few bytes into the pixel data value: the header is all there.
    cut = data[: header.header_length + 20]
    assert quiet_read(cut, syntax) == header
    # Or make the pixel data element claim far more bytes than arrive.
    assert quiet_read(data[: header.header_length + 12], syntax).tags == header.tags


def test_deflated_stream_truncated_in_the_pixel_data_still_parses() -> None:
    ds = ct_slice()
    ds.PixelData = bytes(range(256)) * (len(ds.PixelData) // 256)
    data = encode(ds, DEFLATED)
    assert quiet_read(data[: len(data) // 2], DEFLATED).tags == quiet_read(data, DEFLATED).tags


def test_zlib_wrapped_deflate_is_accepted() -> None:
    ds = ct_slice(rows=8, columns=8)
    wrapped = zlib.compress(encode(ds, EXPLICIT_LE))
    assert quiet_read(wrapped, DEFLATED).tags == quiet_read(encode(ds, DEFLATED), DEFLATED).tags


def test_memoryview_and_bytearray_input() -> None:
    data = encode(ct_slice(rows=8, columns=8), IMPLICIT_LE)
    header = quiet_read(data, IMPLICIT_LE)
    assert read_header(memoryview(data), IMPLICIT_LE) == header
    assert read_header(bytearray(data), IMPLICIT_LE) == header  # type: ignore[arg-type]


def test_wrong_vr_encoding_is_detected_from_the_first_element() -> None:
    ds = ct_slice(rows=8, columns=8)
    explicit_header = quiet_read(encode(ds, EXPLICIT_LE), EXPLICIT_LE)
    assert quiet_read(encode(ds, EXPLICIT_LE), IMPLICIT_LE).tags == explicit_header.tags
    assert quiet_read(encode(ds, IMPLICIT_LE), EXPLICIT_LE).tags == explicit_header.tags


def test_un_elements_use_the_dictionary_vr() -> None:
    data = (
        explicit_element(0x00080060, "UN", b"MR")
        + explicit_element(0x00180050, "UN", b"3.0 ")
        + explicit_element(0x00280010, "UN", struct.pack("<H", 256))
    )
    tags = quiet_read(data, EXPLICIT_LE, {"Rows": ""}).tags
    assert tags == {"Modality": "MR", "SliceThickness": "3.0", "Rows": "256"}


def test_undefined_length_un_sequence_is_skipped() -> None:
    # A private sequence of undefined length sent as UN: its content is implicit VR LE.
    item = struct.pack("<HHI", 0x0009, 0x1001, 4) + b"abcd"
    value = (
        struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + item
        + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    for little in (True, False):
        order = "<" if little else ">"
        un = struct.pack(f"{order}HH", 0x0009, 0x1010) + b"UN\0\0" + b"\xff\xff\xff\xff"
        modality = struct.pack(f"{order}HH", 0x0008, 0x0060) + b"CS" + struct.pack(f"{order}H", 2)
        data = modality[:8] + b"CT" + un + value
        syntax = EXPLICIT_LE if little else EXPLICIT_BE
        assert quiet_read(data, syntax).tags == {"Modality": "CT"}


MERCURE_REPLACEMENTS = {ord("\r"): ";", ord("\n"): " ", ord('"'): "'"}


def _pydicom_text(value: object) -> str:
    if isinstance(value, MultiValue | list):
        return "\\".join(_pydicom_text(item) for item in value)
    text = "" if value is None else str(value)
    return text.strip(" \x00").translate(MERCURE_REPLACEMENTS)


PYDICOM_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm",
    "JPEG-lossy.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "waveform_ecg.dcm",
    "test-SR.dcm",
    "examples_ybr_color.dcm",
    "liver_expb_1frame.dcm",
    "image_dfl.dcm",
    "nested_priv_SQ.dcm",
    "UN_sequence.dcm",
]


@pytest.mark.parametrize("name", PYDICOM_FILES)
def test_agrees_with_pydicom_on_its_test_files(name: str) -> None:
    path = get_testdata_file(name)
    if not isinstance(path, str):
        pytest.skip(f"{name} is not in this pydicom's test data")
    ds = dcmread(path)
    header = quiet_read(file_dataset(path), ds.file_meta.TransferSyntaxUID)
    expected = {}
    for name_ in MERCURE_TAGS:
        keyword = "SOPClassUID" if name_ == "MediaStorageSOPClassUID" else name_
        if keyword in ds:
            expected[name_] = _pydicom_text(ds[keyword].value)
    assert header.tags == expected
    assert header.sop_instance_uid == _pydicom_text(ds.get("SOPInstanceUID", ""))


def test_mr_truncated_file_parses_its_header() -> None:
    path = get_testdata_file("MR_truncated.dcm")
    assert isinstance(path, str)
    header = quiet_read(file_dataset(path), EXPLICIT_LE)
    assert header.tags["Modality"] == "MR"


# Bad data: only ever HeaderError.


def _assert_header_error(data: bytes, syntax: str, match: str = "") -> HeaderError:
    with pytest.raises(HeaderError, match=match) as info:
        quiet_read(data, syntax)
    return info.value


def test_unknown_transfer_syntax() -> None:
    _assert_header_error(b"", "1.2.3.4", "not a transfer syntax")
    _assert_header_error(b"", "1.2.840.10008.5.1.4.1.1.2", "not a transfer syntax")


@pytest.mark.parametrize("syntax", [IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE])
def test_truncation_inside_the_header(syntax: str) -> None:
    data = encode(ct_slice(rows=8, columns=8), syntax)
    header = quiet_read(data, syntax)
    error = _assert_header_error(data[: header.header_length - 3], syntax, "runs past the end")
    assert "byte offset" in str(error)
    for cut in range(header.header_length):
        with contextlib.suppress(HeaderError):
            quiet_read(data[:cut], syntax)


def test_truncated_sequence() -> None:
    ds = ct_slice(rows=8, columns=8)
    data = encode(ds, EXPLICIT_LE)
    start = data.index(b"\x08\x00\x40\x11SQ")  # ReferencedImageSequence, undefined length
    _assert_header_error(data[: start + 40], EXPLICIT_LE, "sequence")


def test_item_at_top_level() -> None:
    _assert_header_error(struct.pack("<HHI", 0xFFFE, 0xE000, 0), IMPLICIT_LE, "outside a sequence")


def test_garbage_in_a_sequence() -> None:
    data = struct.pack("<HHI", 0x0008, 0x1140, 0xFFFFFFFF) + struct.pack("<HHI", 0x0010, 0x10, 0)
    _assert_header_error(data, IMPLICIT_LE, "expected a sequence item")


def test_hostile_nesting_depth() -> None:
    opening = struct.pack("<HHI", 0x0008, 0x1140, 0xFFFFFFFF) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF
    )
    _assert_header_error(opening * 100_000, IMPLICIT_LE, "nested too deeply")


def test_bad_deflate() -> None:
    _assert_header_error(b"\xff" * 64, DEFLATED, "does not inflate")


def test_not_bytes() -> None:
    _assert_header_error("text", EXPLICIT_LE, "bytes")  # type: ignore[arg-type]


SYNTAX = st.sampled_from(ALL_SYNTAXES)


@given(st.binary(max_size=3000), SYNTAX)
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
def test_random_bytes_only_raise_header_error(data: bytes, syntax: str) -> None:
    try:
        header = quiet_read(data, syntax)
    except HeaderError:
        return
    assert isinstance(header, InstanceHeader)
    assert all(isinstance(v, str) for v in header.tags.values())


_SEEDS = {syntax: encode(ct_slice(rows=4, columns=4), syntax) for syntax in ALL_SYNTAXES}


@given(SYNTAX, st.data())
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_datasets_only_raise_header_error(syntax: str, data: st.DataObject) -> None:
    seed = bytearray(_SEEDS[syntax])
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(seed) - 1))
        seed[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(seed)))
    with contextlib.suppress(HeaderError):
        quiet_read(bytes(seed[:cut]), syntax)


def _median_microseconds(function: Callable[[], object], rounds: int = 2000) -> float:
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            function()
        timings.append((time.perf_counter() - start) / rounds * 1e6)
    return statistics.median(timings)


@pytest.mark.parametrize(
    ("size", "syntax"), [(512, EXPLICIT_LE), (512, IMPLICIT_LE), (64, EXPLICIT_LE)]
)
def test_read_header_is_fast(size: int, syntax: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = encode(ct_slice(rows=size, columns=size), syntax)
    microseconds = _median_microseconds(lambda: read_header(data, syntax))
    with capsys.disabled():
        print(f"\nread_header {size}x{size} {syntax}: {microseconds:.0f} µs per call")
    # The budget is 300 µs; the bound is loose so a slow machine does not fail the suite,
    # yet parsing the pixel data (or pydicom's full parse, ~800 µs) would.
    assert microseconds < 600


def test_does_not_touch_the_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    quiet_read(encode(ct_slice(rows=8, columns=8), EXPLICIT_LE), EXPLICIT_LE)
    assert list(tmp_path.iterdir()) == []
