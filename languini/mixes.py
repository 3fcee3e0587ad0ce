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
budget (`charge`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from languini.errors import UserError, to_stderr
from languini.io import read_toml

if TYPE_CHECKING:
    from languini.throughput import Stability

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

    def charge(self) -> dict[str, Any] | None:
        """The selection's cost as a budget charge (`compute.charged_amount`), if it is charged."""
        sel = self.selection or {}
        if sel.get("charge") is not True:
            return None
        return {"hours": sel.get("selection_hours"), "flops": sel.get("selection_flops"),
                "reference": sel.get("selection_reference"),
                "source": f"the {sel.get('method', 'data')} selection behind mix '{self.name}'"}

    def check_tokenizer(self, data: Any, force: bool = False) -> str | None:
        """Refuse data tokenized otherwise than the mix was selected on; forced, return a warning."""
        selected = (self.selection or {}).get("tokenizer_sha256")
        have = data.manifest["tokenizer"]["sha256"]
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


def _test_identity(manifest: dict[str, Any]) -> tuple:
    """What must agree for two datasets to be scored on the same text with the same ids."""
    test = manifest["splits"]["test"]
    return manifest["tokenizer"]["sha256"], tuple(s["sha256"] for s in test["shards"])


def _mean_spread(values: list[float]) -> dict[str, float]:
    arr = [float(v) for v in values]
    mean = sum(arr) / len(arr)
    return {"mean": mean, "spread": (max(arr) - min(arr)) / 2, "n": len(arr)}


def compare(mix_paths: list[str | Path], family: str, config: str, class_name: str, out_dir: str | Path,
            seeds: int = 1, data_dir: str | Path | None = None, progress: bool = True,
            any_tokenizer: bool = False, warn: Callable[[str], None] = to_stderr,
            stability: Stability | None = None) -> dict[str, Any]:
    """Train every mix (× seed) at one compute class and one certificate; tabulate test bits/byte.

    One throughput certificate serves every run, so every run gets the same token budget (less
    a charged selection's cost); every mix's data must share the tokenizer and the test split,
    so every run is scored on the same text. Runs that already hold a result for the same mix
    are reused. Writes `compare.json` and the figure `compare.png` into `out_dir`.
    """
    from languini import throughput, trainer
    from languini.compute import get_class
    from languini.distributed import World
    from languini.plan import plan
    from languini.data.loader import PreparedData
    from languini.family import load_family
    from languini.io import atomic_write_bytes, atomic_write_json, read_json
    from languini.plots import mix_comparison, png_bytes

    if seeds < 1:
        raise UserError("--seeds must be at least 1.")
    stability = stability or throughput.Stability()
    mixes = [load_mix(p) for p in mix_paths]
    names = [m.name for m in mixes]
    if len(set(names)) != len(names):
        raise UserError(f"Two mixes share a name ({', '.join(names)}); names label the runs.")
    datas = {m.name: PreparedData(m.data or data_dir) if (m.data or data_dir) else None for m in mixes}
    missing = [n for n, d in datas.items() if d is None]
    if missing:
        raise UserError(f"Mix(es) {', '.join(missing)} name no data; give --data.")
    identities = {n: _test_identity(d.manifest) for n, d in datas.items()}
    if len(set(identities.values())) > 1:
        raise UserError("The mixes' datasets differ in tokenizer or test split, so their results would not be "
                        "comparable; derive them from one prepared dataset.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path = out_dir / "throughput.json"
    if cert_path.exists():
        cert = throughput.read_certificate(cert_path)
    else:
        fam = load_family(family)
        first = next(iter(datas.values()))
        model_cfg, defaults = fam.config(config, vocab_size=first.vocab_size)
        from languini.config import train_config

        cert = throughput.measure(fam, config, model_cfg, train_config(defaults, {}), progress=progress,
                                  stability=stability.for_class(get_class(class_name)))
        atomic_write_json(cert_path, cert)
    runs: dict[str, list[dict[str, Any]]] = {}
    for mix in mixes:
        for seed in range(seeds):
            run = out_dir / f"{mix.name}-seed{seed}"
            result_path = run / "result.json"
            p = plan(family, config, datas[mix.name].path, class_name, {"seed": seed}, world=World(), certificate=cert,
                     mix=mix, any_tokenizer=any_tokenizer, stability=stability, progress=progress, warn=warn)
            if result_path.exists():
                result = read_json(result_path, "Run result")
                if (result.get("mix_details") or {}).get("digest") != p.mix.digest():
                    raise UserError(f"{run} holds a run of a different mix '{result.get('mix')}'; move it away.")
            else:
                result = trainer.train(p, run, force=True, progress=progress)
            runs.setdefault(mix.name, []).append(result)
    table = comparison_table(runs, class_name)
    atomic_write_bytes(out_dir / "compare.png", png_bytes(mix_comparison(table)))
    atomic_write_json(out_dir / "compare.json", table)
    return table


def train_domain_tokens(data: Any) -> dict[str, int]:
    return {d: v["tokens"] for d, v in data.manifest["splits"]["train"]["by_domain"].items()}


def selection_cost(result: dict[str, Any]) -> dict[str, Any] | None:
    """What a run's data selection cost and whether its budget paid for it (None: no selection)."""
    details = result.get("mix_details") or {}
    sel = details.get("selection")
    if not sel:
        return None
    return {"method": sel.get("method"), "selection_hours": sel.get("selection_hours"),
            "selection_reference": sel.get("selection_reference"), "selection_flops": sel.get("selection_flops"),
            "charged": sel.get("charge") is True}


def comparison_table(runs: dict[str, list[dict[str, Any]]], class_name: str) -> dict[str, Any]:
    rows = []
    for name, results in runs.items():
        domains = sorted({d for r in results for d in r["test"]["by_domain"]})
        rows.append({
            "mix": name,
            "tokens": results[0]["tokens_trained"],
            "reference_hours": results[0].get("reference_hours"),
            "seeds": len(results),
            "bits_per_byte": _mean_spread([r["test"]["bits_per_byte"] for r in results]),
            "by_domain": {d: _mean_spread([r["test"]["by_domain"][d]["bits_per_byte"] for r in results
                                           if d in r["test"]["by_domain"]]) for d in domains},
            "weights": (results[0].get("mix_details") or {}).get("weights"),
            "selection": selection_cost(results[0]),
        })
    rows.sort(key=lambda r: r["bits_per_byte"]["mean"])
    return {"compute_class": class_name, "rows": rows}


def cost_text(sel: dict[str, Any] | None) -> str:
    """A row's `selection` in a few words: method, cost, and whether the budget paid it."""
    if sel is None:
        return "–"
    if sel["selection_hours"] is not None:
        cost = f"{sel['selection_hours']:.3g} h"
    elif sel["selection_flops"] is not None:
        cost = f"{sel['selection_flops']:.3g} FLOPs"
    else:
        cost = "cost unknown"
    return f"{sel['method']}: {cost}" + (" (charged)" if sel["charged"] else "")


def comparison_markdown(table: dict[str, Any]) -> str:
    """The table: one row per mix, best first; selection cost beside each (charged or not)."""
    domains = sorted({d for r in table["rows"] for d in r["by_domain"]})
    head = "| mix | tokens | seeds | test bits/byte | " + " | ".join(domains) + " | selection cost |"
    lines = [head, "|" + "---|" * (5 + len(domains))]
    for r in table["rows"]:
        cells = [f"{r['by_domain'][d]['mean']:.4f} ± {r['by_domain'][d]['spread']:.4f}" if d in r["by_domain"]
                 else "–" for d in domains]
        lines.append(f"| {r['mix']} | {r['tokens']:,} | {r['seeds']} | {r['bits_per_byte']['mean']:.4f} ± "
                     f"{r['bits_per_byte']['spread']:.4f} | " + " | ".join(cells) + f" | {cost_text(r['selection'])} |")
    return "\n".join(lines)
