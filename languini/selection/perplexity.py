"""Perplexity pruning (Ankner et al. 2024, "Perplexed by Perplexity").

The train documents are split in two halves (within each domain, by a seeded permutation). A
small reference model is trained with the harness on one half (written as its own prepared
folder, so it is an ordinary run), and every document of the other half is scored by its
perplexity under it: exp of the mean negative log-likelihood of its tokens, the whole
document, in one forward pass (windows of the model's length, no overlap). The `keep` fraction
chosen by the criterion (`low`: lowest perplexity, `high`: highest, `medium`: closest to the
median) becomes a new prepared dataset; the reference half is not part of it. With a given
reference run every train document is scored (the report says whether that run trained on
this very data, `in_sample`).

Pruning moves domain shares (one domain's documents are easier than another's), so the report
gives the token share of each domain before and after, and the score distribution per domain.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from languini import device as devices
from languini.data.loader import PreparedData
from languini.errors import UserError
from languini.data.derive import DocTable, write_derived
from languini.evaluate import score_model
from languini.mix import Mix, SelectionCost, write_mix
from languini.selection.derive import REPORT_FILE, counts, open_selection, token_shares
from languini.selection.models import (SelectionModel, cost, load_selection_model, selection_table,
                                      selection_warnings, total_cost, train_model)
from languini.throughput import Stability

CRITERIA = ("low", "medium", "high")
QUANTILES = (10, 25, 50, 75, 90)


def select_perplexity(data_dir: str | Path, out: str | Path, *, reference_run: str | Path | None = None,
                      train_reference_class: str | None = None, family: str = "gpt", config: str = "nano",
                      criterion: str = "low", keep: float = 0.5, seed: int = 0, mix_out: str | Path | None = None,
                      max_epochs: float = 4.0, charge_selection: bool = False,
                      train_overrides: dict[str, Any] | None = None, device: str = "auto",
                      stability: Stability = Stability(), progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Write to `out` the train documents of `data_dir` that a reference model's perplexity keeps,
    and a mix spec for them (`mix_out`, default `OUT.toml` beside `out`).

    The reference is `reference_run` (a finished run), or a `family`/`config` model trained for
    `train_reference_class` on half the documents (in `OUT.runs/`), its throughput measured
    under `stability`. Returns the report, also
    written to `out/selection.json`.
    """
    check_settings(criterion, keep, reference_run, train_reference_class)
    parent, out, mix_out, table = open_selection(data_dir, out, mix_out, force, progress)
    dev = devices.resolve(device)
    scored = np.ones(len(table), dtype=bool)
    if train_reference_class is not None:
        work = out.with_name(out.name + ".runs")
        if work.exists() and any(work.iterdir()) and not force:
            raise UserError(f"{work} holds the reference of an earlier selection; pass --force to replace it.")
        half = reference_half(table, seed)
        write_derived(parent, table, half, work / "half", "selection",
                      {"method": "perplexity-reference-half", "seed": seed}, progress=progress)
        train_model(family, config, work / "half", train_reference_class, work / "reference", train_overrides,
                    stability, progress)
        reference_run, scored = work / "reference", ~half
    ref = load_selection_model(reference_run, parent, dev)
    rows = np.flatnonzero(scored)
    log_ppl, forward = document_scores(ref, parent, table, rows, dev, progress)
    kept_rows = rows[choose(log_ppl, criterion, keep)]
    keep_mask = np.zeros(len(table), dtype=bool)
    keep_mask[kept_rows] = True
    spent = total_cost({"reference": cost(ref.budget, ref.result.tokens_trained, forward)})
    selection = {
        "method": "perplexity",
        "settings": {"criterion": criterion, "keep": keep, "seed": seed,
                     "reference_trained_on_half": train_reference_class is not None},
        "reference": {**ref.provenance(), "in_sample": ref.result.data["fingerprint"] == parent.fingerprint},
        "documents": {"total": len(table), "reference_half": int(len(table) - len(rows)), "scored": int(len(rows)),
                      "kept": int(len(kept_rows))},
        "cost": spent.report(),
        "warnings": selection_warnings("reference", ref, spent),
        "perplexity": distributions(table, rows, log_ppl, keep_mask[rows], parent.domains),
        "shares": {"before": token_shares(table, np.ones(len(table), bool), parent.domains),
                   "after": token_shares(table, keep_mask, parent.domains)},
    }
    report = {**selection, "parent": {"path": str(parent.path), "fingerprint": parent.fingerprint},
              "out": str(out), "mix": str(mix_out), "reference_run": str(ref.run),
              "counts": counts(table, keep_mask, parent.domains),
              "removed": removed(table, scored, rows, log_ppl, keep_mask, parent.domains)}
    manifest = write_derived(parent, table, keep_mask, out, "selection", selection, {REPORT_FILE: report}, progress)
    write_mix(mix_out, Mix(out.name, "natural", max_epochs, str(out), selection_table(
        "perplexity", parent, spent, charge_selection, criterion=criterion, keep=keep, seed=seed,
        reference_run=str(ref.run.resolve()), report=str((out / REPORT_FILE).resolve()))))
    return {**report, "fingerprint": manifest.fingerprint}


def check_settings(criterion: str, keep: float, reference_run: Any, train_reference_class: Any) -> None:
    """Refuse settings that cannot mean anything before any reading or training."""
    if criterion not in CRITERIA:
        raise UserError(f"Unknown criterion {criterion!r}; use low, medium or high.")
    if not 0 < keep <= 1:
        raise UserError(f"The kept fraction must lie in (0, 1], got {keep}.")
    if (reference_run is None) == (train_reference_class is None):
        raise UserError("Give exactly one of a reference run (--reference) or a class to train one for "
                        "(--train-reference).")


def reference_half(table: DocTable, seed: int) -> np.ndarray:
    """Half of each domain's documents (rounded down), chosen by a seeded permutation: the
    reference model trains on them, the other half is scored."""
    half = np.zeros(len(table), dtype=bool)
    for d in np.unique(table.domains):
        members = np.flatnonzero(table.domains == d)
        half[np.random.default_rng([seed, int(d)]).permutation(members)[: len(members) // 2]] = True
    return half


def document_scores(ref: SelectionModel, data: PreparedData, table: DocTable, rows: np.ndarray, dev: Any,
                    progress: bool) -> tuple[np.ndarray, int]:
    """Each document's mean negative log-likelihood per token (log-perplexity), and the tokens
    run forward.

    The documents are scored as one stream in windows of the model's length without overlap
    (one forward pass per token: `evaluate.score_model` with stride = seq_len); a document's
    first token is predicted after the previous document's end-of-document token.
    """
    stream = data.stream("train")
    tokens = np.concatenate([stream.read(int(table.offsets[i]), int(table.tokens[i])) for i in rows])
    nll = score_model(ref.model, tokens, ref.seq_len, dev, stride=ref.seq_len, progress=progress).nll
    starts = np.concatenate([[0], np.cumsum(table.tokens[rows])])
    total = np.concatenate([[0.0], np.cumsum(nll)])  # total[p] = NLL of targets 1..p
    first, end = np.maximum(starts[:-1], 1), starts[1:]
    return (total[end - 1] - total[first - 1]) / np.maximum(end - first, 1), len(tokens)


def choose(log_ppl: np.ndarray, criterion: str, keep: float) -> np.ndarray:
    """Positions of the kept scores, in stream order: the round(keep · n) (at least one)
    lowest, highest, or closest to the median."""
    n = max(1, math.floor(keep * len(log_ppl) + 0.5))
    key = {"low": log_ppl, "high": -log_ppl, "medium": np.abs(log_ppl - np.median(log_ppl))}[criterion]
    return np.sort(np.argsort(key, kind="stable")[:n])


def distributions(table: DocTable, rows: np.ndarray, log_ppl: np.ndarray, kept: np.ndarray,
                  domains: list[str]) -> dict[str, dict[str, Any]]:
    """Per domain, perplexity quantiles of the scored documents and of the kept ones."""
    def summary(values: np.ndarray) -> dict[str, Any]:
        if not len(values):
            return {"documents": 0}
        q = np.exp(np.percentile(values, QUANTILES))
        return {"documents": int(len(values)), **{f"p{p}": float(v) for p, v in zip(QUANTILES, q)}}

    out = {}
    for i, d in enumerate(domains):
        mine = table.domains[rows] == i
        if mine.any():
            out[d] = {"scored": summary(log_ppl[mine]), "kept": summary(log_ppl[mine & kept])}
    return out


def removed(table: DocTable, scored: np.ndarray, rows: np.ndarray, log_ppl: np.ndarray, keep: np.ndarray,
            domains: list[str]) -> list[dict[str, Any]]:
    """Every train document left out, with why: it trained the reference, or its perplexity."""
    ppl = np.full(len(table), np.nan)
    ppl[rows] = np.exp(log_ppl)
    return [{"id": table.ids[i], "domain": domains[table.domains[i]],
             "reason": "criterion" if scored[i] else "reference-half",
             "perplexity": float(ppl[i]) if scored[i] else None}
            for i in np.flatnonzero(~keep)]


def describe(report: dict[str, Any]) -> str:
    """The report as a few lines for the terminal (the CLI's non-JSON output)."""
    s, docs, cost_ = report["settings"], report["documents"], report["cost"]
    ref = report["reference"]
    trained = "trained on the other half" if s["reference_trained_on_half"] else \
        ("given, trained on this data: in-sample scores" if ref["in_sample"] else "given")
    lines = [
        f"perplexity pruning: kept {docs['kept']} of {docs['scored']} scored documents ({s['criterion']} perplexity, "
        f"keep {s['keep']:g}); reference {ref['family']}/{ref['config']} at {ref['compute_class']}, {trained}",
        f"selection cost: {SelectionCost.from_dict(cost_).text()}",
        f"{'domain':<14}{'docs before':>12}{'after':>8}{'share before':>14}{'share after':>13}"
        f"  {'ppl p10/p50/p90 scored':>26}  {'kept':>26}",
    ]
    for d, c in report["counts"].items():
        dist = report["perplexity"].get(d, {})
        lines.append(f"{d:<14}{c['documents_before']:>12}{c['documents_after']:>8}"
                     f"{report['shares']['before'].get(d, 1.0):>14.3f}{report['shares']['after'].get(d, 1.0):>13.3f}"
                     f"  {_quantiles(dist.get('scored')):>26}  {_quantiles(dist.get('kept')):>26}")
    lines.append(f"written {report['out']} (fingerprint {report['fingerprint'][:12]}) and mix spec {report['mix']}")
    return "\n".join(lines)


def _quantiles(dist: dict[str, Any] | None) -> str:
    if not dist or not dist.get("documents"):
        return "-"
    return f"{dist['p10']:.3g}/{dist['p50']:.3g}/{dist['p90']:.3g}"

