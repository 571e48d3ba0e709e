"""Character sets end to end: files in several encodings sent by storescu come out of the
index as the right UTF-8 text."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files
from sqlalchemy import create_engine, select

from mercury.store.models import SeriesRow, StudyRow
from tests.conftest import MercuryProcess
from tests.helpers import storescu

CASES = [
    ("chrFren.dcm", "ISO_IR 100", "Buc^Jérôme"),
    ("chrX1.dcm", "ISO_IR 192", "Wang^XiaoDong=王^小東="),
    ("chrH31.dcm", "\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ("chrH32.dcm", "ISO 2022 IR 13\\ISO 2022 IR 87", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
]


def test_tags_decode_to_utf8(mercury: MercuryProcess, tmp_path: Path) -> None:
    files: list[Path] = []
    expected_series: dict[str, tuple[str, str]] = {}
    expected_studies: dict[str, str] = {}
    for name, charset, patient_name in CASES:
        [source] = get_charset_files(name)
        ds = pydicom.dcmread(source)
        # Each file gets its own series and study so each row holds exactly one case.
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()
        ds.StudyInstanceUID = pydicom.uid.generate_uid()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = tmp_path / name
        ds.save_as(path)
        files.append(path)
        expected_series[ds.SeriesInstanceUID] = (charset, patient_name)
        expected_studies[ds.StudyInstanceUID] = patient_name

    result = storescu(files, mercury.port)
    assert result.returncode == 0, result.stderr

    engine = create_engine(f"sqlite:///{mercury.config.parent / 'mercury.db'}")
    with engine.connect() as conn:
        series = {r.series_uid: r for r in conn.execute(select(SeriesRow))}
        studies = {r.study_uid: r for r in conn.execute(select(StudyRow))}
    engine.dispose()
    for uid, (charset, patient_name) in expected_series.items():
        assert series[uid].tags["SpecificCharacterSet"] == charset
        assert series[uid].tags["PatientName"] == patient_name
    for uid, patient_name in expected_studies.items():
        assert studies[uid].patient_name == patient_name


@pytest.mark.parametrize("name", ["chrFren.dcm", "chrH31.dcm"])
def test_stored_bytes_keep_the_original_encoding(
    mercury: MercuryProcess, tmp_path: Path, name: str
) -> None:
    """Decoding is for the index only: the spool keeps the bytes as sent."""
    [source] = get_charset_files(name)
    result = storescu([Path(source)], mercury.port)
    assert result.returncode == 0, result.stderr
    stored = list((mercury.config.parent / "spool" / "data").rglob("*.dcm"))
    assert len(stored) == 1
    original = pydicom.dcmread(source)
    copy = pydicom.dcmread(stored[0])
    assert copy.PatientName == original.PatientName
    assert copy.get_item("PatientName").value == original.get_item("PatientName").value
