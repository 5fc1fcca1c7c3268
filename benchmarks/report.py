"""Render a results JSON as the markdown tables of docs/performance.md.

python -m benchmarks.report benchmarks/results/<file>.json
"""

from __future__ import annotations

import json
import statistics
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


def _spread(values: list[float], digits: int = 1) -> str:
    """A median with its rounds' min-max beside it: one number alone hides how far reruns move."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return _fmt(med, digits)
    return f"{_fmt(med, digits)} ({_fmt(min(values), digits)}-{_fmt(max(values), digits)})"


# per workload: the metric compared at each common rate, its label, digits, and whether the
# naive peer's value over ours is the "x naive" ratio (CPU per event: higher naive is better)
STEP_METRICS = {
    "W1": ("deliveries_per_cpu_s", "deliveries per server CPU-s", 0),
    "W4": ("cpu_per_event_us", "server CPU µs per ingested event", 1),
}


def render_steps(results: dict[str, Any]) -> str:
    """Peers compared at the same offered rates (every step each one ran), then the highest
    sustained step; each cell is the median over rounds with min-max, the number of rounds the
    step was sustained, and the busiest client process's CPU share (a client near 100 % means
    the load generator, not the server, set the limit)."""
    rounds = results["rounds"]
    out: list[str] = []
    for workload, (key, label, digits) in STEP_METRICS.items():
        per_peer: dict[str, list[dict[str, Any]]] = {}
        for rr in rounds:
            for peer, res in rr.get(workload, {}).items():
                if isinstance(res, dict) and "steps" in res:
                    per_peer.setdefault(peer, []).append(res)
        if not per_peer:
            continue
        peers = list(per_peer)
        rates = sorted(
            {st["rate"] for runs in per_peer.values() for r in runs for st in r["steps"]}
        )
        out += [
            f"{workload}: {label} at each offered rate — median (min-max) over rounds, "
            "[sustained rounds/rounds, max client CPU %]",
            "",
            "| events/s | " + " | ".join(peers) + " |",
            "|---|" + "---|" * len(peers),
        ]
        for rate in rates:
            cells = []
            for peer in peers:
                steps = [st for r in per_peer[peer] for st in r["steps"] if st["rate"] == rate]
                if not steps:
                    cells.append("—")
                    continue
                ok = sum(1 for st in steps if st.get("sustained"))
                util = max(st.get("client_util_max", 0.0) for st in steps)
                cells.append(
                    f"{_spread([st[key] for st in steps], digits)} "
                    f"[{ok}/{len(steps)}, {100 * util:.0f} %]"
                )
            out.append(f"| {_fmt(rate, 0)} | " + " | ".join(cells) + " |")
        best = []
        for peer in peers:
            rates_ok = [r["best"]["rate"] if r.get("best") else 0.0 for r in per_peer[peer]]
            best.append(_spread(rates_ok, 0))
        out.append("| highest sustained | " + " | ".join(best) + " |")
        if workload == "W4" and "naive" in per_peer:
            out += ["", "W4 x naive (naive CPU/event ÷ peer CPU/event, same round and rate):", ""]
            for peer in peers:
                if peer == "naive":
                    continue
                cells = []
                for rate in rates:
                    ratios = []
                    for rr in rounds:
                        for a, b in _pairs(rr, "W4", peer, "naive", rate):
                            if a[key]:
                                ratios.append(b[key] / a[key])
                    if ratios:
                        cells.append(f"{_fmt(rate, 0)}/s: {_spread(ratios, 2)}")
                out.append(f"- {peer}: " + ("; ".join(cells) or "no common step"))
        out += ["", *_pair_ratios(workload, key, peers, rates, rounds)]
        out.append("")
    return "\n".join(out) + ("\n" if out else "")


def _pair_ratios(
    workload: str, key: str, peers: list[str], rates: list[float], rounds: list[Any]
) -> list[str]:
    """The first peer against each other one at each common rate: the median of per-round
    ratios (both measured in the same round), so a busy round moves both sides alike. For W1
    first/other deliveries per CPU-s (above 1: the first is cheaper); for W4 other/first CPU
    per event (the same reading)."""
    first, lines = peers[0], []
    for other in peers[1:]:
        cells = []
        for rate in rates:
            ratios = []
            for rr in rounds:
                for a, b in _pairs(rr, workload, first, other, rate):
                    if a[key] and b[key]:
                        ratios.append(a[key] / b[key] if workload == "W1" else b[key] / a[key])
            if ratios:
                cells.append(f"{_fmt(rate, 0)}/s: {_spread(ratios, 2)}")
        if cells:
            lines.append(f"- {first} vs {other} (per round): " + "; ".join(cells))
    return lines


def _pairs(
    rr: dict[str, Any], workload: str, a: str, b: str, rate: float
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Two peers' steps at one rate in one round, the k-th against the k-th: a rate repeated
    (``--w4-rates 250,250,250``) gives one ratio per repetition, not only the first's."""
    steps = []
    for name in (a, b):
        res = rr.get(workload, {}).get(name)
        steps.append(res.get("steps", []) if isinstance(res, dict) else [])
    return [(x, y) for x, y in zip(*steps, strict=False) if x["rate"] == rate and y["rate"] == rate]


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
        }
        lines.append(
            f"| {peer} | {_spread(metric('W1', 'deliveries_per_s'), 0)} | "
            f"{_spread(metric('W1', 'deliveries_per_cpu_s'), 0)} | "
            f"{_spread(metric('W2', 'cpu_per_event_ms'), 2)} | "
            f"{_spread(metric('W3', 'p50_ms'))} | {_spread(metric('W3', 'p99_ms'))} | "
            f"{_spread(metric('W7', 'rss_per_connection_kib'))} |"
        )
    lines += [
        "",
        "Per-round ratios luna-sender / peer (median of rounds, then every round):",
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
    steps = render_steps(results)
    return "\n".join(lines) + "\n" + ("\n" + steps if steps else "")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Render a benchmark results file as tables.")
    parser.add_argument("results", help="a JSON file under benchmarks/results/")
    with open(parser.parse_args().results) as handle:
        print(render(json.load(handle)), end="")
