"""The notifier against a real index (SQLite and PostgreSQL), a real HTTP receiver and a
real SMTP server, with an injectable clock: delivery, retries with backoff, give-up,
refusals, templates refused by the sandbox, and the journal entry of every attempt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from mercury.notify.notifier import Notifier
from mercury.store.jobs import requeue
from tests.helpers import free_port
from tests.notify.support import Index as World
from tests.notify.support import SmtpServer, WebhookReceiver, make_config, self_signed

PAYLOAD = '"rule": "@rule@", "event": "@event@", "task": "@task_id@", "text": "{{ body }}"'
BODY = "{{ event }} for {{ patient_name }} ({{ acc }}, {{ DeviceSerialNumber }}): {{ details }}"


def hook(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "rule": "True",
        "action": "notification",
        "notification_webhook": url,
        "notification_payload": PAYLOAD,
        "notification_payload_body": BODY,
        **extra,
    }


def mail(smtp: SmtpServer | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "rule": "True",
        "action": "notification",
        "notification_email": "ops@example.org, lab@example.org",
        "notification_email_body": "{{ event }}: {{ patient_name }} / {{ mrn }}",
        **extra,
    }


def smtp_settings(port: int, **extra: Any) -> dict[str, Any]:
    return {"smtp_host": "127.0.0.1", "smtp_port": port, "email_from": "mercury@x.org", **extra}


def test_webhook_delivered_and_journaled(
    index: World, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    config = make_config(tmp_path, {"announce": hook(receiver.url)}, phi=True)
    source = index.source_job("announce", modules=("blur", "measure"))
    job = index.notify_job("announce", text="2 nodules", source_job=source)
    assert index.run(index.notifier(config)) == 1
    assert receiver.bodies() == [
        {
            "rule": "announce",
            "event": "COMPLETED",
            "task": source,
            "text": "COMPLETED for Doe^Jane (ACC-7, SN-1234): measure: 2 nodules",
        }
    ]
    assert receiver.requests[0].headers["Content-Type"] == "application/json"
    assert receiver.requests[0].path == "/hook"
    row = index.job(job)
    assert (row.state, row.attempts, row.details["delivered"]) == ("succeeded", 1, ["webhook"])
    (sent,) = index.events("notification.sent", "notification.failed")
    assert sent.kind == "notification.sent"
    assert sent.series_uid == row.series_uid
    assert sent.details["channel"] == "webhook"
    assert sent.details["to"] == f"http://127.0.0.1:{receiver.port}"  # never the path
    assert sent.details["job"] == job
    assert "COMPLETED" in sent.message
    assert "HTTP 200" in sent.message


def test_phi_off_reads_unknown(index: World, receiver: WebhookReceiver, tmp_path: Path) -> None:
    config = make_config(tmp_path, {"announce": hook(receiver.url)})
    index.notify_job("announce", event="received")
    index.run(index.notifier(config))
    (body,) = receiver.bodies()
    assert body["event"] == "RECEIVED"
    assert body["text"] == "RECEIVED for UNKNOWN (UNKNOWN, SN-1234): "


def test_webhook_down_then_up_is_delivered_after_retries(index: World, tmp_path: Path) -> None:
    receiver = WebhookReceiver(free_port())  # not listening yet
    config = make_config(tmp_path, {"announce": hook(receiver.url)}, retries=3)
    job = index.notify_job("announce")
    notifier = index.notifier(config)
    assert index.run(notifier) == 1
    row = index.job(job)
    assert (row.state, row.attempts) == ("queued", 1)
    (failed,) = index.events("notification.failed")
    assert failed.severity == "warning"
    assert failed.details["final"] is False
    assert "unreachable" in failed.details["error"]
    assert "retry in" in failed.message

    assert index.run(notifier) == 0  # not due yet
    index.clock.advance(3600)
    assert index.run(notifier) == 1  # still down: a second failed attempt
    receiver.start()
    try:
        index.clock.advance(3600)
        assert index.run(notifier) == 1
        assert [b["event"] for b in receiver.bodies()] == ["COMPLETED"]
    finally:
        receiver.stop()
    row = index.job(job)
    assert (row.state, row.attempts) == ("succeeded", 3)
    kinds = [e.kind for e in index.events("notification.sent", "notification.failed")]
    assert kinds == ["notification.failed", "notification.failed", "notification.sent"]


def test_server_errors_are_retried_until_retries_are_used_up(
    index: World, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    receiver.statuses = [503, 429, 500, 200]
    config = make_config(tmp_path, {"announce": hook(receiver.url)}, retries=2)
    job = index.notify_job("announce")
    notifier = index.notifier(config)
    for _ in range(4):
        index.run(notifier)
        index.clock.advance(3600)
    assert len(receiver.requests) == 3  # the first attempt and two retries
    row = index.job(job)
    assert (row.state, row.attempts) == ("failed", 3)
    assert "HTTP 500" in (row.last_error or "")
    events = index.events("notification.failed")
    assert [e.details["final"] for e in events] == [False, False, True]
    assert events[-1].severity == "error"
    assert "failed after 3 attempts" in events[-1].message
    assert f"mercury jobs retry {job[:8]}" in events[-1].message


def test_refusal_fails_at_once(index: World, receiver: WebhookReceiver, tmp_path: Path) -> None:
    receiver.statuses = [404]
    config = make_config(tmp_path, {"announce": hook(receiver.url)}, retries=5)
    job = index.notify_job("announce")
    index.run(index.notifier(config))
    row = index.job(job)
    assert (row.state, row.attempts) == ("failed", 1)
    (failed,) = index.events("notification.failed")
    assert failed.details["final"] is True
    assert "HTTP 404" in failed.message
    assert "failed for good" in failed.message

    with Session(index.engine) as session, session.begin():  # `mercury jobs retry`
        requeue(session, job, now=index.clock(), by="tester")
    index.run(index.notifier(config))
    assert index.job(job).state == "succeeded"
    assert len(receiver.requests) == 2


def test_https_webhook_verified_with_the_ca_bundle(index: World, tmp_path: Path) -> None:
    context, bundle = self_signed(tmp_path)
    receiver = WebhookReceiver(tls=context).start()
    try:
        untrusted = index.notify_job("announce")
        index.run(index.notifier(make_config(tmp_path, {"announce": hook(receiver.url)})))
        row = index.job(untrusted)
        assert (row.state, row.attempts) == ("failed", 1)  # not retried: it would not help
        (failed,) = index.events("notification.failed")
        assert "certificate is not trusted" in failed.message

        trusted = index.notify_job("announce")
        config = make_config(tmp_path, {"announce": hook(receiver.url)}, webhook_ca_bundle=bundle)
        index.run(index.notifier(config))
        assert index.job(trusted).state == "succeeded"
        assert [body["event"] for body in receiver.bodies()] == ["COMPLETED"]
    finally:
        receiver.stop()


def test_sandbox_refusal_is_journaled_not_sent(
    index: World, receiver: WebhookReceiver, smtp: SmtpServer, tmp_path: Path
) -> None:
    rules = {
        "evil": hook(
            receiver.url,
            notification_payload='"x": "{{ \'\'.__class__.__mro__ }}"',
            notification_email="ops@example.org",
            notification_email_body="{{ details.__init__.__globals__ }}",
        )
    }
    config = make_config(tmp_path, rules, **smtp_settings(smtp.port))
    job = index.notify_job("evil")
    index.run(index.notifier(config))
    assert receiver.requests == []
    assert smtp.messages == []
    row = index.job(job)
    assert (row.state, row.attempts) == ("failed", 1)
    failures = {e.details["channel"]: e for e in index.events("notification.failed")}
    assert set(failures) == {"webhook", "email"}
    assert "notification_payload: refused by the template sandbox" in failures["webhook"].message
    assert "notification_email_body: refused" in failures["email"].message
    assert all(e.details["final"] and e.severity == "error" for e in failures.values())


def test_email_plain_and_html(index: World, smtp: SmtpServer, tmp_path: Path) -> None:
    rules = {
        "plain": mail(),
        "html": mail(
            notification_email_type="html",
            notification_email_body="<p>{{ event }} of <b>{{ rule }}</b></p>",
        ),
    }
    config = make_config(tmp_path, rules, phi=True, **smtp_settings(smtp.port)).model_copy(
        update={"appliance_name": "ct-router"}
    )
    index.notify_job("plain", event="error", text="target down")
    index.notify_job("html")
    assert index.run(index.notifier(config)) == 2
    messages = {message["Subject"]: (envelope, message) for envelope, message in smtp.messages}
    assert set(messages) == {
        "[ct-router] Rule plain: ERROR",
        "[ct-router] Rule html: COMPLETED",
    }
    envelope, plain = messages["[ct-router] Rule plain: ERROR"]
    assert envelope.mail_from == "mercury@x.org"
    assert sorted(envelope.rcpt_tos) == ["lab@example.org", "ops@example.org"]
    assert plain["From"] == "mercury@x.org"
    assert plain.get_content_type() == "text/plain"
    assert plain.get_content().strip() == "ERROR: Doe^Jane / MRN-42"
    _, html = messages["[ct-router] Rule html: COMPLETED"]
    assert html.get_content_type() == "text/html"
    assert html.get_content().strip() == "<p>COMPLETED of <b>html</b></p>"
    sent = index.events("notification.sent")
    assert {e.details["channel"] for e in sent} == {"email"}
    assert {e.details["to"] for e in sent} == {"ops@example.org, lab@example.org"}
    assert all(job.state == "succeeded" for job in index.jobs())


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login(index: World, tmp_path: Path) -> None:
    server = SmtpServer(login=("mercury", "s3cret"))
    server.controller.start()
    try:
        settings = smtp_settings(server.port, smtp_user="mercury", smtp_password="s3cret")
        index.notify_job("plain")
        index.run(index.notifier(make_config(tmp_path, {"plain": mail()}, **settings)))
        assert server.logins == ["mercury"]
        assert len(server.messages) == 1

        wrong = {**settings, "smtp_password": "wrong"}
        job = index.notify_job("plain")
        index.run(index.notifier(make_config(tmp_path, {"plain": mail()}, **wrong)))
        assert index.job(job).state == "failed"  # a refused login is not retried
        (failed,) = index.events("notification.failed")
        assert "refused the login of 'mercury'" in failed.message
    finally:
        server.controller.stop()


def test_starttls_asked_of_a_server_without_it(
    index: World, smtp: SmtpServer, tmp_path: Path
) -> None:
    settings = smtp_settings(smtp.port, smtp_starttls=True)
    job = index.notify_job("plain")
    index.run(index.notifier(make_config(tmp_path, {"plain": mail()}, **settings)))
    assert index.job(job).state == "failed"
    assert smtp.messages == []
    (failed,) = index.events("notification.failed")
    assert "STARTTLS" in failed.message


def test_bad_smtp_host_fails_after_retries(index: World, tmp_path: Path) -> None:
    settings = smtp_settings(free_port())  # nothing listens there
    config = make_config(tmp_path, {"plain": mail()}, retries=1, **settings)
    job = index.notify_job("plain")
    notifier = index.notifier(config)
    index.run(notifier)
    assert index.job(job).state == "queued"
    index.clock.advance(3600)
    index.run(notifier)
    row = index.job(job)
    assert (row.state, row.attempts) == ("failed", 2)
    events = index.events("notification.failed")
    assert [(e.details["channel"], e.details["final"]) for e in events] == [
        ("email", False),
        ("email", True),
    ]
    assert "cannot deliver through 127.0.0.1" in events[-1].details["error"]


def test_a_delivered_channel_is_not_sent_again(
    index: World, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    smtp = SmtpServer()  # not started: e-mail fails at first
    rules = {"both": hook(receiver.url, notification_email="ops@example.org")}
    config = make_config(tmp_path, rules, retries=2, **smtp_settings(smtp.port))
    job = index.notify_job("both")
    notifier = index.notifier(config)
    index.run(notifier)
    assert len(receiver.requests) == 1
    assert index.job(job).details["delivered"] == ["webhook"]
    smtp.controller.start()
    try:
        index.clock.advance(3600)
        index.run(notifier)
        assert len(smtp.messages) == 1
    finally:
        smtp.controller.stop()
    assert len(receiver.requests) == 1
    row = index.job(job)
    assert (row.state, sorted(row.details["delivered"])) == ("succeeded", ["email", "webhook"])


def test_nothing_to_send_and_missing_rule(index: World, tmp_path: Path) -> None:
    config = make_config(tmp_path, {"quiet": {"rule": "True", "action": "notification"}})
    quiet = index.notify_job("quiet")
    gone = index.notify_job("removed")
    index.run(index.notifier(config))
    assert index.job(quiet).state == "succeeded"
    (skipped,) = index.events("notification.skipped")
    assert "no webhook or e-mail" in skipped.message
    row = index.job(gone)
    assert row.state == "failed"
    (failed,) = index.events("notification.failed")
    assert "rule 'removed' is no longer in the configuration" in failed.message


def test_a_second_notifier_does_not_take_a_claimed_job(
    index: World, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    config = make_config(tmp_path, {"announce": hook(receiver.url)})
    index.notify_job("announce")
    first = index.notifier(config)
    second = Notifier(index.engine, config, owner="n2", clock=index.clock)
    index.notifiers.append(second)
    assert index.run(first) + index.run(second) == 1
    assert len(receiver.requests) == 1
