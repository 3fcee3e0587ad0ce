"""Data mixes: which domains, in what proportions, how often each may repeat.

A mix spec is a small TOML file:

    name = "code-heavy"
    data = "data/stdlib-dedup"   # optional: a prepared folder (e.g. a dedup output) to train on
    max_epochs = 4               # no domain may be read more than this many times
    [weights]                    # or: weights = "natural" (proportional to domain size)
    code = 3
    prose = 1

Weights are token shares: non-negative, naming known domains, not all zero; they are
normalised and the normalised values are what the run records.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from languini.errors import UserError

KEYS = {"name", "data", "max_epochs", "weights", "selection"}


@dataclass(frozen=True)
class Mix:
    name: str
    weights: dict[str, float] | str  # normalised shares, or "natural" until resolved against data
    max_epochs: float = 4.0
    data: str | None = None
    selection: dict[str, Any] | None = None  # recorded provenance of model-based selection

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
        return Mix(self.name, weights, self.max_epochs, self.data, self.selection)

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
               max_epochs=float(max_epochs), data=table.get("data"), selection=table.get("selection"))


def load_mix(path: str | Path) -> Mix:
    path = Path(path)
    try:
        with path.open("rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"Mix spec not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"Mix spec {path} is not valid TOML ({e}).") from None
    mix = parse_mix(table, str(path), path.stem)
    if mix.data is not None and not Path(mix.data).is_absolute():
        mix = Mix(mix.name, mix.weights, mix.max_epochs, str((path.parent / mix.data).resolve()), mix.selection)
    return mix
