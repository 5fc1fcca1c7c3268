"""Event bus backends behind one small protocol (see base.py)."""

from .base import Bus, BusError, MessageHandler, create_bus

__all__ = ["Bus", "BusError", "MessageHandler", "create_bus"]
