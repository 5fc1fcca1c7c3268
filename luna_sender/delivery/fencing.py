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
        self._waits: dict[str, tuple[set[str], asyncio.Future[None]]] = {}

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
                self._waits[token] = (set(names), done)
                ordered = sorted(names)
                asked = [self.history.ask_fence(name, token, channel) for name in ordered]
                for name, heard in zip(ordered, await asyncio.gather(*asked), strict=True):
                    if not heard:
                        log.info("fence on %s: recorder %s is gone; a gap is marked", channel, name)
                        return False
                await done
        except Exception as exc:  # the timeout included: taken for a stalled recorder
            waiting = self._waits.get(token, (set(), None))[0]
            log.info(
                "fence on %s: no answer from %s (%s); a gap is marked",
                channel,
                ", ".join(sorted(waiting)) or "the history",
                type(exc).__name__,
            )
            return False
        finally:
            self._waits.pop(token, None)
        return True

    def answered(self, token: str, name: str) -> None:
        wait = self._waits.get(token)
        if wait is None:  # late, or not ours
            return
        names, done = wait
        names.discard(name)
        if not names and not done.done():
            done.set_result(None)
