"""What one wake-up costs on this machine: the same per-event work, hot and after a sleep.

    python -m benchmarks.wake_cost [--events 500] [--rounds 3]

W4's CPU per event falls from ~250 µs at 250 events/s to ~40 at 8,000/s, for luna and the naive
peer alike, and its absolute figures move 2x between sessions on the same code. Both come from
the VM, not from the work: at low rates each event is a wake-up of its own, and a process that
has slept finds its caches (and the vCPU's) cold. This runs, in one process and without any
I/O, the work every W4 event costs luna (``wire.decode_face`` of a ~2.8 KB producer message, its
envelope, the websocket frame) back to back, then with a ``time.sleep`` between events of
0.25, 1 and 4 ms (4 ms is W4's 250/s step), and reports per event:

- ``work``: wall time of the work alone (perf_counter around it), and
- ``cpu``: the process's CPU time (user + system, /proc via ``time.process_time``) per event,
  which adds what sleeping and waking costs the process itself;
- ``spin``: the control, a loop of integer additions timed the same way. Its working set is a
  few cache lines, so if it slows after a sleep as the work does, the clock (frequency, the
  vCPU's share) is to blame; if it does not, the work's memory is.

The ratios against the hot row, not the absolute µs, are what a rerun should compare.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from benchmarks.workload import face_event, luna_message
from luna_sender import wire
from luna_sender.delivery.frames import text_frame

GAPS = (0.0, 0.00025, 0.001, 0.004)


def spin() -> int:
    total = 0
    for i in range(2000):
        total += i
    return total


def one_round(messages: list[bytes], gap: float) -> tuple[float, float, float]:
    """(work µs, process CPU µs, spin µs) per event with ``gap`` s of sleep between events."""
    work = spun = 0.0
    cpu = time.process_time()
    for data in messages:
        started = time.perf_counter()
        msg = wire.decode_face(data)
        text_frame(msg.envelope(0))
        work += time.perf_counter() - started
        if gap:
            time.sleep(gap)
    n = len(messages)
    cpu = time.process_time() - cpu
    for _ in messages:
        started = time.perf_counter()
        spin()
        spun += time.perf_counter() - started
        if gap:
            time.sleep(gap)
    return work / n * 1e6, cpu / n * 1e6, spun / n * 1e6


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    messages = [luna_message(face_event(rng, f"cam-{i}", 2700)) for i in range(args.events)]
    one_round(messages, 0.0)  # warm-up: imports, allocator, branch history
    results: dict[float, list[tuple[float, float, float]]] = {gap: [] for gap in GAPS}
    for _ in range(args.rounds):
        for gap in GAPS:  # interleaved: every gap sees the same host in each round
            results[gap].append(one_round(messages, gap))
    print(f"{len(messages[0])} B messages, {args.events} events x {args.rounds} rounds")
    print("median (min-max) over rounds; x hot = the ratio to the hot row of the same round")
    print(
        "| sleep between | work µs/event | x hot | process CPU µs/event | x hot | spin µs | x hot |"
    )
    print("|---|---|---|---|---|---|---|")
    for gap, rows in results.items():
        cells = []
        for k in range(3):
            values = [row[k] for row in rows]
            ratios = [row[k] / hot[k] for row, hot in zip(rows, results[0.0], strict=True)]
            cells.append(f"{statistics.median(values):.1f} | {_spread(ratios)}")
        label = f"{gap * 1000:g} ms" if gap else "none (hot)"
        print(f"| {label} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
