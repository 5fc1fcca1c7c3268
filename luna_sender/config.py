"""Settings: ``config.yaml`` < ``LUNA_SENDER_*`` environment < CLI flags, validated at start.

Validation happens before anything listens, so a typo in a deployment fails loudly with the key
named instead of surfacing later as odd behaviour. Every field here is documented in the
repository's ``config.yaml`` (a test keeps the two in step).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

ENV_PREFIX = "LUNA_SENDER_"
MASK = "********"
BUS_SCHEMES = ("memory", "redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel",
               "redis+cluster", "rediss+cluster")
SECRET_KEY_RE = re.compile(r"password|token|secret", re.IGNORECASE)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WsSettings(_Section):
    heartbeat: float = Field(20.0, gt=0, description="Seconds between server pings (autoping).")
    max_connections: int = Field(
        20000, ge=1, description="Open websockets per worker process (the service holds up to "
        "workers x this); more are refused before upgrade.",
    )
    max_message_size: int = Field(
        65536, ge=125, description="Largest inbound client frame in bytes; larger closes 1009."
    )
    queue_max_bytes: int = Field(
        8 * 1024 * 1024,
        ge=65536,
        description="Per-socket outgoing buffer cap in bytes; over it the socket is closed 1008.",
    )
    stall_timeout: float = Field(
        5.0, gt=0, description="Seconds a socket may keep unsent data without progress."
    )
    socket_send_buffer: int = Field(
        262144, ge=4096,
        description="Kernel send buffer per websocket (SO_SNDBUF); bounds memory a stalled "
        "client holds in the kernel and makes stalls visible quickly.",
    )
    shutdown_timeout: float = Field(
        2.0, gt=0, description="Seconds given to clients to answer the 1001 close on shutdown."
    )


class LimitSettings(_Section):
    publish_body_max_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest accepted publish request body."
    )
    list_filter_max_items: int = Field(
        1000, ge=1, description="Most items in one comma-separated filter value."
    )
    user_filters_max: int = Field(
        64, ge=0, description="Most user-defined (event.* / meta.*) filters per connection."
    )
    bus_message_max_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Bus messages larger than this are dropped."
    )


class MetricsSettings(_Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics.")
    extra_labels: dict[str, str] = Field(
        default_factory=dict, description="Constant labels added to every metric."
    )


class GcSettings(_Section):
    freeze_interval: float = Field(
        1.0, ge=0,
        description="Seconds between moving live connection state out of the garbage "
        "collector's full passes (gc.freeze); 0 leaves CPython's default behaviour.",
    )
    churn_ratio: float = Field(
        0.5, gt=0,
        description="A planned full collection runs once this fraction of the open "
        "connections has closed since the last one (reclaims their reference cycles).",
    )
    min_churn: int = Field(
        1000, ge=1, description="...and at least this many connections have closed."
    )


class Settings(_Section):
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(5080, ge=0, le=65535, description="TCP port to listen on.")
    redis_url: str = Field(
        "memory://",
        description="Event bus: memory:// (in-process), redis:// or rediss://, "
        "redis+sentinel://h:p,h:p/<master>[/db], redis+cluster://h:p,h:p[?sharded=1].",
    )
    workers: int = Field(
        1, ge=1, le=64, description="Serving processes sharing the port (SO_REUSEPORT), "
        "supervised and replaced when they die; every limit applies per process.",
    )
    channel_prefix: str = Field(
        "luna-sender", min_length=1, description="Face/body channel is '{prefix}:{account_id}'."
    )
    general_channel: str | None = Field(
        None, description="General-event channel; default '{channel_prefix}-general-events'."
    )
    api_versions: list[int] = Field(
        default_factory=lambda: [1, 2], description="Business routes are also served at /{v}/..."
    )
    api_version: int = Field(2, ge=1, description="Reported as Version.api by /version.")
    storage_time: Literal["UTC", "LOCAL"] = Field(
        "UTC", description="Time zone of default event times on general publish."
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="Event loop: auto uses uvloop when installed (it is a dependency on "
        "Linux and macOS: cheaper socket writes); asyncio forces the standard loop."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    docs_dir: str | None = Field(
        None, description="Folder of the developer manual served at /docs/dev (default: ./docs)."
    )
    ws: WsSettings = Field(default_factory=WsSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    gc: GcSettings = Field(default_factory=GcSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    plugins: list[str] = Field(
        default_factory=list, description="Plugins to start (entry-point names or dotted paths)."
    )
    plugin_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Settings block per plugin name."
    )

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in BUS_SCHEMES:
            raise ValueError(f"unsupported bus scheme {scheme!r} ({', '.join(BUS_SCHEMES)})")
        return value

    @field_validator("api_versions")
    @classmethod
    def _positive_versions(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError("API versions are positive integers")
        return sorted(set(value))

    @field_validator("workers")
    @classmethod
    def _workers_need_a_shared_bus(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and str(info.data.get("redis_url", "")).startswith("memory"):
            raise ValueError("more than 1 worker needs a Redis bus (memory:// is per process)")
        return value

    @property
    def general_channel_name(self) -> str:
        return self.general_channel or f"{self.channel_prefix}-general-events"

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with passwords and tokens replaced by ``********``."""
        return _mask(self.model_dump(mode="json"))


class ConfigError(Exception):
    """A setting failed to load or validate; the message is one line naming the key."""


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if isinstance(value, str):
        if SECRET_KEY_RE.search(key) and value:
            return MASK
        return mask_url(value) if "://" in value else value
    return value


def mask_url(url: str) -> str:
    """Hide the password of a URL's userinfo (``redis://user:pw@host`` -> ``user:********``).

    A regex rather than urlsplit: Sentinel/Cluster URLs list several ``host:port`` pairs, which
    urlsplit cannot parse.
    """
    url = _USERINFO_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", url, count=1)
    return _SECRET_QUERY_RE.sub(lambda m: f"{m.group(1)}={MASK}", url)


_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^:/@]*):([^@/]*)@")
_SECRET_QUERY_RE = re.compile(r"([?&][^=&]*(?:password|token|secret)[^=&]*)=([^&]*)", re.I)


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        node = target.get(part)
        if not isinstance(node, dict):
            node = {}
            target[part] = node
        target = node
    target[path[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``LUNA_SENDER_WS__HEARTBEAT=5`` -> ``{"ws": {"heartbeat": 5}}``; values parse as YAML."""
    result: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        # Keep strings that YAML would reinterpret (a URL with ':' stays a string anyway).
        if isinstance(value, (dict, list)) or not isinstance(value, str):
            _set_path(result, path, value)
        else:
            _set_path(result, path, raw)
    return result


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
        except yaml.YAMLError as exc:
            message = f"config file {path} is not valid YAML: {exc}".replace("\n", " ")
            raise ConfigError(message) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        data = loaded
    data = _deep_merge(data, _env_overrides(environ))
    data = _deep_merge(data, {k: v for k, v in (cli_overrides or {}).items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ConfigError(f"invalid setting '{key}': {first['msg']}") from None
