"""Typed settings (file, environment, flags) and the reference page generated from them.

The names the rest of the service uses are re-exported here, so callers write
``from luna_sender.config import Settings, load_settings`` and the split into modules stays an
inner detail of this package.
"""

from luna_sender.config.masking import mask_url
from luna_sender.config.sections import (
    AuthSettings,
    GcSettings,
    InfluxMonitoring,
    LimitSettings,
    MetricsSettings,
    WsSettings,
)
from luna_sender.config.settings import (
    ENV_PREFIX,
    ConfigError,
    Settings,
    config_warnings,
    ignored_env_warning,
    load_settings,
    plugin_setup,
)

__all__ = [
    "ENV_PREFIX",
    "AuthSettings",
    "ConfigError",
    "GcSettings",
    "InfluxMonitoring",
    "LimitSettings",
    "MetricsSettings",
    "Settings",
    "WsSettings",
    "config_warnings",
    "ignored_env_warning",
    "load_settings",
    "mask_url",
    "plugin_setup",
]
