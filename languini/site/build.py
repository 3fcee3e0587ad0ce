"""Writing the site: every page, figure, copied file and asset, into a folder moved into place
whole (`io.atomic_dir`), with `site.json` saying what was written.

The same inputs give the same bytes: nothing reads the clock or the building machine's paths,
fits are seeded, and every collection is iterated in a sorted order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from languini.errors import UserError
from languini.io import atomic_dir, to_json
from languini.site.collect import Site, collect
from languini.site.entry import entry_page
from languini.site.pages import comparison_page, index

ASSETS = Path(__file__).resolve().parent / "assets"
GENERATOR = "languini site"
SCHEMA = 1


def render(site: Site) -> dict[str, bytes]:
    """Every file of the site by its path inside the site."""
    files: dict[str, bytes] = {"index.html": index(site).encode()}
    for asset in sorted(ASSETS.iterdir()):
        files[f"assets/{asset.name}"] = asset.read_bytes()
    for e in site.entries:
        if not e.entry.path.is_dir():
            continue
        files[e.page] = entry_page(site, e).encode()
        for name in e.copied():
            files[f"entries/{e.name}/{name}"] = (e.entry.path / name).read_bytes()
    for s in site.scalings:
        if s.fit is not None:
            files[f"fits/{s.name}.json"] = to_json(s.fit).encode()
    for c in site.comparisons:
        files[f"compare/{c.name}.html"] = comparison_page(site, c).encode()
        files[f"compare/{c.name}/compare.json"] = (c.source / "compare.json").read_bytes()
    return files


def manifest(site: Site, files: dict[str, bytes]) -> dict[str, Any]:
    """site.json: what the site holds and the sha256 of every file (relative paths only)."""
    return {
        "generator": GENERATOR,
        "schema": SCHEMA,
        "title": site.title,
        "entries": [{"name": e.name, "valid": e.entry.rankable, "page": e.page if e.entry.path.is_dir() else None,
                     "problems": e.reasons} for e in site.entries],
        "leaderboards": [{"evaluation_identity": b.identity or None, "dataset": b.dataset or None,
                          "compute_class": b.compute_class, "entries": [e.name for _, e in b.rows]}
                         for b in site.boards],
        "scaling": [{"name": s.name, "evaluation_identity": s.identity or None, "dataset": s.dataset or None,
                     "reference": s.reference, "groups": sorted(s.fit["groups"]) if s.fit else [],
                     "fit": f"fits/{s.name}.json" if s.fit else None, "notes": s.notes} for s in site.scalings],
        "comparisons": [{"name": c.name, "page": f"compare/{c.name}.html"} for c in site.comparisons],
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }


def _check_out(out: Path) -> None:
    """Replace a site this command wrote; refuse anything else that is not empty."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; name a folder for the site.")
    if not any(out.iterdir()):
        return
    try:
        ours = json.loads((out / "site.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UserError(f"--out {out} is a non-empty folder that `languini site` did not write; choose another.")


def build(paths: Sequence[str | Path], out: str | Path, title: str = "languini leaderboard",
          compare: Sequence[str | Path] = (), bootstrap: int = 1000, extrapolate: Sequence[float] = ()) -> dict[str, Any]:
    """Check the entries, fit, render and write the site into `out`; returns site.json's content."""
    out = Path(out)
    _check_out(out)
    site = collect(paths, title, compare, bootstrap, extrapolate)
    files = render(site)
    report = manifest(site, files)
    with atomic_dir(out) as tmp:
        for name, data in sorted(files.items()):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        (tmp / "site.json").write_text(to_json(report))
    return report
