"""Render a results JSON as the markdown tables of docs/performance.md.

python -m benchmarks.report benchmarks/results/<file>.json
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any


def _best(res: dict[str, Any]) -> dict[str, Any] | None:
    """The highest step within p99 <= 100 ms; a peer that never got there is judged at its
    lowest step (marked with * in the text), which flatters it."""
    if "error" in res:
        return None
    return res.get("best") or (res["steps"][0] if res.get("steps") else None)


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render(results: dict[str, Any]) -> str:
    rounds = results["rounds"]
    peers: list[str] = []
    for rr in rounds:
        for per in rr.values():
            peers += [p for p in per if p not in peers]
    lines = [
        "| peer | W1 sustained deliveries/s | W1 deliveries per server CPU-s | "
        "W2 server CPU ms/event | W3 p50 ms | W3 p99 ms | W7 RSS KiB/connection |",
        "|---|---|---|---|---|---|---|",
    ]
    table: dict[str, dict[str, float | None]] = {}
    for peer in peers:

        def metric(workload: str, key: str, peer: str = peer) -> list[float]:
            out = []
            for rr in rounds:
                res = rr.get(workload, {}).get(peer)
                if not res or "error" in res:
                    continue
                if workload == "W1":
                    best = _best(res)
                    if best:
                        out.append(best[key])
                else:
                    out.append(res[key])
            return out

        table[peer] = {
            "w1_rate": _median(metric("W1", "deliveries_per_s")),
            "w1_cpu": _median(metric("W1", "deliveries_per_cpu_s")),
            "w2": _median(metric("W2", "cpu_per_event_ms")),
            "w3_p50": _median(metric("W3", "p50_ms")),
            "w3_p99": _median(metric("W3", "p99_ms")),
            "w7": _median(metric("W7", "rss_per_connection_kib")),
        }
        t = table[peer]
        lines.append(
            f"| {peer} | {_fmt(t['w1_rate'], 0)} | {_fmt(t['w1_cpu'], 0)} | "
            f"{_fmt(t['w2'], 2)} | {_fmt(t['w3_p50'])} | {_fmt(t['w3_p99'])} | "
            f"{_fmt(t['w7'])} |"
        )
    lines += [
        "",
        "Per-round ratios luna-sender / peer (median of rounds):",
        "",
        "| peer | W1 deliveries/CPU-s (higher is better) | W2 CPU/event (lower) | "
        "W3 p99 (lower) | W7 RSS/conn (lower) |",
        "|---|---|---|---|---|",
    ]
    for peer in peers:
        if peer == "luna":
            continue
        cols = []
        for workload, key in (
            ("W1", "deliveries_per_cpu_s"),
            ("W2", "cpu_per_event_ms"),
            ("W3", "p99_ms"),
            ("W7", "rss_per_connection_kib"),
        ):
            ratios = []
            for rr in rounds:
                ours, theirs = rr.get(workload, {}).get("luna"), rr.get(workload, {}).get(peer)
                if not ours or not theirs or "error" in ours or "error" in theirs:
                    continue
                a = (
                    _best(ours)[key]
                    if workload == "W1" and _best(ours)
                    else (None if workload == "W1" else ours[key])
                )
                b = (
                    _best(theirs)[key]
                    if workload == "W1" and _best(theirs)
                    else (None if workload == "W1" else theirs[key])
                )
                if a is not None and b:
                    ratios.append(a / b)
            cols.append(
                "—"
                if not ratios
                else f"{statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})"
            )
        lines.append(f"| {peer} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        print(render(json.load(handle)), end="")
