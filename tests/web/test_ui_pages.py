"""The web interface's pages, server side: every page for every role, the login page for
a missing session, refused actions that change nothing, CSRF on forms, security headers,
DICOM-derived text escaped (the browser tests check the same in Chromium)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from mercury.store.index_writer import IndexWriter
from mercury.store.models import EventRow, JobRow, utcnow
from mercury.web.ui.base import CONTENT_SECURITY_POLICY
from tests.web.support import CT_A, PASSWORD, STUDY_1, Account, Data, receive

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PAGES = [
    "/",
    "/dashboard/live",
    "/series",
    f"/series/{CT_A}",
    f"/series/{CT_A}/live",
    "/studies",
    f"/studies/{STUDY_1}",
    "/queues",
    "/rules",
    "/rules/ct",
    "/targets",
    "/targets/pacs",
    "/modules",
    "/config",
    "/audit",
    "/audit?tab=journal",
    "/account",
]
ADMIN_PAGES = [
    "/config/versions/1",  # a version's text may hold passwords
    "/users",
    "/config/edit",
    "/config/import",
    "/rules/new",
    "/targets/new",
]
HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_DESCRIPTION = '"><img src=x onerror="alert(2)">'


def login(app: FastAPI, name: str) -> tuple[TestClient, str]:
    """A browser-like client logged in through the form; returns it and its CSRF token."""
    client = TestClient(app)
    page = client.get("/login")
    token = re.search(r'name="form_token" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post(
        "/login",
        data={"name": name, "password": PASSWORD, "form_token": token.group(1), "next": "/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get("/").text)
    assert csrf is not None
    return client, csrf.group(1)


def rules_in(config_path: Path) -> list[str]:
    return list(yaml.safe_load(config_path.read_text())["rules"])


def test_without_a_session_every_page_leads_to_the_login(app: FastAPI) -> None:
    client = TestClient(app)
    for path in [*PAGES, *ADMIN_PAGES]:
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code in (302, 303, 401), path
        if answer.status_code != 401:
            assert answer.headers["location"].startswith("/login"), path


def test_a_viewer_sees_every_page_and_no_action(app: FastAPI, data: Data, viewer: Account) -> None:
    client, _ = login(app, viewer.name)
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["x-frame-options"] == "DENY"
    queues = client.get("/queues").text
    assert "/retry" not in queues
    assert "/cancel" not in queues
    assert "/hold" not in client.get("/targets").text
    for path in ADMIN_PAGES:
        assert client.get(path).status_code == 403, path


def test_an_admin_sees_every_page(app: FastAPI, data: Data, admin: Account) -> None:
    client, _ = login(app, admin.name)
    for path in [*PAGES, *ADMIN_PAGES]:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
    assert f"/jobs/{data.failed_job}/retry" in client.get(f"/jobs/{data.failed_job}").text


def test_a_viewers_actions_are_refused_and_change_nothing(
    app: FastAPI, engine: Engine, config_path: Path, data: Data, viewer: Account
) -> None:
    client, csrf = login(app, viewer.name)
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    before = config_path.read_text()
    attempts = [
        (f"/jobs/{data.failed_job}/retry", {}),
        (f"/jobs/{data.queued_job}/cancel", {}),
        ("/targets/pacs/hold", {"reason": "x"}),
        ("/rules/ct/delete", {}),
        ("/config/versions/1/restore", {}),
        ("/users", {"name": "mallory", "password": "long enough", "role": "admin"}),
        (f"/studies/{STUDY_1}/force-complete", {}),
    ]
    for path, form in attempts:
        answer = client.post(path, data=form, headers=headers)
        assert answer.status_code == 403, (path, answer.status_code, answer.text[:300])
    assert config_path.read_text() == before
    with Session(engine) as session:
        states = dict(session.execute(select(JobRow.id, JobRow.state)).all())
        assert states[data.failed_job] == "failed"
        assert states[data.queued_job] == "queued"
        assert (
            session.scalar(
                select(func.count())
                .select_from(EventRow)
                .where(EventRow.stage == "web", EventRow.kind != "user.login")
            )
            == 0
        )


def test_an_action_without_the_csrf_token_is_refused(
    app: FastAPI, engine: Engine, data: Data, operator: Account
) -> None:
    client, csrf = login(app, operator.name)
    refused = client.post(f"/jobs/{data.failed_job}/retry", headers={"HX-Request": "true"})
    assert refused.status_code == 403
    wrong = client.post(f"/jobs/{data.failed_job}/retry", data={"csrf_token": "not-the-token"})
    assert wrong.status_code == 403
    with Session(engine) as session:
        assert session.get(JobRow, data.failed_job).state == "failed"  # type: ignore[union-attr]
    accepted = client.post(
        f"/jobs/{data.failed_job}/retry", headers={"X-CSRF-Token": csrf, "HX-Request": "true"}
    )
    assert accepted.status_code in (200, 204), accepted.text[:300]
    with Session(engine) as session:
        assert session.get(JobRow, data.failed_job).state == "queued"  # type: ignore[union-attr]


def test_a_plain_form_posts_its_token_field(
    app: FastAPI, config_path: Path, admin: Account
) -> None:
    client, csrf = login(app, admin.name)
    assert "ct" in rules_in(config_path)
    answer = client.post("/rules/ct/delete", data={"csrf_token": csrf}, follow_redirects=False)
    assert answer.status_code in (200, 303), answer.text[:300]
    assert "ct" not in rules_in(config_path)


def test_dicom_text_is_escaped_on_every_page_showing_it(
    app: FastAPI, engine: Engine, admin: Account
) -> None:
    series, study = "1.2.826.0.1.9.1", "1.2.826.0.1.9"
    writer = IndexWriter(engine)
    writer.start()
    try:
        receive(
            writer,
            series,
            study,
            1,
            utcnow(),
            PatientName=HOSTILE_NAME,
            PatientID=HOSTILE_DESCRIPTION,
            Modality="CT",
        )
    finally:
        writer.stop()
    with Session(engine) as session, session.begin():
        from mercury.store.models import SeriesRow

        row = session.scalars(select(SeriesRow).where(SeriesRow.series_uid == series)).one()
        row.series_description = HOSTILE_DESCRIPTION
    client, _ = login(app, admin.name)
    for path in ["/series", f"/series/{series}", "/studies", f"/studies/{study}", "/"]:
        html = client.get(path).text
        assert "<script>alert(1)" not in html, path
        assert 'onerror="alert(2)"' not in html, path
        assert '"><img' not in html, path
        if path != "/":
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path


def test_assets_are_served_by_mercury(app: FastAPI) -> None:
    client = TestClient(app)
    for asset in ("/static/htmx.min.js", "/static/mercury.js", "/static/mercury.css"):
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 1000, asset
    login_page = client.get("/login").text
    assert "http://" not in login_page
    assert "https://" not in login_page


@pytest.mark.parametrize("missing", ["/series/1.2.3.999", "/jobs/nope", "/rules/nope"])
def test_unknown_things_are_a_404_page(app: FastAPI, admin: Account, missing: str) -> None:
    client, _ = login(app, admin.name)
    answer = client.get(missing)
    assert answer.status_code == 404
    assert "text/html" in answer.headers["content-type"]
