"""How a delivery fails: retried later, or at once for good."""

from __future__ import annotations


class DeliveryFailed(Exception):
    """A webhook or e-mail was not delivered. ``permanent``: no retry can cure it (the
    server refused the request as such, a certificate is not trusted); otherwise the
    notifier tries again later."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
