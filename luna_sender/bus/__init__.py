"""Event bus backends behind one small protocol (see base.py)."""

from luna_sender.bus.base import Bus, BusError, MessageHandler, create_bus, log_address

__all__ = ["Bus", "BusError", "MessageHandler", "create_bus", "log_address"]
