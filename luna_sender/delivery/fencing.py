"""This instance's side of fences (bus/fences.py): the fences it waits on, the answers it owes.

A recorder that starts a channel while others are registered counts on them to have appended
what was published before its subscription took effect; the fence is how it finds out that they
did, rather than assuming it (docs/recovery.md, "A race between instances").
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from luna_sender.bus import fences
from luna_sender.bus.history import History

log = logging.getLogger("luna_sender.hub")


class Fencing:
    def __init__(self, history: History) -> None:
        self.history = history
        # token -> (the recorders not yet answered, done, the channel)
        self._waits: dict[str, tuple[set[str], asyncio.Future[None], str]] = {}
        # (token, name) -> its answer's proof being checked; the set: another came meanwhile
        self._checking: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._again: set[tuple[str, str]] = set()
        self._warned: set[str] = set()  # tokens a forged answer was logged for: once each

    async def run(self, channel: str) -> bool:
        """After this instance's start marker on ``channel``: True once every recorder the
        marker counted on answered, within :data:`fences.WAIT` in all; False otherwise."""
        token = uuid.uuid4().hex
        try:
            async with asyncio.timeout(fences.WAIT):
                names = await self.history.counted_on(channel, fences.WAIT)
                if not names:
                    return True
                done = asyncio.get_running_loop().create_future()
                self._waits[token] = (set(names), done, channel)
                ordered = sorted(names)
                asked = [self.history.ask_fence(name, token, channel) for name in ordered]
                for name, heard in zip(ordered, await asyncio.gather(*asked), strict=True):
                    if not heard:
                        log.info("fence on %s: recorder %s is gone; a gap is marked", channel, name)
                        return False
                await done
        except Exception as exc:  # the timeout included: taken for a stalled recorder
            waiting = self._waits[token][0] if token in self._waits else set()
            log.info(
                "fence on %s: no answer from %s (%s); a gap is marked",
                channel,
                ", ".join(sorted(waiting)) or "the history",
                type(exc).__name__,
            )
            return False
        finally:
            self._waits.pop(token, None)
            self._warned.discard(token)
        return True

    def answered(self, token: str, name: str) -> None:
        """An answer came; it counts once its proof is found (bus/fences.py), one check at a
        time per recorder, so a flood of forged answers costs one query in flight."""
        wait = self._waits.get(token)
        if wait is None or name not in wait[0]:  # late, repeated, or not ours
            return
        key = (token, name)
        if key in self._checking:
            self._again.add(key)  # the real answer may be this one: check again after
            return
        self._checking[key] = asyncio.ensure_future(self._check(key, *wait))

    async def _check(
        self, key: tuple[str, str], names: set[str], done: asyncio.Future[None], channel: str
    ) -> None:
        token, name = key
        try:
            while True:
                self._again.discard(key)
                try:
                    proven = await self.history.proven(channel, token, name)
                except Exception:  # unchecked: not believed; the fence times out, a gap
                    proven = False
                if proven:
                    names.discard(name)
                    if not names and not done.done():
                        done.set_result(None)
                    return
                if key not in self._again:
                    if token in self._warned or token not in self._waits:  # one line a fence
                        return
                    self._warned.add(token)
                    log.warning(
                        "fence on %s: an answer in the name of %s that it did not write; ignored",
                        channel,
                        name,
                    )
                    return
        finally:
            self._checking.pop(key, None)
            self._again.discard(key)
