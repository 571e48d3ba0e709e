"""The dummy target: accepts everything, sends nothing. For trying rules safely."""

from __future__ import annotations

from typing import ClassVar

from mercury.config.targets import TargetBase
from mercury.dispatch.base import InstanceResult, ProbeResult, SenderContext, SendReport, Shipment


class DummySender:
    resumable: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, shipment: Shipment) -> SendReport:
        return SendReport(
            results=[
                InstanceResult(item.sop_instance_uid, "sent", message="dummy target: not sent")
                for item in shipment.instances
            ]
        )

    def probe(self) -> ProbeResult:
        return ProbeResult(True, "dummy target: always reachable, sends nothing")

    def describe(self) -> str:
        return f"dummy target {self.name}"


def create(name: str, target: TargetBase, context: SenderContext) -> DummySender:
    return DummySender(name)
