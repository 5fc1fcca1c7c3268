"""The luna-sender command: serve (one process or a supervised --workers set), listen, publish."""
