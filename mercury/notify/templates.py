"""Notification templates, rendered as mercure renders them, in a Jinja sandbox.

mercure's recipe, kept exactly so that templates written for it render the same:

1. In each template, ``@rule@``, ``@task_id@`` and ``@event@`` are replaced by their values.
2. The template is rendered by Jinja (no autoescaping; an unknown variable renders empty)
   with ``rule``, ``task_id``, ``event`` (RECEIVED, COMPLETED or ERROR), ``details``,
   ``acc``, ``mrn``, ``patient_name`` and ``DeviceSerialNumber``.
3. For a webhook, ``notification_payload_body`` is rendered first; the result, escaped as
   the inside of a JSON string (HTML-safe, as mercure's ``htmlsafe_json_dumps``), is the
   variable ``body`` of ``notification_payload``. ``{`` + payload + ``}`` must then parse
   as a JSON object: that is what is posted.

acc, mrn and patient_name read UNKNOWN unless ``notifications.phi`` is on. Rendering runs
in Jinja's immutable sandbox: templates cannot reach Python internals (``__class__``,
``__globals__``...) or modify values; a refused or broken template raises
:class:`TemplateProblem`, which names the rule's field and says what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, Undefined
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import htmlsafe_json_dumps

from mercury.config.rules import Rule

UNKNOWN = "UNKNOWN"
PHI_VARIABLES = {"acc": "AccessionNumber", "mrn": "PatientID", "patient_name": "PatientName"}


class _RefusingUndefined(Undefined):
    """mercure's lenient undefined (an unknown variable renders empty), except that an
    attribute the sandbox refused fails when printed instead of printing nothing."""

    __slots__ = ()

    def __str__(self) -> str:
        if self._undefined_exception is SecurityError:
            self._fail_with_undefined_error()
        return super().__str__()


_ENVIRONMENT = ImmutableSandboxedEnvironment(undefined=_RefusingUndefined)


class TemplateProblem(ValueError):
    """A template of the rule cannot be rendered; ``field`` is the rule's setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Occasion:
    """What a notification is about: the rule, the job (``task_id``), the event, mercure's
    ``details`` text, and the tags of the series (or the study's first series)."""

    rule: str
    task_id: str
    event: str
    details: str = ""
    tags: Mapping[str, str] | None = None


def template_variables(occasion: Occasion, *, phi: bool) -> dict[str, Any]:
    """The variables every template sees. ``phi_data`` (the same three values as acc, mrn
    and patient_name) is there for templates written after mercure's documentation."""
    tags = occasion.tags or {}
    patient = {
        name: (tags.get(tag) or UNKNOWN) if phi else UNKNOWN for name, tag in PHI_VARIABLES.items()
    }
    return {
        "rule": occasion.rule,
        "task_id": occasion.task_id,
        "event": occasion.event.upper(),
        "details": occasion.details,
        **patient,
        "phi_data": dict(patient),
        "DeviceSerialNumber": tags.get("DeviceSerialNumber") or UNKNOWN,
    }


def replace_macros(text: str, variables: Mapping[str, Any]) -> str:
    return (
        text.replace("@rule@", str(variables["rule"]))
        .replace("@task_id@", str(variables["task_id"]))
        .replace("@event@", str(variables["event"]))
    )


def render(text: str, variables: Mapping[str, Any], *, field: str) -> str:
    """Macros, then the sandboxed Jinja rendering; every failure is a TemplateProblem."""
    source = replace_macros(text, variables)
    try:
        return _ENVIRONMENT.from_string(source).render(dict(variables))
    except SecurityError as error:
        raise TemplateProblem(field, f"refused by the template sandbox: {error}") from error
    except TemplateSyntaxError as error:
        raise TemplateProblem(
            field, f"syntax error at line {error.lineno}: {error.message}"
        ) from error
    except TemplateError as error:
        raise TemplateProblem(field, f"cannot be rendered: {error}") from error
    except Exception as error:  # a template's own arithmetic or type error, say
        raise TemplateProblem(
            field, f"cannot be rendered: {type(error).__name__}: {error}"
        ) from error


def webhook_payload(rule: Rule, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object a rule's webhook receives."""
    body = render(rule.notification_payload_body, variables, field="notification_payload_body")
    escaped = str(htmlsafe_json_dumps(body))[1:-1]
    text = render(
        rule.notification_payload, {**variables, "body": escaped}, field="notification_payload"
    )
    try:
        payload = json.loads("{" + text + "}")
    except json.JSONDecodeError as error:
        raise TemplateProblem(
            "notification_payload",
            f"once rendered and put in braces it is not a JSON object ({error.msg} at line "
            f"{error.lineno}, column {error.colno}): {_excerpt(text)}",
        ) from error
    except RecursionError as error:
        raise TemplateProblem("notification_payload", "nested too deeply to be JSON") from error
    assert isinstance(payload, dict)  # "{...}" parses as an object or not at all
    return payload


def email_body(rule: Rule, variables: Mapping[str, Any]) -> str:
    return render(rule.notification_email_body, variables, field="notification_email_body")


def email_subject(product: str, variables: Mapping[str, Any]) -> str:
    """mercure's subject line, with our appliance name for its product name."""
    return f"[{product}] Rule {variables['rule']}: {variables['event']}"


def _excerpt(text: str, limit: int = 200) -> str:
    text = "{" + text + "}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
