"""The harness's figures, each readable without a caption.

- A fit written by `languini fit`: loss against compute on log-log axes, each group's points,
  its fitted curve (solid over the observed compute, dashed where it extrapolates), its
  bootstrap band, the predictions asked for, and each crossing with its interval. A
  `chinchilla` fit adds, per group, iso-loss contours of L(N, D) with the compute-optimal
  frontier N_opt(C), D_opt(C).
- A mix comparison (`languini mix compare`): test bits-per-byte overall and per domain, one
  bar group per mix, the spread over seeds as error bars.
- A DoReMi weight trajectory: each domain's weight against the proxy's step.

Figures are built on a bare `Figure` (no pyplot, no global backend state) and written
atomically, so a failed plot never leaves half a file behind.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from languini import scaling
from languini.errors import UserError
from languini.io import atomic_write_bytes, read_json
from languini.mix import selection_text

FORMATS = ("png", "svg", "pdf")


def plot_fit(fit_path: Path, out: Path) -> None:
    """Draw the fit at `fit_path` into `out`, whose extension picks the format."""
    fmt = Path(out).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UserError(f"--out must end in .png, .svg or .pdf, got '{Path(out).name}'.")
    result = read_json(fit_path, "Fit")
    if not (isinstance(result, dict) and result.get("law") in scaling.LAWS and result.get("groups")):
        raise UserError(f"{fit_path} is not a fit written by `languini fit`.")
    atomic_write_bytes(out, png_bytes(figure(result), fmt))


def png_bytes(fig: Figure, fmt: str = "png") -> bytes:
    """A figure's file content (PNG by default)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight")
    return buf.getvalue()


def figure(result: dict[str, Any]) -> Figure:
    """Loss against compute, and for chinchilla one contour panel per group beside it."""
    groups = result["groups"]
    contour_panels = len(groups) if result["law"] == "chinchilla" else 0
    fig = Figure(figsize=(7.5 + 6.0 * contour_panels, 5.2), layout="constrained")
    axes = fig.subplots(1, 1 + contour_panels, squeeze=False)[0]
    loss_vs_compute(axes[0], result)
    for i, (ax, name) in enumerate(zip(axes[1:], groups)):
        contours(fig, ax, result, name, f"C{i}")
    return fig


def _array(values: list[float | None]) -> np.ndarray:
    """fit.json writes a missing value (no optimum there) as null: NaN leaves a gap in a line."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _observed(compute: np.ndarray, group: dict[str, Any]) -> np.ndarray:
    lo, hi = group["observed_compute"]
    return (compute >= lo * (1 - 1e-9)) & (compute <= hi * (1 + 1e-9))


def _solid_where_observed(ax: Axes, xs: np.ndarray, ys: np.ndarray, observed: np.ndarray, color: str,
                          **style: Any) -> None:
    """A dashed line throughout, drawn over by a solid one where the data reach."""
    ax.plot(xs, ys, color=color, linestyle="--", **style)
    ax.plot(np.where(observed, xs, np.nan), ys, color=color, **style)


def _tex(v: float) -> str:
    """A number for mathtext: 4 significant digits, powers of ten only when needed."""
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}"
    exponent = int(np.floor(np.log10(abs(v))))
    return rf"{v / 10 ** exponent:.3g}\times10^{{{exponent}}}"


def _error(value: float, interval: list[float] | None) -> list[list[float]] | None:
    """Error-bar lengths; a percentile interval need not contain the point estimate, so clip at 0."""
    if interval is None:
        return None
    return [[max(value - interval[0], 0.0)], [max(interval[1] - value, 0.0)]]


def _law_label(law: str, p: dict[str, float]) -> str:
    if law == "power":
        return rf"$L = {_tex(p['E'])} + {_tex(p['A'])}\,C^{{-{_tex(p['alpha'])}}}$"
    return (rf"$L = {_tex(p['E'])} + {_tex(p['A'])}/N^{{{_tex(p['alpha'])}}}"
            rf" + {_tex(p['B'])}/D^{{{_tex(p['beta'])}}}$")


def _interval_text(interval: list[float] | None) -> str:
    return f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else ""


def loss_vs_compute(ax: Axes, result: dict[str, Any]) -> None:
    """Points, fitted curves with bands, predictions and crossings on log-log axes."""
    law = result["law"]
    for i, (name, g) in enumerate(result["groups"].items()):
        color = f"C{i}"
        ax.scatter([p["compute"] for p in g["points"]], [p["loss"] for p in g["points"]], color=color, zorder=3,
                   label=f"{name}: {_law_label(law, g['params'])}")
        if g["excluded"]:
            ax.scatter([p["compute"] for p in g["excluded"]], [p["loss"] for p in g["excluded"]], zorder=3,
                       facecolors="none", edgecolors=color, label=f"{name}: off the frontier (not fitted)")
        curve = g["curve"]
        xs, ys = _array(curve["compute"]), _array(curve["loss"])
        _solid_where_observed(ax, xs, ys, _observed(xs, g), color)
        if "low" in curve:
            ax.fill_between(xs, _array(curve["low"]), _array(curve["high"]), color=color, alpha=0.2, linewidth=0)
        for p in g["predictions"]:
            if p["loss"] is None:
                continue
            ax.errorbar([p["compute"]], [p["loss"]], yerr=_error(p["loss"], p["interval"]), fmt="D", color=color,
                        markerfacecolor="white", capsize=3, zorder=4)
    notes = []
    for x in result["intersections"]:
        a, b = x["groups"]
        if x["compute"] is None:
            notes.append(x["statement"])
            continue
        for earlier in x.get("all_crossings", [])[:-1]:  # the fitted curves meet here too, the order changes again later
            ax.axvline(earlier, color="0.5", linestyle=":", linewidth=0.8)
            ax.annotate(f"{a} = {b}\nalso at {earlier:.3g}", (earlier, 0.03), xycoords=("data", "axes fraction"),
                        ha="left", va="bottom", fontsize=7, color="0.4")
        ax.axvline(x["compute"], color="black", linestyle=":", linewidth=1)
        if x["interval"]:
            ax.axvspan(*x["interval"], color="black", alpha=0.08, linewidth=0)
        ax.annotate(f"{a} = {b}\nat {x['compute']:.3g}{_interval_text(x['interval'])}", (x["compute"], 0.97),
                    xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=8,
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    if notes:  # bottom left, under the curves' start; the legend sits top right, above their tails
        ax.text(0.02, 0.02, "\n".join(notes), transform=ax.transAxes, fontsize=7, va="bottom", wrap=True,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    compute_name = "C = 6·N·D" if law == "chinchilla" else "C"
    ax.set_xlabel(f"training compute {compute_name} ({result['compute_unit']})")
    ax.set_ylabel(result["loss_name"])
    bands = (f"; bands: {result['confidence']:.0%} bootstrap ({result['bootstrap']} resamples)"
             if result["bootstrap"] else "")
    curve = "curves: loss at the compute-optimal N, D; " if law == "chinchilla" else ""
    ax.set_title(f"{result['formula']}, Huber fit{bands}\n{curve}"
                 "solid: observed compute, dashed: extrapolated; diamonds: predictions", fontsize=9)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="upper right")


def contours(fig: Figure, ax: Axes, result: dict[str, Any], name: str, color: str) -> None:
    """Iso-loss contours of one group's L(N, D) with its points and compute-optimal frontier."""
    law, g = scaling.LAWS["chinchilla"], result["groups"][name]
    n_pts = np.array([p["params"] for p in g["points"]])
    d_pts = np.array([p["tokens"] for p in g["points"]])
    curve = g["curve"]
    n_front, d_front = _array(curve["params"]), _array(curve["tokens"])
    n_all = np.concatenate([n_pts, n_front[np.isfinite(n_front)]])
    d_all = np.concatenate([d_pts, d_front[np.isfinite(d_front)]])
    nn, dd = np.meshgrid(np.geomspace(n_all.min() / 2, n_all.max() * 2, 200),
                         np.geomspace(d_all.min() / 2, d_all.max() * 2, 200))
    surface = scaling.predict(law, g["params"], nn, dd)
    reducible = surface - g["params"]["E"]
    levels = g["params"]["E"] + np.geomspace(reducible.min(), reducible.max(), 12)
    norm = Normalize(levels[0], levels[-1])
    lines = ax.contour(nn, dd, surface, levels, cmap="viridis", norm=norm, linewidths=0.8)
    ax.clabel(lines, fmt="%.3g", fontsize=6)
    dots = ax.scatter(n_pts, d_pts, c=[p["loss"] for p in g["points"]], cmap="viridis", norm=norm,
                      edgecolors="black", linewidths=0.3, s=18, zorder=3, label="points (colour: loss)")
    fig.colorbar(dots, ax=ax, label=result["loss_name"])
    _solid_where_observed(ax, n_front, d_front, _observed(_array(curve["compute"]), g), color, linewidth=2)
    ax.plot([], [], color=color, linewidth=2, label=r"compute-optimal $N_{opt}(C), D_{opt}(C)$")
    for p in g["predictions"]:
        if p["params"] is None:
            continue
        ax.errorbar([p["params"]], [p["tokens"]], xerr=_error(p["params"], p["params_interval"]),
                    yerr=_error(p["tokens"], p["tokens_interval"]), fmt="D", color=color,
                    markerfacecolor="white", capsize=3, zorder=4, label=f"optimum at C = {p['compute']:.3g} FLOPs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("training tokens D")
    ax.set_title(f"{name}: iso-loss contours of {_law_label('chinchilla', g['params'])}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


def mix_comparison(table: dict[str, Any]) -> Figure:
    """Test bits-per-byte of each mix, overall and per domain: one bar group per mix (best
    first, as in the table), seed spread as error bars, the selection cost under each name."""
    rows = table["rows"]
    columns = ["all"] + sorted({d for r in rows for d in r["by_domain"]})
    fig = Figure(figsize=(max(6.0, 0.5 * len(rows) * len(columns) + 2), 4.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(columns)
    xs = np.arange(len(rows))
    several = max(r["seeds"] for r in rows) > 1
    for j, col in enumerate(columns):
        cells = [r["bits_per_byte"] if col == "all" else r["by_domain"].get(col) for r in rows]
        means = [c["mean"] if c else np.nan for c in cells]
        spreads = [c["spread"] if c else 0.0 for c in cells]
        ax.bar(xs + (j - (len(columns) - 1) / 2) * width, means, width, yerr=spreads if several else None, capsize=2,
               color="0.35" if col == "all" else f"C{j - 1}", label="whole test split" if col == "all" else col)
    ax.set_xticks(xs, [f"{r['mix']}\n{selection_text(r['selection'], 'no selection')}" for r in rows],
                  fontsize=8)
    ax.set_ylabel("test bits per byte (lower is better)")
    finite = [v for r in rows for v in [r["bits_per_byte"]["mean"], *(c["mean"] for c in r["by_domain"].values())]
              if np.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, max(finite) * 1.05)
    spread = f"; error bars: half-range over {max(r['seeds'] for r in rows)} seeds" if several else "; one seed"
    ax.set_title(f"Data mixes at equal compute (class {table.get('compute_class', '?')}){spread}", fontsize=9)
    ax.legend(fontsize=7, ncols=min(4, len(columns)), loc="upper right")
    ax.grid(True, axis="y", alpha=0.2)
    return fig


def doremi_trajectory(domains: list[str], weights: np.ndarray, natural: dict[str, float]) -> Figure:
    """Each domain's DoReMi weight against proxy step (solid), its average, which becomes the
    mix (dashed), and its natural share (dotted)."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    steps = np.arange(1, len(weights) + 1)
    for i, d in enumerate(domains):
        color = f"C{i}"
        ax.plot(steps, weights[:, i], color=color,
                label=f"{d} (mean {weights[:, i].mean():.3f}, natural {natural[d]:.3f})")
        ax.axhline(weights[:, i].mean(), color=color, linestyle="--", linewidth=1)
        ax.axhline(natural[d], color=color, linestyle=":", linewidth=1)
    ax.set(xlabel="proxy step", ylabel="domain weight α", ylim=(0, 1),
           title="DoReMi domain weights (dashed: average = the mix; dotted: natural share)")
    ax.legend(loc="best", fontsize="small")
    return fig
