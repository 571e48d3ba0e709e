"""The web interface's editors and actions, server side: each applies a new configuration
version (or refuses with the reason and changes nothing), the rule tester on pasted tags
and on a DICOM file, the replay, mercure.json import, users and passwords."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pydicom
import yaml
from fastapi import FastAPI
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from mercury.store.models import EventRow
from mercury.store.web_models import ConfigVersionRow, UserRow
from tests.helpers import make_small_images
from tests.web.support import PASSWORD, Account, Data
from tests.web.test_ui_pages import login

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

HTMX = {"HX-Request": "true"}


def config_of(path: Path) -> dict[str, object]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def versions(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(ConfigVersionRow)) or 0)


def post(client: TestClient, csrf: str, path: str, **form: object) -> object:
    return client.post(path, data=form, headers={**HTMX, "X-CSRF-Token": csrf})


def test_a_new_rule_is_a_new_version_with_its_comment(
    app: FastAPI, engine: Engine, config_path: Path, admin: Account
) -> None:
    client, csrf = login(app, admin.name)
    answer = client.post(
        "/rules/save",
        data={
            "name": "us_to_archive",
            "original": "",
            "from_editor": "1",
            "rule": "tags.Modality == 'US'",
            "action": "route",
            "target": "archive",
            "history_comment": "ultrasound goes to the archive",
        },
        headers={**HTMX, "X-CSRF-Token": csrf},
    )
    assert answer.status_code in (200, 204), answer.text[:500]
    rules = config_of(config_path)["rules"]
    assert isinstance(rules, dict)
    assert rules["us_to_archive"]["rule"] == "tags.Modality == 'US'"
    assert rules["us_to_archive"]["target"] in ("archive", ["archive"])
    with Session(engine) as session:
        newest = session.scalars(
            select(ConfigVersionRow).order_by(ConfigVersionRow.version.desc())
        ).first()
        assert newest is not None
        assert newest.author == admin.name
        assert newest.comment == "ultrasound goes to the archive"


def test_an_invalid_rule_is_refused_with_the_reason(
    app: FastAPI, engine: Engine, config_path: Path, admin: Account
) -> None:
    client, csrf = login(app, admin.name)
    before, count = config_path.read_text(), versions(engine)
    answer = client.post(
        "/rules/save",
        data={
            "name": "broken",
            "original": "",
            "from_editor": "1",
            "rule": "tags.Modality ==",
            "action": "route",
            "target": "nowhere",
        },
        headers={**HTMX, "X-CSRF-Token": csrf},
    )
    assert answer.status_code == 422, answer.text[:500]
    assert "nowhere" in answer.text
    assert config_path.read_text() == before
    assert versions(engine) == count


def test_reordering_rules(app: FastAPI, config_path: Path, admin: Account) -> None:
    client, csrf = login(app, admin.name)
    assert list(config_of(config_path)["rules"]) == ["ct", "mr_study"]  # type: ignore[call-overload]
    answer = client.post(
        "/rules/order", data={"order": "mr_study,ct"}, headers={**HTMX, "X-CSRF-Token": csrf}
    )
    assert answer.status_code in (200, 204), answer.text[:500]
    assert list(config_of(config_path)["rules"]) == ["mr_study", "ct"]  # type: ignore[call-overload]
    stale = client.post(
        "/rules/order", data={"order": "ct"}, headers={**HTMX, "X-CSRF-Token": csrf}
    )
    assert stale.status_code == 409


def test_the_rule_tester_on_pasted_tags_and_on_a_file(
    app: FastAPI, tmp_path: Path, viewer: Account
) -> None:
    client, csrf = login(app, viewer.name)
    pasted = client.post(
        "/rules/test",
        data={"tester_tags": "Modality: CT\nSeriesDescription: Thorax", "original": "ct"},
        headers={**HTMX, "X-CSRF-Token": csrf},
    )
    assert pasted.status_code == 200, pasted.text[:500]
    assert "pacs" in pasted.text
    assert "Modality" in pasted.text
    [image] = make_small_images(tmp_path / "img", 1)
    modality = pydicom.dcmread(image, stop_before_pixels=True).Modality
    dropped = client.post(
        "/rules/test",
        data={"original": "ct"},
        files={"tester_file": ("image.dcm", image.read_bytes(), "application/dicom")},
        headers={**HTMX, "X-CSRF-Token": csrf},
    )
    assert dropped.status_code == 200, dropped.text[:500]
    assert modality in dropped.text
    garbage = client.post(
        "/rules/test",
        data={"original": "ct"},
        files={"tester_file": ("x.dcm", b"not dicom at all", "application/dicom")},
        headers={**HTMX, "X-CSRF-Token": csrf},
    )
    assert "not a readable DICOM file" in garbage.text
    empty = client.post(
        "/rules/test", data={"tester_tags": ""}, headers={**HTMX, "X-CSRF-Token": csrf}
    )
    assert "paste some tags" in empty.text


def test_the_replay_shows_what_a_rule_would_have_done(
    app: FastAPI, data: Data, viewer: Account
) -> None:
    client, csrf = login(app, viewer.name)
    answer = client.post(
        "/rules/replay",
        data={"original": "ct", "days": "7"},
        headers={**HTMX, "X-CSRF-Token": csrf},
    )
    assert answer.status_code == 200, answer.text[:500]
    assert "series" in answer.text.lower()


def test_a_target_with_a_missing_field_is_refused(
    app: FastAPI, engine: Engine, config_path: Path, admin: Account
) -> None:
    client, csrf = login(app, admin.name)
    before = config_path.read_text()
    answer = client.post(
        "/targets/save",
        data={"name": "pacs2", "original": "", "from_editor": "1", "target_type": "dicom"},
        headers={**HTMX, "X-CSRF-Token": csrf},
    )
    assert answer.status_code == 422, answer.text[:500]
    assert config_path.read_text() == before
    saved = client.post(
        "/targets/save",
        data={
            "name": "pacs2",
            "original": "",
            "from_editor": "1",
            "target_type": "dicom",
            "dicom__ip": "127.0.0.1",
            "dicom__port": "104",
            "dicom__aet_target": "PACS",
        },
        headers={**HTMX, "X-CSRF-Token": csrf},
    )
    assert saved.status_code in (200, 204), saved.text[:800]
    target = config_of(config_path)["targets"]["pacs2"]  # type: ignore[index]
    assert target["ip"] == "127.0.0.1"
    assert target["port"] == 104


def test_importing_a_mercure_json(
    app: FastAPI, config_path: Path, tmp_path: Path, admin: Account
) -> None:
    client, csrf = login(app, admin.name)
    mercure = {
        "appliance_name": "old mercure",
        "targets": {
            "orthanc": {
                "target_type": "dicom",
                "ip": "10.0.0.5",
                "port": "4242",
                "aet_target": "ORTHANC",
            }
        },
        "rules": {"all": {"rule": "True", "action": "route", "target": "orthanc"}},
    }
    page = client.post(
        "/config/import",
        data={"csrf_token": csrf},
        files={"file": ("mercure.json", json.dumps(mercure).encode(), "application/json")},
        headers={"X-CSRF-Token": csrf},
    )
    assert page.status_code == 200, page.text[:800]
    assert "orthanc" in page.text
    bad = client.post(
        "/config/import",
        data={"csrf_token": csrf},
        files={"file": ("mercure.json", b"{not json", "application/json")},
        headers={"X-CSRF-Token": csrf},
    )
    assert bad.status_code == 422
    assert "JSON" in bad.text


def test_users_are_added_changed_and_deleted_by_an_admin(
    app: FastAPI, engine: Engine, admin: Account
) -> None:
    client, csrf = login(app, admin.name)
    headers = {**HTMX, "X-CSRF-Token": csrf}
    short = client.post(
        "/users", data={"name": "bob", "password": "short", "role": "viewer"}, headers=headers
    )
    assert short.status_code == 422
    added = client.post(
        "/users",
        data={"name": "bob", "password": "long enough pw", "role": "viewer"},
        headers=headers,
    )
    assert added.status_code in (200, 204), added.text[:500]
    changed = client.post(
        "/users/bob/update",
        data={"enabled_sent": "1", "enabled": "on", "role": "operator"},
        headers=headers,
    )
    assert changed.status_code in (200, 204), changed.text[:500]
    with Session(engine) as session:
        bob = session.scalars(select(UserRow).where(UserRow.name == "bob")).one()
        assert bob.role == "operator"
    deleted = client.post("/users/bob/delete", headers=headers)
    assert deleted.status_code in (200, 204), deleted.text[:500]
    with Session(engine) as session:
        assert session.scalars(select(UserRow).where(UserRow.name == "bob")).first() is None
        kinds = set(session.scalars(select(EventRow.kind).where(EventRow.stage == "web")))
    assert {"user.created", "user.deleted"} <= kinds


def test_changing_ones_password(app: FastAPI, operator: Account) -> None:
    client, csrf = login(app, operator.name)
    headers = {**HTMX, "X-CSRF-Token": csrf}
    wrong = client.post(
        "/account/password",
        data={
            "current_password": "nope",
            "new_password": "a new secret",
            "confirm_password": "a new secret",
        },
        headers=headers,
    )
    assert wrong.status_code == 403
    differ = client.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": "a new secret",
            "confirm_password": "other",
        },
        headers=headers,
    )
    assert differ.status_code == 422
    changed = client.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": "a new secret",
            "confirm_password": "a new secret",
        },
        headers=headers,
    )
    assert changed.status_code in (200, 204), changed.text[:500]
    fresh = TestClient(app)
    assert (
        fresh.post(
            "/api/login", json={"name": operator.name, "password": "a new secret"}
        ).status_code
        == 200
    )
    assert (
        fresh.post("/api/login", json={"name": operator.name, "password": PASSWORD}).status_code
        == 401
    )


def test_a_target_a_rule_sends_to_cannot_be_deleted(
    app: FastAPI, engine: Engine, config_path: Path, admin: Account
) -> None:
    client, csrf = login(app, admin.name)
    headers = {**HTMX, "X-CSRF-Token": csrf}
    before, count = config_path.read_text(), versions(engine)
    refused = client.post("/targets/pacs/delete", headers=headers)
    assert refused.status_code == 409, refused.text[:500]
    assert "target pacs cannot be deleted" in refused.text
    assert "rules.ct" in refused.text
    assert config_path.read_text() == before
    assert versions(engine) == count
    assert client.post("/modules/nothing/delete", headers=headers).status_code == 404
    assert client.post("/rules/ct/delete", headers=headers).status_code in (200, 204)
    assert client.post("/targets/pacs/delete", headers=headers).status_code in (200, 204)
    assert "pacs" not in config_of(config_path)["targets"]  # type: ignore[operator]
    assert versions(engine) == count + 2
