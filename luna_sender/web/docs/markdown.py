"""HTML for /docs/spec (OpenAPI as a readable page) and /docs/dev (the markdown manual).

No CDN, no JavaScript, no dependency: a small, escaping markdown subset (headings, paragraphs,
lists, tables, fenced code, quotes, inline code/bold/italic/links) is all the manual uses.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

PAGE_RE = re.compile(r"^[A-Za-z0-9_-]+\.html$")
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


def _inline(text: str) -> str:
    out = html.escape(text, quote=True)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?!\w)", r"<em>\1</em>", out)

    def link(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if target.startswith(("javascript:", "data:")):
            target = "#"
        target = re.sub(r"^([A-Za-z0-9_-]+)\.md(#.*)?$", r"\1.html\2", target)
        return f'<a href="{target}">{label}</a>'

    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", link, out)


def markdown_to_html(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            code: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                code.append(lines[i])
                i += 1
            out.append("<pre><code>" + html.escape("\n".join(code)) + "</code></pre>")
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading:
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            body = "".join(
                "<tr>"
                + "".join(
                    f"<{'th' if n == 0 else 'td'}>{_inline(c)}</{'th' if n == 0 else 'td'}>"
                    for c in row
                )
                + "</tr>"
                for n, row in enumerate(rows)
            )
            out.append(f"<table>{body}</table>")
            continue
        if re.match(r"^\s*([-*]|\d+\.)\s+", line):
            ordered = bool(re.match(r"^\s*\d+\.", line))
            items = []
            while i < len(lines) and (
                re.match(r"^\s*([-*]|\d+\.)\s+", lines[i]) or (lines[i].startswith("  ") and items)
            ):
                if re.match(r"^\s*([-*]|\d+\.)\s+", lines[i]):
                    items.append(re.sub(r"^\s*([-*]|\d+\.)\s+", "", lines[i]))
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + f"</{tag}>")
            continue
        if line.startswith(">"):
            quote = []
            while i < len(lines) and lines[i].startswith(">"):
                quote.append(lines[i].lstrip("> "))
                i += 1
            out.append(f"<blockquote>{_inline(' '.join(quote))}</blockquote>")
            continue
        if not line.strip():
            i += 1
            continue
        para = []
        while (
            i < len(lines)
            and lines[i].strip()
            and not re.match(r"^(#{1,6}\s|```|\||>|\s*([-*]|\d+\.)\s)", lines[i])
        ):
            para.append(lines[i])
            i += 1
        out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def _page(title: str, body: str, nav: str = "") -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body>{nav}<main>{body}</main></body></html>"
    )


def render_dev_page(page: str, folder: Path | None = None) -> str | None:
    """``index.html`` -> docs/index.md, ``x.html`` -> docs/x.md; None for anything else."""
    if not PAGE_RE.match(page):
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
