"""HTML for /docs/spec (OpenAPI as a readable page) and /docs/dev (the markdown manual).

No CDN, no JavaScript. The manual goes through markdown-it-py's CommonMark parser (plus tables)
so nested lists keep their nesting — docs/reliability.md's lists of exceptions change meaning
when flattened. Raw HTML stays disabled: the pages are served to browsers, so a ``<script>`` in a
doc must arrive escaped, and markdown-it refuses ``javascript:``/``data:`` link targets.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

PAGE_RE = re.compile(r"^[A-Za-z0-9_-]+\.html$")
# A link to a sibling doc (``x.md`` or ``x.md#part``) points at its served page instead.
DOC_LINK_RE = re.compile(r"^([A-Za-z0-9_-]+)\.md(#.*)?$")
# GitHub's heading ids: the heading's text, lower case, without what is not a word character, a
# hyphen or a space, spaces turned into hyphens; a repeated one gets -1, -2, ...
SLUG_DROP_RE = re.compile(r"[^\w\- ]")
SLUG_PARTS = frozenset({"text", "code_inline"})
TABLE_TOKENS = frozenset(
    f"{tag}_{side}" for tag in ("thead", "tbody", "tr", "th", "td") for side in ("open", "close")
)
STYLE = """
body{font-family:system-ui,sans-serif;margin:0;display:flex;color:#222}
nav{width:14rem;background:#f4f4f6;padding:1rem;min-height:100vh}
nav a{display:block;padding:.2rem 0;color:#2456a6;text-decoration:none}
main{padding:1rem 2rem;max-width:60rem}
code,pre{background:#f2f2f2;border-radius:3px}pre{padding:.6rem;overflow:auto}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
blockquote{border-left:3px solid #ccc;margin:0;padding-left:1rem;color:#555}
.method{font-weight:bold;text-transform:uppercase;margin-right:.5rem}
"""


PACKAGE = Path(__file__).resolve().parents[2]
PACKAGED_MANUAL = PACKAGE / "manual"
CHECKOUT_DOCS = PACKAGE.parent / "docs"


def docs_dir() -> Path:
    """The manual's folder: ``docs_dir`` setting, else the copy in the package, else ./docs.

    A wheel carries the manual as ``luna_sender/manual`` (setup.py copies docs/*.md at build
    time); an editable install or a plain checkout has none and reads the checkout's docs/.
    The packaged copy wins so a ``docs`` folder that happens to sit beside site-packages is never
    served by mistake.
    """
    configured = os.environ.get("LUNA_SENDER_DOCS_DIR")
    if configured:
        return Path(configured)
    if (PACKAGED_MANUAL / "index.md").is_file():
        return PACKAGED_MANUAL
    return CHECKOUT_DOCS


def _rewrite_doc_links(state: StateCore) -> None:
    """``x.md(#part)`` -> ``x.html(#part)``: the sources link each other by file name."""
    for block in state.tokens:
        for token in block.children or ():
            href = token.attrGet("href") if token.type == "link_open" else None
            if isinstance(href, str):
                token.attrSet("href", DOC_LINK_RE.sub(r"\1.html\2", href))


def _heading_ids(state: StateCore) -> None:
    """Every heading gets the id GitHub gives it, which is what the docs' ``#part`` links name:
    the served pages had none, and a dozen links went nowhere (an outside pass)."""
    seen: dict[str, int] = {}
    tokens = state.tokens
    for i, token in enumerate(tokens):
        if token.type != "heading_open":
            continue
        words = (c.content for c in tokens[i + 1].children or () if c.type in SLUG_PARTS)
        slug = SLUG_DROP_RE.sub("", "".join(words).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        token.attrSet("id", f"{slug}-{count}" if count else slug)


def _compact_tables(state: StateCore) -> None:
    """Tables as ``<table><tr><th>..`` on one line, without thead/tbody: the markup the manual
    has always been served with (and its tests read)."""
    for token in state.tokens:
        if token.type in TABLE_TOKENS:
            token.block = False  # no newline between the cells
            token.hidden = token.tag in ("thead", "tbody")


def _fence(
    renderer: RendererHTML, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """A code block without the trailing newline markdown-it keeps inside ``<code>``."""
    token = tokens[idx]
    language = token.info.strip().split(" ")[0]
    attrs = f' class="language-{escapeHtml(language)}"' if language else ""
    code = token.content.removesuffix("\n")
    return f"<pre><code{attrs}>{escapeHtml(code)}</code></pre>\n"


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.core.ruler.push("doc_links", _rewrite_doc_links)
    md.core.ruler.push("compact_tables", _compact_tables)
    md.core.ruler.push("heading_ids", _heading_ids)
    md.add_render_rule("fence", _fence)
    return md


MARKDOWN = _parser()


def markdown_to_html(text: str) -> str:
    html_text: str = MARKDOWN.render(text)
    return html_text


def _page(title: str, body: str, nav: str = "") -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body>{nav}<main>{body}</main></body></html>"
    )


def render_dev_page(page: str, folder: Path | None = None) -> str | None:
    """``index.html`` -> docs/index.md, ``x.html`` -> docs/x.md; None for anything else."""
    if not PAGE_RE.fullmatch(page):
        return None
    folder = folder or docs_dir()
    source = folder / (page[: -len(".html")] + ".md")
    if not source.is_file():
        return None
    pages = sorted(p.stem for p in folder.glob("*.md"))
    nav = (
        "<nav><strong>luna-sender</strong>"
        + "".join(
            f'<a href="{name}.html">{html.escape(name)}</a>'
            for name in (["index"] + [p for p in pages if p != "index"])
        )
        + '<a href="/docs/spec">API</a></nav>'
    )
    return _page(f"luna-sender: {source.stem}", markdown_to_html(source.read_text("utf-8")), nav)


def render_openapi_html(doc: dict[str, Any]) -> str:
    info = doc.get("info", {})
    parts = [
        f"<h1>{html.escape(info.get('title', 'API'))} {html.escape(info.get('version', ''))}"
        f"</h1><p>{html.escape(info.get('description', ''))}</p>"
    ]
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            summary = html.escape(op.get("summary", ""))
            parts.append(
                f"<h2><span class='method'>{html.escape(method)}</span>"
                f"<code>{html.escape(path)}</code></h2><p>{summary}</p>"
            )
            params = op.get("parameters", [])
            if params:
                rows = "".join(
                    f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{html.escape(p['in'])}"
                    f"</td><td>{'yes' if p.get('required') else ''}</td>"
                    f"<td>{html.escape(p.get('description', ''))}</td></tr>"
                    for p in params
                )
                parts.append(
                    "<table><tr><th>parameter</th><th>in</th><th>required</th>"
                    f"<th>description</th></tr>{rows}</table>"
                )
            responses = op.get("responses", {})
            parts.append(
                "<ul>"
                + "".join(
                    f"<li><strong>{html.escape(str(code))}</strong> "
                    f"{html.escape(resp.get('description', ''))}</li>"
                    for code, resp in responses.items()
                )
                + "</ul>"
            )
    return _page(info.get("title", "API"), "\n".join(parts))
