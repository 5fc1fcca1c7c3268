"""The filter grammar is as strict as docs/filters.md says (outside tester, round 1).

Integers were matched with ``\\d`` (Arabic-Indic and fullwidth digits), numbers with ``float()``
(``1_000``, `` 1``, ``+1``), booleans case-insensitively; and one filter under two spellings
(``event.x`` and ``event.x__eq``, an alias and its name) was accepted twice. Each answers
400/12012 naming the parameter, over a real websocket handshake.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from .conftest import LiveApp
from .helpers import UPGRADE, account

# (route, raw query string, the parameter the 12012 names)
REFUSED = [
    ("/ws/general", "event.x:integer=" + quote("\u0661"), "event.x:integer"),
    ("/ws/general", "event.x:integer=%EF%BC%91", "event.x:integer"),
    ("/ws/general", "event.x:integer=%2B1", "event.x:integer"),
    ("/ws/general", "event.x:integer=%201", "event.x:integer"),
    ("/ws/general", "event.x:integer=1%20", "event.x:integer"),
    ("/ws/general", "event.x:numeric=1_000", "event.x:numeric"),
    ("/ws/general", "event.x:numeric=%2B1.5", "event.x:numeric"),
    ("/ws/general", "event.x:numeric=%201.5", "event.x:numeric"),
    ("/ws/general", "event.x:numeric=" + quote("\u0661.5"), "event.x:numeric"),
    ("/ws/general", "event.x:numeric=1e", "event.x:numeric"),
    ("/ws/general", "event.x:boolean=TRUE", "event.x:boolean"),
    ("/ws/general", "event.x:boolean=%20true", "event.x:boolean"),
    ("/ws/general", "event.x__in:integer=1,%EF%BC%92", "event.x__in:integer"),
    ("/ws", "age__gte=%2B1", "age__gte"),
    ("/ws", "gender=" + quote("\u0661"), "gender"),
    # One filter, two spellings: the second parameter is named.
    ("/ws/general", "event.x=1&event.x__eq=2", "event.x__eq"),
    ("/ws/general", "event.x__ne=1&event.x__neq=2", "event.x__neq"),
    ("/ws/general", "event.x:string=1&event.x__eq:string=2", "event.x__eq:string"),
    ("/ws/general", "event.x=1&event.x:string=2", "event.x:string"),
    ("/ws/general", "event.x__in=1&event.x__in:string=2", "event.x__in:string"),
    ("/ws/general", "event.x:integer=1&event.x__eq:integer=2", "event.x__eq:integer"),
    ("/ws", "meta.x=1&meta.x__eq=2", "meta.x__eq"),
    ("/ws", "shoes_colors=black&shoes_apparent_colors=white", "shoes_apparent_colors"),
    ("/ws", "headwear_apparent_colors=black&headwear_colors=white", "headwear_colors"),
    # A line feed ending a path key slipped past a ``$`` that matches before a final newline
    # (an outside pass: 101, and the filter then matched the key "a\n").
    ("/ws/general", "event.a%0A=1", "event.a\n"),
    ("/ws/general", "event.a%0A.b=1", "event.a\n.b"),
    ("/ws/general", "event.a%0A__gt:integer=1", "event.a\n__gt:integer"),
    ("/ws", "meta.a.b%0A=1", "meta.a.b\n"),
    # Bytes that are not UTF-8 in a value were compiled as U+FFFD; in a name they were refused.
    ("/ws", "sources=%FF", "sources"),
    ("/ws/general", "event.x=a%C3", "event.x"),
]

ACCEPTED = [
    ("/ws/general", "event.x:integer=-12&event.y:numeric=-1.5e3&event.z:numeric=.5"),
    ("/ws/general", "event.x:numeric=10&event.y:numeric=1E-2&event.z:integer=007"),
    (
        "/ws/general",
        "event.a:boolean=true&event.b:boolean=false&event.c:boolean=1&event.d:boolean=0",
    ),
    # Different operators or types on one path are different filters.
    ("/ws/general", "event.x__gte:integer=1&event.x__lt:integer=9&event.x:integer=5"),
    ("/ws/general", "event.x=1&event.x:integer=1"),
    ("/ws", "meta.x=1&meta.x__neq=2&age__gte=18&age__lt=30"),
]


async def _handshake(app: LiveApp, route: str, query: str) -> tuple[int, dict | None]:
    headers = {**UPGRADE, "Luna-Account-Id": account()}
    async with app.session.get(app.url(route) + "?" + query, headers=headers) as resp:
        return resp.status, (await resp.json() if resp.status != 101 else None)


@pytest.mark.parametrize(("route", "query", "param"), REFUSED)
async def test_loose_spellings_and_repeats_are_12012(
    memory_app: LiveApp, route: str, query: str, param: str
) -> None:
    status, body = await _handshake(memory_app, route, query)
    assert status == 400, (query, status)
    assert body == {
        "error_code": 12012,
        "desc": "Bad/incomplete input data",
        "detail": f"Bad query parameters '{param}'",
        "link": "https://docs.visionlabs.ai/info/luna/troubleshooting/"
        "errors-description/code-12012",
    }


@pytest.mark.parametrize(("route", "query"), ACCEPTED)
async def test_strict_spellings_are_accepted(memory_app: LiveApp, route: str, query: str) -> None:
    status, body = await _handshake(memory_app, route, query)
    assert status == 101, body
