"""What one W4 bus message costs to decode, match and frame, warm, in one process per checkout.

profile_ingest measures a whole server from /proc, where a change of a few microseconds per event
is inside the host's noise at the low rates. This times only the per-message path the hub runs
(decode, the account's index and filters, envelope, frame) over the W4 pool, with the W4 socket
shape of one account (no filter, two per-source filters, one that never matches; ``--full``
adds an age filter, which reads the whole event), best of ``--repeat``: the figure repeats within a few percent on a busy host, so an A/B of two checkouts
shows what a change to that path saves.

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.decode_cost --src /tmp/luna-base --src .
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, timeit
from benchmarks.profile_ingest import accounts, messages
from luna_sender.delivery import matching
from luna_sender.delivery.frames import text_frame
from luna_sender.delivery.groups import GroupSet, face_index
from luna_sender.filters.base import Limits
from luna_sender.filters.events import compile_face

class Conn:
    def __init__(self, query):
        self.filter = compile_face(query, Limits())

groups = GroupSet(face_index())
shape = [[], [("sources", "camera-0")], [("sources", "camera-1")], [("sources", "never")]]
if FULL:  # a filter that reads the whole event (face attributes)
    shape.append([("age__gte", "18")])
for query in shape:
    groups.add(Conn(query))
reads = getattr(groups, "reads", None)  # a checkout from before reading levels has none
pool = [data for _, data in messages(accounts(30), 30, SIZE)]

def run():
    for data in pool:
        msg = matching.decode("face", data, *(() if reads is None else (reads,)))
        args = (msg, groups.index.candidates) + (() if reads is None else (reads,))
        for envelope, _ in matching.select(*args):
            text_frame(envelope)

n = 10
best = min(timeit.repeat(run, number=n, repeat=REPEAT)) / n / len(pool)
print(json.dumps(best * 1e6))
"""


def measure(src: str, size: int, repeat: int, full: bool) -> float:
    code = CHILD.replace("SIZE", str(size)).replace("REPEAT", str(repeat))
    code = code.replace("FULL", str(full))
    root = str(Path(src).resolve())
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=True,
        cwd=root,  # python -c puts the working directory first on sys.path
        env={**os.environ, "PYTHONPATH": f"{root}:{ROOT}"},
        text=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", action="append", help="checkout to time (repeat for A/B)")
    parser.add_argument("--size", type=int, default=2700, help="event size target (bytes)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per checkout")
    parser.add_argument(
        "--full", action="store_true", help="add a socket whose filter reads the whole event"
    )
    args = parser.parse_args()
    srcs = args.src or ["."]
    results: dict[str, list[float]] = {s: [] for s in srcs}
    for r in range(args.rounds):
        for src in srcs if r % 2 == 0 else reversed(srcs):
            results[src].append(measure(src, args.size, args.repeat, args.full))
    first = sorted(results[srcs[0]])[len(results[srcs[0]]) // 2]
    for src, values in results.items():
        median = sorted(values)[len(values) // 2]
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"{src}: {median:.2f} us per message (rounds {spread}); {first / median:.2f}x")


if __name__ == "__main__":
    main()
