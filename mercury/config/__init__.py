"""Configuration: pydantic models, loading with located errors, saving, mercure import."""

from mercury.config.errors import ConfigError, ConfigIssue
from mercury.config.load import config_from_data, load_config
from mercury.config.mercure_import import (
    ImportResult,
    UnmappedField,
    import_mercure,
    import_mercure_file,
)
from mercury.config.models import MercuryConfig
from mercury.config.save import dump_config, save_config

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "ImportResult",
    "MercuryConfig",
    "UnmappedField",
    "config_from_data",
    "dump_config",
    "import_mercure",
    "import_mercure_file",
    "load_config",
    "save_config",
]
