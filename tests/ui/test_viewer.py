"""A viewer sees everything and can change nothing: no action buttons on the pages, and an
action posted by hand with the viewer's own valid CSRF token is refused and changes
nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.helpers import storescu, wait_for
from tests.ui.conftest import Served
from tests.ui.test_flow import api, mr_series

pytestmark = pytest.mark.slow


def failed_job(page: Page, served: Served, description: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for job in api(page, served, "/api/jobs", state="failed", rule="mr_to_pacs")["items"]:
            series = api(page, served, f"/api/series/{job['series_uid']}")
            if series["series_description"] == description:
                return dict(job)
        return None

    found = wait_for(find, 30, "the failed job")
    assert found is not None
    return found


def test_a_viewer_sees_no_actions_and_cannot_forge_one(
    login: Callable[[str], Page], served: Served, tmp_path: Path
) -> None:
    sent = storescu(mr_series(tmp_path / "mr", "UI viewer MR"), served.dicom_port)
    assert sent.returncode == 0, sent.stderr
    page = login("vic")
    expect(page.locator(".side-user .who span")).to_have_text("viewer")
    expect(page.locator("nav a[href='/users']")).to_have_count(0)
    job = failed_job(page, served, "UI viewer MR")

    page.goto(f"{served.url}/jobs/{job['id']}")
    expect(page.locator(".topbar .pill")).to_have_text("failed")
    expect(page.locator("main button")).to_have_count(0)
    page.goto(f"{served.url}/queues?tab=failed")
    expect(page.locator(f"tr[data-job='{job['id']}']")).to_be_visible()
    expect(page.locator("table.jobs button")).to_have_count(0)
    page.goto(f"{served.url}/rules")
    expect(page.locator(".rule-item[data-name='mr_to_pacs']")).to_be_visible()
    expect(page.locator("a:has-text('New rule'), #rules button, [draggable=true]")).to_have_count(0)
    page.goto(f"{served.url}/rules/mr_to_pacs")
    expect(page.locator("#rule-form .pill")).to_have_text("read-only")
    expect(page.locator("#rule")).to_be_disabled()
    expect(page.locator("#rule-form button")).to_have_count(0)
    page.goto(f"{served.url}/targets")
    expect(page.locator("tr[data-target='pacs']")).to_be_visible()
    expect(page.locator("#targets-table button, a:has-text('New target')")).to_have_count(0)
    page.goto(f"{served.url}/targets/pacs")
    expect(page.locator("#target-form input:not([type=hidden]):enabled")).to_have_count(0)
    expect(page.locator("main button")).to_have_count(0)
    page.goto(f"{served.url}/config")
    expect(page.locator("#versions tbody tr").first).to_be_visible()
    expect(page.locator("#versions button, #versions a.button")).to_have_count(0)
    expect(page.locator("a:has-text('Edit the file'), a:has-text('Import')")).to_have_count(0)
    for path in ("/users", "/config/edit", "/rules/new/../../config/import"):
        assert page.request.get(f"{served.url}{path}").status == 403, path

    # Forged actions, each with this session's valid CSRF token: refused, nothing changed.
    page.goto(f"{served.url}/")
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    assert token
    config_before = served.config.read_bytes()
    versions_before = api(page, served, "/api/config/versions")["total"]
    oldest = api(page, served, "/api/config/versions", offset="0", limit="100")["items"][-1]
    forged: dict[str, dict[str, str | float | bool]] = {
        f"/jobs/{job['id']}/retry": {},
        f"/config/versions/{oldest['version']}/restore": {},
        "/targets/pacs/hold": {"reason": "forged"},
        "/rules/save": {"name": "forged", "rule": "True", "action": "discard"},
        "/rules/mr_to_pacs/delete": {},
        "/targets/save": {"name": "forged", "target_type": "dummy"},
        "/users": {"name": "mallory", "role": "admin", "password": "a long password 123"},
        "/config/apply": {"text": "{}"},
    }
    for path, fields in forged.items():
        for headers in ({"X-CSRF-Token": token}, {"X-CSRF-Token": token, "HX-Request": "true"}):
            answer = page.request.post(f"{served.url}{path}", form=fields, headers=headers)
            assert answer.status == 403, (path, answer.status, answer.text()[:300])
    assert served.config.read_bytes() == config_before
    assert api(page, served, "/api/config/versions")["total"] == versions_before
    assert api(page, served, f"/api/jobs/{job['id']}")["state"] == "failed"
    [pacs] = [t for t in api(page, served, "/api/targets") if t["name"] == "pacs"]
    assert not pacs["held"]
    with sqlite3.connect(served.folder / "mercury.db") as db:
        names = {row[0] for row in db.execute("SELECT name FROM users")}
    assert names == {"ada", "olga", "vic"}
    # The token itself was good: the viewer may use it to log out.
    out = page.request.post(f"{served.url}/logout", headers={"X-CSRF-Token": token})
    assert out.ok, out.status
    assert page.request.get(f"{served.url}/api/me").status == 401
