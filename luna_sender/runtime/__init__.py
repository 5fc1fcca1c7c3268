"""Process concerns: start and stop, signals, metrics, logs, GC policy, the open-file limit."""
