"""Who may open an association: called AE titles and the allow-list of callers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mercury.config.models import ReceiverConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class _Rule:
    ae_title: str | None
    network: IPNetwork | None

    def matches(self, calling_ae: str, host: str) -> bool:
        if self.ae_title is not None and self.ae_title != calling_ae:
            return False
        if self.network is None:
            return True
        try:
            return ipaddress.ip_address(host) in self.network
        except ValueError:
            return False


class AccessPolicy:
    """Decides, from the configuration, whether an association request is welcome."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.ae_titles = frozenset(config.ae_titles)
        self._rules = [
            _Rule(
                entry.ae_title,
                ipaddress.ip_network(entry.address, strict=False) if entry.address else None,
            )
            for entry in config.allowed_callers
        ]

    def called_ae_ok(self, called_ae: str) -> bool:
        return not self.ae_titles or called_ae in self.ae_titles

    def caller_ok(self, calling_ae: str, host: str) -> bool:
        return not self._rules or any(rule.matches(calling_ae, host) for rule in self._rules)
