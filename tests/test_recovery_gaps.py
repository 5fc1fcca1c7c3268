"""Gaps in recording are visible (#18 follow-up): ``since`` never answers ``recovered: true``
across a stretch nobody recorded, and conflicting ``recover`` values are a bad query."""

from __future__ import annotations

from .conftest import LiveApp
from .helpers import account


async def test_conflicting_repeated_recover_is_a_bad_query(memory_app: LiveApp) -> None:
    for params in (
        [("recover", "1"), ("recover", "0")],
        [("recover", "true"), ("recover", "false")],
    ):
        async with memory_app.session.get(
            memory_app.url("/ws"), params=params, headers={"Luna-Account-Id": account()}
        ) as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["error_code"] == 12012 and "recover" in body["desc"] + body["detail"]


async def test_identical_repeated_recover_is_accepted(memory_app: LiveApp) -> None:
    params = [("recover", "1"), ("recover", "true")]
    async with memory_app.ws(account=account(), params=params):
        pass
