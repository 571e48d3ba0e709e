"""Authentication and roles: every endpoint refuses anonymous callers and callers without
the role it needs; sessions, CSRF, login pauses, token revocation, disabled users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mercury.store.models import EventRow
from mercury.web.accounts import RANK
from tests.web.conftest import TestClient
from tests.web.support import PASSWORD, Account, Clock, sqlite_only

# (method, route template, a concrete path, the role it needs, a JSON body)
ENDPOINTS: list[tuple[str, str, str, str, Any]] = [
    ("POST", "/api/logout", "/api/logout", "viewer", None),
    ("GET", "/api/me", "/api/me", "viewer", None),
    ("POST", "/api/me/password", "/api/me/password", "viewer", {}),
    ("GET", "/api/series", "/api/series", "viewer", None),
    ("GET", "/api/series/{uid}", "/api/series/1.2.3", "viewer", None),
    ("GET", "/api/studies", "/api/studies", "viewer", None),
    ("GET", "/api/studies/{uid}", "/api/studies/1.2.3", "viewer", None),
    (
        "POST",
        "/api/studies/{uid}/force-complete",
        "/api/studies/1.2.3/force-complete",
        "operator",
        None,
    ),
    ("GET", "/api/jobs", "/api/jobs", "viewer", None),
    ("GET", "/api/jobs/{job_id}", "/api/jobs/ffffffff", "viewer", None),
    ("POST", "/api/jobs/{job_id}/retry", "/api/jobs/ffffffff/retry", "operator", None),
    ("POST", "/api/jobs/{job_id}/cancel", "/api/jobs/ffffffff/cancel", "operator", None),
    ("GET", "/api/targets", "/api/targets", "viewer", None),
    ("POST", "/api/targets/{name}/hold", "/api/targets/nowhere/hold", "operator", {}),
    ("POST", "/api/targets/{name}/release", "/api/targets/nowhere/release", "operator", None),
    ("GET", "/api/events", "/api/events", "viewer", None),
    ("GET", "/api/config", "/api/config", "viewer", None),
    ("POST", "/api/config/validate", "/api/config/validate", "viewer", {}),
    ("POST", "/api/config", "/api/config", "admin", {}),
    ("GET", "/api/config/versions", "/api/config/versions", "viewer", None),
    ("GET", "/api/config/versions/{number}", "/api/config/versions/999", "admin", None),
    (
        "GET",
        "/api/config/versions/{number}/diff",
        "/api/config/versions/999/diff",
        "admin",
        None,
    ),
    (
        "POST",
        "/api/config/versions/{number}/restore",
        "/api/config/versions/999/restore",
        "admin",
        {},
    ),
    ("GET", "/api/users", "/api/users", "admin", None),
    ("POST", "/api/users", "/api/users", "admin", {}),
    ("PATCH", "/api/users/{name}", "/api/users/nobody", "admin", {}),
    ("DELETE", "/api/users/{name}", "/api/users/nobody", "admin", None),
    ("GET", "/api/tokens", "/api/tokens", "viewer", None),
    ("POST", "/api/tokens", "/api/tokens", "viewer", {"description": "matrix"}),
    ("DELETE", "/api/tokens/{token_id}", "/api/tokens/0000000000000000", "viewer", None),
]
PUBLIC = {
    ("GET", "/api/health"),
    ("POST", "/api/login"),
    ("GET", "/metrics"),
    ("GET", "/api/docs"),
}


def call(client: TestClient, method: str, path: str, body: Any, **kwargs: Any) -> Any:
    return client.request(method, path, json=body, **kwargs)


def journal(engine: Engine, kind: str) -> list[EventRow]:
    with Session(engine) as session:
        return list(session.scalars(select(EventRow).where(EventRow.kind == kind)))


@sqlite_only
def test_the_table_lists_every_endpoint(app: FastAPI) -> None:
    routes = {
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item
    }
    assert routes == {(m, t) for m, t, *_ in ENDPOINTS} | PUBLIC - {("GET", "/api/docs")}


def test_every_endpoint_checks_the_role(
    client: TestClient, admin: Account, operator: Account, viewer: Account
) -> None:
    accounts = {"admin": admin, "operator": operator, "viewer": viewer}
    for method, _, path, needed, body in ENDPOINTS:
        anonymous = call(client, method, path, body)
        assert anonymous.status_code == 401, (method, path)
        assert anonymous.headers["content-type"] == "application/problem+json"
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        for role, account in accounts.items():
            answer = call(client, method, path, body, headers=account.headers)
            if RANK[role] >= RANK[needed]:  # type: ignore[index]
                assert answer.status_code not in (401, 403), (role, method, path, answer.text)
            else:
                assert answer.status_code == 403, (role, method, path)
                problem = answer.json()
                assert problem["status"] == 403
                assert needed in problem["detail"]


@sqlite_only
def test_public_endpoints_need_no_credentials(client: TestClient) -> None:
    assert client.get("/api/health").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/docs").status_code == 200


def login(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    return client.post("/api/login", json={"name": name, "password": password})


def test_login_session_and_logout(client: TestClient, engine: Engine, operator: Account) -> None:
    answer = login(client, "otto")
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("mercury_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie
    body = answer.json()
    assert (body["name"], body["role"], body["via"]) == ("otto", "operator", "session")
    me = client.get("/api/me").json()
    assert me["via"] == "session"
    assert me["csrf_token"] == body["csrf_token"]
    assert client.get("/api/series").status_code == 200
    out = client.post("/api/logout", headers={"X-CSRF-Token": body["csrf_token"]})
    assert out.status_code == 204
    assert client.get("/api/me").status_code == 401
    [entry] = journal(engine, "user.login")
    assert (entry.stage, entry.details["user"]) == ("web", "otto")
    [entry] = journal(engine, "user.logout")
    assert entry.details["user"] == "otto"


@sqlite_only
def test_secure_cookies_follow_the_configuration(
    client: TestClient, config_path: Path, viewer: Account
) -> None:
    text = config_path.read_text().replace("web:\n", "web:\n  secure_cookies: true\n")
    config_path.write_text(text)  # edited by hand: the app reads the file again
    assert "Secure" in login(client, "vera").headers["set-cookie"]


def test_csrf_token_is_required_for_cookie_changes(
    client: TestClient, operator: Account, engine: Engine
) -> None:
    token = login(client, "otto").json()["csrf_token"]
    refused = client.post("/api/targets/pacs/hold", json={"reason": "maintenance"})
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:mercury:problem:csrf"
    wrong = client.post(
        "/api/targets/pacs/hold",
        json={},
        headers={"X-CSRF-Token": ("0" * 64 + "é").encode("latin-1")},
    )
    assert wrong.status_code == 403
    assert journal(engine, "target.held") == []
    held = client.post(
        "/api/targets/pacs/hold", json={"reason": "maintenance"}, headers={"X-CSRF-Token": token}
    )
    assert held.status_code == 200
    assert held.json()["target"]["held"] is True
    # reads need none; Bearer requests need none
    assert client.get("/api/targets").status_code == 200
    bearer = TestClient(client.app)
    released = bearer.post("/api/targets/pacs/release", headers=operator.headers)
    assert released.status_code == 200


def test_login_pause_after_failures(
    client: TestClient, app: FastAPI, clock: Clock, viewer: Account, engine: Engine
) -> None:
    for _ in range(3):  # web.login_attempts: 3 in the test configuration
        assert login(client, "vera", "wrong password").status_code == 401
    paused = login(client, "vera")
    assert paused.status_code == 429
    assert paused.headers["content-type"] == "application/problem+json"
    assert 0 < int(paused.headers["retry-after"]) <= 300
    elsewhere = TestClient(app, client=("10.1.2.3", 40000))
    assert login(elsewhere, "vera").status_code == 200  # per user and address
    clock.advance(301)
    assert login(client, "vera").status_code == 200
    assert len(journal(engine, "user.login_failed")) == 3
    [pause] = journal(engine, "user.login_paused")
    assert pause.details["user"] == "vera"
    assert pause.details["address"] == "testclient"


@sqlite_only
def test_unknown_users_are_paused_too(client: TestClient) -> None:
    for _ in range(3):
        assert login(client, "mallory", "guess").status_code == 401
    assert login(client, "mallory", "guess").status_code == 429


@sqlite_only
def test_session_expires_without_activity(
    client: TestClient, clock: Clock, viewer: Account
) -> None:
    login(client, "vera")
    clock.advance(7 * 3600)
    assert client.get("/api/me").status_code == 200  # activity moves the expiry on
    clock.advance(8 * 3600 + 1)
    assert client.get("/api/me").status_code == 401


def test_token_revoke(client: TestClient, viewer: Account, engine: Engine) -> None:
    created = client.post("/api/tokens", json={"description": "grafana"}, headers=viewer.headers)
    assert created.status_code == 201
    token = created.json()
    headers = {"Authorization": f"Bearer {token['token']}"}
    assert client.get("/api/me", headers=headers).json()["via"] == "token"
    listed = client.get("/api/tokens", headers=viewer.headers).json()
    assert token["id"] in {t["id"] for t in listed}
    assert all("token" not in t for t in listed)
    assert client.delete(f"/api/tokens/{token['id']}", headers=viewer.headers).status_code == 204
    refused = client.get("/api/me", headers=headers)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    [entry] = journal(engine, "token.revoked")
    assert (entry.details["user"], entry.details["token"]) == ("vera", token["id"])


@sqlite_only
def test_expired_token(client: TestClient, clock: Clock, viewer: Account) -> None:
    created = client.post("/api/tokens", json={"expires_in_days": 1}, headers=viewer.headers)
    headers = {"Authorization": f"Bearer {created.json()['token']}"}
    assert client.get("/api/me", headers=headers).status_code == 200
    clock.advance(86401)
    assert client.get("/api/me", headers=headers).status_code == 401


@sqlite_only
def test_bad_credentials(client: TestClient) -> None:
    for header in (
        b"Bearer mercury_unknown",
        b"Bearer ",
        b"Basic dmVyYTpwdw==",
        "Bearer mercury_é".encode("latin-1"),
    ):
        answer = client.get("/api/me", headers={"Authorization": header})
        assert answer.status_code == 401, header
        assert answer.headers["content-type"] == "application/problem+json"


def test_disabled_user_loses_sessions_and_tokens(
    client: TestClient, app: FastAPI, admin: Account, viewer: Account
) -> None:
    browser = TestClient(app)
    login(browser, "vera")
    disabled = client.patch("/api/users/vera", json={"enabled": False}, headers=admin.headers)
    assert disabled.status_code == 200
    assert browser.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=viewer.headers).status_code == 401
    assert login(client, "vera").status_code == 401
    client.patch("/api/users/vera", json={"enabled": True}, headers=admin.headers)
    assert client.get("/api/me", headers=viewer.headers).status_code == 200


def test_change_own_password(
    client: TestClient, app: FastAPI, viewer: Account, engine: Engine
) -> None:
    other = TestClient(app)
    login(other, "vera")
    csrf = login(client, "vera").json()["csrf_token"]
    headers = {"X-CSRF-Token": csrf}
    wrong = client.post(
        "/api/me/password",
        json={"current_password": "nope", "new_password": "a new password"},
        headers=headers,
    )
    assert wrong.status_code == 403
    short = client.post(
        "/api/me/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=headers,
    )
    assert short.status_code == 422
    assert short.json()["errors"][0]["parameter"] == "new_password"
    changed = client.post(
        "/api/me/password",
        json={"current_password": PASSWORD, "new_password": "a new password"},
        headers=headers,
    )
    assert changed.status_code == 204
    assert client.get("/api/me").status_code == 200  # this session stays
    assert other.get("/api/me").status_code == 401  # the others end
    assert login(TestClient(app), "vera").status_code == 401
    assert login(TestClient(app), "vera", "a new password").status_code == 200
    [entry] = journal(engine, "user.password_changed")
    assert entry.details["user"] == "vera"
