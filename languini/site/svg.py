"""A small SVG plotter: scales, ticks, lines, bands, markers and bars, drawn as text.

The site's figures are inline SVG written by this module rather than by matplotlib, so that a
page is one self-contained file whose bytes depend only on the numbers drawn (matplotlib's
SVG carries generated ids and font metrics that change between versions), and so that each
point can carry its run's name and a link. Coordinates are rounded to 0.01 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Iterable, Sequence

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # matplotlib's tab10, so the site's colours match `languini plot`'s


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _px(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def tick_label(v: float) -> str:
    """A tick's text: three significant digits, powers of ten (1e+06 style) where digits get long."""
    if v == 0:
        return "0"
    if v == round(v) and abs(v) < 1e6:
        return f"{int(round(v)):,}"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.3g}"
    mantissa, exponent = f"{v:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def finite(values: Iterable[float | None], positive: bool = False) -> list[float]:
    """The values a scale can place: numbers, finite, and positive on a log scale."""
    return [float(v) for v in values if v is not None and math.isfinite(v) and (v > 0 or not positive)]


def _linear_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = [round((first + i) * step, 12) for i in range(count * 3)]
    return [t for t in ticks if lo - 1e-12 * abs(step) <= t <= hi + 1e-12 * abs(step)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Decades where the range spans several, 1-2-5 steps where it spans about one, and plain
    linear steps where it spans less (a loss axis from 2.6 to 3.3 has no decade in it)."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = [10.0 ** k for k in range(k0, k1 + 1) if lo <= 10.0 ** k <= hi]
    if len(decades) >= 3:
        stride = max(1, math.ceil(len(decades) / 8))
        return decades[::stride]
    steps = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]
    return steps if len(steps) >= 3 else _linear_ticks(lo, hi)


@dataclass(frozen=True)
class Scale:
    """Data values [lo, hi] onto pixels [start, end], linear or logarithmic."""

    lo: float
    hi: float
    log: bool
    start: float
    end: float

    @classmethod
    def over(cls, values: Iterable[float | None], log: bool, start: float, end: float, pad: float = 0.04) -> "Scale":
        """A scale spanning `values` with a margin of `pad` of the span on each side."""
        vals = finite(values, positive=log)
        if not vals:
            vals = [1.0, 10.0] if log else [0.0, 1.0]
        lo, hi = min(vals), max(vals)
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        lo, hi = lo - pad * (hi - lo), hi + pad * (hi - lo)
        return cls(10 ** lo if log else lo, 10 ** hi if log else hi, log, start, end)

    def _t(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def __call__(self, v: float) -> float:
        a, b = self._t(self.lo), self._t(self.hi)
        return self.start + (self._t(v) - a) / (b - a) * (self.end - self.start)

    def contains(self, v: float | None) -> bool:
        return v is not None and math.isfinite(v) and (v > 0 or not self.log) and self.lo <= v <= self.hi

    def ticks(self) -> list[float]:
        return _log_ticks(self.lo, self.hi) if self.log else _linear_ticks(self.lo, self.hi)


def attrs(**values: object) -> str:
    """XML attributes, escaped, in the order given; None leaves one out; `class_` is `class`."""
    return "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for k, v in values.items()
                   if v is not None)


@dataclass
class Plot:
    """One panel: axes at the left and bottom, a clipped plotting area, and the parts drawn."""

    x: Scale
    y: Scale
    ident: str
    width: int = 720
    height: int = 400
    parts: list[str] = field(default_factory=list)

    LEFT, RIGHT, TOP, BOTTOM = 64, 20, 14, 46

    @classmethod
    def over(cls, xs: Iterable[float | None], ys: Iterable[float | None], ident: str, *, xlog: bool = False,
             ylog: bool = False, width: int = 720, height: int = 400) -> "Plot":
        x = Scale.over(xs, xlog, cls.LEFT, width - cls.RIGHT, pad=0.03)
        y = Scale.over(ys, ylog, height - cls.BOTTOM, cls.TOP, pad=0.06)
        return cls(x, y, ident, width, height)

    def _segments(self, xs: Sequence[float | None], ys: Sequence[float | None]) -> list[list[tuple[float, float]]]:
        """Runs of drawable points; a missing or non-positive (on a log scale) value breaks the line."""
        runs: list[list[tuple[float, float]]] = [[]]
        for x, y in zip(xs, ys):
            ok = all(v is not None and math.isfinite(v) and (v > 0 or not s.log) for v, s in ((x, self.x), (y, self.y)))
            if ok:
                runs[-1].append((self.x(x), self.y(y)))
            elif runs[-1]:
                runs.append([])
        return [r for r in runs if r]

    def line(self, xs: Sequence[float | None], ys: Sequence[float | None], stroke: str, *, class_: str,
             dashed: bool = False, width: float = 2, **extra: object) -> None:
        d = " ".join("M" + " L".join(f"{_px(a)} {_px(b)}" for a, b in run) for run in self._segments(xs, ys))
        if d:
            self.parts.append(f"<path{attrs(class_=class_, d=d, fill='none', stroke=stroke, stroke_width=width, stroke_dasharray='6 4' if dashed else None, **extra)}/>")

    def band(self, xs: Sequence[float | None], low: Sequence[float | None], high: Sequence[float | None],
             fill: str, *, class_: str = "band", **extra: object) -> None:
        """The area between `low` and `high`; where either is missing the band has a gap."""
        for run in self._band_runs(xs, low, high):
            upper = " L".join(f"{_px(self.x(x))} {_px(self.y(h))}" for x, _, h in run)
            lower = " L".join(f"{_px(self.x(x))} {_px(self.y(lo))}" for x, lo, _ in reversed(run))
            self.parts.append(f"<path{attrs(class_=class_, d=f'M{upper} L{lower} Z', fill=fill, fill_opacity='0.18', stroke='none', **extra)}/>")

    def _band_runs(self, xs: Sequence[float | None], low: Sequence[float | None],
                   high: Sequence[float | None]) -> list[list[tuple[float, float, float]]]:
        runs: list[list[tuple[float, float, float]]] = [[]]
        for x, lo, hi in zip(xs, low, high):
            values = finite([x, lo, hi], positive=self.y.log or self.x.log)
            if len(values) == 3:
                runs[-1].append((float(x), float(lo), float(hi)))  # type: ignore[arg-type]
            elif runs[-1]:
                runs.append([])
        return [r for r in runs if len(r) > 1]

    def marker(self, x: float, y: float, fill: str, *, label: str, href: str | None = None, hollow: bool = False,
               shape: str = "circle", class_: str = "point", **extra: object) -> None:
        """A point with its name as a tooltip (<title>) and as `data-label` for the page's read-out."""
        if not (self.x.contains(x) and self.y.contains(y)):
            return
        cx, cy = _px(self.x(x)), _px(self.y(y))
        paint = {"fill": "white" if hollow else fill, "stroke": fill, "stroke_width": 1.5}
        if shape == "diamond":
            body = f"<path{attrs(d=f'M{cx} {float(cy) - 6:.2f} l6 6 l-6 6 l-6 -6 Z', **paint)}/>"
        else:
            body = f"<circle{attrs(cx=cx, cy=cy, r=4.5, **paint)}/>"
        mark = f"<g{attrs(class_=class_, data_label=label, **extra)}>{body}<title>{escape(label)}</title></g>"
        self.parts.append(f"<a{attrs(href=href)}>{mark}</a>" if href else mark)

    def errorbar(self, x: float, low: float | None, high: float | None, stroke: str) -> None:
        if low is None or high is None or not self.x.contains(x):
            return
        lo, hi = (min(max(v, self.y.lo), self.y.hi) for v in (low, high))
        cx = _px(self.x(x))
        self.parts.append(f"<path{attrs(class_='errorbar', d=f'M{cx} {_px(self.y(lo))} V{_px(self.y(hi))}', stroke=stroke, stroke_width=1.2)}/>")

    def vline(self, x: float, *, class_: str, label: str | None = None, dashed: bool = True) -> None:
        if not self.x.contains(x):
            return
        px = _px(self.x(x))
        self.parts.append(f"<path{attrs(class_=class_, d=f'M{px} {self.y.end} V{self.y.start}', stroke='#333', stroke_width=1, stroke_dasharray='2 3' if dashed else None)}/>")
        if label:
            self.parts.append(f"<text{attrs(class_=class_ + '-label', x=px, y=self.y.end + 12, text_anchor='middle')}>{escape(label)}</text>")

    def vspan(self, lo: float, hi: float, *, class_: str) -> None:
        lo, hi = max(lo, self.x.lo), min(hi, self.x.hi)
        if not lo < hi:
            return
        x0, x1 = self.x(lo), self.x(hi)
        self.parts.append(f"<rect{attrs(class_=class_, x=_px(x0), y=_px(self.y.end), width=_px(x1 - x0), height=_px(self.y.start - self.y.end), fill='#000', fill_opacity='0.07')}/>")

    def rect(self, x0: float, x1: float, y: float, fill: str, *, label: str, class_: str = "bar") -> None:
        """A bar from the bottom of the plot up to `y`, between pixel columns x0 and x1."""
        top = self.y(min(max(y, self.y.lo), self.y.hi))
        self.parts.append(f"<rect{attrs(class_=class_, data_label=label, x=_px(x0), y=_px(top), width=_px(x1 - x0), height=_px(self.y.start - top), fill=fill)}><title>{escape(label)}</title></rect>")

    def _axes(self, x_label: str, y_label: str, x_ticks: bool) -> list[str]:
        left, bottom = self.x.start, self.y.start
        out = [f"<rect{attrs(class_='frame', x=_px(left), y=_px(self.y.end), width=_px(self.x.end - left), height=_px(bottom - self.y.end), fill='none', stroke='#999')}/>"]
        if x_ticks:
            for t in self.x.ticks():
                px = _px(self.x(t))
                out.append(f"<path{attrs(class_='grid', d=f'M{px} {_px(self.y.end)} V{_px(bottom)}', stroke='#e5e5e5')}/>")
                out.append(f"<text{attrs(class_='tick', x=px, y=_px(bottom + 16), text_anchor='middle')}>{tick_label(t)}</text>")
        for t in self.y.ticks():
            py = _px(self.y(t))
            out.append(f"<path{attrs(class_='grid', d=f'M{_px(left)} {py} H{_px(self.x.end)}', stroke='#e5e5e5')}/>")
            out.append(f"<text{attrs(class_='tick', x=_px(left - 6), y=py, text_anchor='end', dominant_baseline='middle')}>{tick_label(t)}</text>")
        out.append(f"<text{attrs(class_='axis-label', x=_px((left + self.x.end) / 2), y=self.height - 6, text_anchor='middle')}>{escape(x_label)}</text>")
        mid = _px((self.y.end + bottom) / 2)
        out.append(f"<text{attrs(class_='axis-label', x=14, y=mid, text_anchor='middle', transform=f'rotate(-90 14 {mid})')}>{escape(y_label)}</text>")
        return out

    def svg(self, title: str, x_label: str, y_label: str, *, x_ticks: bool = True, below: Sequence[str] = ()) -> str:
        """The figure: axes and grid, then the parts clipped to the plotting area, then `below`
        (texts placed under the axis, such as bar-group names)."""
        clip = f"clip-{self.ident}"
        area = attrs(x=_px(self.x.start), y=_px(self.y.end), width=_px(self.x.end - self.x.start),
                     height=_px(self.y.start - self.y.end))
        return "\n".join([
            f"<svg{attrs(xmlns='http://www.w3.org/2000/svg', class_='figure', id=self.ident, viewBox=f'0 0 {self.width} {self.height}', width=self.width, height=self.height, role='img')}>",
            f"<title>{escape(title)}</title>",
            f"<defs><clipPath id=\"{clip}\"><rect{area}/></clipPath></defs>",
            *self._axes(x_label, y_label, x_ticks),
            f"<g clip-path=\"url(#{clip})\">", *self.parts, "</g>", *below, "</svg>"])
