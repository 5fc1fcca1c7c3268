"""Renders docs/configuration.md from the settings model, so the reference cannot drift.

``python -m luna_sender.config.reference > docs/configuration.md``; a test compares the committed
file with this output.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

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
masked; a bad value stops the start with a one-line error naming the key (exit code 2).

| key | environment variable | default | description |
|---|---|---|---|
"""


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
        rows.append(f"| `{key}` | `{env}` | `{text}` | {field.description or ''} |")
    return rows


def render() -> str:
    return HEADER + "\n".join(_rows(Settings)) + "\n"


if __name__ == "__main__":
    print(render(), end="")
