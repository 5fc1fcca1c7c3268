"""The W5 recovery workload itself: a small run must count every event once, or it has rotted.

docs/performance.md's "Recovery (W5)" figures (lost, duplicated, time to the first replayed event)
are only as good as the client's bookkeeping, so a 50-socket run over a real redis-server and a
real luna-sender process, with a real TCP reset, is part of the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.recovery import parse, run

pytestmark = pytest.mark.slow


def test_small_w5_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    cfg = parse(
        [
            "--sockets", "50", "--rounds", "1", "--clients", "1", "--rate", "20",
            "--warm", "1", "--outage", "0.5", "--after", "1.5", "--drain", "1",
            "--results-dir", str(tmp_path),
        ]
    )  # fmt: skip
    (res,) = run(cfg)
    assert res["published"] >= 40
    assert res["reconnect_failed"] == 0 and res["without_offset"] == 0
    assert res["recovered"] == 50 and res["not_recovered"] == 0
    assert res["lost"] == 0 and res["duplicated"] == 0 and res["disorder"] == 0
    assert res["recovered_with_loss"] == 0
    # the outage alone leaves ~10 events to replay to each socket
    assert res["replayed_median"] >= 5
    assert res["to_first_replayed_p50_ms"] is not None
