"""yacs configuration: SGB key names, ``_BASE_`` inheritance, validated overrides."""
from .config import (
    ConfigError,
    load_config,
    merge_from_file,
    merge_from_list,
    protocol_from_config,
    validate_config,
)
from .defaults import get_default_config, register_config_extension

__all__ = [
    "ConfigError",
    "get_default_config",
    "load_config",
    "merge_from_file",
    "merge_from_list",
    "protocol_from_config",
    "register_config_extension",
    "validate_config",
]
