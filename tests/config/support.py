"""Paths and helpers shared by the configuration tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
MERCURE = FIXTURES / "mercure"
EXPECTED = MERCURE / "expected"
FULL = FIXTURES / "mercury" / "full.yaml"
REPO = Path(__file__).parents[2]


def mercure_data(name: str) -> dict[str, Any]:
    """A mercure fixture, parsed."""
    data: dict[str, Any] = json.loads((MERCURE / f"{name}_mercure.json").read_text())
    return data
