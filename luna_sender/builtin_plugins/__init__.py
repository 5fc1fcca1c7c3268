"""Plugins shipped with luna-sender: an event forwarder and InfluxDB request monitoring."""
