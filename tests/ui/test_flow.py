"""An admin's day in the browser: log in, add a target and a rule with the editors, send a
series with storescu and watch it complete, retry a failed job once its target is back,
restore an earlier configuration version."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect

from tests.helpers import make_ct_series, port_open, storescu, wait_for
from tests.ui.conftest import TIMEOUT_MS, Served, Watched

pytestmark = pytest.mark.slow


def api(page: Page, served: Served, path: str, **params: str) -> Any:
    """The REST API, with the browser's own session."""
    query: dict[str, str | float | bool] = dict(params)
    answer = page.request.get(f"{served.url}{path}", params=query)
    assert answer.ok, answer.text()
    return answer.json()


def reloaded_since(page: Page, served: Served, version: int) -> bool:
    """Whether the services restarted on configuration ``version`` (or a later one)."""
    items = api(page, served, "/api/events", kind="config.reloaded")["items"]
    return any(item["details"]["version"] >= version for item in items)


def test_login_form_refuses_a_wrong_password_then_lets_in(
    browser: Browser, served: Served, watched: Watched
) -> None:
    context = browser.new_context()
    page = context.new_page()
    watched.watch(page)
    page.goto(f"{served.url}/queues")
    expect(page).to_have_url(re.compile(r"/login\?next=/queues$"))
    page.fill("#name", "ada")
    page.fill("#password", "not the password")
    page.click("form[action='/login'] button[type=submit]")
    expect(page.locator(".banner.error")).to_contain_text("Wrong user name or password")
    expect(page.locator("#name")).to_have_value("ada")
    # The refused login is a 401 page, which Chromium reports on the console: expected.
    assert len(watched.problems) == 1, watched.problems
    assert "status of 401" in watched.problems.pop()
    page.fill("#password", "ada's long password")
    page.click("form[action='/login'] button[type=submit]")
    expect(page).to_have_url(f"{served.url}/queues")
    expect(page.locator(".side-user .who a")).to_have_text("ada")
    page.click("button[aria-label='Log out']")
    expect(page).to_have_url(f"{served.url}/login")
    page.goto(f"{served.url}/")
    expect(page).to_have_url(f"{served.url}/login")
    context.close()
    assert watched.problems == []


def test_target_and_rule_from_the_editors_route_a_series_seen_live(
    login: Callable[[str], Page], served: Served, tmp_path: Path
) -> None:
    page = login("ada")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    version = api(page, served, "/api/config/versions")["items"][0]["version"]

    page.goto(f"{served.url}/targets")
    page.click("a:has-text('New target')")
    page.fill("#name", "outbox")
    page.select_option("#target_type", "folder")
    expect(page.locator("#folder__folder")).to_be_visible()
    expect(page.locator("#dicom__ip")).to_be_hidden()
    page.fill("#folder__folder", str(outbox))
    page.fill("#target-form input[name=history_comment]", "a folder for the CT")
    page.click("#target-form button[type=submit]")
    expect(page).to_have_url(f"{served.url}/targets/outbox")
    # The page said so in a toast that fades; the history is what lasts.
    assert api(page, served, "/api/config/versions")["items"][0]["version"] == version + 1

    page.goto(f"{served.url}/rules/new")
    page.fill("#name", "ct_outbox")
    page.fill("#rule", "tags.Modality == 'CT'")
    page.select_option("#action", "route")
    page.check("input[name=target][value=outbox]")
    page.check("input[name=series_complete_on][value=association_end]")
    page.click("#rule-form button[type=submit]")
    expect(page).to_have_url(f"{served.url}/rules/ct_outbox")
    # The page said so in a toast that fades; the history is what lasts.
    assert api(page, served, "/api/config/versions")["items"][0]["version"] == version + 2
    saved = yaml.safe_load(served.config.read_text(encoding="utf-8"))
    # The history's "why" is not the target's own comment field (it once was).
    assert saved["targets"]["outbox"] == {"target_type": "folder", "folder": str(outbox)}
    history = api(page, served, "/api/config/versions")["items"]
    assert history[1]["comment"] == "a folder for the CT"
    assert saved["rules"]["ct_outbox"]["target"] == ["outbox"]
    wait_for(lambda: reloaded_since(page, served, version + 2), 30, "the services to reload")

    page.goto(f"{served.url}/")
    expect(page.locator("#live")).to_be_visible()
    files = make_ct_series(tmp_path / "ct", 3, rows=32, columns=32, description="UI flow CT")
    sent = storescu(files, served.dicom_port)
    assert sent.returncode == 0, sent.stderr
    # The dashboard polls: the series appears without a reload, and is routed.
    row = page.locator("#latest-series tr", has_text="UI flow CT")
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    expect(row.locator(".pill")).to_have_text("routed", timeout=TIMEOUT_MS)
    row.locator("a", has_text="UI flow CT").click()
    expect(page.locator("h1")).to_have_text("UI flow CT")
    # The series page polls too, until the last stage is done.
    delivered = page.locator("#timeline .step[data-stage='delivered']")
    expect(delivered).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    expect(page.locator("#series-live")).to_have_attribute("data-final", "yes")
    jobs = page.locator("#series-live table.jobs tbody tr")
    expect(jobs).to_have_count(1)
    expect(jobs.locator(".pill").first).to_have_text("succeeded")
    assert len(list(outbox.rglob("*.dcm"))) == 3


@pytest.fixture
def pacs(served: Served, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Starts a DCMTK storescp on the `pacs` target's port when called."""
    started: list[subprocess.Popen[bytes]] = []
    received = tmp_path / "pacs"
    received.mkdir()

    def start() -> None:
        started.append(
            subprocess.Popen(
                ["storescp", "-aet", "PACS", "-od", str(received), str(served.pacs_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(lambda: port_open(served.pacs_port), 30, "storescp")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(30)


def mr_series(folder: Path, description: str) -> list[Path]:
    import pydicom
    from pydicom.uid import UID

    files = make_ct_series(folder, 2, rows=16, columns=16, description=description)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.4")
        ds.save_as(path)
    return files


def test_a_failed_job_is_retried_from_its_page(
    login: Callable[[str], Page],
    served: Served,
    tmp_path: Path,
    pacs: Callable[[], None],
) -> None:
    page = login("olga")
    sent = storescu(mr_series(tmp_path / "mr", "UI retry MR"), served.dicom_port)
    assert sent.returncode == 0, sent.stderr

    page.goto(f"{served.url}/queues?tab=failed")
    row = page.locator("table.jobs tbody tr", has_text="UI retry MR")

    def failed_row_shown() -> bool:
        if row.count():
            return True
        page.reload()
        return False

    wait_for(failed_row_shown, 30, "the failed job in the Failed tab")
    expect(row).to_contain_text("connection refused")
    row.locator("a.mono").click()
    expect(page.locator(".topbar .pill")).to_have_text("failed")
    expect(page.locator("dd.error-text")).to_contain_text("connection refused")

    pacs()
    page.click("button:has-text('Retry')")  # confirmed in the dialog the fixture accepts

    def succeeded() -> bool:
        if page.locator(".topbar .pill").inner_text() == "succeeded":
            return True
        page.reload()
        return False

    wait_for(succeeded, 30, "the retried job to succeed")
    expect(page.locator(".card", has_text="Deliveries").locator("tbody tr")).to_have_count(2)
    expect(page.locator("button:has-text('Retry')")).to_have_count(0)


def test_an_earlier_configuration_is_restored(login: Callable[[str], Page], served: Served) -> None:
    page = login("ada")
    before = api(page, served, "/api/config/versions")["items"][0]["version"]
    page.goto(f"{served.url}/rules/new")
    page.fill("#name", "short_lived")
    page.fill("#rule", "tags.Modality == 'XA'")
    page.select_option("#action", "discard")
    page.fill("#rule-form input[name=history_comment]", "an experiment")
    page.fill("#comment", "the rule's own comment")
    page.click("#rule-form button[type=submit]")
    expect(page).to_have_url(f"{served.url}/rules/short_lived")
    rules = yaml.safe_load(served.config.read_text(encoding="utf-8"))["rules"]
    assert rules["short_lived"]["comment"] == "the rule's own comment"

    page.goto(f"{served.url}/config")
    newest = page.locator("#versions tbody tr").first
    expect(newest).to_have_attribute("data-version", str(before + 1))
    expect(newest).to_contain_text("an experiment")
    expect(newest.locator("button:has-text('Restore')")).to_have_count(0)
    newest.locator("a:has-text('Diff')").click()
    expect(page.locator("h2")).to_have_text(
        f"Changes from version {before} to version {before + 1}"
    )
    expect(page.locator("main")).to_contain_text("+  short_lived:")
    page.go_back()
    page.locator(f"#versions tr[data-version='{before}'] button:has-text('Restore')").click()
    restored = page.locator("#versions tbody tr").first
    expect(restored).to_have_attribute("data-version", str(before + 2))
    expect(restored).to_contain_text(f"restore of version {before}")
    assert "short_lived" not in yaml.safe_load(served.config.read_text(encoding="utf-8"))["rules"]
    page.goto(f"{served.url}/rules")
    expect(page.locator("#rules .rule-item")).not_to_have_count(0)
    expect(page.locator("#rules .rule-item[data-name='short_lived']")).to_have_count(0)
