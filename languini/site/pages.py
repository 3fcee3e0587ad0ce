"""The index (leaderboards, scaling fits, invalid entries, mix comparisons) and the mix
comparison pages."""

from __future__ import annotations

from typing import Any

from languini.mix import selection_text
from languini.site.collect import Board, Comparison, Scaling, Site, SiteEntry
from languini.site.figures import fit_figure, law_text, legend, mix_bars, mix_legend
from languini.site.html import esc, figure, identity_heading, integer, layout, link, number, sortable, table
from languini.site.svg import color


def class_size(budget: dict[str, Any]) -> str:
    """What a class buys, from the budget that was checked: hours on a reference, or FLOPs."""
    if budget.get("hours") is not None:
        return f"{budget['hours']:.4g} h on {budget.get('reference')}"
    return f"{budget['flops']:.3g} FLOPs" if budget.get("flops") is not None else ""


def board_table(board: Board) -> str:
    hours = board.budget.get("hours") is not None
    compute = f"reference-hours ({board.budget.get('reference')})" if hours else "FLOPs (6·N·D)"
    head = ["#", "entry", "family", "size", "parameters", "tokens", compute, "device", "precision",
            "test bits/byte", "char perplexity", "data selection"]
    rows = []
    for rank, (row, e) in enumerate(board.rows, 1):
        cert = e.file("throughput.json") or {}
        warnings = e.result.warnings  # type: ignore[union-attr]  # a ranked entry's result was read
        flag = f' <span class="warn" title="{esc("; ".join(map(str, warnings)))}">⚠</span>' if warnings else ""
        rows.append([(str(rank), rank), (link(e.page, e.name) + flag, e.name), esc(row["family"]), esc(row["config"]),
                     (integer(row["params"]), row["params"]), (integer(row["tokens_trained"]), row["tokens_trained"]),
                     sortable(row["compute"]), esc(row["device"]), esc(cert.get("dtype", "–")),
                     sortable(row["bits_per_byte"], ".4f"), sortable(row["char_perplexity"], ".3f"),
                     esc(selection_text(row["selection"]))])
    return table(head, rows, cls="sortable filterable leaderboard", numeric=(0, 4, 5, 6, 9, 10),
                 ident=f"board-{board.compute_class}-{board.identity[:12]}".rstrip("-"))


def _with_interval(value: float | None, interval: list[float] | None) -> str:
    text = number(value)
    return text + (f' <span class="interval">[{number(interval[0])}, {number(interval[1])}]</span>' if interval else "")


def fit_tables(fit: dict[str, Any]) -> str:
    names = ("E", "A", "alpha")
    rows = []
    for i, (name, g) in enumerate(fit["groups"].items()):
        iv = g["intervals"] or {}
        rows.append([f'<span class="swatch" style="background:{color(i)}"></span>{esc(name)}', str(len(g["points"])),
                     *(_with_interval(g["params"][k], iv.get(k)) for k in names)])
    out = [table(["group", "points", "E", "A", "α"], rows, cls="fit", numeric=(1,))]
    out += [f'<p class="note">{esc(name)}: no intervals, {esc(g["bootstrap"]["skipped"])}.</p>'
            for name, g in fit["groups"].items() if "skipped" in (g["bootstrap"] or {})]
    predictions = [[esc(name), number(p["compute"]), _with_interval(p["loss"], p["interval"])]
                   for name, g in fit["groups"].items() for p in g["predictions"]]
    if predictions:
        out.append(table(["group", f"compute ({fit['compute_unit']})", "predicted loss"], predictions, cls="fit",
                         numeric=(1, 2)))
    out += [f"<p class=\"statement\">{esc(x['statement'])}</p>" for x in fit["intersections"]]
    return "\n".join(out)


def scaling_block(s: Scaling, site: Site) -> str:
    out = [f'<h3 id="scaling-{esc(s.name)}">Scaling: loss against compute ({esc(s.reference)})</h3>']
    out += [f'<p class="note">{esc(n)}</p>' for n in s.notes]
    if s.fit is None:
        return "\n".join(out)
    pages = {e.name: e.page for e in site.entries}
    svg = fit_figure(s.fit, f"fit-{s.name}", lambda source: (source, pages.get(source)))
    bands = (f"; shaded: {s.fit['confidence']:.0%} bootstrap bands ({s.fit['bootstrap']} resamples)"
             if any("low" in g["curve"] for g in s.fit["groups"].values()) else "")
    caption = (f"{esc(s.fit['formula'])} fitted to each family's frontier (the best entry of each class){esc(bands)}. "
               "Solid over the observed compute, dashed where extrapolated; hollow points were beaten in their class; "
               "diamonds are predictions; dotted lines are crossings. "
               + link(f"fits/{s.name}.json", "fit.json") + " (draw it with <code>languini plot</code>)."
               + legend([(color(i), f"{name}: {law_text(g['params'])}") for i, (name, g) in
                         enumerate(s.fit["groups"].items())]))
    out.append(f'<div class="scaling">{figure(svg, caption)}<div class="fit-tables">{fit_tables(s.fit)}</div></div>')
    return "\n".join(out)


def invalid_table(entries: list[SiteEntry]) -> str:
    rows = [[link(e.page, e.name) if e.entry.path.is_dir() else esc(e.name),
             "<ul>" + "".join(f"<li>{esc(p)}</li>" for p in e.reasons) + "</ul>"] for e in entries]
    return table(["entry", "why it is not ranked"], rows, cls="filterable invalid")


def comparisons_table(comparisons: list[Comparison]) -> str:
    rows = []
    for c in comparisons:
        best = c.table["rows"][0]
        rows.append([link(f"compare/{c.name}.html", c.name), esc(c.table.get("compute_class", "–")),
                     esc(", ".join(r["mix"] for r in c.table["rows"])),
                     f"{esc(best['mix'])} ({number(best['bits_per_byte']['mean'], '.4f')})"])
    return table(["comparison", "class", "mixes", "best (test bits/byte)"], rows, cls="comparisons")


def index(site: Site) -> str:
    valid = sum(e.entry.rankable for e in site.entries)
    out = [f"<h1>{esc(site.title)}</h1>",
           f'<p class="lede">{len(site.entries)} entr{"y" if len(site.entries) == 1 else "ies"}: {valid} ranked, '
           f"{len(site.invalid)} invalid. Each table is one compute class on one evaluation: entries got the same "
           "compute and were scored on the same test text, best test bits per byte first. Click a column to sort, "
           "type to filter.</p>",
           '<input id="filter" type="search" placeholder="Filter rows: family, device, entry…" aria-label="Filter rows">']
    identities = sorted({(b.identity, b.dataset) for b in site.boards} | {(s.identity, s.dataset) for s in site.scalings})
    for ident, dataset in identities:
        out.append(f'<section class="evaluation"><h2>{identity_heading(ident, dataset)}</h2>')
        for board in (b for b in site.boards if (b.identity, b.dataset) == (ident, dataset)):
            out.append(f'<h3>Class {esc(board.compute_class)} <span class="size">{esc(class_size(board.budget))}</span></h3>')
            out.append(board_table(board))
        out += [scaling_block(s, site) for s in site.scalings if (s.identity, s.dataset) == (ident, dataset)]
        out.append("</section>")
    if site.invalid:
        out += ['<section id="invalid"><h2>Invalid entries</h2>', invalid_table(site.invalid), "</section>"]
    if site.comparisons:
        out += ['<section id="mixes"><h2>Data mixes at equal compute</h2>', comparisons_table(site.comparisons),
                "</section>"]
    return layout(site.title, site.title, "\n".join(out), 0)


def comparison_page(site: Site, c: Comparison) -> str:
    rows = c.table["rows"]
    domains = sorted({d for r in rows for d in r["by_domain"]})

    def spread(cell: dict[str, float] | None) -> tuple[str, Any]:
        if not cell:
            return "–", ""
        return f"{cell['mean']:.4f} ± {cell['spread']:.4f}", cell["mean"]

    body = [[esc(r["mix"]), (integer(r["tokens"]), r["tokens"]), str(r["seeds"]), spread(r["bits_per_byte"]),
             *(spread(r["by_domain"].get(d)) for d in domains), esc(selection_text(r["selection"])),
             esc(", ".join(f"{k} {v:.3f}" for k, v in sorted((r.get("weights") or {}).items())) or "–")]
            for r in rows]
    head = ["mix", "tokens", "seeds", "test bits/byte", *domains, "selection cost", "weights"]
    caption = ("One bar group per mix, best first: the whole test split and each domain. "
               + link(f"{c.name}/compare.json", "compare.json") + mix_legend(c.table))
    parts = [f"<h1>Mix comparison {esc(c.name)}</h1>",
             f"<p class=\"lede\">Every mix trained with one throughput certificate, so one token budget, in class "
             f"{esc(c.table.get('compute_class', '?'))}, and scored on the same test text; mean ± half-range over "
             "seeds.</p>",
             table(head, body, cls="sortable", numeric=tuple(range(1, 4 + len(domains)))),
             figure(mix_bars(c.table, f"bars-{c.name}"), caption, "Hover over a bar for its value.")]
    return layout(f"Mix comparison {c.name}", site.title, "\n".join(parts), 1)

