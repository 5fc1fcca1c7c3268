"""Event bus backends behind one small contract (see base.py)."""

from luna_sender.bus.base import (
    Bus,
    BusError,
    BusOptions,
    MessageHandler,
    SelfHealing,
    create_bus,
    log_address,
)

__all__ = [
    "Bus",
    "BusError",
    "BusOptions",
    "MessageHandler",
    "SelfHealing",
    "create_bus",
    "log_address",
]
