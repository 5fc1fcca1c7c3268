"""Plugins: the host that loads and notifies them, and the two shipped ones (event forwarder,
InfluxDB request monitoring). ``BusEvent`` is re-exported here because plugin authors import it
from ``luna_sender.plugins`` (docs/plugins.md)."""

from luna_sender.plugins.host import BusEvent

__all__ = ["BusEvent"]
