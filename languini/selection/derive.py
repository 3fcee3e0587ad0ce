"""What every selection method shares around its derived dataset (`languini.data.derive`
writes it): the checked outputs and the parent's document table before any model runs, and the
counts and domain shares its report gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from languini.data.derive import DocTable, check_derived_out, document_table, open_parent
from languini.data.loader import PreparedData
from languini.mix import check_spec_out

REPORT_FILE = "selection.json"


def open_selection(data_dir: str | Path, out: str | Path, mix_out: str | Path | None, force: bool,
                   progress: bool) -> tuple[PreparedData, Path, Path, DocTable]:
    """The parent, the checked output folder and mix spec path (default `OUT.toml` beside
    `out`), and the parent's document table: where every selection starts, before any model runs."""
    parent = open_parent(data_dir)
    out = Path(out)
    check_derived_out(parent.path, out, force)
    mix_out = Path(mix_out) if mix_out else out.with_name(out.name + ".toml")
    check_spec_out(mix_out, force)
    return parent, out, mix_out, document_table(parent, "train", progress)


def token_shares(table: DocTable, mask: np.ndarray, domains: list[str]) -> dict[str, float]:
    """Each domain's share of the tokens of the documents in `mask`."""
    by_domain = np.bincount(table.domains[mask], weights=table.tokens[mask], minlength=len(domains))
    total = by_domain.sum()
    return {d: float(by_domain[i] / total) if total else 0.0 for i, d in enumerate(domains)}


def counts(table: DocTable, keep: np.ndarray, domains: list[str]) -> dict[str, dict[str, int]]:
    """Documents and tokens before and after, per domain present and in total."""
    out = {}
    for name, mask in [*((d, table.domains == i) for i, d in enumerate(domains)), ("total", np.ones(len(table), bool))]:
        if not mask.any():
            continue
        tokens = table.tokens[mask]
        out[name] = {"documents_before": int(mask.sum()), "documents_after": int(keep[mask].sum()),
                     "tokens_before": int(tokens.sum()), "tokens_after": int(tokens[keep[mask]].sum())}
    return out
