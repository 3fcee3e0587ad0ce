"""HTML building blocks shared by the site's pages: the layout, tables, numbers.

Every value from a run is escaped here or by the caller; a cell is either ready HTML or
(HTML, sort key), the key being what the page's script sorts that column by.
"""

from __future__ import annotations

from html import escape
from typing import Any, Iterable, Sequence

Cell = str | tuple[str, Any]


def esc(value: Any) -> str:
    return escape(str(value))


def integer(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "–"


def number(v: Any, fmt: str = ".4g") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "–"


def sortable(v: Any, fmt: str = ".4g") -> tuple[str, Any]:
    """A numeric cell that sorts by its exact value (missing values sort last)."""
    return number(v, fmt), (v if isinstance(v, (int, float)) and not isinstance(v, bool) else "")


def link(href: str, text: str) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def short(identity: str) -> str:
    """An evaluation identity as headings show it: its first 12 hex digits."""
    return identity[:12]


def identity_heading(identity: str, dataset: str) -> str:
    if not identity and not dataset:
        return "Results"
    parts = [f"dataset {esc(dataset)}" if dataset else "", f"evaluation <code>{esc(short(identity))}</code>"
             if identity else ""]
    return "Evaluated on " + " · ".join(p for p in parts if p)


def table(head: Sequence[str], rows: Iterable[Sequence[Cell]], *, cls: str = "", numeric: Sequence[int] = (),
          ident: str | None = None) -> str:
    """A table; columns in `numeric` are right-aligned; `cls` "sortable filterable" arms the script."""
    def cell(i: int, c: Cell, tag: str = "td") -> str:
        klass = ' class="num"' if i in numeric else ""
        if isinstance(c, tuple):
            return f'<{tag}{klass} data-sort="{esc(c[1])}">{c[0]}</{tag}>'
        return f"<{tag}{klass}>{c}</{tag}>"

    head_html = "".join(cell(i, esc(h), "th") for i, h in enumerate(head))
    body = "\n".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    attrs = (f' id="{esc(ident)}"' if ident else "") + (f' class="{esc(cls)}"' if cls else "")
    return f"<table{attrs}>\n<thead><tr>{head_html}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def pairs(items: Iterable[tuple[str, str]]) -> str:
    """A two-column table of names and ready HTML values."""
    return table(["", ""], ([esc(k), v] for k, v in items), cls="pairs")


def figure(svg: str, caption: str, hint: str = "Hover over a point to name its run.") -> str:
    """An SVG figure with a caption and a read-out line (showing `hint` until the script fills
    it with the label of the mark under the pointer)."""
    return (f'<figure>\n{svg}\n<figcaption>{caption}<div class="readout" aria-live="polite">'
            f"{esc(hint)}</div></figcaption>\n</figure>")


def layout(title: str, site_title: str, body: str, depth: int) -> str:
    """A page of the site; `depth` folders below the index (links are relative, so the site
    works from disk and from any static host)."""
    up = "../" * depth
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="languini site">
<title>{esc(title)}</title>
<link rel="stylesheet" href="{up}assets/site.css">
</head>
<body>
<header><a href="{up}index.html">{esc(site_title)}</a></header>
<main>
{body}
</main>
<footer>Built by <code>languini site</code> from checked submissions; every number is recomputed from the files linked on each entry's page.</footer>
<script src="{up}assets/site.js"></script>
</body>
</html>
"""
