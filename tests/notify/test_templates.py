"""Templates written for mercure render as mercure renders them (macros, then Jinja; the
payload body JSON-escaped into ``body``; ``{`` + payload + ``}`` parsed as JSON), PHI only
when allowed, and the sandbox refuses Python internals with a clear reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jinja2 import Template
from jinja2.utils import htmlsafe_json_dumps

from mercury.config.rules import Rule
from mercury.notify.email import build_message, recipients
from mercury.notify.templates import (
    Occasion,
    TemplateProblem,
    email_body,
    email_subject,
    render,
    template_variables,
    webhook_payload,
)
from mercury.notify.triggers import on_completion, on_error, on_reception
from mercury.notify.webhook import describe_url

TAGS = {
    "PatientName": "Müller^Hans",
    "PatientID": "MRN-42",
    "AccessionNumber": "ACC-7",
    "DeviceSerialNumber": "SN-1234",
}
PAYLOAD = '"rule": "@rule@", "event": "@event@", "task": "@task_id@", "text": "{{ body }}"'
BODY = '{{ patient_name }} {{ acc }} <b>"{{ event }}"</b>\n{{ details }}'


def mercure_render(text: str, context: dict[str, Any], rule: str, task: str, event: str) -> str:
    """mercure 0.4's parse_payload, as a reference: macros, then a plain Jinja Template."""
    text = text.replace("@rule@", rule).replace("@task_id@", task).replace("@event@", event)
    base = {"rule": rule, "task_id": task, "event": event, "details": ""}
    return str(Template(text).render(base | context))


def mercure_webhook(payload: str, body: str, context: dict[str, Any]) -> Any:
    args = ("announce", "3f2a9c1e", "COMPLETED")
    rendered = mercure_render(body, context, *args)
    escaped = htmlsafe_json_dumps(rendered)[1:-1]
    return json.loads("{" + mercure_render(payload, context | {"body": escaped}, *args) + "}")


def notification_rule(**fields: Any) -> Rule:
    return Rule(action="notification", **fields)


def variables(phi: bool, details: str = "") -> dict[str, Any]:
    occasion = Occasion("announce", "3f2a9c1e", "completed", details, TAGS)
    return template_variables(occasion, phi=phi)


@pytest.mark.parametrize("phi", [True, False])
def test_webhook_payload_renders_as_mercure(phi: bool) -> None:
    rule = notification_rule(notification_payload=PAYLOAD, notification_payload_body=BODY)
    details = 'blur: 2 nodules, "large" & <urgent>'
    ours = webhook_payload(rule, variables(phi, details))
    patient = (
        {"patient_name": "Müller^Hans", "acc": "ACC-7", "mrn": "MRN-42"}
        if phi
        else dict.fromkeys(("patient_name", "acc", "mrn"), "UNKNOWN")
    )
    context = {"details": details, "DeviceSerialNumber": "SN-1234", **patient}
    assert ours == mercure_webhook(PAYLOAD, BODY, context)
    name, acc = ("Müller^Hans", "ACC-7") if phi else ("UNKNOWN", "UNKNOWN")
    assert ours == {
        "rule": "announce",
        "event": "COMPLETED",
        "task": "3f2a9c1e",
        "text": f'{name} {acc} <b>"COMPLETED"</b>\n{details}',
    }


def test_template_variables() -> None:
    values = variables(phi=False, details="d")
    assert values["DeviceSerialNumber"] == "SN-1234"  # not PHI: always there
    assert values["phi_data"] == {"acc": "UNKNOWN", "mrn": "UNKNOWN", "patient_name": "UNKNOWN"}
    assert template_variables(Occasion("r", "t", "error"), phi=True)["patient_name"] == "UNKNOWN"
    text = "{{ rule }}|{{ task_id }}|{{ event }}|{{ details }}|{{ mrn }}|{{ nothing }}|@rule@"
    assert render(text, variables(phi=True, details="d"), field="f") == (
        "announce|3f2a9c1e|COMPLETED|d|MRN-42||announce"
    )


def test_mercure_default_templates() -> None:
    """The bodies mercure puts into a new rule."""
    body = (
        'Rule "{{ rule }}" triggered {{ event }}\n{% if details is defined and details|length %}'
        "\nDetails:\n{{ details }}\n{% endif %}"
    )
    mail = 'Rule "{{ rule }}" triggered {{ event }}\nName: {{ patient_name }}\nACC: {{ acc }}'
    rule = notification_rule(
        notification_payload='"text": "{{ body }}"',
        notification_payload_body=body,
        notification_email_body=mail,
    )
    assert webhook_payload(rule, variables(False, "blur: fine")) == {
        "text": 'Rule "announce" triggered COMPLETED\n\nDetails:\nblur: fine\n'
    }
    assert webhook_payload(rule, variables(False)) == {
        "text": 'Rule "announce" triggered COMPLETED\n'
    }
    assert email_body(rule, variables(True)) == (
        'Rule "announce" triggered COMPLETED\nName: Müller^Hans\nACC: ACC-7'
    )
    assert webhook_payload(notification_rule(), variables(False)) == {}


@pytest.mark.parametrize(
    ("field", "template", "reason"),
    [
        ("notification_payload", '"x": "{{ \'\'.__class__.__mro__ }}"', "sandbox"),
        ("notification_payload", '"x": "{{ \'\'.__class__ }}"', "sandbox"),
        ("notification_payload_body", "{{ details.__init__.__globals__ }}", "sandbox"),
        ("notification_payload_body", "{{ cycler.__init__.__globals__.os }}", "sandbox"),
        ("notification_email_body", "{% set x = [] %}{{ x.append(1) }}", "sandbox"),
        ("notification_email_body", "{{ rule.format.__self__.__class__ }}", "sandbox"),
        ("notification_email_body", "{% if %}", "syntax error at line 1"),
        ("notification_payload_body", "{{ 1 / 0 }}", "ZeroDivisionError"),
        ("notification_payload", '"a": {{ body }}', "not a JSON object"),
        ("notification_payload", '"a": 1}, {"b": 2', "not a JSON object"),
    ],
)
def test_broken_and_refused_templates(field: str, template: str, reason: str) -> None:
    rule = notification_rule(**{field: template})
    render_it = email_body if field == "notification_email_body" else webhook_payload
    with pytest.raises(TemplateProblem) as caught:
        render_it(rule, variables(True))
    assert caught.value.field == field
    assert reason in str(caught.value)
    assert str(caught.value).startswith(field)


def test_email_subject_and_message() -> None:
    values = variables(False)
    assert email_subject("mercury", values) == "[mercury] Rule announce: COMPLETED"
    assert recipients(" a@x.org, b@y.org;c@z.org ,, ") == ["a@x.org", "b@y.org", "c@z.org"]
    message = build_message(
        sender="m@x", to=["a@x.org", "b@y.org"], subject="s", body="<p>x</p>", subtype="html"
    )
    assert message["To"] == "a@x.org, b@y.org"
    assert message.get_content_type() == "text/html"


def test_webhook_url_in_the_journal_hides_secrets() -> None:
    url = "https://user:pw@hooks.slack.com:8443/services/T000/B000/SECRET?x=1"
    assert describe_url(url) == "https://hooks.slack.com:8443"


@pytest.mark.parametrize("channel", ["webhook", "email", None])
def test_trigger_flags(channel: str | None) -> None:
    where: dict[str, str] = {}
    if channel == "webhook":
        where = {"notification_webhook": "http://x/"}
    elif channel == "email":
        where = {"notification_email": "a@x.org"}
    on = notification_rule(**where)
    off = notification_rule(
        **where,
        notification_trigger_reception=False,
        notification_trigger_completion=False,
        notification_trigger_error=False,
    )
    on_request = off.model_copy(update={"notification_trigger_completion_on_request": True})
    channelled = channel is not None
    assert on_reception(on) is channelled
    assert not on_reception(off)
    assert on_error(on) is channelled
    assert not on_error(off)
    assert on_completion(on) is channelled
    assert on_completion(on, requested=True) is channelled
    assert not on_completion(off)
    assert not on_completion(off, requested=True)
    assert not on_completion(on_request)
    assert on_completion(on_request, requested=True) is channelled
