"""Fan-out: live connections grouped by filter, the group index, websocket frames."""
