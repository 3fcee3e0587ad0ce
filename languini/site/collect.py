"""What the site shows, gathered from the library before any HTML is written.

Entries are checked by `leaderboard.check` and ranked by `leaderboard.group_entries` (the
leaderboard command's own tables), fits are `scaling.fit` over the valid entries as `languini fit`
computes them, and mix comparisons are the `compare.json` that `mix compare` wrote. Nothing
here formats; `pages` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from languini import leaderboard, scaling
from languini.errors import UserError
from languini.io import read_json
from languini.run import RunResult

COPIED = (*leaderboard.FILES, "data_manifest.json", "checksums.json", "lm_eval.json")  # linked from entry pages
LAW = "power"


@dataclass
class SiteEntry:
    """A checked run or bundle and the name its page and copied files go under."""

    name: str
    entry: leaderboard.Entry

    @property
    def result(self) -> RunResult | None:
        """None where result.json is missing or unreadable (the entry's problems say so)."""
        return self.entry.result

    @property
    def reasons(self) -> list[str]:
        """Why the entry is in no table (empty when it is ranked)."""
        if self.entry.problems or self.entry.rankable:
            return self.entry.problems
        return [f"evaluation identity unknown: {self.entry.identity.how if self.entry.identity else 'not recorded'}"]

    @property
    def page(self) -> str:
        return f"entries/{self.name}.html"

    def file(self, name: str) -> dict[str, Any] | None:
        return self.entry.files.get(name)

    def copied(self) -> list[str]:
        """The entry's files the site copies, in COPIED's order."""
        return [f for f in COPIED if (self.entry.path / f).is_file()]


def identity(e: SiteEntry) -> tuple[str, str]:
    """(evaluation identity, dataset name) as the leaderboard found them; empty where unknown."""
    found = e.entry.identity
    return (found.digest or "", found.dataset or "") if found else ("", "")


@dataclass
class Board:
    """One leaderboard: an evaluation identity and a compute class, best first."""

    identity: str
    dataset: str
    compute_class: str
    rows: list[tuple[dict[str, Any], SiteEntry]]

    @property
    def budget(self) -> dict[str, Any]:
        return self.rows[0][1].file("budget.json") or {}

    def order(self) -> tuple:
        """Hours classes before FLOP classes, each by size."""
        b = self.budget
        return (self.identity, b.get("hours") is None, b.get("hours") or b.get("flops") or 0, self.compute_class)


@dataclass
class Scaling:
    """The fit of one evaluation identity's valid entries (per reference accelerator), or why none."""

    name: str
    identity: str
    dataset: str
    reference: str
    fit: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    name: str
    table: dict[str, Any]
    source: Path


@dataclass
class Site:
    title: str
    entries: list[SiteEntry]
    boards: list[Board]
    scalings: list[Scaling]
    comparisons: list[Comparison]

    @property
    def invalid(self) -> list[SiteEntry]:
        """Entries in no table: failed checks, or an evaluation identity that cannot be found."""
        return [e for e in self.entries if not e.entry.rankable]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-") or "entry"


def _unique(names: Sequence[str]) -> list[str]:
    """Names made unique by a numeric suffix, in the order given."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def _names(folders: Sequence[Path]) -> list[str]:
    """Each folder's name; where names collide (a run and its bundle), the parent's name in
    front; where they still collide, a numeric suffix."""
    base = [slug(p.resolve().name) for p in folders]
    counts = {n: base.count(n) for n in base}
    return _unique([slug(f"{p.resolve().parent.name}-{n}") if counts[n] > 1 else n for p, n in zip(folders, base)])


def entries(paths: Sequence[str | Path]) -> list[SiteEntry]:
    """Every input checked, once per folder, named after its folder and ordered by name."""
    folders: dict[Path, Path] = {}
    for p in map(Path, paths):
        folders.setdefault(p.resolve(), p)
    given = sorted(folders.values(), key=lambda p: (p.resolve().name, p.resolve().parent.name, str(p)))
    return [SiteEntry(n, leaderboard.check(p)) for n, p in zip(_names(given), given)]


def boards(site_entries: list[SiteEntry]) -> list[Board]:
    """The leaderboard's own tables (one per evaluation identity and class), ordered by
    identity and class size."""
    by_path = {str(e.entry.path): e for e in site_entries}
    return sorted((Board(g.evaluation_identity, ", ".join(g.datasets), g.compute_class,
                         [(row, by_path[row["path"]]) for row in g.rows])
                   for g in leaderboard.group_entries([e.entry for e in site_entries])), key=Board.order)


def scalings(site_entries: list[SiteEntry], bootstrap: int, extrapolate: Sequence[float]) -> list[Scaling]:
    """A power-law fit per evaluation identity and compute axis (reference-hours on one
    reference accelerator, or training FLOPs for FLOP classes) over the ranked entries;
    families too short of compute levels are named and left out."""
    groups: dict[tuple[str, str, str], list[SiteEntry]] = {}
    for e in site_entries:
        if e.entry.rankable:
            ident, dataset = identity(e)
            groups.setdefault((ident, dataset, str(e.result.reference)), []).append(e)  # type: ignore[union-attr]
    return [_scaling(ident, dataset, ref, members, bootstrap, extrapolate)
            for (ident, dataset, ref), members in sorted(groups.items())]


def _scaling(ident: str, dataset: str, reference: str, members: list[SiteEntry], bootstrap: int,
             extrapolate: Sequence[float]) -> Scaling:
    law = scaling.get_law(LAW)
    s = Scaling(slug(f"{ident[:12] or 'results'}-{reference}"), ident, dataset, reference, None)
    try:
        inputs = scaling.read_inputs([e.entry.path for e in members], "family")
    except UserError as err:
        s.notes.append(f"No fit: {err}")
        return s
    by_group: dict[str, list[scaling.Point]] = {}
    for p in inputs.points:
        by_group.setdefault(p.group, []).append(p)
    kept = []
    for name, points in sorted(by_group.items()):
        why = scaling.shortfall(law, scaling.frontier(points)[0])
        if why:
            s.notes.append(f"{name} is not fitted: it {why}.")
        else:
            kept += points
    if not kept:
        return s
    try:
        fit = scaling.fit(scaling.Inputs(kept, inputs.compute_unit, inputs.loss_name), LAW, bootstrap,
                          list(extrapolate), None, 0)
    except UserError as err:
        s.notes.append(f"No fit: {err}")
        return s
    names = {str(e.entry.path): e.name for e in members}
    for g in fit["groups"].values():  # a point names its entry, not a path on the building machine
        for p in g["points"] + g["excluded"]:
            p["source"] = names.get(p.get("source", ""), p.get("source", ""))
    s.fit = fit
    return s


def comparison(folder: Path) -> dict[str, Any]:
    """The table `mix compare` wrote into `folder`, or one sentence why it is not one."""
    path = Path(folder) / "compare.json"
    table = read_json(path, "Mix comparison")
    rows = table.get("rows") if isinstance(table, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "mix" in r and "bits_per_byte" in r
                                                         for r in rows):
        raise UserError(f"{path} is not a table written by `languini mix compare`.")
    return table


def collect(paths: Sequence[str | Path], title: str, compare: Sequence[str | Path] = (), bootstrap: int = 1000,
            extrapolate: Sequence[float] = ()) -> Site:
    if not paths:
        raise UserError("Name at least one bundle or run directory.")
    site_entries = entries(paths)
    folders = sorted({Path(c).resolve(): Path(c) for c in compare}.values(),
                     key=lambda p: (p.resolve().name, p.resolve().parent.name, str(p)))
    comparisons = [Comparison(n, comparison(p), p) for n, p in zip(_names(folders), folders)]
    return Site(title, site_entries, boards(site_entries), scalings(site_entries, bootstrap, extrapolate), comparisons)
