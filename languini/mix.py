"""Data mixes: which domains, in what proportions, how often each may repeat.

A mix spec is a small TOML file:

    name = "code-heavy"
    data = "data/stdlib"         # optional: the prepared folder to train on (else --data)
    max_epochs = 4               # no domain may be read more than this many times
    [weights]                    # or: weights = "natural" (proportional to domain size)
    code = 3
    prose = 1
    [dedup]                      # optional: deduplicate the train split first
    scope = "global"             # and threshold, ngram, num_perm, decontaminate, seed
    threshold = 0.8              # as in `languini data dedup`

Weights are token shares: non-negative, naming known domains, not all zero; they are
normalised (against the deduplicated data's domains, if deduplicated) and the normalised
values are what the run records.

A mix made by a selection command (`languini.selection`) also carries a `[selection]` table:
its provenance, the tokenizer it was selected under and its cost. Two rules travel with it:
weights and scores measured in one tokenizer's tokens do not transfer to data tokenized with
another (`check_tokenizer`), and with `charge = true` the cost comes out of the training
budget (`charge`). `SelectionCost` is the one shape of what a selection cost, wherever it is
written: the `[selection]` table, a selection report's `cost`, the `selection` of a `mix
compare` or leaderboard row; `SelectionCost.text` is how it is said.

`write_mix` writes everything `load_mix` reads, so a spec survives a round trip.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from languini.compute import Charge
from languini.errors import UserError
from languini.io import atomic_write_text, read_toml, toml_table

KEYS = {"name", "data", "max_epochs", "weights", "dedup", "selection"}
DEDUP_TYPES = {"scope": str, "threshold": float, "ngram": int, "num_perm": int, "decontaminate": bool,
               "seed": int}  # the settings of `data.dedup.dedup` a mix may give


@dataclass(frozen=True)
class Mix:
    name: str
    weights: dict[str, float] | str  # normalised shares, or "natural" until resolved against data
    max_epochs: float = 4.0
    data: str | None = None
    selection: dict[str, Any] | None = None  # recorded provenance of model-based selection
    dedup: dict[str, Any] | None = None  # settings of `data.dedup.dedup` applied to the data first

    def resolve(self, domain_tokens: dict[str, int]) -> "Mix":
        """Check the weights against the data's domains and normalise them (natural: by size)."""
        if self.weights == "natural":
            raw = {d: float(n) for d, n in domain_tokens.items()}
        else:
            raw = dict(self.weights)
            unknown = sorted(set(raw) - set(domain_tokens))
            if unknown:
                raise UserError(f"Mix '{self.name}' names unknown domain(s) {', '.join(unknown)} "
                                f"(the data has: {', '.join(domain_tokens)}).")
        total = sum(raw.values())
        if not total > 0:
            raise UserError(f"Mix '{self.name}' gives every domain weight zero.")
        weights = {d: raw.get(d, 0.0) / total for d in domain_tokens}
        return replace(self, weights=weights)

    def check_supply(self, domain_tokens: dict[str, int], budget_tokens: int) -> None:
        """Refuse a run that would repeat a domain more than max_epochs times."""
        assert isinstance(self.weights, dict)
        for domain, w in self.weights.items():
            need = w * budget_tokens
            have = domain_tokens.get(domain, 0) * self.max_epochs
            if need > have:
                raise UserError(
                    f"Mix '{self.name}' needs {need:,.0f} tokens of domain '{domain}' but it holds "
                    f"{domain_tokens.get(domain, 0):,} (× {self.max_epochs:g} epochs allowed): "
                    f"{need - have:,.0f} tokens short."
                )

    def selection_cost(self) -> SelectionCost | None:
        """What the selection behind this mix cost (None: no selection made it)."""
        return SelectionCost.from_dict(self.selection) if self.selection else None

    def charge(self) -> Charge | None:
        """The selection's cost as a budget charge (`compute.charged_amount`), if it is charged."""
        cost = self.selection_cost()
        if cost is None or not cost.charge:
            return None
        return Charge(hours=cost.hours, flops=cost.flops, reference=cost.reference,
                      source=f"the {cost.method or 'data'} selection behind mix '{self.name}'")

    def check_tokenizer(self, data: Any, force: bool = False) -> str | None:
        """Refuse data tokenized otherwise than the mix was selected on; forced, return a warning."""
        selected = (self.selection or {}).get("tokenizer_sha256")
        have = data.manifest.tokenizer_sha256
        if not selected or selected == have:
            return None
        message = (f"Mix '{self.name}' was selected on data tokenized with tokenizer {selected[:12]}, but "
                   f"{data.path} uses {have[:12]}; selection results do not transfer across tokenizers")
        if not force:
            raise UserError(f"{message}: select again on this data, or pass --any-tokenizer to use it anyway.")
        return f"warning: {message}."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _weights(value: Any, where: str) -> dict[str, float] | str:
    if value == "natural":
        return "natural"
    if not isinstance(value, dict) or not value:
        raise UserError(f"{where}: 'weights' must be a table of domain = weight, or \"natural\".")
    out = {}
    for domain, w in value.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise UserError(f"{where}: the weight of '{domain}' must be a non-negative number, got {w!r}.")
        out[str(domain)] = float(w)
    return out


def parse_mix(table: dict[str, Any], where: str, default_name: str) -> Mix:
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(KEYS))}).")
    if "weights" not in table:
        raise UserError(f"{where}: a mix needs 'weights' (a table of domain = weight, or \"natural\").")
    max_epochs = table.get("max_epochs", 4.0)
    if not isinstance(max_epochs, (int, float)) or not max_epochs > 0:
        raise UserError(f"{where}: 'max_epochs' must be a positive number.")
    return Mix(name=str(table.get("name", default_name)), weights=_weights(table["weights"], where),
               max_epochs=float(max_epochs), data=table.get("data"), selection=table.get("selection"),
               dedup=_dedup(table["dedup"], where) if "dedup" in table else None)


def _dedup(value: Any, where: str) -> dict[str, Any]:
    """The [dedup] table: known settings of the right type (their ranges `dedup` checks)."""
    if not isinstance(value, dict):
        raise UserError(f"{where}: 'dedup' must be a table of `languini data dedup` settings, e.g. scope = \"global\".")
    for key, v in value.items():
        kind = DEDUP_TYPES.get(key)
        if kind is None:
            raise UserError(f"{where}: unknown dedup setting '{key}' (allowed: {', '.join(DEDUP_TYPES)}).")
        if not _of_type(v, kind):
            raise UserError(f"{where}: dedup setting '{key}' must be a {kind.__name__}, got {v!r}.")
    return dict(value)


def _of_type(value: Any, kind: type) -> bool:
    """TOML's types: a bool is not a number here, an int is a float."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    return isinstance(value, (int, float) if kind is float else kind)


def load_mix(path: str | Path) -> Mix:
    path = Path(path)
    mix = parse_mix(read_toml(path, "Mix spec"), str(path), path.stem)
    if mix.data is not None and not Path(mix.data).is_absolute():
        mix = replace(mix, data=str((path.parent / mix.data).resolve()))
    return mix


def write_mix(path: Path, mix: Mix) -> None:
    """The mix as the TOML `load_mix` reads back (weights, dedup and selection included); `data`
    is written relative to the spec's folder (where `load_mix` resolves it), so spec and data
    can move together."""
    data = os.path.relpath(Path(mix.data).resolve(), path.resolve().parent) if mix.data else None
    atomic_write_text(path, toml_table({"name": mix.name, "data": data, "max_epochs": mix.max_epochs,
                                        "weights": mix.weights, "dedup": mix.dedup, "selection": mix.selection}))


def check_spec_out(path: Path, force: bool) -> None:
    """A spec is a user's file once written: replace it only when asked."""
    if path.suffix != ".toml":
        raise UserError(f"The mix spec {path} must end in .toml.")
    if path.exists() and not force:
        raise UserError(f"The mix spec {path} already exists; pass --force to replace it or choose another path.")


def train_domain_tokens(data: Any) -> dict[str, int]:
    return data.manifest.domain_tokens("train")


@dataclass(frozen=True)
class SelectionCost:
    """What a data selection cost, in a compute class's units, and whether a budget pays it.

    `hours` are reference-hours on `reference` (None under a FLOP class, or when the parts'
    references differ), `flops` training FLOPs; None where unknown (an external embedder's).
    `parts` (each selection model's share) and `rule` (how they were counted, or why the cost
    is unknown) are what a selection report adds; a spec's table and a result row carry the
    totals, the method and `charge`.
    """

    hours: float | None = None
    reference: str | None = None
    flops: float | None = None
    method: str | None = None
    charge: bool = False
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    rule: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SelectionCost:
        """Read from a `[selection]` table, a report's `cost` or a row's `selection` (all one shape)."""
        charge = d.get("charge", d.get("charged"))  # `charged`: compare.json rows written before the rename
        return cls(hours=d.get("selection_hours"), reference=d.get("selection_reference"),
                   flops=d.get("selection_flops"), method=d.get("method"), charge=charge is True,
                   parts=d.get("parts") or {}, rule=d.get("rule"))

    @classmethod
    def of_run(cls, result: dict[str, Any]) -> SelectionCost | None:
        """The selection behind a finished run's mix, from its result.json (None: no selection)."""
        selection = (result.get("mix_details") or {}).get("selection")
        return cls.from_dict(selection) if selection else None

    def to_dict(self) -> dict[str, Any]:
        """The totals under their on-disk names: a row's `selection`, and the cost keys of a `[selection]` table."""
        return {"method": self.method, "selection_hours": self.hours, "selection_reference": self.reference,
                "selection_flops": self.flops, "charge": self.charge}

    def report(self) -> dict[str, Any]:
        """A selection report's `cost`: the totals, each model's part, and the rule."""
        return {"selection_hours": self.hours, "selection_reference": self.reference,
                "selection_flops": self.flops, "parts": self.parts, "rule": self.rule}

    def text(self) -> str:
        """In a few words: the method, reference-hours where known, else FLOPs, else unknown (and
        why), and whether the budget paid it."""
        if self.hours is not None:
            amount = f"{self.hours:.3g} h"
        elif self.flops is not None:
            amount = f"{self.flops:.3g} FLOPs"
        else:
            amount = "cost unknown" + (f" ({self.rule})" if self.rule else "")
        return (f"{self.method}: " if self.method else "") + amount + (" (charged)" if self.charge else "")


def selection_row(result: dict[str, Any]) -> dict[str, Any] | None:
    """A result row's `selection` (`mix compare`, the leaderboard): what the selection behind the
    run's mix cost and whether its budget paid it; None without one."""
    cost = SelectionCost.of_run(result)
    return cost.to_dict() if cost else None


def selection_text(selection: dict[str, Any] | None, none: str = "–") -> str:
    """A row's `selection` as `SelectionCost.text` says it; `none` where no selection made the mix."""
    return SelectionCost.from_dict(selection).text() if selection else none


