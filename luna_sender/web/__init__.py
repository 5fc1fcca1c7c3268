"""HTTP and websocket routes, one module per route family."""
