"""Fences: an instance starting to record a channel waits until the recorders it counts on have
appended what they heard before it listened.

An event published just before a new subscription took effect reached only the channel's other
recorders, and a recorder appends a moment after it receives. A stalled recorder (a freeze under
the 1.5 s its registration is believed, a Redis stall holding publishes) appended them only
after a resume's read on the new instance: the resume answered ``recovered: true`` without them
(outside passes: 11-13 events lost in 4 of 12 moves during a Redis freeze, 51-133 in 9 of 12
with a stuttering recorder), and if the recorder died before waking, no marker ever said so.

So a start marker's script names the recorders it believed (bus/redis_scripts.py MARK), and the
starting instance publishes a fence request on each one's presence channel (bus/presence.py)
once its own subscription took effect. Redis delivers a connection's messages in the order it
ran the PUBLISHes, whatever their channel: a recorder reads the request after every event
published before it and queues its answer behind the appends of those events in its ordered
history queue (delivery/recorder.py). The answer is a script that PUBLISHes to the asker's
presence channel, so Redis runs it after those appends, and the asker's read, made after the
answer arrived, finds them. Without every answer within :data:`WAIT` the asker writes a gap
marker (delivery/fencing.py): resumes from before it answer ``recovered: false``.

Cluster has no presence names: there nothing is fenced (docs/recovery.md).
"""

from __future__ import annotations

import re
from typing import Any

from luna_sender.bus.presence import PREFIX

# For the answers; a recorder slower than that is taken for stalled. A recorder that wakes from
# a freeze answers only after its backlog (an outside pass: 2.0-2.7 s with stutters). A new
# subscription's own appends wait for its fence too, and its recovering sockets' events for
# them (delivery/pipe.py).
WAIT = 2.0
ASK, ANSWER = b"fence?", b"fence!"

# ARGV: a presence channel, the request. A script, so that it goes out on the history queue's
# one connection (a reconnect herd must not open one per channel).
ACK = """
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""

# The answer: KEYS[1] its proof; ARGV: the asker's presence channel, the answer, the proof's life
# (ms). Anyone allowed to SUBSCRIBE and PUBLISH on presence channels could read a request and
# answer it before the recorder had appended (an outside pass: ``recovered: true`` with 143-234
# events lost, 6 of 6). So the asker believes an answer only once it finds the proof, which this
# script writes in the same step as it publishes, behind the recorder's appends: forging one
# takes write access to the history's keys, which could rewrite the history itself anyway.
ANSWER_SCRIPT = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
return redis.call('PUBLISH', ARGV[1], ARGV[2])
"""
PROOF = """
return redis.call('EXISTS', KEYS[1])
"""
PROOF_TTL_MS = 10_000  # an answer is checked within WAIT; after that the key is litter


def proof_key(prefix: str, channel: str, token: str, name: str) -> str:
    """In the channel's slot, as its other history keys (bus/redis_history.py)."""
    return f"{prefix}:{{{channel}}}:f:{token}:{name}"


def ask(token: str, channel: str, reply_to: str) -> bytes:
    return b" ".join((ASK, token.encode(), reply_to.encode(), channel.encode()))


def answer(token: str, name: str) -> bytes:
    return b" ".join((ANSWER, token.encode(), name.encode()))


# What this code sends: a token and a presence name are 32 hex digits each. Anything else is
# refused before it reaches the history: the answer writes a proof key with the token in its
# name, and a client allowed only to publish on presence channels made instances write keys of
# 1 MB each, as many as it liked (an outside pass: +250 MB in Redis, recovery failing at
# maxmemory).
_TOKEN = re.compile(rb"[0-9a-f]{32}")
_NAME = re.compile(re.escape(PREFIX.encode()) + rb"[0-9a-f]{32}")


def parse(data: bytes) -> tuple[bytes, str, str, str] | None:
    """``(ASK, token, reply_to, channel)`` or ``(ANSWER, token, name, "")``; None for anything
    else published to a presence name."""
    parts = data.split(b" ", 3)
    if len(parts) < 3 or not _TOKEN.fullmatch(parts[1]) or not _NAME.fullmatch(parts[2]):
        return None
    try:
        # The answer goes only to a presence channel: never, say, onto an event channel
        if parts[0] == ASK and len(parts) == 4:
            return ASK, parts[1].decode(), parts[2].decode(), parts[3].decode()
        if parts[0] == ANSWER and len(parts) == 3:
            return ANSWER, parts[1].decode(), parts[2].decode(), ""
    except UnicodeDecodeError:
        pass
    return None


def believed(marked: Any) -> set[str]:
    """The recorders a start marker's script counted on (a list); none when it wrote a marker
    (1) or this instance was still registered (0)."""
    if not isinstance(marked, list):
        return set()
    return {n.decode() if isinstance(n, bytes) else str(n) for n in marked}
