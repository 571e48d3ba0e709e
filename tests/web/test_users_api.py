"""User and token management: admins manage users (never the last admin away); every
user manages their own tokens, admins everyone's; each change journaled with the user."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mercury.store.models import EventRow
from tests.web.conftest import TestClient
from tests.web.support import PASSWORD, Account


def journal(engine: Engine, kind: str) -> list[EventRow]:
    with Session(engine) as session:
        return list(session.scalars(select(EventRow).where(EventRow.kind == kind)))


def test_manage_users(client: TestClient, admin: Account, engine: Engine) -> None:
    created = client.post(
        "/api/users",
        json={"name": "nina", "password": PASSWORD, "role": "operator"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "operator"
    assert "password" not in created.text
    duplicate = client.post(
        "/api/users", json={"name": "nina", "password": PASSWORD}, headers=admin.headers
    )
    assert duplicate.status_code == 409
    for body, parameter in (
        ({"name": "-bad", "password": PASSWORD}, "name"),
        ({"name": "nils", "password": "short"}, "password"),
        ({"name": "nils", "password": PASSWORD, "role": "root"}, "role"),
    ):
        invalid = client.post("/api/users", json=body, headers=admin.headers)
        assert invalid.status_code == 422
        assert invalid.json()["errors"][0]["parameter"] == parameter
    users = {u["name"]: u for u in client.get("/api/users", headers=admin.headers).json()}
    assert set(users) == {"ada", "nina"}
    login = client.post("/api/login", json={"name": "nina", "password": PASSWORD})
    assert login.json()["role"] == "operator"
    changed = client.patch(
        "/api/users/nina",
        json={"role": "viewer", "password": "another secret"},
        headers=admin.headers,
    )
    assert changed.json()["role"] == "viewer"
    assert client.get("/api/me").status_code == 401  # a new password ends her sessions
    deleted = client.delete("/api/users/nina", headers=admin.headers)
    assert deleted.status_code == 204
    assert client.delete("/api/users/nina", headers=admin.headers).status_code == 404
    [entry] = journal(engine, "user.created")
    assert (entry.stage, entry.details["user"], entry.details["name"]) == ("web", "ada", "nina")
    [entry] = journal(engine, "user.updated")
    assert entry.details["changes"] == {"role": "viewer", "password": True}
    assert "another secret" not in entry.message
    [entry] = journal(engine, "user.deleted")
    assert entry.details["name"] == "nina"


def test_the_last_admin_stays(client: TestClient, admin: Account, engine: Engine) -> None:
    for change in ({"role": "operator"}, {"enabled": False}):
        refused = client.patch("/api/users/ada", json=change, headers=admin.headers)
        assert refused.status_code == 409
        assert "last enabled admin" in refused.json()["detail"]
    assert client.delete("/api/users/ada", headers=admin.headers).status_code == 409
    client.post(
        "/api/users",
        json={"name": "bob", "password": PASSWORD, "role": "admin"},
        headers=admin.headers,
    )
    assert (
        client.patch("/api/users/ada", json={"role": "viewer"}, headers=admin.headers).status_code
        == 200
    )


def test_tokens_of_others(
    client: TestClient, admin: Account, operator: Account, viewer: Account
) -> None:
    refused = client.post("/api/tokens", json={"user": "vera"}, headers=operator.headers)
    assert refused.status_code == 403
    made = client.post(
        "/api/tokens", json={"user": "vera", "description": "for vera"}, headers=admin.headers
    )
    assert made.status_code == 201
    token = made.json()
    assert (token["user"], token["created_by"]) == ("vera", "ada")
    headers = {"Authorization": f"Bearer {token['token']}"}
    assert client.get("/api/me", headers=headers).json()["name"] == "vera"
    own = client.get("/api/tokens", headers=viewer.headers).json()
    assert {t["user"] for t in own} == {"vera"}
    assert client.get("/api/tokens?user=otto", headers=viewer.headers).status_code == 403
    everyone = client.get("/api/tokens", headers=admin.headers).json()
    assert {t["user"] for t in everyone} == {"ada", "otto", "vera"}
    assert {
        t["user"] for t in client.get("/api/tokens?user=otto", headers=admin.headers).json()
    } == {"otto"}
    others = client.delete(f"/api/tokens/{token['id']}", headers=operator.headers)
    assert others.status_code == 404
    assert client.delete(f"/api/tokens/{token['id']}", headers=admin.headers).status_code == 204
    assert client.get("/api/me", headers=headers).status_code == 401
    unknown = client.post("/api/tokens", json={"user": "ghost"}, headers=admin.headers)
    assert unknown.status_code == 404
