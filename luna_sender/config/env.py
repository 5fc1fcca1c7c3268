"""Environment variables -> settings data, parsed by the type of the setting each one names.

Kept apart from :mod:`luna_sender.config.settings` (the model) because the rules are about the
environment a process lands in: Kubernetes service links that share the prefix, and values
such as ``CHANNEL_PREFIX=2024`` that a blanket YAML parse would turn into numbers.

Why not pydantic-settings (tried for issue #17 with 2.16): its env source looks up only the names
of known fields, so a top-level typo (``LUNA_SENDER_HEARTBEAT=3``) would be ignored silently
instead of stopping the start; it reads ``LUNA_SENDER_PORT=tcp://10.0.0.1:5000`` as the port and
fails; it decodes lists and mappings as JSON, not YAML (``{env: prod}`` is refused); and
``LUNA_SENDER_INFLUX_MONITORING__TOKEN`` is dropped (the section's keys are upper-case aliases).
Keeping these rules would mean a custom source holding all of this module, and ``Settings()``
would start reading ``os.environ`` wherever it is built (tests, the app factory). What it would
take over, the file < environment < flags merge, is ``_deep_merge``'s eight lines.
"""

from __future__ import annotations

import re
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        node = target.get(part)
        if not isinstance(node, dict):
            node = {}
            target[part] = node
        target = node
    target[path[-1]] = value


# Kubernetes injects these for every Service in the namespace (``enableServiceLinks``): a Service
# named ``luna-sender`` (or ``luna-sender-redis``, ...) yields LUNA_SENDER_[X_]SERVICE_HOST,
# LUNA_SENDER_[X_]SERVICE_PORT[_<NAME>], LUNA_SENDER_[X_]PORT=tcp://ip:port and
# LUNA_SENDER_[X_]PORT_<port>_<PROTO>[_ADDR|_PORT|_PROTO]. None of them is a setting.
_SERVICE_LINK_RE = re.compile(
    r"^(?:[a-z0-9_]+_)?(?:service_host|service_port(?:_[a-z0-9_]+)?"
    r"|port(?:_\d+_(?:tcp|udp|sctp)(?:_(?:addr|port|proto))?)?)$"
)
_SERVICE_LINK_VALUE_RE = re.compile(r"^(?:tcp|udp|sctp)://", re.IGNORECASE)


def _is_service_link(path: list[str], raw: str, model: type[BaseModel]) -> bool:
    """A Kubernetes service-link variable, told apart from a real setting or a typo in one.

    Nested names (``__``) never come from Kubernetes, so a typo such as ``WS__HEARTBEET`` is still
    rejected. ``LUNA_SENDER_PORT`` is both a setting and a link name: the ``tcp://`` value decides.
    """
    if len(path) != 1 or not _SERVICE_LINK_RE.fullmatch(path[0]):
        return False
    if path[0] in model.model_fields:
        return bool(_SERVICE_LINK_VALUE_RE.match(raw))
    return True


def _field(model: type[BaseModel], part: str) -> FieldInfo | None:
    """The field ``part`` names, by name or by validation alias: environment paths arrive
    lower-cased, so ``influx_monitoring.token`` names ``INFLUX_MONITORING.TOKEN``."""
    field = model.model_fields.get(part)
    if field is not None:
        return field
    for candidate in model.model_fields.values():
        alias = candidate.validation_alias
        names = alias.choices if isinstance(alias, AliasChoices) else [alias]
        if part in names:
            return candidate
    return None


def _target_annotation(path: list[str], model: type[BaseModel]) -> Any:
    """The type annotation of the setting an environment variable names (None: no such key)."""
    annotation: Any = model
    for part in path:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = _field(annotation, part)
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif annotation is Any:
            return Any
        else:
            return None
    return annotation


def _value_kind(annotation: Any) -> str:
    """``raw`` (the text is the value), ``scalar`` (pydantic coerces the text) or ``yaml``."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _value_kind(args[0]) if len(args) == 1 else "yaml"
    if annotation is str:
        return "raw"
    if origin is Literal:
        return "raw" if all(isinstance(a, str) for a in get_args(annotation)) else "scalar"
    if annotation in (int, float, bool):
        return "scalar"
    return "yaml"


def _env_value(path: list[str], raw: str, model: type[BaseModel]) -> Any:
    """Parse by the target's type: ``CHANNEL_PREFIX=2024`` stays the string ``"2024"``.

    Numbers and booleans go to pydantic as text: it coerces ``"5"``, ``"on"``, and ``"1e3"`` for
    a float setting, while an integer setting takes digits only (``PORT=1e3`` is refused naming
    ``port``). Lists and mappings are YAML (``[1, 2]``, ``{env: prod}``); an unknown key is parsed
    as YAML and then rejected by validation with its name.
    """
    annotation = _target_annotation(path, model)
    kind = _value_kind(annotation)
    if kind == "scalar" and get_origin(annotation) is Literal and raw.lstrip("-").isdigit():
        return int(raw)  # Literal[0, 1]: pydantic reads "1" as the number only for int and float
    if kind != "yaml" or raw == "":
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def env_overrides(
    environ: dict[str, str], model: type[BaseModel], prefix: str, ignored: list[str] | None = None
) -> dict[str, Any]:
    """``LUNA_SENDER_WS__HEARTBEAT=5`` -> ``{"ws": {"heartbeat": "5"}}``.

    Kubernetes service-link variables are skipped and their names appended to ``ignored``.
    """
    result: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(prefix) or name == prefix + "CONFIG":
            continue
        path = [p.lower() for p in name[len(prefix) :].split("__") if p]
        if not path:
            continue
        if "__" not in name[len(prefix) :] and _is_service_link(path, raw, model):
            if ignored is not None:
                ignored.append(name)
            continue
        _set_path(result, path, _env_value(path, raw, model))
    return result
