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
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from luna_sender.config.env import env_overrides

ENV_PREFIX = "LUNA_SENDER_"
MASK = "********"
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
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
SECRET_KEY_RE = re.compile(r"password|token|secret", re.IGNORECASE)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WsSettings(_Section):
    heartbeat: float = Field(20.0, gt=0, description="Seconds between server pings (autoping).")
    max_connections: int = Field(
        20000,
        ge=1,
        description="Open websockets per worker process (the service holds up to "
        "workers x this); more are refused before upgrade.",
    )
    fd_reserve: int = Field(
        128,
        ge=8,
        description="File descriptors kept free of websockets (Redis, HTTP requests, refused "
        "upgrades): websockets are capped at the open-file limit minus those open at start "
        "minus this, when that is below max_connections.",
    )
    max_message_size: int = Field(
        65536, ge=125, description="Largest inbound client frame in bytes; larger closes 1009."
    )
    queue_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=65536,
        description="Per-socket outgoing buffer cap in bytes; a new frame finding more than this "
        "still unsent closes the socket 1008. At least the largest accepted message "
        "(limits.bus_message_max_bytes, limits.publish_body_max_bytes).",
    )
    stall_timeout: float = Field(
        5.0, gt=0, description="Seconds a socket may keep unsent data without progress."
    )
    socket_send_buffer: int = Field(
        262144,
        ge=4096,
        description="Kernel send buffer per websocket (SO_SNDBUF); bounds memory a stalled "
        "client holds in the kernel and makes stalls visible quickly.",
    )
    shutdown_timeout: float = Field(
        2.0, gt=0, description="Seconds given to clients to answer the 1001 close on shutdown."
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (scheme://host[:port]) allowed to open websockets besides "
        "the service's own; handshakes without an Origin header are not affected.",
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        from luna_sender.web.access import origin_key

        for item in value:
            if origin_key(item) is None:
                raise ValueError(f"{item!r} is not an origin (http[s]://host[:port])")
        return value


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
    http_headers_max: int = Field(
        128, ge=16, description="Most header lines in one HTTP request (431, error 12046)."
    )
    http_header_max_bytes: int = Field(
        8190, ge=1024, description="Longest header (name and value) in bytes (431, error 12046)."
    )
    like_pattern_max_chars: int = Field(
        256, ge=1, description="Longest like/nlike pattern of a user-defined filter."
    )
    like_wildcards_max: int = Field(
        16, ge=0, description="Most wildcards (% and _) in one like/nlike pattern."
    )
    like_value_max_chars: int = Field(
        1024,
        ge=1,
        description="Longest string like/nlike inspect; a longer one matches neither.",
    )
    like_filters_max: int = Field(
        8, ge=0, description="Most like/nlike filters per connection (HTTP 400, error 12012)."
    )
    like_scanning_max: int = Field(
        64,
        ge=0,
        description="Most scanning like/nlike filters (a `_` inside a `%...%` piece) summed "
        "over the service's distinct filter groups; beyond it a new one is refused (503, 29012).",
    )


class MetricsSettings(_Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics.")
    extra_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Constant labels added to every metric; names must be "
        "valid Prometheus label names and not one of the metrics' own labels (pid included); "
        'numbers and booleans are taken as text ({shard: 1} is "1").',
    )

    @field_validator("extra_labels", mode="before")
    @classmethod
    def _scalar_values(cls, value: Any) -> Any:
        """Label values are text: YAML's ``{shard: 1}`` or ``{canary: true}`` mean "1", "true"."""
        if not isinstance(value, dict):
            return value
        return {
            k: (str(v).lower() if isinstance(v, bool) else str(v))
            if isinstance(v, int | float)
            else v
            for k, v in value.items()
        }

    @field_validator("extra_labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        # A colliding label would be silently shadowed by the metric's own (issue: {path: x}).
        from luna_sender.runtime.metrics import OWN_LABELS

        for name in value:
            if not LABEL_NAME_RE.match(name) or name.startswith("__"):
                raise ValueError(f"{name!r} is not a valid Prometheus label name")
            if name in OWN_LABELS:
                raise ValueError(
                    f"label {name!r} collides with a label of the service's own "
                    f"metrics ({', '.join(sorted(OWN_LABELS))})"
                )
        return value


class GcSettings(_Section):
    freeze_interval: float = Field(
        1.0,
        ge=0,
        description="Seconds between moving live connection state out of the garbage "
        "collector's full passes (gc.freeze); 0 leaves CPython's default behaviour.",
    )
    churn_ratio: float = Field(
        0.5,
        gt=0,
        description="A planned full collection runs once this fraction of the open "
        "connections has closed since the last one (reclaims their reference cycles).",
    )
    min_churn: int = Field(
        1000, ge=1, description="...and at least this many connections have closed."
    )


def _both(name: str) -> AliasChoices:
    """The original's upper-case key, and its lower-case form (environment variable paths)."""
    return AliasChoices(name, name.lower())


class InfluxMonitoring(_Section):
    """The original's ``INFLUX_MONITORING`` section, under its own key names (spec Part 2 §7.5).

    It drives the ``request-monitoring`` plugin (see :func:`plugin_setup`); only InfluxDB 2's
    write API is implemented, so ``VERSION`` must be 2.
    """

    # A copied config's ``TOKEN: 1234`` or ``ORGANIZATION: 2024`` is YAML's number, meant as text.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    SEND_DATA_FOR_MONITORING: Literal[0, 1] = Field(
        0,
        validation_alias=_both("SEND_DATA_FOR_MONITORING"),
        description="1 starts the request-monitoring plugin with these settings.",
    )
    VERSION: Literal[2] = Field(
        2,
        validation_alias=_both("VERSION"),
        description="InfluxDB major version (only 2 is implemented).",
    )
    ORGANIZATION: str = Field(
        "luna", validation_alias=_both("ORGANIZATION"), description="InfluxDB organization."
    )
    TOKEN: str = Field(
        "", validation_alias=_both("TOKEN"), description="InfluxDB API token (shown masked)."
    )
    BUCKET: str = Field(
        "luna_monitoring", validation_alias=_both("BUCKET"), description="InfluxDB bucket."
    )
    HOST: str = Field(
        "127.0.0.1", min_length=1, validation_alias=_both("HOST"), description="InfluxDB host."
    )
    PORT: int = Field(
        8086, ge=1, le=65535, validation_alias=_both("PORT"), description="InfluxDB port."
    )
    USE_SSL: Literal[0, 1] = Field(
        0, validation_alias=_both("USE_SSL"), description="1: https, 0: http."
    )
    FLUSHING_PERIOD: float = Field(
        1.0,
        gt=0,
        validation_alias=_both("FLUSHING_PERIOD"),
        description="Seconds between writes of the collected points.",
    )


MONITORING_PLUGIN = "request-monitoring"


class AuthSettings(_Section):
    mode: Literal["none", "jwt"] = Field(
        "none",
        description="none: Luna-Account-Id is trusted as set by a front door (never "
        "expose this mode to untrusted networks or browsers); jwt: business routes need a "
        "token (docs/security.md).",
    )
    jwt_secret: str | None = Field(
        None, description="HS256 shared secret, at least 32 bytes (jwt mode; or jwt_public_key)."
    )
    jwt_public_key: str | None = Field(
        None,
        description="PEM public key, inline or a path to a PEM file: RSA (>= 2048 bits) "
        "verifies RS256, EC P-256 verifies ES256.",
    )
    jwt_audience: str | None = Field(
        None, description="Required 'aud' claim; unset: tokens that carry an 'aud' are refused."
    )
    jwt_leeway: float = Field(
        10.0, ge=0, le=300, description="Seconds of clock skew tolerated on exp, nbf and iat."
    )

    @model_validator(mode="after")
    def _one_key(self) -> AuthSettings:
        from luna_sender.web.access import load_verification_key

        if self.mode == "jwt":
            load_verification_key(self)  # ValueError naming the key -> start-up config error
        return self


class Settings(_Section):
    host: str = Field("0.0.0.0", description="Address to listen on.")
    port: int = Field(5080, ge=0, le=65535, description="TCP port to listen on.")
    redis_url: str = Field(
        "memory://",
        description="Event bus: memory:// (in-process), redis:// or rediss://, "
        "redis+sentinel://h:p,h:p/<master>[/db], redis+cluster://h:p,h:p[?sharded=1].",
    )
    bus_publish_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a publish waits for Redis's reply once PUBLISH is written; past it "
        "the answer is 503 and the event may still be delivered (docs/reliability.md).",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Serving processes sharing the port (SO_REUSEPORT), "
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
        "auto",
        description="Event loop: auto uses uvloop when installed (it is a dependency on "
        "Linux and macOS: cheaper socket writes); asyncio forces the standard loop.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_access: bool = Field(
        False,
        description="Log one INFO line per finished request (method, route, status, "
        "duration; websockets when they close).",
    )
    docs_dir: str | None = Field(
        None,
        description="Folder of the developer manual served at /docs/dev (default: the "
        "copy installed with the package, else ./docs of a checkout).",
    )
    ws: WsSettings = Field(default_factory=WsSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    gc: GcSettings = Field(default_factory=GcSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    plugins: list[str] = Field(
        default_factory=list, description="Plugins to start (entry-point names or dotted paths)."
    )
    plugin_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Settings block per plugin name."
    )
    INFLUX_MONITORING: InfluxMonitoring = Field(
        default_factory=InfluxMonitoring, validation_alias=_both("INFLUX_MONITORING")
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

    @model_validator(mode="after")
    def _queue_holds_the_largest_message(self) -> Settings:
        # A reader that keeps up must never be evicted: one frame can be as large as the largest
        # bus message, so a cap below it would close even a fast reader (docs/reliability.md).
        largest = max(self.limits.bus_message_max_bytes, self.limits.publish_body_max_bytes)
        if self.ws.queue_max_bytes < largest:
            raise ValidationError.from_exception_data(
                "Settings",
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "queue_below_message",
                            "must be at least the largest accepted message ({largest} bytes: "
                            "limits.bus_message_max_bytes / limits.publish_body_max_bytes)",
                            {"largest": largest},
                        ),
                        loc=("ws", "queue_max_bytes"),
                        input=self.ws.queue_max_bytes,
                    )
                ],
            )
        return self

    @property
    def general_channel_name(self) -> str:
        return self.general_channel or f"{self.channel_prefix}-general-events"

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with passwords and tokens replaced by ``********``."""
        return _mask(self.model_dump(mode="json"))


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
    names = settings._ignored_env
    if not names:
        return None
    return (
        f"ignored {len(names)} Kubernetes service-link variable(s) that share the "
        f"LUNA_SENDER_ prefix: {', '.join(names)} (set enableServiceLinks: false on the pod "
        "to stop them; see docs/deployment.md)"
    )
