"""Settings: ``config.yaml`` < ``LUNA_SENDER_*`` environment < CLI flags, validated at start.

Validation happens before anything listens, so a typo in a deployment fails loudly with the key
named instead of surfacing later as odd behaviour. Every field is documented in the
repository's ``config.yaml`` (a test keeps the two in step). The sections live in
:mod:`luna_sender.config.sections`, the environment rules in :mod:`luna_sender.config.env`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from luna_sender.bus.urls import check_url
from luna_sender.config.env import env_overrides
from luna_sender.config.masking import mask_secrets
from luna_sender.config.sections import (
    MONITORING_PLUGIN,
    AuthSettings,
    GcSettings,
    HistorySettings,
    InfluxMonitoring,
    LimitSettings,
    MetricsSettings,
    Section,
    WsSettings,
    either_case,
)

ENV_PREFIX = "LUNA_SENDER_"
BUS_SCHEMES = (
    "memory",
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)


# The shipped forwarder's names, its settings block checked at load (_forwarder_can_send).
FORWARDER_NAMES = (
    "event-forwarder",
    "luna_sender.plugins.forwarder:EventForwarder",
    "luna_sender.plugins.forwarder.EventForwarder",
)


def _invalid(loc: tuple[str, ...], value: Any, kind: str, message: str) -> ValidationError:
    """A rule across keys reported like a field's own error: at the key it names."""
    error = PydanticCustomError(kind, message)  # no context: the text is taken as it is
    details = InitErrorDetails(type=error, loc=loc, input=value)
    return ValidationError.from_exception_data("Settings", [details])


class Settings(Section):
    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=5080, ge=0, le=65535, description="TCP port to listen on.")
    redis_url: str = Field(
        default="memory://",
        description="Event bus: memory:// (in-process), redis:// or rediss:// (TLS options as "
        "redis-py URL parameters, e.g. `rediss://host:6380/0?ssl_ca_certs=/etc/ssl/ca.pem`), "
        "unix:///path/redis.sock, redis+sentinel://h:p,h:p/<master>[/db], "
        "redis+cluster://h:p,h:p[?sharded=1].",
    )
    bus_publish_timeout: float = Field(
        default=10.0,
        ge=0.05,
        le=300,
        description="Seconds a publish waits for Redis's reply once PUBLISH is written; past it "
        "the answer is 503 and the event may still be delivered (docs/reliability.md).",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Serving processes sharing the port (SO_REUSEPORT), "
        "supervised and replaced when they die; every limit applies per process.",
    )
    channel_prefix: str = Field(
        default="luna-sender",
        min_length=1,
        description="Face/body channel is '{prefix}:{account_id}'.",
    )
    general_channel: str | None = Field(
        default=None,
        description="General-event channel; default '{channel_prefix}-general-events'.",
    )
    api_versions: list[int] = Field(
        default_factory=lambda: [1, 2], description="Business routes are also served at /{v}/..."
    )
    api_version: int = Field(default=2, ge=1, description="Reported as Version.api by /version.")
    storage_time: Literal["UTC", "LOCAL"] = Field(
        default="UTC", description="Time zone of default event times on general publish."
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto",
        description="Event loop: auto uses uvloop when installed (it is a dependency on "
        "Linux and macOS: cheaper socket writes); asyncio forces the standard loop.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(default="text", description="Log line format.")
    log_access: bool = Field(
        default=False,
        description="Log one INFO line per finished request (method, route, status, "
        "duration; websockets when they close).",
    )
    docs_dir: str | None = Field(
        default=None,
        description="Folder of the developer manual served at /docs/dev (default: the "
        "copy installed with the package, else the docs/ folder of the checkout the package "
        "runs from, wherever the working directory is).",
    )
    ws: WsSettings = Field(default_factory=WsSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    gc: GcSettings = Field(default_factory=GcSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    plugins: list[str] = Field(
        default_factory=list, description="Plugins to start (entry-point names or dotted paths)."
    )
    plugin_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Settings block per plugin name."
    )
    INFLUX_MONITORING: InfluxMonitoring = Field(
        default_factory=InfluxMonitoring, validation_alias=either_case("INFLUX_MONITORING")
    )

    @model_validator(mode="before")
    @classmethod
    def _original_key_case(cls, data: Any) -> Any:
        """Environment paths arrive lower-cased (``LUNA_SENDER_INFLUX_MONITORING__TOKEN``):
        fold them into the file's upper-case section, the environment winning per key."""
        if not isinstance(data, dict) or "influx_monitoring" not in data:
            return data
        data = dict(data)
        lower, upper = data.pop("influx_monitoring"), data.get("INFLUX_MONITORING")
        if isinstance(lower, dict) and isinstance(upper, dict | None):
            merged = {str(k).upper(): v for k, v in (upper or {}).items()}
            merged.update({str(k).upper(): v for k, v in lower.items()})
            data["INFLUX_MONITORING"] = merged
        elif upper is None:
            data["INFLUX_MONITORING"] = lower
        return data

    @model_validator(mode="after")
    def _monitoring_configured_once(self) -> Settings:
        if self.INFLUX_MONITORING.SEND_DATA_FOR_MONITORING and MONITORING_PLUGIN in self.plugins:
            raise ValueError(
                f"INFLUX_MONITORING.SEND_DATA_FOR_MONITORING=1 and plugin "
                f"'{MONITORING_PLUGIN}' in plugins: configure it in one place"
            )
        return self

    # Names of LUNA_SENDER_* variables skipped as Kubernetes service links (logged at start).
    _ignored_env: list[str] = PrivateAttr(default_factory=list)

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        value = value.strip()  # " redis://..." passed here (urlsplit strips) and not the bus
        scheme = urlsplit(value).scheme
        if scheme not in BUS_SCHEMES:
            raise ValueError(f"unsupported bus scheme {scheme!r} ({', '.join(BUS_SCHEMES)})")
        check_url(value)
        return value

    @field_validator("api_versions")
    @classmethod
    def _positive_versions(cls, value: list[int]) -> list[int]:
        if any(not 1 <= v < 2**63 for v in value):  # /config renders 64-bit integers only
            raise ValueError("API versions are positive integers (below 2**63)")
        return sorted(set(value))

    @field_validator("workers")
    @classmethod
    def _workers_need_a_shared_bus(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and str(info.data.get("redis_url", "")).startswith("memory"):
            raise ValueError("more than 1 worker needs a Redis bus (memory:// is per process)")
        if value > 1 and info.data.get("port") == 0:
            # Each worker binds for itself: port 0 would give every worker a port of its own.
            raise ValueError("more than 1 worker needs a fixed port (port 0 picks one per worker)")
        return value

    @model_validator(mode="after")
    def _queue_holds_the_largest_message(self) -> Settings:
        # A reader that keeps up must never be evicted: one frame can be as large as the largest
        # bus message, so a cap below it would close even a fast reader (docs/reliability.md).
        largest = max(self.limits.bus_message_max_bytes, self.limits.publish_body_max_bytes)
        if self.ws.queue_max_bytes < largest:
            raise _invalid(
                ("ws", "queue_max_bytes"),
                self.ws.queue_max_bytes,
                "queue_below_message",
                f"must be at least the largest accepted message ({largest} bytes: "
                "limits.bus_message_max_bytes / limits.publish_body_max_bytes)",
            )
        return self

    @model_validator(mode="after")
    def _forwarder_can_send(self) -> Settings:
        """The one plugin rule checked at load: other bad plugin settings only leave their
        plugin ``running: 0`` (docs/plugins.md), but this forwarder started as running, sent
        nothing (aiohttp refuses every such POST), logged nothing and held the stop 5 s."""
        for name in self.plugins:
            block = self.plugin_settings.get(name)
            if name not in FORWARDER_NAMES or not isinstance(block, dict):
                continue
            from luna_sender.plugins.forwarder import credentials_conflict

            conflict = credentials_conflict(block.get("url"), block.get("headers", {}))
            if conflict:
                raise _invalid(
                    ("plugin_settings", name, "url"), block["url"], "url_and_auth", conflict
                )
        return self

    @property
    def ignored_env(self) -> list[str]:
        """The ``LUNA_SENDER_*`` names :func:`load_settings` skipped as service links."""
        return list(self._ignored_env)

    @property
    def general_channel_name(self) -> str:
        return self.general_channel or f"{self.channel_prefix}-general-events"

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with passwords and tokens replaced by ``********``."""
        masked: dict[str, Any] = mask_secrets(self.model_dump(mode="json"))
        return masked


def plugin_setup(settings: Settings) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The plugins to start: ``plugins`` plus request-monitoring when INFLUX_MONITORING asks.

    Maps the original's names onto the plugin's settings (HOST/PORT/USE_SSL -> url, ...), so
    a config copied from the original platform monitors the same way.
    """
    influx = settings.INFLUX_MONITORING
    names, options = list(settings.plugins), dict(settings.plugin_settings)
    if influx.SEND_DATA_FOR_MONITORING:
        host = f"[{influx.HOST}]" if ":" in influx.HOST else influx.HOST
        scheme = "https" if influx.USE_SSL else "http"
        names.append(MONITORING_PLUGIN)
        options[MONITORING_PLUGIN] = {
            "url": f"{scheme}://{host}:{influx.PORT}",
            "organization": influx.ORGANIZATION,
            "bucket": influx.BUCKET,
            "token": influx.TOKEN,
            "flushing_period": influx.FLUSHING_PERIOD,
        }
    return names, options


class ConfigError(Exception):
    """A setting failed to load or validate; the message is one line naming the key."""


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_config_path() -> Path | None:
    path = Path("config.yaml")
    return path if path.is_file() else None


def load_settings(
    config_path: str | Path | None = None,
    cli_overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Merge the three sources in precedence order and validate the result."""
    environ = dict(os.environ) if environ is None else environ
    data: dict[str, Any] = {}
    path = config_path or environ.get(ENV_PREFIX + "CONFIG") or default_config_path()
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text") from None
        except OSError as exc:  # a directory, no permission
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            message = f"config file {path} is not valid YAML: {exc}".replace("\n", " ")
            raise ConfigError(message) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        data = loaded
    ignored: list[str] = []
    data = _deep_merge(data, env_overrides(environ, Settings, ENV_PREFIX, ignored))
    data = _deep_merge(data, {k: v for k, v in (cli_overrides or {}).items() if v is not None})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ConfigError(f"invalid setting '{key}': {first['msg']}") from None
    settings._ignored_env = ignored
    return settings


def ignored_env_warning(settings: Settings) -> str | None:
    """The one WARNING line about skipped Kubernetes service-link variables, if any."""
    names = settings.ignored_env
    if not names:
        return None
    return (
        f"ignored {len(names)} Kubernetes service-link variable(s) that share the "
        f"LUNA_SENDER_ prefix: {', '.join(names)} (set enableServiceLinks: false on the pod "
        "to stop them; see docs/deployment.md)"
    )


def config_warnings(settings: Settings) -> list[str]:
    """Settings that start but do not do what their presence suggests: one WARNING line each
    at start-up (and from ``check-config``). An operator who set a JWT secret but forgot
    ``auth.mode: jwt`` believed the service protected; it was open (an outside pass)."""
    lines = []
    auth = settings.auth
    if auth.mode == "none" and (auth.jwt_secret or auth.jwt_public_key):
        lines.append(
            "auth.jwt_secret/jwt_public_key is set but auth.mode is none: requests are NOT "
            "authenticated (set auth.mode: jwt; docs/security.md)"
        )
    if settings.docs_dir is not None and not Path(settings.docs_dir).is_dir():
        lines.append(f"docs_dir {settings.docs_dir} is not a folder: /docs/dev answers 404")
    return lines
