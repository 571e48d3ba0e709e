"""End to end with real processes: storescu -> `mercury serve` -> webhooks posted to a
local HTTP receiver. One send of five series, each picked by its own rule: a notification
rule (RECEIVED on the first image, COMPLETED when the series is routed), processing with
the module asking for the notification (honoured, then refused by the rule), a failing
module (ERROR) and a route rule (COMPLETED at routing)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from mercury.store.models import EventRow, JobRow, SeriesRow
from mercury.store.notify_models import JournalCursorRow
from tests.conftest import MercuryProcess, write_config
from tests.helpers import free_port, make_small_images, storescu, wait_for
from tests.notify.support import WebhookReceiver

MODULES = Path(__file__).parents[1] / "process" / "modules"
PAYLOAD = '"rule": "@rule@", "event": "@event@", "task": "@task_id@", "text": "{{ body }}"'
BODY = "{{ event }} {{ patient_name }} {{ acc }}: {{ details }}"
QUIET = "notification_trigger_reception: false, notification_trigger_completion: false"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _config(tmp_path: Path, port: int, url: str) -> Path:
    config = write_config(tmp_path, port)
    hook = f"notification_webhook: {url}, notification_payload: '{PAYLOAD}', "
    hook += f"notification_payload_body: '{BODY}'"
    ask = "processing_settings: {notification: {text: '2 nodules', requested: true}}"

    def rule(index: int, body: str) -> str:
        select = f"\"tags.SeriesDescription == 'Small series {index}'\""
        return f"  r{index}: {{rule: {select}, {body}, {hook}}}"

    on_request = "notification_trigger_completion_on_request: true"

    config.write_text(
        config.read_text()
        + f"""
notifications: {{phi: true}}
timings: {{series_complete_on: [association_end]}}
targets:
  archive: {{target_type: folder, folder: "{tmp_path / "archive"}"}}
modules:
  router: {{runner: local, command: "python {MODULES / "route_and_notify.py"}"}}
  fail: {{runner: local, command: "python {MODULES / "fail.py"}"}}
rules:
{rule(0, "action: notification")}
{rule(1, f"action: process, processing_module: router, {ask}, {QUIET}, {on_request}")}
{rule(2, f"action: process, processing_module: router, {ask}, {QUIET}")}
{rule(3, f"action: process, processing_module: fail, {QUIET}")}
{rule(4, "action: route, target: archive, notification_trigger_reception: false")}
"""
    )
    (tmp_path / "archive").mkdir()
    return config


def _settled(engine: Engine) -> bool:
    """Every series is routed, every process job has ended, the follower has read the
    whole journal, and every notify job has been delivered: nothing more can be posted."""
    with Session(engine) as session:
        routed = session.scalar(
            select(func.count()).select_from(SeriesRow).where(SeriesRow.state == "routed")
        )
        jobs = list(session.scalars(select(JobRow).where(JobRow.kind.in_(("process", "notify")))))
        cursor = session.get(JournalCursorRow, "notifier")
        last = session.scalar(
            select(func.max(EventRow.id)).where(
                EventRow.kind.in_(("series.received", "job.failed"))
            )
        )
    processed = [job for job in jobs if job.kind == "process"]
    return (
        routed == 5
        and len(processed) == 3
        and all(job.state in ("succeeded", "failed") for job in processed)
        and cursor is not None
        and last is not None
        and cursor.position >= last
        and all(job.state == "succeeded" for job in jobs if job.kind == "notify")
    )


def test_webhooks_end_to_end(tmp_path: Path, receiver: WebhookReceiver) -> None:
    port = free_port()
    mercury = MercuryProcess(_config(tmp_path, port, receiver.url), port)
    mercury.start()
    engine = create_engine(f"sqlite:///{tmp_path / 'mercury.db'}")
    try:
        files = make_small_images(tmp_path / "img", 10, per_series=2, size=16)
        assert storescu(files, port).returncode == 0
        wait_for(lambda: _settled(engine), 60, "every job and notification to be done")
        posted = receiver.bodies()
        bodies = {(body["rule"], body["event"]): body for body in posted}
        assert len(bodies) == len(posted), f"posted twice: {posted}"
        assert set(bodies) == {
            ("r0", "RECEIVED"),
            ("r0", "COMPLETED"),
            ("r1", "COMPLETED"),
            ("r3", "ERROR"),
            ("r4", "COMPLETED"),
        }
        assert bodies[("r0", "RECEIVED")]["text"] == "RECEIVED Test^Patient ACC0001: "
        assert bodies[("r0", "COMPLETED")]["text"] == "COMPLETED Test^Patient ACC0001: "
        assert bodies[("r1", "COMPLETED")]["text"] == (
            "COMPLETED Test^Patient ACC0001: router: 2 nodules"
        )
        error = bodies[("r3", "ERROR")]["text"]
        assert error.startswith("ERROR Test^Patient ACC0001: module fail (step 1)")
        with Session(engine) as session:
            processing = {
                job.rule: job.id
                for job in session.scalars(select(JobRow).where(JobRow.kind == "process"))
            }
            sent = session.scalar(
                select(func.count())
                .select_from(EventRow)
                .where(EventRow.kind == "notification.sent")
            )
        assert bodies[("r1", "COMPLETED")]["task"] == processing["r1"]
        assert bodies[("r3", "ERROR")]["task"] == processing["r3"]
        assert sent == 5
    finally:
        engine.dispose()
        mercury.stop()
