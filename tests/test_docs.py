"""The OpenAPI document is valid and complete; /docs/spec and /docs/dev answer per the spec."""

from __future__ import annotations

from html.parser import HTMLParser

import yaml
from openapi_spec_validator import validate

from luna_sender.app import build_app
from luna_sender.config.settings import Settings
from luna_sender.filters.events import FACE_SPECS
from luna_sender.filters.general import GENERAL_SPECS
from luna_sender.web.docs.markdown import markdown_to_html
from luna_sender.web.docs.openapi import build_document

from .conftest import LiveApp
from .helpers import REPO


def _served_routes(settings: Settings) -> set[tuple[str, str]]:
    app = build_app(settings)
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        routes.add((route.method.lower(), route.resource.canonical))
    return routes


def _documented(doc: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item}


def test_document_validates_and_lists_every_route() -> None:
    for versions in ([1, 2], [3]):
        settings = Settings(api_versions=versions)
        doc = build_document(tuple(settings.api_versions))
        validate(doc)
        assert _documented(doc) == _served_routes(settings)
        for path, item in doc["paths"].items():
            for operation in item.values():
                answers = operation["responses"]
                assert "417" in answers, path  # an unmet Expect, on every route
                upgrade = "101" in answers
                assert ("426" in answers) == upgrade, path  # an unspoken websocket version
                if upgrade:
                    assert {"Sec-WebSocket-Version", "Upgrade"} <= set(answers["426"]["headers"])


def test_every_filter_is_documented() -> None:
    doc = build_document()
    ws = {p["name"] for p in doc["paths"]["/ws"]["get"]["parameters"]}
    general = {p["name"] for p in doc["paths"]["/2/ws/general"]["get"]["parameters"]}
    assert set(FACE_SPECS) <= ws
    assert set(GENERAL_SPECS) <= general


async def test_docs_spec_negotiation(memory_app: LiveApp) -> None:
    url = memory_app.url("/docs/spec")
    async with memory_app.session.get(url, headers={"Accept": "application/x-yaml"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/x-yaml"
        doc = yaml.safe_load(await resp.text())
    validate(doc)
    async with memory_app.session.get(url, headers={"Accept": "text/html"}) as resp:
        assert resp.content_type == "text/html"
        text = await resp.text()
    assert "/publish/general" in text and "<script" not in text
    async with memory_app.session.get(url, headers={"Accept": "application/json"}) as resp:
        assert resp.status == 415
        assert (await resp.json())["error_code"] == 12024


async def test_docs_dev_redirect_and_pages(memory_app: LiveApp) -> None:
    async with memory_app.session.get(memory_app.url("/docs/dev"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/docs/dev/index.html"
        assert "Luna-Request-Id" in resp.headers
    # The folder itself, as a browser or a hand-written link spells it, redirects too.
    async with memory_app.session.get(memory_app.url("/docs/dev/"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/docs/dev/index.html"
    for folder in ("/docs/dev", "/docs/dev/"):
        async with memory_app.session.get(memory_app.url(folder)) as resp:
            assert resp.status == 200
            text = await resp.text()
        assert "luna-sender developer manual" in text
        assert 'href="deployment.html"' in text
    for bad in ("nope.html", "..%2Fpyproject.toml", "index.md", "x/index.html", "/"):
        async with memory_app.session.get(memory_app.url(f"/docs/dev/{bad}")) as resp:
            assert resp.status == 404, bad
            assert (await resp.json())["error_code"] == 12013


class _ListDepth(HTMLParser):
    """The list nesting depth at which each text run of a page sits."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.texts: list[tuple[int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.depth += tag in ("ul", "ol")

    def handle_endtag(self, tag: str) -> None:
        self.depth -= tag in ("ul", "ol")

    def handle_data(self, data: str) -> None:
        self.texts.append((self.depth, data))


def _list_depth(page: str, text: str) -> int:
    parser = _ListDepth()
    parser.feed(page)
    return next(depth for depth, data in parser.texts if text in data)


async def test_docs_dev_keeps_nested_lists_nested(memory_app: LiveApp) -> None:
    """reliability.md lists when events are lost as sub-items of one bullet: flattened, each
    exception would read as a promise of its own."""
    async with memory_app.session.get(memory_app.url("/docs/dev/reliability.html")) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert _list_depth(page, "Events are ") == 1
    assert _list_depth(page, "a client connects after the event was published") == 2
    assert _list_depth(page, "Subscribers never go deaf") == 1


def test_markdown_escapes_and_renders() -> None:
    html = markdown_to_html(
        "# T\n\n<script>x</script> `a<b`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
        "\n```\n<i>\n```\n- [x](y.md)\n"
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<code>a&lt;b</code>" in html
    assert "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>" in html
    assert "<pre><code>&lt;i&gt;</code></pre>" in html
    assert '<a href="y.html">x</a>' in html


def test_configuration_reference_is_generated_from_the_model() -> None:
    from luna_sender.config.reference import render

    from .helpers import REPO

    assert (REPO / "docs" / "configuration.md").read_text() == render(), (
        "run: python -m luna_sender.config.reference > docs/configuration.md"
    )


def test_metrics_reference_lists_every_metric() -> None:
    from luna_sender.runtime.metrics import Metrics

    from .helpers import REPO

    text = (REPO / "docs" / "metrics.md").read_text()
    names = {m.name for m in Metrics().registry.collect()}
    missing = [n for n in names if f"`{n}" not in text]
    assert not missing, missing


class _Anchors(HTMLParser):
    """The ids a page has and the links it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))


async def test_every_link_into_a_manual_page_lands_on_a_heading(memory_app: LiveApp) -> None:
    """The served headings had no ids: 12 links such as filters.html#like-limits went nowhere
    (an outside pass)."""
    pages: dict[str, _Anchors] = {}
    for source in sorted((REPO / "docs").glob("*.md")):
        name = source.stem + ".html"
        async with memory_app.session.get(memory_app.url(f"/docs/dev/{name}")) as resp:
            assert resp.status == 200, name
            pages[name] = _Anchors()
            pages[name].feed(await resp.text())
    fragments = 0
    for name, page in pages.items():
        for link in page.links:
            target, _, fragment = link.partition("#")
            if not fragment or "://" in target or target.startswith("/"):
                continue
            target = target or name
            assert target in pages, (name, link)
            assert fragment in pages[target].ids, (name, link)
            fragments += 1
    assert fragments >= 5  # the test reads real links, not none
