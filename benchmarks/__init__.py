"""Fan-out benchmark: luna-sender against real peers on loopback (see docs/performance.md)."""
