"""Which events a rule notifies about (mercure's trigger flags), shared by the stages that
create notify jobs: the router (completion of route and notification rules), the processor
(completion of processing) and the journal follower (reception and errors)."""

from __future__ import annotations

from typing import Literal

from mercury.config.rules import Rule

Event = Literal["received", "completed", "error"]
EVENTS: tuple[Event, ...] = ("received", "completed", "error")


def has_channel(rule: Rule) -> bool:
    """Whether the rule says where to notify: a webhook URL or e-mail addresses."""
    return bool(rule.notification_webhook.strip() or rule.notification_email.strip())


def on_reception(rule: Rule) -> bool:
    return has_channel(rule) and rule.notification_trigger_reception


def on_completion(rule: Rule, *, requested: bool = False) -> bool:
    """Completion notifies when the rule's trigger is on, or when a module asked for it
    (``__mercure_notification.requested``) and the rule honours such requests."""
    if not has_channel(rule):
        return False
    return rule.notification_trigger_completion or (
        requested and rule.notification_trigger_completion_on_request
    )


def on_error(rule: Rule) -> bool:
    return has_channel(rule) and rule.notification_trigger_error
