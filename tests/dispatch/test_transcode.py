"""Transfer syntax conversion for senders: decompress, lossless recompress, relabel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from mercury.dicom.syntax import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from mercury.dicom.transcode import (
    JPEG_2000_LOSSLESS,
    JPEG_LS_LOSSLESS,
    RLE_LOSSLESS,
    TranscodeError,
    encoder_problem,
    is_compressed,
    syntax_name,
    transcode,
)
from tests.helpers import make_ct_series


def _testdata(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, name
    return pydicom.dcmread(path)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_decompress_keeps_the_instance_uid_and_pixels(name: str) -> None:
    original = _testdata(name)
    expected = original.pixel_array.copy()
    uid = original.SOPInstanceUID
    converted = transcode(original, EXPLICIT_VR_LITTLE_ENDIAN)
    assert converted.SOPInstanceUID == uid
    assert converted.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert "PixelData" in converted
    assert np.array_equal(converted.pixel_array, expected)


def test_decompress_to_implicit_vr_sets_the_encoding() -> None:
    ds = transcode(_testdata("SC_rgb_rle.dcm"), IMPLICIT_VR_LITTLE_ENDIAN)
    assert ds.file_meta.TransferSyntaxUID == IMPLICIT_VR_LITTLE_ENDIAN
    assert ds.original_encoding == (True, True)


def test_undecodable_pixel_data_fails_clearly() -> None:
    with pytest.raises(TranscodeError, match="cannot decompress JPEG Extended"):
        transcode(_testdata("JPEG-lossy.dcm"), EXPLICIT_VR_LITTLE_ENDIAN)


@pytest.mark.parametrize("syntax", [RLE_LOSSLESS, JPEG_2000_LOSSLESS])
def test_lossless_compression_round_trips(tmp_path: Path, syntax: str) -> None:
    path = make_ct_series(tmp_path, 1, rows=32, columns=32)[0]
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.copy()
    uid = ds.SOPInstanceUID
    transcode(ds, syntax)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.SOPInstanceUID == uid
    ds.decompress(generate_instance_uid=False)
    assert np.array_equal(ds.pixel_array, expected)


def test_lossy_and_unknown_encoders_are_refused() -> None:
    assert encoder_problem(RLE_LOSSLESS) is None
    assert encoder_problem(EXPLICIT_VR_LITTLE_ENDIAN) is None
    lossy = encoder_problem("1.2.840.10008.1.2.4.50")
    assert lossy is not None
    assert "only produces lossless encodings" in lossy
    problem = encoder_problem(JPEG_LS_LOSSLESS)
    try:
        import jpeg_ls  # noqa: F401  (pyjpegls)
    except ImportError:
        assert problem is not None
        assert "no encoder for JPEG-LS Lossless" in problem
        assert "pyjpegls" in problem
    else:  # pragma: no cover - depends on the installation
        assert problem is None


def test_missing_encoder_fails_the_conversion(tmp_path: Path) -> None:
    ds = pydicom.dcmread(make_ct_series(tmp_path, 1, rows=8, columns=8)[0])
    with pytest.raises(TranscodeError, match="lossless"):
        transcode(ds, "1.2.840.10008.1.2.4.50")


def test_big_endian_is_not_converted() -> None:
    with pytest.raises(TranscodeError, match="Big Endian"):
        transcode(_testdata("MR_small_bigendian.dcm"), EXPLICIT_VR_LITTLE_ENDIAN)
    ds = _testdata("CT_small.dcm")
    with pytest.raises(TranscodeError, match="Big Endian"):
        transcode(ds, EXPLICIT_VR_BIG_ENDIAN)


def test_dataset_without_pixels_is_relabelled() -> None:
    ds = _testdata("CT_small.dcm")
    del ds.PixelData
    transcode(ds, JPEG_2000_LOSSLESS)
    assert ds.file_meta.TransferSyntaxUID == JPEG_2000_LOSSLESS
    assert ds.original_encoding == (False, True)


def test_same_syntax_is_a_no_op() -> None:
    ds = _testdata("CT_small.dcm")
    assert transcode(ds, EXPLICIT_VR_LITTLE_ENDIAN) is ds
    assert is_compressed(JPEG_2000_LOSSLESS)
    assert not is_compressed(EXPLICIT_VR_LITTLE_ENDIAN)
    assert syntax_name(RLE_LOSSLESS) == "RLE Lossless"
    assert syntax_name("1.2.3.4") == "1.2.3.4"
