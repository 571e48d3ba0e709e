"""One module per target type, each exposing ``create(name, target, context) -> Sender``."""
