"""The harness (benchmarks.run) with one more peer: luna-sender whose subscribers all recover.

    python -m benchmarks.recovery_ab --peers luna,luna-recover --workloads W1,W2 --rounds 3

``luna-recover`` is the same server as ``luna``; only its subscribers add ``recover=true``, so
every channel is recorded in the Redis history and every envelope waits for its offset. The
printed ratio luna/luna-recover is what turning recovery on costs the fan-out (W1) and the
ingest (W2). The other direction, that nothing changes without a recovering socket, is the
``luna`` vs ``luna-base`` A/B of benchmarks.run (docs/performance.md, "Recovery (W5)").
"""

from __future__ import annotations

from .loadgen import Sub
from .peers.registry import PEERS, Peer
from .run import main


def _recover_sub(acc: str, src: list[str] | None, _g: int) -> Sub:
    query = "?recover=true" + ("" if src is None else "&sources=" + ",".join(src))
    return Sub("ws", "/ws" + query, {"Luna-Account-Id": acc})


PEERS["luna-recover"] = Peer(
    "luna-recover", PEERS["luna"].start, _recover_sub, "redis-luna", content_filters=True
)

if __name__ == "__main__":
    main()
