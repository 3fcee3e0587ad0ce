"""The small models that select data, and what they cost.

A selection model is a run of the harness itself: trained with `plan.plan`/`trainer.train`,
or given as a finished run directory. Its cost is counted in the units a compute class is
counted in, through the run's own throughput certificate and budget:

    train-equivalent tokens = tokens trained + forward-only tokens / 3
    selection_hours         = train-equivalent tokens / reference tokens/s / 3600
    selection_flops         = 6 · parameters · train-equivalent tokens

A forward pass is a third of a training step (the backward pass costs about two forwards), so
scoring or embedding N tokens costs what training N/3 tokens costs. Hours are reference-hours
(the certificate's tokens/s times its device factor, exactly as a budget converts them);
under a FLOP class the run has no reference-hours, so only the FLOPs are given. A selection's
cost is the sum over the models it trained and ran (a `SelectionCost`).

A selection ends in a mix spec whose `[selection]` table (`selection_table`) holds the
provenance: the method, its settings, the tokenizer it was selected with, and the cost. The two
rules that travel with it (no transfer across tokenizers; a charged cost comes out of the
budget) are the mix's own: `Mix.check_tokenizer`, `Mix.charge`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from languini.data.loader import PreparedData
from languini.distributed import World
from languini.errors import UserError
from languini.io import read_json
from languini.mix import SelectionCost
from languini.plan import plan
from languini.run import RunDir, RunResult, load_run_model, model_warnings
from languini.throughput import Stability
from languini.trainer import train

COST_RATIO = 10
"""A selection costing more than this many times the class its model trained for is reported
with a warning: its cost is no longer small beside the runs it is meant to help."""


@dataclass
class SelectionModel:
    """A finished run's model, ready to score or embed documents of a dataset."""

    run: Path
    model: torch.nn.Module
    seq_len: int
    vocab_size: int
    result: RunResult
    budget: dict[str, Any]
    checkpoint_sha256: str

    def provenance(self) -> dict[str, Any]:
        """What the selection depended on: recorded in the derived dataset's manifest."""
        r = self.result
        return {"family": r.family, "config": r.config, "compute_class": r.compute_class,
                "data_fingerprint": r.data["fingerprint"], "checkpoint_sha256": self.checkpoint_sha256}


def load_selection_model(run_dir: str | Path, data: PreparedData, dev: torch.device) -> SelectionModel:
    """The model of a finished run whose tokenizer is the one `data` is tokenized with."""
    run = RunDir.open(run_dir)
    if not run.result.exists():
        raise UserError(f"Run {run.path} has not finished (no result.json); train it to the end or give another run.")
    loaded = load_run_model(run.path, dev)
    if loaded.data.manifest.tokenizer_sha256 != data.manifest.tokenizer_sha256:
        raise UserError(f"Run {run.path} was trained with another tokenizer than {data.path}'s; its scores would "
                        "not mean anything there.")
    sidecar = run.checkpoints / "last.sha256"
    return SelectionModel(run.path, loaded.model, loaded.seq_len, loaded.config.vocab_size, run.read_result(),
                          read_json(run.budget, "Budget"), sidecar.read_text().strip() if sidecar.exists() else "")


def train_model(family: str, config: str, data_dir: str | Path, class_name: str, run_dir: str | Path,
                train_overrides: dict[str, Any] | None, stability: Stability, progress: bool) -> dict[str, Any]:
    """Train a selection model with the harness, measuring its certificate under `stability`;
    returns its result. Selection runs in one process (its scoring and DoReMi's proxy are not
    sharded), so its models train in one too."""
    p = plan(family, config, data_dir, class_name, train_overrides or {}, world=World(), stability=stability,
             progress=progress)
    return train(p, run_dir, force=True, progress=progress)


def cost(budget: dict[str, Any], trained_tokens: int, forward_tokens: int) -> dict[str, Any]:
    """One model's share of a selection's cost (see the module docstring for the rule)."""
    equivalent = trained_tokens + forward_tokens / 3
    hours = None if budget["mode"] == "flops" else equivalent / budget["reference_tokens_per_second"] / 3600
    params = budget.get("params") or 0
    return {"trained_tokens": int(trained_tokens), "forward_tokens": int(forward_tokens),
            "train_equivalent_tokens": equivalent, "reference": budget["reference"],
            "reference_tokens_per_second": budget["reference_tokens_per_second"],
            "hours": hours, "flops": 6.0 * params * equivalent if params else None}


def total_cost(parts: dict[str, dict[str, Any]]) -> SelectionCost:
    """The sum of named parts; hours (or FLOPs) are unknown if any part's are, and hours on
    different reference devices do not add up."""
    def total(key: str) -> float | None:
        values = [p[key] for p in parts.values()]
        return None if any(v is None for v in values) else float(sum(values))

    references = {p["reference"] for p in parts.values()}
    reference = references.pop() if len(references) == 1 else None
    return SelectionCost(hours=total("hours") if reference else None, reference=reference, flops=total("flops"),
                         parts=parts,
                         rule="train-equivalent tokens = trained + forward/3; hours = those / reference tokens/s; "
                              "flops = 6 x params x those")


def selection_table(method: str, data: PreparedData, cost: SelectionCost, charge: bool,
                    **provenance: Any) -> dict[str, Any]:
    """The `[selection]` table every method writes: method, tokenizer, source data, its
    settings and provenance, and the cost with whether it is charged."""
    if charge and cost.hours is None and cost.flops is None:
        raise UserError("The selection's cost is unknown (e.g. an external embedder), so it cannot be charged.")
    return {"method": method, "tokenizer_sha256": data.manifest.tokenizer_sha256,
            "source_fingerprint": data.fingerprint, **provenance, **replace(cost, method=method, charge=charge).to_dict()}


def selection_warnings(role: str, model: SelectionModel, spent: SelectionCost) -> list[str]:
    """Why a selection made with `model` may not mean anything: the model's own warnings, too
    few steps, or a cost out of proportion to the model's class (the report's `warnings`)."""
    found = model_warnings(role, model.run, model.result.steps, model.result.warnings)
    flops = model.budget["mode"] == "flops"
    amount = spent.flops if flops else spent.hours
    of_class = model.budget["flops" if flops else "hours"]
    if amount and of_class and amount > COST_RATIO * of_class:
        found.append(f"the selection cost {amount / of_class:.0f} times the class {model.budget['compute_class']} its "
                     f"{role} trained for: weigh it against runs of a class that large")
    return found
