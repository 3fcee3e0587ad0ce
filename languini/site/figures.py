"""The site's figures as inline SVG: a fit (as `languini plot` draws it), a run's loss
curves, and a mix comparison's bars (as `mix compare` draws them)."""

from __future__ import annotations

from html import escape
from typing import Any, Callable, Sequence

from languini.mix import selection_text
from languini.site.svg import Plot, attrs, color


def law_text(params: dict[str, float]) -> str:
    """A power law's fitted form in plain text: L = E + A·C^−α."""
    return f"L = {params['E']:.4g} + {params['A']:.4g}·C^−{params['alpha']:.4g}"


def fit_figure(fit: dict[str, Any], ident: str, link: Callable[[str], tuple[str, str | None]]) -> str:
    """Loss against compute on log-log axes: each group's points (linked to their runs; hollow
    where beaten at their compute level), its fitted curve (dashed, solid over the observed
    compute) in its bootstrap band, its predictions with intervals, and the crossings.

    `link(source)` gives a point's run name and the href of its page."""
    groups = fit["groups"]
    xs: list[float | None] = []
    ys: list[float | None] = []
    for g in groups.values():
        xs += g["curve"]["compute"] + [p["compute"] for p in g["points"] + g["excluded"]]
        ys += g["curve"]["loss"] + [p["loss"] for p in g["points"] + g["excluded"]]
        ys += [p["loss"] for p in g["predictions"]]
    plot = Plot.over(xs, ys, ident, xlog=True, ylog=True)
    for i, (name, g) in enumerate(groups.items()):
        c, curve = color(i), g["curve"]
        if "low" in curve:
            plot.band(curve["compute"], curve["low"], curve["high"], c, data_group=name)
        plot.line(curve["compute"], curve["loss"], c, class_="curve", dashed=True, data_group=name)
        lo, hi = g["observed_compute"]
        inside = [y if lo * (1 - 1e-9) <= x <= hi * (1 + 1e-9) else None for x, y in zip(curve["compute"], curve["loss"])]
        plot.line(curve["compute"], inside, c, class_="observed", data_group=name)
        for p, hollow in [(p, False) for p in g["points"]] + [(p, True) for p in g["excluded"]]:
            run, href = link(p.get("source", ""))
            off = ", off the frontier (not fitted)" if hollow else ""
            plot.marker(p["compute"], p["loss"], c, hollow=hollow, href=href, data_group=name,
                        label=f"{run} ({name}): {p['loss']:.4f} at {p['compute']:.4g} {fit['compute_unit']}{off}")
        for p in g["predictions"]:
            if p["loss"] is None:
                continue
            if p["interval"]:
                plot.errorbar(p["compute"], *p["interval"], c)
            interval = f" [{p['interval'][0]:.4g}, {p['interval'][1]:.4g}]" if p["interval"] else ""
            plot.marker(p["compute"], p["loss"], c, hollow=True, shape="diamond", class_="prediction",
                        label=f"{name} predicted at {p['compute']:.4g}: {p['loss']:.4f}{interval}")
    for x in fit["intersections"]:
        if x["compute"] is None:
            continue
        if x["interval"]:
            plot.vspan(*x["interval"], class_="crossing-interval")
        for earlier in x.get("all_crossings", [])[:-1]:
            plot.vline(earlier, class_="crossing-earlier")
        plot.vline(x["compute"], class_="crossing", label=f"{' = '.join(x['groups'])} at {x['compute']:.3g}")
    bands = f", {fit['confidence']:.0%} bootstrap bands" if fit["bootstrap"] else ""
    return plot.svg(f"{fit['formula']} fitted per group{bands}", f"training compute C ({fit['compute_unit']})",
                    fit["loss_name"])


def line_figure(series: Sequence[dict[str, Any]], ident: str, x_label: str, y_label: str, title: str) -> str:
    """Lines (with markers where a series asks for them), one per series of {name, x, y, markers}."""
    plot = Plot.over([v for s in series for v in s["x"]], [v for s in series for v in s["y"]], ident,
                     width=560, height=320)
    for i, s in enumerate(series):
        plot.line(s["x"], s["y"], color(i), class_="series", width=1.6, data_series=s["name"])
        if s.get("markers"):
            for x, y in zip(s["x"], s["y"]):
                plot.marker(x, y, color(i), label=f"{s['name']}: {y:.4f} at {x:.4g}", class_="point",
                            data_series=s["name"])
    return plot.svg(title, x_label, y_label)


def _bar_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(column, colour) of a mix comparison's bars: the whole split in grey, then each domain."""
    domains = sorted({d for r in rows for d in r["by_domain"]})
    return [("all", "#595959")] + [(d, color(j)) for j, d in enumerate(domains)]


def mix_legend(table: dict[str, Any]) -> str:
    return legend([(c, "whole test split" if col == "all" else col) for col, c in _bar_columns(table["rows"])])


def mix_bars(table: dict[str, Any], ident: str) -> str:
    """Test bits per byte of each mix (best first), whole split and per domain, seed spread as
    error bars, each mix's selection cost under its name."""
    rows = table["rows"]
    columns = _bar_columns(rows)
    cells = [[r["bits_per_byte"] if col == "all" else r["by_domain"].get(col) for col, _ in columns] for r in rows]
    values = [c["mean"] for row in cells for c in row if c]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    width = max(480, 60 + len(rows) * (len(columns) * 26 + 40))
    plot = Plot.over([0, 1], [lo * 0.9, hi * 1.05], ident, width=width, height=340)
    slot = (plot.x.end - plot.x.start) / len(rows)
    bar = slot * 0.8 / len(columns)
    several = max(r["seeds"] for r in rows) > 1
    below = []
    for i, (r, row) in enumerate(zip(rows, cells)):
        left = plot.x.start + i * slot + slot * 0.1
        for j, ((col, fill), cell) in enumerate(zip(columns, row)):
            if not cell:
                continue
            spread = f" ± {cell['spread']:.4f} over {r['seeds']} seeds" if several else ""
            x0 = left + j * bar
            plot.rect(x0, x0 + bar * 0.92, cell["mean"], fill,
                      label=f"{r['mix']}, {'whole test split' if col == 'all' else col}: {cell['mean']:.4f}{spread}")
            if several:
                plot.parts.append(_bar_error(plot, x0 + bar * 0.46, cell))
        centre = plot.x.start + (i + 0.5) * slot
        below.append(f"<text{attrs(class_='group-label', x=f'{centre:.2f}', y=plot.y.start + 16, text_anchor='middle')}>"
                     f"{escape(r['mix'])}</text>")
        below.append(f"<text{attrs(class_='group-note', x=f'{centre:.2f}', y=plot.y.start + 29, text_anchor='middle')}>"
                     f"{escape(selection_text(r['selection'], 'no selection'))}</text>")
    spread = f"; error bars: half-range over {max(r['seeds'] for r in rows)} seeds" if several else "; one seed"
    title = f"Data mixes at equal compute (class {table.get('compute_class', '?')}){spread}"
    return plot.svg(title, "", "test bits per byte (lower is better)", x_ticks=False, below=below)


def _bar_error(plot: Plot, x: float, cell: dict[str, float]) -> str:
    top, bottom = plot.y(cell["mean"] + cell["spread"]), plot.y(cell["mean"] - cell["spread"])
    return f"<path{attrs(class_='errorbar', d=f'M{x:.2f} {top:.2f} V{bottom:.2f}', stroke='#222', stroke_width=1.2)}/>"


def legend(items: Sequence[tuple[str, str]]) -> str:
    """An HTML legend: a colour swatch and a text per item, in the figures' colour order."""
    return "<ul class=\"legend\">" + "".join(
        f"<li><span class=\"swatch\" style=\"background:{c}\"></span>{escape(text)}</li>" for c, text in items) + "</ul>"
