"""What the hub's per-event metric updates cost with one worker and with ``--workers N``.

    python -m benchmarks.metrics_cost

With workers the values live in prometheus-client's mmap-backed multiprocess files (a lock and a
``struct.pack_into`` per update); with one worker they stay in memory. Each mode runs in its own
interpreter because prometheus-client picks its value class at import. The figure printed is the
fan-out's metric work for one bus event (``events_received`` + ``events_delivered``), the only
metric updates on the delivery hot path.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import os, sys, tempfile, timeit
shared = tempfile.mkdtemp() if sys.argv[1] == "workers" else None
if shared:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
from luna_sender.runtime.metrics import Metrics
m = Metrics({"instance": "bench"}, multiprocess_dir=shared)
received, delivered = m.received["face"], m.delivered["face"]
def event():
    received.inc()
    delivered.inc(100)
n = 200_000
best = min(timeit.repeat(event, number=n, repeat=5)) / n
print(f"{sys.argv[1]:>8}: {best * 1e9:6.0f} ns of metric updates per bus event")
"""


def main() -> None:
    for mode in ("single", "workers"):
        subprocess.run([sys.executable, "-c", CHILD, mode], check=True)


if __name__ == "__main__":
    main()
