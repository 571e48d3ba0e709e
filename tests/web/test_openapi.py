"""The OpenAPI spec and the offline API reference; schemathesis generates requests (valid
and invalid) for every operation, as an admin with a token, and finds no server error."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from mercury.web.app import create_app
from tests.web.conftest import TestClient
from tests.web.support import add_user, populate, sqlite_only, write_config


@sqlite_only
def test_docs_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)
    assert 'href="/api/openapi.json"' in page.text
    for path in ("/api/series/{uid}", "/api/config/versions/{number}/diff", "/metrics"):
        assert path in page.text


@sqlite_only
def test_spec(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    assert spec["info"]["title"] == "mercury"
    assert set(spec["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyCookie"}
    problem = spec["paths"]["/api/series"]["get"]["responses"]["422"]["content"]
    assert "application/problem+json" in problem
    apply = spec["paths"]["/api/config"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/yaml", "text/plain"} <= set(apply)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Any:
    folder = tmp_path_factory.mktemp("schemathesis")
    shutil.copyfile(sqlite_template, folder / "index.db")
    config = write_config(folder, f"sqlite:///{folder / 'index.db'}")
    app = create_app(config)
    engine = app.state.mercury.engine
    populate(engine, config)
    admin = add_user(engine, "ada", "admin")
    yield app, admin.headers
    engine.dispose()


EXAMPLES = 10  # per operation and mode: about 700 requests in all


def test_no_server_errors(api: tuple[FastAPI, dict[str, str]]) -> None:
    app, headers = api
    spec = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    operations = [result.ok() for result in spec.get_all_operations()]
    assert len(operations) == 33
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            def check(case: Any) -> None:
                case.call_and_validate(headers=dict(headers), checks=[not_a_server_error])

            try:
                check()
            except Unsatisfiable:
                # an operation without inputs has nothing to get wrong
                assert mode == GenerationMode.NEGATIVE, operation.label
