"""Browser tests: Chromium (Debian's, driven by Playwright) against a real `mercury serve`.

One mercury (with SQLite) and one browser serve every test of this folder; each test gets
a fresh browser context (its own cookies) logged in as the user it needs, and fails if
a page it opened logged a console error, a CSP violation or an uncaught exception.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from sqlalchemy.orm import Session

from mercury.store.db import make_engine, upgrade
from mercury.store.models import utcnow
from mercury.web import accounts
from tests.conftest import MercuryProcess, write_config
from tests.helpers import free_port, port_open, wait_for

CHROMIUM = "/usr/bin/chromium"
EXE = shutil.which("mercury", path=str(Path(sys.executable).parent)) or "mercury"
PASSWORDS = {
    "ada": "ada's long password",
    "olga": "olga's long password",
    "vic": "vic's long password",
}
"""An admin (made with `mercury users add`, as the first admin is), an operator, a viewer."""
TIMEOUT_MS = 30_000
# Assertions wait as long as actions do: a loaded CI machine renders slowly.
expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Served:
    """The running mercury: its DICOM port, web address, folder and configuration file."""

    process: MercuryProcess
    url: str
    folder: Path
    config: Path
    pacs_port: int
    """Where the configured target `pacs` sends; nothing listens there until a test
    starts a storescp."""

    @property
    def dicom_port(self) -> int:
        return self.process.port


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("ui")
    dicom_port, pacs_port = free_port(), free_port()
    config = write_config(folder, dicom_port)
    (folder / "xss-out").mkdir()
    with config.open("a", encoding="utf-8") as out:
        out.write(
            f"""\
dispatch:
  retry: {{max_retries: 0}}
targets:
  pacs:
    target_type: dicom
    ip: 127.0.0.1
    port: {pacs_port}
    aet_target: PACS
  xss_out:
    target_type: folder
    folder: {folder / "xss-out"}
rules:
  mr_to_pacs:
    rule: "tags.Modality == 'MR'"
    target: pacs
    series_complete_on: [association_end]
  ot_to_folder:
    rule: "tags.Modality == 'OT'"
    target: xss_out
    series_complete_on: [association_end]
"""
        )
    added = subprocess.run(
        [EXE, "users", "add", "ada", "--role", "admin", "--password-stdin", "--config", config],
        input=PASSWORDS["ada"] + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    engine = make_engine(f"sqlite:///{folder / 'mercury.db'}")
    upgrade(engine)
    with Session(engine) as session, session.begin():
        accounts.create_user(session, "olga", PASSWORDS["olga"], "operator", now=utcnow())
        accounts.create_user(session, "vic", PASSWORDS["vic"], "viewer", now=utcnow())
    engine.dispose()
    process = MercuryProcess(config, dicom_port)
    process.start()
    web_port = _web_port(config)
    try:
        wait_for(lambda: port_open(web_port), 30, "the web interface")
        yield Served(process, f"http://127.0.0.1:{web_port}", folder, config, pacs_port)
    finally:
        process.stop()


def _web_port(config: Path) -> int:
    import yaml

    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    return int(data["web"]["port"])


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing; scripts/test.sh installs Debian's chromium")
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    )
    yield browser
    browser.close()


@dataclass
class Watched:
    """What the pages of one browser context said that they should not have."""

    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    accept_dialogs: bool = True

    def watch(self, page: Page) -> None:
        page.on(
            "console",
            lambda msg: (
                self.problems.append(f"console {msg.type}: {msg.text} ({page.url})")
                if msg.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc} ({page.url})"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: object) -> None:
        from playwright.sync_api import Dialog

        assert isinstance(dialog, Dialog)
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if self.accept_dialogs:
            dialog.accept()
        else:
            dialog.dismiss()


@pytest.fixture
def watched() -> Watched:
    return Watched()


@pytest.fixture
def login(browser: Browser, served: Served, watched: Watched) -> Iterator[Callable[[str], Page]]:
    """Log in through the login form as one of PASSWORDS' users; returns the dashboard's
    page. At the end, no page may have logged an error."""
    contexts: list[BrowserContext] = []

    def log_in(name: str) -> Page:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        watched.watch(page)
        page.goto(f"{served.url}/login")
        page.fill("#name", name)
        page.fill("#password", PASSWORDS[name])
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url(f"{served.url}/")
        return page

    yield log_in
    for context in contexts:
        context.close()
    assert watched.problems == []
