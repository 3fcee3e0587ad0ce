"""A derived dataset: a subset of a parent's train documents, the parent's evaluation splits.

Every selection method ends the same way: a boolean per train document (keep or not) becomes a
new prepared-data folder whose train split holds the kept documents token for token, whose
validation and test splits (and tokenizer) are the parent's byte for byte, so every variant is
scored on the same text, and whose manifest names its parent and carries a `selection` entry.
The writing is deduplication's (`languini.data.dedup`): the same split writer, the same copy
of the evaluation splits, the same refusal to overwrite the input or a folder that is not ours.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from languini.data.dedup import DocTable, check_out, child_manifest, copy_unchanged, open_parent, write_train
from languini.data.loader import PreparedData
from languini.io import atomic_dir, atomic_write_json
from languini.mix import check_spec_out

REPORT_FILE = "selection.json"


def document_table(parent: PreparedData, progress: bool) -> DocTable:
    """Decode every train document once for its byte and character counts (the manifest's
    per-domain statistics of the new split are sums of them)."""
    docs = parent.documents("train")
    n = len(docs.ids)
    n_bytes, n_chars = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    texts = parent.texts("train")
    for i, text in enumerate(tqdm(texts, total=n, desc="read", unit=" docs", disable=not progress, file=sys.stderr)):
        n_bytes[i], n_chars[i] = len(text.encode("utf-8")), len(text)
    return DocTable(docs.offsets, docs.domains, docs.ids, n_bytes, n_chars)


def open_selection(data_dir: str | Path, out: str | Path, mix_out: str | Path | None, force: bool,
                   progress: bool) -> tuple[PreparedData, Path, Path, DocTable]:
    """The parent, the checked output folder and mix spec path (default `OUT.toml` beside
    `out`), and the parent's document table: where every selection starts, before any model runs."""
    parent = open_parent(data_dir)
    out = Path(out)
    check_out(parent.path, out, force)
    mix_out = Path(mix_out) if mix_out else out.with_name(out.name + ".toml")
    check_spec_out(mix_out, force)
    return parent, out, mix_out, document_table(parent, progress)


def write_derived(parent: PreparedData, table: DocTable, keep: np.ndarray, out: Path, selection: dict[str, Any],
                  report: dict[str, Any] | None, progress: bool) -> dict[str, Any]:
    """Write the kept train documents of `parent` as a new dataset at `out`, atomically.

    `selection` goes into the manifest (and so into its fingerprint); `report`, when given, is
    written beside it as `selection.json`. Returns the new manifest.
    """
    with atomic_dir(out) as tmp:
        train = write_train(parent, table, ~keep, tmp, progress)
        copy_unchanged(parent, tmp)
        manifest = child_manifest(parent, train, "selection", selection)
        atomic_write_json(tmp / "manifest.json", manifest)
        if report is not None:
            atomic_write_json(tmp / REPORT_FILE, {**report, "fingerprint": manifest["fingerprint"]})
    return manifest


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
