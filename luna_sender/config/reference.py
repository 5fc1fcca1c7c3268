"""Renders docs/configuration.md from the settings model, so the reference cannot drift.

``python -m luna_sender.config.reference > docs/configuration.md``; a test compares the committed
file with this output.
"""

from __future__ import annotations

import json
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from luna_sender.config.settings import ENV_PREFIX, Settings

HEADER = """# Configuration reference

Generated from the settings model (`luna_sender/config/`) by
`python -m luna_sender.config.reference > docs/configuration.md`; a test fails when they drift.

Settings load in the order `config.yaml` < environment < command-line flags. Environment
variables are `LUNA_SENDER_<KEY>`, nested keys joined with `__`; a value is read by the type of
its setting: string settings take the text as it is (`LUNA_SENDER_CHANNEL_PREFIX=2024` is the
string `"2024"`), numbers and booleans are converted (`5`, `2.5`, `on`/`off`, `true`/`false`),
lists and mappings are YAML (`LUNA_SENDER_API_VERSIONS='[1, 2]'`). Kubernetes service-link
variables that share the prefix are ignored with one warning (docs/deployment.md).
`luna-sender check-config` prints the effective settings with secrets
masked; a bad value stops the start with a one-line error naming the key (exit code 2). Numbers
must be finite and inside the range shown: a value no request could work with (a 1 ns heartbeat,
a header limit beyond 64 bits) is refused at start rather than failing every request after it.
A boolean is not a number: `max_connections: true` (or `yes`) is refused, not taken as 1 (nor
for the 0/1 switches of `INFLUX_MONITORING`, which take `0`/`1`, from the environment too). Text
must be valid UTF-8 (an environment variable's stray bytes are refused). Settings that start but
would do nothing are warned of at start and by `check-config`: a JWT secret or key while
`auth.mode` is `none` (the service is NOT authenticated), a `docs_dir` that is not a folder.

| key | environment variable | default | range | description |
|---|---|---|---|---|
"""


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)  # 0.1, not 0.1000...


def _range(field: FieldInfo) -> str:
    """The bounds the model enforces, as an operator reads them."""
    low = high = ""
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Ge):
            low = f"≥ {_num(bound.ge)}"
        elif isinstance(bound, annotated_types.Gt):
            low = f"> {_num(bound.gt)}"
        elif isinstance(bound, annotated_types.Le):
            high = f"≤ {_num(bound.le)}"
        elif isinstance(bound, annotated_types.Lt):
            high = f"< {_num(bound.lt)}"
    return ", ".join(b for b in (low, high) if b)


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        key = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, key + "."))
            continue
        default: Any = field.get_default(call_default_factory=True)
        env = ENV_PREFIX + key.upper().replace(".", "__")
        text = json.dumps(default, ensure_ascii=False)
        rows.append(
            f"| `{key}` | `{env}` | `{text}` | {_range(field)} | {field.description or ''} |"
        )
    return rows


def render() -> str:
    return HEADER + "\n".join(_rows(Settings)) + "\n"


if __name__ == "__main__":
    print(render(), end="")
