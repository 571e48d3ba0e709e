"""DICOM text is data: a PatientName holding a script and a SeriesDescription that tries to
break out of an attribute render as literal text on every page that shows them, whether
the page was rendered whole or swapped in by htmx's polling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from playwright.sync_api import Page, expect

from tests.helpers import make_ct_series, storescu
from tests.ui.conftest import TIMEOUT_MS, Served, Watched

pytestmark = pytest.mark.slow

PATIENT = "<script>window.__xss=1</script>"
DESCRIPTION = '"><img src=x onerror="window.__xss=2">'
SHOWN = DESCRIPTION.replace('"', "'")
"""mercury keeps tag values as mercure's getdcmtags does, with double quotes made single:
the description then tries to break out of a single-quoted attribute instead."""
STUDY = "' onmouseover='window.__xss=3' x='"


def hostile_series(folder: Path) -> tuple[list[Path], str, str]:
    files = make_ct_series(folder, 2, rows=16, columns=16, description=DESCRIPTION)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.Modality = "OT"
        ds.PatientName = PATIENT
        ds.StudyDescription = STUDY
        ds.save_as(path)
    ds = pydicom.dcmread(files[0])
    return files, str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)


def assert_inert(page: Page, watched: Watched, *texts: str) -> None:
    """Nothing ran, nothing was injected, and the hostile text is shown as text."""
    assert page.evaluate("typeof window.__xss") == "undefined", page.url
    expect(page.locator("img[src='x']")).to_have_count(0)
    expect(page.locator("script:not([src])")).to_have_count(0)
    expect(page.locator("[onerror], [onmouseover]")).to_have_count(0)
    for text in texts:
        expect(page.get_by_text(text, exact=False).first).to_be_visible()
    assert watched.dialogs == [], watched.dialogs


def test_hostile_tags_render_as_text(
    login: Callable[[str], Page], served: Served, watched: Watched, tmp_path: Path
) -> None:
    page = login("ada")
    files, series_uid, study_uid = hostile_series(tmp_path / "xss")
    expect(page.locator("#live")).to_be_visible()
    sent = storescu(files, served.dicom_port)
    assert sent.returncode == 0, sent.stderr

    # The dashboard's polling swaps the new row in: the swapped HTML is inert too.
    row = page.locator("#latest-series tr", has_text=SHOWN)
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    expect(row).to_contain_text(PATIENT)
    expect(row.locator(".pill")).to_have_text("routed", timeout=TIMEOUT_MS)
    assert_inert(page, watched, PATIENT, SHOWN)

    page.goto(f"{served.url}/series?q=xss")
    expect(page.locator("#series-table")).to_contain_text(PATIENT)
    assert_inert(page, watched, PATIENT, SHOWN)

    page.goto(f"{served.url}/series/{series_uid}")
    expect(page.locator("h1")).to_have_text(SHOWN)
    expect(page.locator("#patient-name")).to_have_text(PATIENT)
    expect(page.locator("#timeline .step[data-stage='delivered']")).to_have_attribute(
        "data-state", "done", timeout=TIMEOUT_MS
    )
    assert_inert(page, watched, PATIENT, SHOWN, STUDY)
    page.locator("#series-live table.jobs a.mono").first.click()
    expect(page.locator(".card", has_text="Kind · scope")).to_contain_text(SHOWN)
    assert_inert(page, watched, PATIENT, SHOWN)

    page.goto(f"{served.url}/studies/{study_uid}")
    assert_inert(page, watched, PATIENT, SHOWN, STUDY)
    page.goto(f"{served.url}/studies")
    assert_inert(page, watched, PATIENT, STUDY)
    page.goto(f"{served.url}/queues?state=all")
    assert_inert(page, watched, PATIENT, SHOWN)
    page.goto(f"{served.url}/audit?tab=journal&stage=receive&q=img")
    assert_inert(page, watched, SHOWN)
    for locator in page.get_by_text(SHOWN, exact=False).all()[:3]:
        locator.hover()
    assert page.evaluate("typeof window.__xss") == "undefined"
