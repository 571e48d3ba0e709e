"""docs/configuration.md is generated from the models and must stay in step with them."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from mercury.config.models import MercuryConfig
from mercury.config.reference import REGENERATE, describe_type, render_reference
from tests.config.support import REPO


def test_configuration_reference_is_up_to_date() -> None:
    documented = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert documented == render_reference(), (
        f"docs/configuration.md is out of date with the models; regenerate it with `{REGENERATE}`"
    )


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for subclass in model.__subclasses__():
        _models(subclass, seen)
    for field in model.model_fields.values():
        for member in _flatten(field.annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                _models(member, seen)


def _flatten(annotation: object) -> list[object]:
    args = typing.get_args(annotation)
    return [annotation, *(item for arg in args for item in _flatten(arg))]


def test_every_field_is_described() -> None:
    models: set[type[BaseModel]] = set()
    _models(MercuryConfig, models)
    missing = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert missing == []
    assert len(models) > 15


def test_type_names() -> None:
    assert describe_type(dict[str, int]) == "mapping of text to integer"
    assert describe_type(list[str] | None) == "list of text or null"
    assert describe_type(typing.Literal["a", "b"]) == "one of `a`, `b`"
