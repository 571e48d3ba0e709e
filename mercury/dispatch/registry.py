"""From a target's configuration to its sender. Each type lives in its own module under
``mercury.dispatch.targets`` and exposes ``create(name, target, context) -> Sender``; they
are imported only when used, so boto3 or paramiko load only on sites that need them."""

from __future__ import annotations

import importlib
from typing import Any

from mercury.config.targets import UNSUPPORTED_TARGET_TYPES, TargetBase
from mercury.dispatch.base import Sender, SenderContext

_MODULES: dict[str, str] = {
    "dicom": "mercury.dispatch.targets.dicom",
    "dicomtls": "mercury.dispatch.targets.dicom",
    "dicomweb": "mercury.dispatch.targets.dicomweb",
    "folder": "mercury.dispatch.targets.folder",
    "s3": "mercury.dispatch.targets.s3",
    "sftp": "mercury.dispatch.targets.sftp",
    "dummy": "mercury.dispatch.targets.dummy",
}


class UnsupportedTarget(ValueError):
    """The configuration names a target type mercury cannot send to (yet)."""


def create_sender(name: str, target: TargetBase, context: SenderContext) -> Sender:
    kind = target.target_type
    if kind in UNSUPPORTED_TARGET_TYPES or kind not in _MODULES:
        raise UnsupportedTarget(
            f"target {name!r}: type {kind!r} is not supported by mercury's dispatcher yet; "
            "its jobs wait until it is (or change the rule to another target)"
        )
    module: Any = importlib.import_module(_MODULES[kind])
    sender: Sender = module.create(name, target, context)
    return sender
