"""`languini mix compare`: data mixes trained at equal compute and tabulated side by side.

A workflow on top of the engines: one throughput certificate for every run (so one token
budget, less a charged selection's cost), every mix's data sharing the tokenizer and the test
split (so every run is scored on the same text), then a table and a figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from languini import throughput, trainer
from languini.compute import get_class
from languini.config import train_config
from languini.data.loader import PreparedData
from languini.data.manifest import Manifest
from languini.distributed import World
from languini.errors import UserError, to_stderr
from languini.family import load_family
from languini.io import atomic_write_bytes, atomic_write_json
from languini.mix import load_mix, selection_row, selection_text
from languini.plan import plan
from languini.plots import mix_comparison, png_bytes
from languini.run import RunResult
from languini.throughput import Stability

def _test_identity(manifest: Manifest) -> tuple:
    """What must agree for two datasets to be scored on the same text with the same ids."""
    return manifest.tokenizer_sha256, manifest.shard_hashes("test")


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
    if seeds < 1:
        raise UserError("--seeds must be at least 1.")
    stability = stability or Stability()
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
                found = RunResult.read(result_path)
                if (found.mix_details or {}).get("digest") != p.mix.digest():
                    raise UserError(f"{run} holds a run of a different mix '{found.mix}'; move it away.")
                result = found.to_dict()
            else:
                result = trainer.train(p, run, force=True, progress=progress)
            runs.setdefault(mix.name, []).append(result)
    table = comparison_table(runs, class_name)
    atomic_write_bytes(out_dir / "compare.png", png_bytes(mix_comparison(table)))
    atomic_write_json(out_dir / "compare.json", table)
    return table


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
            "selection": selection_row(results[0]),
        })
    rows.sort(key=lambda r: r["bits_per_byte"]["mean"])
    return {"compute_class": class_name, "rows": rows}


def comparison_markdown(table: dict[str, Any]) -> str:
    """The table: one row per mix, best first; selection cost beside each (charged or not)."""
    domains = sorted({d for r in table["rows"] for d in r["by_domain"]})
    head = "| mix | tokens | seeds | test bits/byte | " + " | ".join(domains) + " | selection cost |"
    lines = [head, "|" + "---|" * (5 + len(domains))]
    for r in table["rows"]:
        cells = [f"{r['by_domain'][d]['mean']:.4f} ± {r['by_domain'][d]['spread']:.4f}" if d in r["by_domain"]
                 else "–" for d in domains]
        lines.append(f"| {r['mix']} | {r['tokens']:,} | {r['seeds']} | {r['bits_per_byte']['mean']:.4f} ± "
                     f"{r['bits_per_byte']['spread']:.4f} | " + " | ".join(cells) + f" | {selection_text(r['selection'])} |")
    return "\n".join(lines)
