"""The settings sections (``ws``, ``limits``, ``metrics``, ``gc``, ``auth``, ``INFLUX_MONITORING``).

Apart from the top-level :class:`~luna_sender.config.settings.Settings` because the runtime
takes single sections (the gc policy its ``gc``, the fd limit its ``ws``) without the loading
machinery; each section checks only its own keys, rules across sections live on ``Settings``.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_origin

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
SURROGATE = re.compile("[\ud800-\udfff]")


class Section(BaseModel):
    """Unknown keys are errors (a typo names itself) and assignments are validated too."""

    # inf/nan pass ``gt=0`` but no timer takes them: ws.heartbeat=inf answered every /ws with a 500.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: Any) -> Any:
        """YAML's ``true`` is a bool, which pydantic takes as 1 for a number (and for ``Literal[0,
        1]``): ``max_connections: true`` started a service that took one websocket."""
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        kind = field.annotation if field is not None else None
        if kind not in (int, float, list[int], list[float]) and get_origin(kind) is not Literal:
            return value
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, bool) for item in items):  # api_versions: [true, 2] was [1, 2]
            raise ValueError("a number is expected, not a boolean")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _within_64_bits(cls, value: Any) -> Any:
        """Every setting is rendered by ``/config`` (orjson: 64-bit integers, UTF-8): 2**64, or
        an environment variable's invalid bytes (which arrive as surrogates), passed the start,
        then made every ``GET /config`` a 500 (and such a channel name every PUBLISH a 503)."""
        if type(value) is int and not -(2**63) <= value < 2**63:
            raise ValueError("out of range (beyond 64 bits)")
        if type(value) is str and not value.isascii() and SURROGATE.search(value):
            raise ValueError("not valid UTF-8 text")
        return value


class WsSettings(Section):
    heartbeat: float = Field(
        default=20.0,
        ge=0.1,
        description="Seconds between server pings (autoping); a peer silent this long is pinged, "
        "and dropped when no answer comes within half that.",
    )
    max_connections: int = Field(
        default=20000,
        ge=1,
        description="Open websockets per worker process (the service holds up to "
        "workers x this); more are refused before upgrade.",
    )
    fd_reserve: int = Field(
        default=128,
        ge=8,
        le=1_000_000,
        description="File descriptors kept free of websockets (Redis, HTTP requests, refused "
        "upgrades): websockets are capped at the open-file limit minus those open at start "
        "minus this, when that is below max_connections.",
    )
    max_message_size: int = Field(
        default=65536,
        ge=125,
        description="Client message size limit in bytes: a message this large or more closes 1009.",
    )
    queue_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=65536,
        description="Per-socket outgoing buffer cap in bytes; a new frame finding more than this "
        "still unsent closes the socket 1008. At least the largest accepted message "
        "(limits.bus_message_max_bytes, limits.publish_body_max_bytes).",
    )
    stall_timeout: float = Field(
        default=5.0, gt=0, description="Seconds a socket may keep unsent data without progress."
    )
    socket_send_buffer: int = Field(
        default=262144,
        ge=4096,
        le=2**31 - 1,  # setsockopt takes a C int
        description="Kernel send buffer per websocket (SO_SNDBUF); bounds memory a stalled "
        "client holds in the kernel and makes stalls visible quickly.",
    )
    shutdown_timeout: float = Field(
        default=2.0,
        gt=0,
        le=3600,  # the stop watchdog's timer: 1e10 s overflowed it on SIGTERM
        description="Seconds given to clients to answer the 1001 close on shutdown.",
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


class LimitSettings(Section):
    publish_body_max_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest accepted publish request body."
    )
    list_filter_max_items: int = Field(
        1000, ge=1, le=1_000_000, description="Most items in one comma-separated filter value."
    )
    user_filters_max: int = Field(
        default=64, ge=0, description="Most user-defined (event.* / meta.*) filters per connection."
    )
    bus_message_max_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Bus messages larger than this are dropped."
    )
    http_headers_max: int = Field(
        default=128,
        ge=16,
        le=100_000,
        description="Most header lines in one HTTP request (431, error 12046).",
    )
    http_header_max_bytes: int = Field(
        default=8190,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Longest header (name and value) in bytes (431, error 12046).",
    )
    http_head_timeout: float = Field(
        default=10.0,
        ge=0.1,
        le=86400,
        description="Seconds a connection has to send a complete request line and headers, "
        "counted from its opening or, on a kept-alive connection, from its previous response "
        "being handed to the socket; then it is closed. Not applied to upgraded websockets.",
    )
    http_body_timeout: float = Field(
        default=60.0,
        ge=0.1,
        le=86400,
        description="Seconds a request body may take to arrive in full once its headers are "
        "in; then the request is answered 408 (error 12046) and the connection closed.",
    )
    http_send_buffer: int = Field(
        default=65536,
        ge=4096,
        le=2**31 - 1,  # setsockopt takes a C int
        description="Kernel send buffer per HTTP connection (SO_SNDBUF; an upgrade to a "
        "websocket sets ws.socket_send_buffer): bounds what a client that stops reading holds "
        "in the kernel, and how much it must read before http_send_timeout restarts.",
    )
    http_send_timeout: float = Field(
        default=60.0,
        ge=0.1,
        le=86400,
        description="Seconds an HTTP response may wait with the socket's buffers full and "
        "the client reading too little to let the service write again; then the connection "
        "is reset (nginx's send_timeout). "
        "Not applied to upgraded websockets (ws.stall_timeout is theirs).",
    )
    like_pattern_max_chars: int = Field(
        default=256, ge=1, description="Longest like/nlike pattern of a user-defined filter."
    )
    like_wildcards_max: int = Field(
        default=16, ge=0, description="Most wildcards (% and _) in one like/nlike pattern."
    )
    like_value_max_chars: int = Field(
        default=1024,
        ge=1,
        description="Longest string like/nlike inspect; a longer one matches neither.",
    )
    like_filters_max: int = Field(
        default=8,
        ge=0,
        description="Most like/nlike filters per connection (HTTP 400, error 12012).",
    )
    like_scanning_max: int = Field(
        default=64,
        ge=0,
        description="Most scanning like/nlike filters (a `_` inside a `%...%` piece) summed "
        "over the service's distinct filter groups; beyond it a new one is refused (503, 29012).",
    )
    filter_memory_max_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=64 * 1024,
        description="Memory the websockets' compiled filters may hold in one process (per "
        "worker), summed over live sockets, each estimated from above from its query; beyond it "
        "a new socket is refused (503, 29013; docs/reliability.md, Filter memory).",
    )


class MetricsSettings(Section):
    enabled: bool = Field(default=True, description="Serve Prometheus metrics at /metrics.")
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
        text = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return {k: text[k] if isinstance(v, int | float) else v for k, v in value.items()}

    @field_validator("extra_labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        # A colliding label would be silently shadowed by the metric's own (issue: {path: x}).
        from luna_sender.runtime.metrics import OWN_LABELS

        for name in value:
            if not LABEL_NAME_RE.fullmatch(name) or name.startswith("__"):
                raise ValueError(f"{name!r} is not a valid Prometheus label name")
            if name in OWN_LABELS:
                raise ValueError(
                    f"label {name!r} collides with a label of the service's own "
                    f"metrics ({', '.join(sorted(OWN_LABELS))})"
                )
        return value


class GcSettings(Section):
    freeze_interval: float = Field(
        default=1.0,
        ge=0,
        description="Seconds between moving live connection state out of the garbage "
        "collector's full passes (gc.freeze); 0 leaves CPython's default behaviour.",
    )
    churn_ratio: float = Field(
        default=0.5,
        gt=0,
        description="A planned full collection runs once this fraction of the open "
        "connections has closed since the last one (reclaims their reference cycles).",
    )
    min_churn: int = Field(
        default=1000, ge=1, description="...and at least this many connections have closed."
    )


# Redis takes the history's times in milliseconds as 64-bit integers; beyond this is a typo.
TEN_YEARS = 10 * 365 * 86400


class HistorySettings(Section):
    """The recovery window per channel (docs/recovery.md): whichever bound is hit first."""

    size: int = Field(
        default=1000, ge=1, le=2**31 - 1, description="Bus messages kept per channel for recovery."
    )
    ttl: float = Field(
        default=300.0,
        gt=0,
        le=TEN_YEARS,
        description="Seconds an event is kept, and how long a channel stays subscribed and "
        "recorded after its last recovering socket left.",
    )
    max_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1,
        description="Bytes kept per channel (the newest event always stays).",
    )
    dedupe: float = Field(
        default=30.0,
        gt=0,
        le=TEN_YEARS,
        description="Seconds an event's hash is remembered, so every instance's copy of it is "
        "recorded once (Redis bus).",
    )
    meta_ttl: float = Field(
        default=86400.0,
        gt=0,
        le=TEN_YEARS,
        description="Seconds an idle channel's epoch and counter outlive its events.",
    )


def either_case(name: str) -> AliasChoices:
    """The original's upper-case key, and its lower-case form (environment variable paths)."""
    return AliasChoices(name, name.lower())


class InfluxMonitoring(Section):
    """The original's ``INFLUX_MONITORING`` section, under its own key names (spec Part 2 §7.5).

    It drives the ``request-monitoring`` plugin (see
    :func:`~luna_sender.config.settings.plugin_setup`); only InfluxDB 2's write API is
    implemented, so ``VERSION`` must be 2.
    """

    # A copied config's ``TOKEN: 1234`` or ``ORGANIZATION: 2024`` is YAML's number, meant as text.
    model_config = ConfigDict(coerce_numbers_to_str=True)  # merged with Section's

    SEND_DATA_FOR_MONITORING: Literal[0, 1] = Field(
        default=0,
        validation_alias=either_case("SEND_DATA_FOR_MONITORING"),
        description="1 starts the request-monitoring plugin with these settings.",
    )
    VERSION: Literal[2] = Field(
        default=2,
        validation_alias=either_case("VERSION"),
        description="InfluxDB major version (only 2 is implemented).",
    )
    ORGANIZATION: str = Field(
        default="luna",
        validation_alias=either_case("ORGANIZATION"),
        description="InfluxDB organization.",
    )
    TOKEN: str = Field(
        default="",
        validation_alias=either_case("TOKEN"),
        description="InfluxDB API token (shown masked).",
    )
    BUCKET: str = Field(
        default="luna_monitoring",
        validation_alias=either_case("BUCKET"),
        description="InfluxDB bucket.",
    )
    HOST: str = Field(
        default="127.0.0.1",
        min_length=1,
        validation_alias=either_case("HOST"),
        description="InfluxDB host.",
    )
    PORT: int = Field(
        default=8086,
        ge=1,
        le=65535,
        validation_alias=either_case("PORT"),
        description="InfluxDB port.",
    )
    USE_SSL: Literal[0, 1] = Field(
        default=0, validation_alias=either_case("USE_SSL"), description="1: https, 0: http."
    )
    FLUSHING_PERIOD: float = Field(
        default=1.0,
        gt=0,
        validation_alias=either_case("FLUSHING_PERIOD"),
        description="Seconds between writes of the collected points.",
    )


MONITORING_PLUGIN = "request-monitoring"


class AuthSettings(Section):
    mode: Literal["none", "jwt"] = Field(
        default="none",
        description="none: Luna-Account-Id is trusted as set by a front door (never "
        "expose this mode to untrusted networks or browsers); jwt: business routes need a "
        "token (docs/security.md).",
    )
    jwt_secret: str | None = Field(
        default=None,
        description="HS256 shared secret, at least 32 bytes (jwt mode; or jwt_public_key).",
    )
    jwt_public_key: str | None = Field(
        default=None,
        description="PEM public key, inline or a path to a PEM file: RSA (>= 2048 bits) "
        "verifies RS256, EC P-256 verifies ES256.",
    )
    jwt_audience: str | None = Field(
        default=None,
        description="Required 'aud' claim; unset: tokens that carry an 'aud' are refused.",
    )
    jwt_leeway: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description="Seconds of clock skew tolerated on exp, nbf and iat.",
    )

    @model_validator(mode="after")
    def _one_key(self) -> AuthSettings:
        from luna_sender.web.access import load_verification_key

        if self.mode == "jwt":
            load_verification_key(self)  # ValueError naming the key -> start-up config error
        return self
