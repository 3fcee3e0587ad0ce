"""Submission checks, bundles, and the leaderboard table.

The promise of a compute class is that two results in it got the same compute. `check`
verifies that from the files alone: the certificate is self-consistent (its rate is what its
own step times say), it measured the config that was trained, the budget recomputed from it
is the one trained, training stopped within one step of it, the test evaluation covered the
whole test split under the fixed protocol, and no metric is NaN. A bundle is those files
plus the data manifest, the final weights and their checksums, so a leaderboard can re-check
it anywhere, and `languini verify` can re-score it.

Results are ranked only against results with the same evaluation identity (the test text and
protocol, see `languini.data.identity`) in the same compute class: one table per pair. The
reported metrics must agree with each other and with the split's counts, and an entry that a
reviewer re-scored from its weights (`verified.json`, written by `languini verify`) says so.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from languini.compute import Charge, budget_from_certificate, get_class, trained_compute
from languini.config import load_run_config
from languini.data.identity import SHORT, Identified, identify_result
from languini.data.manifest import BUNDLED, MANIFEST_FILE, STREAMS, Manifest, default_stride, read_manifest
from languini.errors import UserError
from languini.evaluate import implied_nll_sums
from languini.io import atomic_dir, atomic_write_json, sha256_file, to_json
from languini.mix import selection_row, selection_text
from languini.run import RunResult, build_run_model
from languini.throughput import model_mismatch, noisy_reason, rate_mismatch
from languini.verify import bundle_weights, verification_status

FILES = ("config.toml", "throughput.json", "budget.json", "metrics.jsonl", "result.json")
BUNDLE_SCHEMA = 1


@dataclass
class Entry:
    """A run directory or a bundle, read for checking; `problems` collects named failures."""

    path: Path
    files: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    identity: Identified | None = None
    verified: dict[str, Any] | None = None  # the verification record, where one holds

    def fail(self, check: str, why: str) -> None:
        self.problems.append(f"{check}: {why}")

    @property
    def run(self) -> str:
        """The bundle's or run folder's name: what tells two rows of one model apart."""
        return self.path.absolute().name

    @property
    def rankable(self) -> bool:
        """Valid, and its evaluation identity known: it can go into a table."""
        return not self.problems and self.identity is not None and self.identity.digest is not None

    @property
    def result(self) -> RunResult | None:
        """None where result.json is missing or is no run result (`problems` says which)."""
        return self.files.get("result.json")


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
            elif name == "result.json":
                entry.files[name] = RunResult.from_dict(json.loads(path.read_text()), path)
            else:
                entry.files[name] = json.loads(path.read_text())
        except (UserError, json.JSONDecodeError, UnicodeDecodeError) as e:
            entry.fail("readable", f"{name} cannot be read ({e})")


def _data_manifest(entry: Entry) -> Manifest | None:
    """The bundle's copy of the data manifest, else the manifest of the data the run names."""
    cfg = entry.files.get("config.toml")
    for folder, file in ((entry.path, BUNDLED), (Path(cfg.data) if cfg else None, MANIFEST_FILE)):
        if folder is not None and (folder / file).is_file():
            return read_manifest(folder, file)
    return None


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
    cert, cfg = e.files["throughput.json"], e.files["config.toml"]
    if why := rate_mismatch(cert):
        e.fail("certificate", why)
    if cert.get("model") != cfg.family:
        e.fail("config-hash", f"the certificate is for '{cert.get('model')}', the run trained '{cfg.family}'")
        return
    try:
        _, model_cfg, model = build_run_model(cfg, e.path)
    except UserError as err:
        e.fail("config-hash", str(err))
        return
    params = model.num_params()
    if cert.get("params") != params:
        e.fail("certificate", f"params {cert.get('params')} is not the trained model's {params}")
    if why := model_mismatch(cert, cfg.family, model_cfg):
        e.fail("config-hash", why)


def _check_stability(e: Entry) -> None:
    """A budget in hours rests on the measured rate: a busy machine's (noisy) one does not count."""
    try:
        cls = get_class(e.files["budget.json"]["compute_class"])
    except (UserError, KeyError):
        return  # the budget check names an unknown class
    reason = noisy_reason(e.files["throughput.json"])
    if reason and cls.uses_throughput:
        e.fail("stability", f"the certificate is marked noisy ({reason}), and the budget was bought with it")


def _check_budget(e: Entry) -> None:
    cert, budget, result = e.files["throughput.json"], e.files["budget.json"], e.result
    try:
        recomputed = budget_from_certificate(get_class(budget["compute_class"]), cert, budget.get("calibration"),
                                             charge=Charge.from_dict(budget.get("charge")))
    except (UserError, KeyError) as err:
        e.fail("budget", f"cannot recompute the budget from the certificate ({err})")
        return
    for key in ("tokens", "steps", "batch_size", "seq_len"):
        if recomputed.to_dict()[key] != budget.get(key):
            e.fail("budget", f"{key} recomputed from the certificate is {recomputed.to_dict()[key]}, "
                   f"budget.json says {budget.get(key)}")
    step_tokens = recomputed.batch_size * recomputed.seq_len
    trained = result.tokens_trained
    if not (0 <= recomputed.tokens - trained < step_tokens):
        e.fail("tokens", f"trained {trained} tokens, the budget is {recomputed.tokens} (one step is {step_tokens})")
    if result.compute_class != budget.get("compute_class"):
        e.fail("budget", "result.json and budget.json name different compute classes")
    logged = [m["step"] for m in e.files["metrics.jsonl"] if "split" not in m]
    if not logged or logged[-1] != recomputed.steps:
        e.fail("tokens", f"the training log ends at step {logged[-1] if logged else None}, "
               f"the budget is {recomputed.steps} steps")


def _check_evaluation(e: Entry) -> None:
    result = e.result
    test = result.test
    protocol = test.get("protocol") or {}
    if protocol.get("split") != "test" or not protocol.get("whole_split"):
        e.fail("evaluation", "the test metrics were not computed on the whole test split")
    manifest = _data_manifest(e)
    if manifest is None:
        e.fail("evaluation", "the data manifest is not available to check the test split against")
        return
    if manifest.fingerprint != result.data.get("fingerprint"):
        e.fail("evaluation", "the data manifest is not the one the run trained on")
    expected = manifest.split("test")["tokens"] - 1
    if test.get("tokens") != expected:
        e.fail("evaluation", f"scored {test.get('tokens')} test tokens, the whole split has {expected}")
    if any(not math.isfinite(v) for v in _numbers(result.to_dict())):
        e.fail("metrics", "result.json holds a NaN or infinite number")
        return
    _check_metrics_agree(e, test, manifest.split("test"))
    _check_identity(e, manifest)


AGREEMENT_RTOL = 1e-9  # the metrics are one float64 sum divided by integer counts


def _check_metrics_agree(e: Entry, test: dict[str, Any], split: dict[str, Any]) -> None:
    """Bits per byte, token and character perplexity come from one NLL sum and the split's
    counts, which the manifest fixes; the domains' sums and counts add up to the whole."""
    counts = {"bytes": split.get("bytes"), "chars": split.get("chars")}
    for key, expected in counts.items():
        if test.get(key) != expected:
            e.fail("metrics", f"the test metrics count {test.get(key)} {key}, the test split has {expected}")
    try:
        sums = {"total": _agreeing_sum(e, "test", test)}
        for domain, m in (test.get("by_domain") or {}).items():
            sums[domain] = _agreeing_sum(e, f"test domain {domain}", m)
            manifest_domain = (split.get("by_domain") or {}).get(domain) or {}
            for key in counts:
                if m.get(key) != manifest_domain.get(key):
                    e.fail("metrics", f"domain {domain} counts {m.get(key)} {key}, the test split has "
                           f"{manifest_domain.get(key)}")
        domains = list((test.get("by_domain") or {}).values())
        if domains:
            for key in ("tokens", "bytes", "chars"):
                if sum(m[key] for m in domains) != test[key]:
                    e.fail("metrics", f"the domains' {key} do not add up to the split's")
            parts = sum(v for k, v in sums.items() if k != "total")
            if not math.isclose(parts, sums["total"], rel_tol=AGREEMENT_RTOL):
                e.fail("metrics", f"the domains' NLL sums add up to {parts:.6f}, the whole split's is "
                       f"{sums['total']:.6f}")
    except (KeyError, TypeError, ValueError) as err:
        e.fail("metrics", f"the test metrics are incomplete ({err})")


def _agreeing_sum(e: Entry, where: str, m: dict[str, Any]) -> float:
    """The NLL sum that `m`'s metrics imply, after naming any metric that implies another."""
    sums = implied_nll_sums(m)
    base = sums["bits_per_byte"]
    for name in ("token_perplexity", "char_perplexity"):
        if not math.isclose(sums[name], base, rel_tol=AGREEMENT_RTOL):
            e.fail("metrics", f"{where}: {name} {m[name]} implies an NLL sum of {sums[name]:.6f} nats, "
                   f"bits_per_byte {m['bits_per_byte']} implies {base:.6f}; they come from one sum and must agree")
    correct = m.get("accuracy", 0) * m["tokens"]
    if not 0 <= m.get("accuracy", 0) <= 1 or abs(correct - round(correct)) > 1e-6:
        e.fail("metrics", f"{where}: accuracy {m.get('accuracy')} is no count of right guesses out of {m['tokens']}")
    return base


def _check_identity(e: Entry, manifest: Manifest) -> None:
    """Find the entry's evaluation identity; the result and its manifest must not disagree on
    it, and the result must have been scored under the protocol the identity names."""
    e.identity = identify_result(e.result.to_dict(), manifest)
    recorded, listed = e.result.evaluation_identity, manifest.evaluation_identity
    if recorded and listed and recorded != listed:
        e.fail("evaluation", f"result.json names evaluation identity {recorded[:10]}, its data manifest "
               f"{listed[:10]}")
    protocol = e.result.test.get("protocol") or {}
    if protocol.get("streams") is not None:
        if protocol["streams"] != STREAMS:
            e.fail("evaluation", f"scored as {protocol['streams']} streams, the protocol says {STREAMS}")
    elif isinstance(protocol.get("seq_len"), int) and protocol.get("stride") != default_stride(protocol["seq_len"]):
        e.fail("evaluation", f"scored with stride {protocol.get('stride')}, the protocol says "
               f"{default_stride(protocol['seq_len'])}")


def _check_checksums(e: Entry) -> None:
    path = e.path / "checksums.json"
    if not path.is_file():
        return  # a run directory; bundles always carry checksums
    for name, digest in json.loads(path.read_text()).items():
        if not (e.path / name).is_file() or sha256_file(e.path / name) != digest:
            e.fail("checksums", f"{name} does not match its checksum")


def _check_verification(e: Entry) -> None:
    e.verified, why = verification_status(e.path)
    if why:
        e.fail("verify", why)


def check(path: str | Path) -> Entry:
    """Every submission check on a run directory or bundle; the entry lists what failed.

    A path that does not exist is a mistake on the command line, not an entry: it is refused."""
    e = Entry(Path(path))
    if not e.path.exists():
        raise UserError(f"{e.path} does not exist.")
    if not e.path.is_dir():
        e.fail("finished", f"{e.path} is not a folder")
        return e
    _read(e)
    if e.problems:
        return e
    _check_checksums(e)
    _check_certificate(e)
    _check_stability(e)
    _check_budget(e)
    _check_evaluation(e)
    _check_verification(e)
    return e


def submit(run_dir: str | Path, out: str | Path, weights: bool = True) -> dict[str, Any]:
    """Check a finished run and write its bundle; refuse, naming every failed check.

    The bundle carries the final weights (`weights=False`: only their digest and size), so a
    reviewer can re-score it with `languini verify`."""
    e = check(run_dir)
    if (e.path / "checksums.json").exists():
        raise UserError(f"{e.path} is already a bundle.")
    if e.problems:
        raise UserError(f"Submission refused, {len(e.problems)} check(s) failed: " + "; ".join(e.problems) + ".")
    manifest = _data_manifest(e)
    with atomic_dir(out) as tmp:
        for name in FILES:
            shutil.copy2(e.path / name, tmp / name)
        (tmp / "data_manifest.json").write_text(to_json(manifest.to_dict()))
        record = bundle_weights(e.path, tmp, include=weights)
        sums = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        atomic_write_json(tmp / "checksums.json", sums)
    return {"bundle": str(out), "schema": BUNDLE_SCHEMA, "files": sums, "weights": record, "checks": "all passed"}


def row(e: Entry) -> dict[str, Any]:
    r: RunResult = e.result  # type: ignore[assignment]  # rows are made of entries whose result was read
    compute, unit = trained_compute(r.to_dict())
    return {"run": e.run, "path": str(e.path), "family": r.family, "config": r.config,
            "params": r.params, "compute_class": r.compute_class,
            "tokens_trained": r.tokens_trained, "reference_hours": r.reference_hours,
            "bits_per_byte": r.test.get("bits_per_byte"), "char_perplexity": r.test.get("char_perplexity"),
            "device": r.device, "mix": r.mix, "selection": selection_row(r.to_dict()),
            "evaluation_identity": e.identity.digest if e.identity else None,
            "dataset": e.identity.dataset if e.identity else None, "verified": e.verified is not None,
            "compute": compute, "compute_unit": unit, "warnings": r.warnings}


@dataclass
class Group:
    """One leaderboard table: the entries scored on one test text under one protocol, in one
    compute class, best (lowest test bits-per-byte) first. Tables are never ranked together."""

    evaluation_identity: str
    compute_class: str
    datasets: list[str]
    rows: list[dict[str, Any]]

    @property
    def short(self) -> str:
        return self.evaluation_identity[:SHORT]

    @property
    def heading(self) -> str:
        return f"{self.compute_class} · {', '.join(self.datasets)} (evaluation {self.short})"

    def to_dict(self) -> dict[str, Any]:
        return {"evaluation_identity": self.evaluation_identity, "short": self.short,
                "dataset": ", ".join(self.datasets), "compute_class": self.compute_class, "heading": self.heading,
                "rows": self.rows}


def load_entries(paths: Iterable[str | Path]) -> list[Entry]:
    """Every entry checked; a path that does not exist stops it all (see `check`)."""
    return [check(path) for path in paths]


def group_entries(entries: Iterable[Entry]) -> list[Group]:
    """The rankable entries as one table per (evaluation identity, compute class), ordered by
    dataset and class; the others are `invalid_entries` and `unidentified_entries`."""
    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        if e.rankable:
            groups.setdefault((e.identity.digest, e.result.compute_class), []).append(e)  # type: ignore[union-attr]
    tables = [Group(identity, cls, sorted({e.identity.dataset for e in members}),  # type: ignore[union-attr]
                    sorted((row(e) for e in members), key=lambda r: r["bits_per_byte"]))
              for (identity, cls), members in groups.items()]
    return sorted(tables, key=lambda g: (g.datasets, g.compute_class, g.evaluation_identity))


def invalid_entries(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    return [{"run": e.run, "path": str(e.path), "reasons": e.problems} for e in entries if e.problems]


def unidentified_entries(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    """Valid entries whose evaluation identity cannot be found: listed apart, with why."""
    return [{**row(e), "reason": e.identity.how} for e in entries  # type: ignore[union-attr]
            if not e.problems and not e.rankable]


def leaderboard(paths: list[str | Path]) -> dict[str, Any]:
    """Tables per evaluation identity and class, best first; invalid and unidentified apart."""
    return board(load_entries(paths))


def board(entries: list[Entry]) -> dict[str, Any]:
    """The leaderboard of entries already checked (the site keeps the entries for their pages)."""
    return {"groups": [g.to_dict() for g in group_entries(entries)], "invalid": invalid_entries(entries),
            "unidentified": unidentified_entries(entries)}


def markdown(board: dict[str, Any]) -> str:
    """One table per evaluation identity and class, in the class's unit (reference-hours, or
    training FLOPs); an entry whose result carries warnings is marked ⚠ and its warnings are listed under the table."""
    out = []
    for group in board["groups"]:
        rows = group["rows"]
        unit = "training FLOPs" if rows[0]["compute_unit"] == "FLOPs" else "reference-hours"
        out += [f"### {group['heading']}", "", f"| # | run | model | params | tokens | {unit} | test bits/byte "
                "| char ppl | device | data selection | verified |", "|---|---|---|---:|---:|---:|---:|---:|---|---|---|"]
        for i, r in enumerate(rows, 1):
            mark = " ⚠" if r["warnings"] else ""
            out.append(f"| {i} | {r['run']} | {r['family']}/{r['config']}{mark} | {r['params']:,} | "
                       f"{r['tokens_trained']:,} | {r['compute']:.4g} | {r['bits_per_byte']:.4f} | "
                       f"{r['char_perplexity']:.3f} | {r['device']} | {selection_text(r['selection'])} | "
                       f"{'yes' if r['verified'] else '–'} |")
        out.append("")
        out += [f"⚠ {i}: {w}" for i, r in enumerate(rows, 1) for w in r["warnings"]]
        out += [""] if any(r["warnings"] for r in rows) else []
    if board["unidentified"]:
        out += ["### Entries of unknown evaluation identity (not ranked)", ""]
        out += [f"- `{x['run']}` ({x['path']}): {x['reason']}" for x in board["unidentified"]]
    if board["invalid"]:
        out += ["### Invalid entries", ""]
        out += [f"- `{x['run']}` ({x['path']}): " + "; ".join(x["reasons"]) for x in board["invalid"]]
    return "\n".join(out) if out else "No entries."
