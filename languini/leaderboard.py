"""Submission checks, bundles, and the leaderboard table.

The promise of a compute class is that two results in it got the same compute. `check`
verifies that from the files alone: the certificate is self-consistent (its rate is what its
own step times say), it measured the config that was trained, the budget recomputed from it
is the one trained, training stopped within one step of it, the test evaluation covered the
whole test split under the fixed protocol, and no metric is NaN. A bundle is those files
plus the data manifest and their checksums, so a leaderboard can re-check it anywhere.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from languini.compute import budget_from_certificate, get_class
from languini.config import load_run_config
from languini.errors import UserError
from languini.family import config_hash, load_family, make_dataclass_strict
from languini.io import atomic_dir, atomic_write_json, sha256_file, to_json
from languini.mixes import cost_text, selection_cost

FILES = ("config.toml", "throughput.json", "budget.json", "metrics.jsonl", "result.json")
BUNDLE_SCHEMA = 1


@dataclass
class Entry:
    """A run directory or a bundle, read for checking; `problems` collects named failures."""

    path: Path
    files: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def fail(self, check: str, why: str) -> None:
        self.problems.append(f"{check}: {why}")

    @property
    def result(self) -> dict[str, Any]:
        return self.files.get("result.json") or {}


def _read(entry: Entry) -> None:
    for name in FILES:
        path = entry.path / name
        if not path.is_file():
            entry.fail("finished", f"{name} is missing")
            continue
        try:
            if name == "config.toml":
                entry.files[name] = load_run_config(path)
            elif name == "metrics.jsonl":
                entry.files[name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            else:
                entry.files[name] = json.loads(path.read_text())
        except (UserError, json.JSONDecodeError, UnicodeDecodeError) as e:
            entry.fail("readable", f"{name} cannot be read ({e})")


def _data_manifest(entry: Entry) -> dict[str, Any] | None:
    bundled = entry.path / "data_manifest.json"
    if bundled.is_file():
        return json.loads(bundled.read_text())
    cfg = entry.files.get("config.toml")
    path = Path(cfg.data) / "manifest.json" if cfg else None
    return json.loads(path.read_text()) if path and path.is_file() else None


def _numbers(obj: Any) -> Iterator[float]:
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, float):
        yield obj


def _check_certificate(e: Entry) -> None:
    from languini.throughput import tokens_per_second_of

    cert, cfg = e.files["throughput.json"], e.files["config.toml"]
    try:
        implied = tokens_per_second_of(cert)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        e.fail("certificate", "the certificate lacks its step times, batch size or sequence length")
        return
    if not math.isclose(implied, float(cert.get("tokens_per_second", -1)), rel_tol=1e-9):
        e.fail("certificate", f"tokens_per_second {cert.get('tokens_per_second')} is not what its own step times "
               f"give ({implied:.6g})")
    if cert.get("model") != cfg.family:
        e.fail("config-hash", f"the certificate is for '{cert.get('model')}', the run trained '{cfg.family}'")
        return
    try:
        family = load_family(cfg.family)
        model_cfg = make_dataclass_strict(family.config_class, cfg.model, "the run's model config")
    except UserError as err:
        e.fail("config-hash", str(err))
        return
    params = family.build(model_cfg).num_params()
    if cert.get("params") != params:
        e.fail("certificate", f"params {cert.get('params')} is not the trained model's {params}")
    trained = config_hash(model_cfg)
    if cert.get("config_hash") != trained:
        e.fail("config-hash", f"the certificate measured config {cert.get('config_hash')}, the run trained {trained}")


def _check_budget(e: Entry) -> None:
    cert, budget, result = e.files["throughput.json"], e.files["budget.json"], e.result
    try:
        recomputed = budget_from_certificate(get_class(budget["compute_class"]), cert, budget.get("calibration"),
                                             charge=budget.get("charge"))
    except (UserError, KeyError) as err:
        e.fail("budget", f"cannot recompute the budget from the certificate ({err})")
        return
    for key in ("tokens", "steps", "batch_size", "seq_len"):
        if recomputed.to_dict()[key] != budget.get(key):
            e.fail("budget", f"{key} recomputed from the certificate is {recomputed.to_dict()[key]}, "
                   f"budget.json says {budget.get(key)}")
    step_tokens = recomputed.batch_size * recomputed.seq_len
    trained = result.get("tokens_trained", -1)
    if not (0 <= recomputed.tokens - trained < step_tokens):
        e.fail("tokens", f"trained {trained} tokens, the budget is {recomputed.tokens} (one step is {step_tokens})")
    if result.get("compute_class") != budget.get("compute_class"):
        e.fail("budget", "result.json and budget.json name different compute classes")
    logged = [m["step"] for m in e.files["metrics.jsonl"] if "split" not in m]
    if not logged or logged[-1] != recomputed.steps:
        e.fail("tokens", f"the training log ends at step {logged[-1] if logged else None}, "
               f"the budget is {recomputed.steps} steps")


def _check_evaluation(e: Entry) -> None:
    test = e.result.get("test") or {}
    protocol = test.get("protocol") or {}
    if protocol.get("split") != "test" or not protocol.get("whole_split"):
        e.fail("evaluation", "the test metrics were not computed on the whole test split")
    manifest = _data_manifest(e)
    if manifest is None:
        e.fail("evaluation", "the data manifest is not available to check the test split against")
        return
    if manifest.get("fingerprint") != (e.result.get("data") or {}).get("fingerprint"):
        e.fail("evaluation", "the data manifest is not the one the run trained on")
    expected = manifest["splits"]["test"]["tokens"] - 1
    if test.get("tokens") != expected:
        e.fail("evaluation", f"scored {test.get('tokens')} test tokens, the whole split has {expected}")
    if any(not math.isfinite(v) for v in _numbers(e.result)):
        e.fail("metrics", "result.json holds a NaN or infinite number")


def _check_checksums(e: Entry) -> None:
    path = e.path / "checksums.json"
    if not path.is_file():
        return  # a run directory; bundles always carry checksums
    for name, digest in json.loads(path.read_text()).items():
        if not (e.path / name).is_file() or sha256_file(e.path / name) != digest:
            e.fail("checksums", f"{name} does not match its checksum")


def check(path: str | Path) -> Entry:
    """Every submission check on a run directory or bundle; the entry lists what failed."""
    e = Entry(Path(path))
    if not e.path.is_dir():
        e.fail("finished", f"{e.path} is not a folder")
        return e
    _read(e)
    if e.problems:
        return e
    _check_checksums(e)
    _check_certificate(e)
    _check_budget(e)
    _check_evaluation(e)
    return e


def submit(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Check a finished run and write its bundle; refuse, naming every failed check."""
    e = check(run_dir)
    if (e.path / "checksums.json").exists():
        raise UserError(f"{e.path} is already a bundle.")
    if e.problems:
        raise UserError(f"Submission refused, {len(e.problems)} check(s) failed: " + "; ".join(e.problems) + ".")
    manifest = _data_manifest(e)
    with atomic_dir(out) as tmp:
        for name in FILES:
            shutil.copy2(e.path / name, tmp / name)
        (tmp / "data_manifest.json").write_text(to_json(manifest))
        sums = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        atomic_write_json(tmp / "checksums.json", sums)
    return {"bundle": str(out), "schema": BUNDLE_SCHEMA, "files": sums, "checks": "all passed"}


def row(e: Entry) -> dict[str, Any]:
    r = e.result
    test = r.get("test") or {}
    return {"path": str(e.path), "family": r.get("family"), "config": r.get("config"), "params": r.get("params"),
            "compute_class": r.get("compute_class"), "tokens_trained": r.get("tokens_trained"),
            "reference_hours": r.get("reference_hours"), "bits_per_byte": test.get("bits_per_byte"),
            "char_perplexity": test.get("char_perplexity"), "device": r.get("device"),
            "mix": r.get("mix"), "selection": selection_cost(r)}


def leaderboard(paths: list[str | Path]) -> dict[str, Any]:
    """Valid entries grouped by class, best (lowest test bits-per-byte) first; invalid apart."""
    return board([check(path) for path in paths])


def board(entries: list[Entry]) -> dict[str, Any]:
    """The leaderboard of entries already checked (the site keeps the entries for their pages)."""
    classes: dict[str, list[dict[str, Any]]] = {}
    invalid = []
    for e in entries:
        if e.problems:
            invalid.append({"path": str(e.path), "reasons": e.problems})
        else:
            classes.setdefault(e.result["compute_class"], []).append(row(e))
    for rows in classes.values():
        rows.sort(key=lambda r: r["bits_per_byte"])
    return {"classes": classes, "invalid": invalid}


def markdown(board: dict[str, Any]) -> str:
    out = []
    for name, rows in board["classes"].items():
        out += [f"### {name}", "", "| # | model | params | tokens | reference-hours | test bits/byte | char ppl | device "
                "| data selection |", "|---|---|---:|---:|---:|---:|---:|---|---|"]
        for i, r in enumerate(rows, 1):
            out.append(f"| {i} | {r['family']}/{r['config']} | {r['params']:,} | {r['tokens_trained']:,} | "
                       f"{r['reference_hours'] or 0:.4g} | {r['bits_per_byte']:.4f} | {r['char_perplexity']:.3f} | "
                       f"{r['device']} | {cost_text(r['selection'])} |")
        out.append("")
    if board["invalid"]:
        out += ["### Invalid entries", ""]
        out += [f"- `{x['path']}`: " + "; ".join(x["reasons"]) for x in board["invalid"]]
    return "\n".join(out) if out else "No entries."
