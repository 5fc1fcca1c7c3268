"""The two publish bodies as pydantic models: the routes validate with them and the documents
take their schemas from them, so a limit cannot differ between what is checked and what is
documented.

They live beside the documents, not in web/publish.py, so the documents never import a route
module. Validation is strict (no ``"5"`` -> ``5`` style coercion: the original rejected a
non-string with "str type expected") and refuses unknown keys; :func:`first_error` turns
pydantic's report into the one ``(path, message)`` pair the routes answer with, in the
original's pydantic-v1 wording.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from pydantic_core import ErrorDetails

from luna_sender.filters.general import ACCOUNT_ID_MAX, EVENT_TYPE_MAX

# Free-form strings the original passes through unchanged (account_id, the two times): only a
# size cap, so a hostile body cannot park megabytes in every subscriber's envelope. The cap is
# the general stream's account_id filter's, so every published account can be subscribed to.
PASS_THROUGH_MAX = ACCOUNT_ID_MAX
TIME_CREATE = "Event creation time; any string, passed through"
TIME_END = "Event end time; any string, passed through"

# Events pass through unchanged, so their schema is the documents' open object (schemas.py).
# pydantic resolves every "$ref" it meets against its own definitions, so the reference to a
# document's component is a marker here that schemas.py turns into the "$ref".
COMPONENT = "x-luna-component"
UserEvent = Annotated[dict[str, Any], WithJsonSchema({COMPONENT: "UserEvent"})]
GeneralEvent = Annotated[dict[str, Any], WithJsonSchema({COMPONENT: "GeneralEvent"})]
BODY_CONFIG = ConfigDict(strict=True, extra="forbid")


class PublishEvents(BaseModel):
    """Publish user events (delivered as face/body events of the account)."""

    model_config = BODY_CONFIG

    events: list[UserEvent] = Field(min_length=1, description="User generated events (non-empty).")
    handler_id: str = Field(description="Event handler id.")
    event_create_time: str = Field(max_length=PASS_THROUGH_MAX, description=TIME_CREATE + ".")
    event_end_time: str = Field(max_length=PASS_THROUGH_MAX, description=TIME_END + ".")


class PublishGeneral(BaseModel):
    """Publish one general event."""

    model_config = BODY_CONFIG

    event: GeneralEvent
    event_type: str = Field(
        min_length=1, max_length=EVENT_TYPE_MAX, description="General event type."
    )
    account_id: str | None = Field(
        None,
        max_length=PASS_THROUGH_MAX,
        description="Event account id; any string, matched exactly by /ws/general?account_id=.",
    )
    event_create_time: str | None = Field(
        None, max_length=PASS_THROUGH_MAX, description=TIME_CREATE + " (default: now)."
    )
    event_end_time: str | None = Field(
        None,
        max_length=PASS_THROUGH_MAX,
        description=TIME_END + " (default: the create time).",
    )


BODIES: tuple[type[BaseModel], ...] = (PublishEvents, PublishGeneral)

# pydantic error type -> the original's message. Length errors are worded from both bounds.
MESSAGES = {
    "extra_forbidden": "extra fields not permitted",
    "missing": "field required",
    "string_type": "str type expected",
    "list_type": "value is not a valid list",
    "dict_type": "value is not a valid dict",
}
LENGTH_UNITS = {
    "string_too_short": "characters",
    "string_too_long": "characters",
    "too_short": "items",
    "too_long": "items",
}


def _bounds(model: type[BaseModel], field: str) -> tuple[int | None, int | None]:
    low = high = None
    for constraint in model.model_fields[field].metadata:
        low = getattr(constraint, "min_length", low)
        high = getattr(constraint, "max_length", high)
    return low, high


def _message(model: type[BaseModel], error: ErrorDetails) -> str:
    kind = error["type"]
    if kind in MESSAGES:
        return MESSAGES[kind]
    if kind in LENGTH_UNITS:
        # pydantic v1 named the one bound that failed, also where the field has both
        low, high = _bounds(model, str(error["loc"][0]))
        size = f"at least {low}" if kind.endswith("short") else f"at most {high}"
        return f"ensure this value has {size} {LENGTH_UNITS[kind]}"
    return error["msg"]


def first_error(model: type[BaseModel], exc: ValidationError) -> tuple[str, str]:
    """The ``(path, message)`` the route reports: an unknown key first (the original checked
    keys before values), else the first field in declaration order (pydantic's order)."""
    errors = exc.errors()
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    return ".".join(str(part) for part in error["loc"]), _message(model, error)
