"""`mercury rules test` on a file, a folder and a tag set, as text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import run
from tests.helpers import make_small_images

CONFIG = """
receiver: {port: 11112}
storage: {spool: spool}
targets:
  pacs: {target_type: dummy}
  archive: {target_type: dummy}
rules:
  scouts:
    rule: "'scout' in tags.SeriesDescription.lower()"
    action: discard
  ct:
    rule: "tags.Modality == 'CT'"
    target: [pacs, archive]
  thin:
    rule: "float(tags.SliceThickness) < 2.0"
    target: pacs
  other:
    rule: "True"
    fallback: true
    target: archive
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mercury.yaml"
    path.write_text(CONFIG)
    return path


def rules_test(config: Path, *args: str) -> dict:  # type: ignore[type-arg]
    result = run("rules", "test", "--config", str(config), *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_tags_json(config: Path, tmp_path: Path) -> None:
    tags = tmp_path / "t.json"
    tags.write_text(json.dumps({"Modality": "CT", "SeriesDescription": "Axial"}))
    report = rules_test(config, "--tags", str(tags))
    assert report["triggered"] == ["ct"]
    assert report["discarded"] is False
    assert report["rules"]["thin"]["missing"] == ["SliceThickness"]
    assert report["rules"]["ct"]["tags_read"] == ["Modality"]
    assert {(j["kind"], j["target"]) for j in report["jobs"]} == {
        ("dispatch", "pacs"),
        ("dispatch", "archive"),
    }


def test_discard_and_fallback(config: Path, tmp_path: Path) -> None:
    tags = tmp_path / "t.json"
    tags.write_text(json.dumps({"Modality": "CT", "SeriesDescription": "Scout"}))
    report = rules_test(config, "--tags", str(tags))
    assert (report["triggered"], report["discarded"]) == (["scouts"], True)
    tags.write_text(json.dumps({"Modality": "MR", "SeriesDescription": "T2"}))
    report = rules_test(config, "--tags", str(tags))
    assert (report["triggered"], report["discarded"]) == (["other"], False)


def test_file_and_folder(config: Path, tmp_path: Path) -> None:
    files = make_small_images(tmp_path / "img", 6, per_series=3)
    assert rules_test(config, "--file", str(files[0]))["triggered"] == ["other"]
    assert len(rules_test(config, "--dir", str(tmp_path / "img"))) == 2  # one per series
    text = run("rules", "test", "--config", str(config), "--file", str(files[0]))
    assert "other" in text.stdout
    assert "job: dispatch archive" in text.stdout


def test_bad_input(config: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    result = run("rules", "test", "--config", str(config), "--file", str(junk))
    assert result.returncode == 2
    assert "not a readable DICOM file" in " ".join(result.stderr.split())
    none = run("rules", "test", "--config", str(config))
    assert none.returncode == 2
    assert "exactly one" in none.stderr
