"""W1's fan-out in isolation: deliveries per server CPU-second at fixed rates, A/B in one run.

    flock /tmp/bench.lock python -m benchmarks.profile_fanout --peers luna,luna-base \
        --rates 40,80,160 --seconds 6 --rounds 3 [--py-spy luna:80:/tmp/flame.svg]

Same server, client and events as ``benchmarks.run`` W1 (1,000 subscribers of one account,
5-20 KB face events, every event matching every socket), but every peer is measured at every
rate, so peers are compared at the same offered load rather than at each one's highest
sustained step, and the peer order rotates per round. Server CPU is split into user (Python)
and system (kernel: the sends) time from /proc, which tells a change to the Python per
delivery apart from one that saves syscalls.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
from typing import Any

from . import procstat
from .peers.registry import PEERS
from .run import Layout, Run, start_redis


def measure(run: Run, rate: float, seconds: float, spy: str | None) -> dict[str, Any]:
    clients = [p.pid for p in run.procs if p.pid is not None]
    servers = procstat.tree(run.server.pid)
    u0, s0 = procstat.user_sys(run.server.pid)
    c0, v0 = procstat.switches(clients), procstat.switches(servers)
    proc = None
    if spy:
        py_spy = shutil.which("py-spy") or "/work/main/.venv/bin/py-spy"
        proc = subprocess.Popen(
            [
                py_spy,
                "record",
                "-p",
                str(run.server.pid),
                "-d",
                str(int(seconds)),
                "-o",
                spy,
                "--nonblocking",
                "-r",
                "200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    st = run.step(rate, seconds)
    if proc is not None:
        proc.wait(60)
    u1, s1 = procstat.user_sys(run.server.pid)
    c1, v1 = procstat.switches(clients), procstat.switches(servers)
    st["user_s"], st["sys_s"] = u1 - u0, s1 - s0
    st["client_sleeps"] = c1[0] - c0[0]
    st["server_preempted"] = v1[1] - v0[1]
    return st


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_fanout")
    parser.add_argument("--peers", default="luna,luna-base")
    parser.add_argument("--rates", default="40,80,160")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--py-spy", default="", help="peer:rate:out.svg, profiled in round 1")
    cfg = parser.parse_args()
    names = cfg.peers.split(",")
    rates = [float(r) for r in cfg.rates.split(",")]
    spy_peer, spy_rate, spy_out = [*cfg.py_spy.split(":", 2), "", "", ""][:3]
    redis_proc, redis_url = start_redis()
    rows: dict[tuple[str, float], list[dict[str, Any]]] = {}
    try:
        for rnd in range(cfg.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for name in order:
                run = Run(PEERS[name], Layout("W1", cfg.subs), redis_url, cfg.clients)
                try:
                    for rate in rates:
                        spy = (
                            spy_out
                            if rnd == 0 and name == spy_peer and float(spy_rate or 0) == rate
                            else None
                        )
                        st = measure(run, rate, cfg.seconds, spy)
                        rows.setdefault((name, rate), []).append(st)
                        expected = st["published"] * cfg.subs
                        print(
                            f"round {rnd + 1} {name:10} {rate:5.0f}/s: "
                            f"{st['deliveries_per_cpu_s']:9,.0f} deliveries/CPU-s "
                            f"(user {st['user_s']:.2f} s, sys {st['sys_s']:.2f} s, "
                            f"delivered {st['deliveries'] / max(1, expected):.1%}, "
                            f"p99 {st['p99_ms']:.0f} ms, client sleeps/event "
                            f"{st['client_sleeps'] / max(1, st['published']):.0f}, server "
                            f"preemptions/event {st['server_preempted'] / max(1, st['published']):.0f}, "
                            f"client CPU {st['client_cpu_s']:.1f} s"
                            f"{' SATURATED' if st['client_saturated'] else ''})",
                            flush=True,
                        )
                finally:
                    run.close()
    finally:
        redis_proc.terminate()
    print(
        "\n| rate | peer | deliveries/CPU-s (median; rounds) | user µs/delivery | sys µs/delivery |"
    )
    print("|---|---|---|---|---|")
    for rate in rates:
        for name in names:
            sts = rows.get((name, rate), [])
            if not sts:
                continue
            dpc = [s["deliveries_per_cpu_s"] for s in sts]
            user = statistics.median(1e6 * s["user_s"] / max(1, s["deliveries"]) for s in sts)
            system = statistics.median(1e6 * s["sys_s"] / max(1, s["deliveries"]) for s in sts)
            print(
                f"| {rate:.0f} | {name} | {statistics.median(dpc):,.0f}; "
                f"{', '.join(f'{d:,.0f}' for d in dpc)} | {user:.2f} | {system:.2f} |"
            )
        if len(names) == 2:
            a, b = (rows.get((n, rate), []) for n in names)
            ratios = [
                x["deliveries_per_cpu_s"] / y["deliveries_per_cpu_s"]
                for x, y in zip(a, b, strict=False)
            ]
            if ratios:
                print(
                    f"| {rate:.0f} | {names[0]}/{names[1]} | {statistics.median(ratios):.3f}; "
                    f"{', '.join(f'{r:.3f}' for r in ratios)} | | |"
                )


if __name__ == "__main__":
    main()
