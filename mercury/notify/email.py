"""E-mail delivery through the configured SMTP server, with mercure's subject and a plain
or HTML body."""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Literal

from mercury.config.models import NotificationsConfig
from mercury.notify.errors import DeliveryFailed

TIMEOUT = 30.0
"""Seconds for connecting to the SMTP server and for each of its answers."""


def recipients(text: str) -> list[str]:
    """``notification_email``: addresses separated by commas (or semicolons)."""
    return [address.strip() for address in re.split(r"[,;]", text) if address.strip()]


def build_message(
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    body: str,
    subtype: Literal["plain", "html"] = "plain",
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(to)
    message.set_content(body, subtype=subtype)
    return message


def send(settings: NotificationsConfig, message: EmailMessage, *, timeout: float = TIMEOUT) -> str:
    """Hand the message to the SMTP server (STARTTLS and login as configured); returns
    what happened, for the journal. Raises :class:`DeliveryFailed`."""
    server = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                password = settings.smtp_password
                smtp.login(settings.smtp_user, password.get_secret_value() if password else "")
            refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        reasons = "; ".join(
            f"{address}: {code} {_text(answer)}"
            for address, (code, answer) in error.recipients.items()
        )
        raise DeliveryFailed(
            f"{server} refused every recipient ({reasons})",
            permanent=all(code >= 500 for code in codes),
        ) from error
    except smtplib.SMTPAuthenticationError as error:
        raise DeliveryFailed(
            f"{server} refused the login of {settings.smtp_user!r}: {error.smtp_code} "
            f"{_text(error.smtp_error)}",
            permanent=True,
        ) from error
    except smtplib.SMTPNotSupportedError as error:
        raise DeliveryFailed(f"{server}: {error}", permanent=True) from error
    except smtplib.SMTPResponseException as error:
        raise DeliveryFailed(
            f"{server} answered {error.smtp_code} {_text(error.smtp_error)}",
            permanent=error.smtp_code >= 500,
        ) from error
    except ssl.SSLCertVerificationError as error:
        raise DeliveryFailed(
            f"{server}: the server's certificate is not trusted ({error})", permanent=True
        ) from error
    except (smtplib.SMTPException, OSError) as error:
        reason = str(error) or type(error).__name__
        raise DeliveryFailed(f"cannot deliver through {server}: {reason}") from error
    sent = len(recipients(str(message["To"] or "")))
    if refused:
        names = ", ".join(sorted(refused))
        return f"accepted by {server} for {sent - len(refused)} of {sent}; refused: {names}"
    return f"accepted by {server} for {sent} recipient{'s' if sent != 1 else ''}"


def _text(answer: bytes | str) -> str:
    if isinstance(answer, bytes):
        return answer.decode("utf-8", "replace")
    return answer
