"""Re-scoring a submission from its weights, as a reviewer would.

A bundle's checksums prove only that nothing changed after bundling, and the leaderboard's
metric check only that the reported numbers agree with each other. `verify` closes the gap: it
rebuilds the model from the bundle's config and final weights, runs the test evaluation of
`languini.evaluate` on the named dataset (whose test text must have the run's evaluation
identity) and compares every metric with `result.json`. The outcome is written into the bundle
as `verified.json`, tied to the sha256 of the `result.json` and weights it verified, so the
leaderboard can show it and notices a result changed afterwards.

Weights are identified by a digest of the tensors, not of a file: names, dtypes, shapes and
raw bytes in name order. The same weights saved twice, or read from a run's checkpoint, have
the same digest, so a bundle made with `--no-weights` can be verified with the run directory
or any `torch.save`d state dict holding them.
"""

from __future__ import annotations

import hashlib
import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch

from languini import __version__
from languini import device as devices
from languini.data.derive import compute_identity
from languini.data.identity import identify_result
from languini.data.loader import PreparedData
from languini.data.manifest import BUNDLED, Manifest, read_manifest
from languini.errors import UserError
from languini.evaluate import evaluate_model
from languini.io import atomic_write_json, read_json, sha256_file
from languini.run import RunDir, RunResult, load_run_model
from languini.throughput import read_certificate

WEIGHTS_FILE = "weights.pt"
WEIGHTS_RECORD = "weights.json"
VERIFIED_FILE = "verified.json"
CPU_RTOL = 1e-6
"""A CPU evaluation in fp32 is deterministic: the same weights give the same metrics."""
GPU_RTOL = 1e-3
"""Where the run was evaluated on a GPU or is re-scored on one: bf16 autocast keeps about three
significant digits per logit, and another GPU, library version or fp32 on a CPU rounds them
differently; summed over a split the metrics move by far less, but not by 1e-6."""
DIGEST_FORMAT = "languini-weights/1: sha256 over tensors in name order, each name, dtype, shape, raw bytes"


def weights_digest(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """sha256 and size (bytes of tensor data) of a state dict, independent of how it was saved."""
    h = hashlib.sha256(DIGEST_FORMAT.encode())
    size = 0
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(raw)
        size += len(raw)
    return {"sha256": h.hexdigest(), "bytes": size, "tensors": len(state), "format": DIGEST_FORMAT}


def bundle_weights(run_dir: Path, folder: Path, include: bool) -> dict[str, Any]:
    """Write the run's final weights into a bundle being made (unless not `include`) and the
    record of their digest, which is there either way."""
    state = RunDir(run_dir).load_checkpoint()["model"]
    record = {**weights_digest(state), "file": WEIGHTS_FILE if include else None}
    if include:
        torch.save(state, folder / WEIGHTS_FILE)
    atomic_write_json(folder / WEIGHTS_RECORD, record)
    return record


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a run directory's checkpoint, or from a file holding one (a bundle's
    weights.pt, or a checkpoint-like dict with a `model` entry); files load tensors only."""
    if path.is_dir():
        return RunDir.open(path).load_checkpoint()["model"]
    if not path.is_file():
        raise UserError(f"Weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not a plain state dict
        raise UserError(f"{path} does not hold a state dict of tensors ({type(e).__name__}).") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors.")
    return state


def _weights_of(folder: Path, given: Path | None) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The weights to score and the digest the bundle recorded for them (None for a run
    directory, or a bundle made before weights were bundled)."""
    record_path = folder / WEIGHTS_RECORD
    record = read_json(record_path, "Weights record") if record_path.is_file() else None
    if given is not None:
        return load_weights(given), record
    if record is not None and record.get("file"):
        return load_weights(folder / record["file"]), record
    if (folder / "checkpoints").is_dir():
        return load_weights(folder), record
    raise UserError(f"{folder} carries no weights (it was bundled with --no-weights, or before bundles held "
                    "them); give them with --weights RUN_DIR_OR_FILE.")


def _paired_leaves(recorded: Any, recomputed: Any, where: str) -> Iterator[tuple[str, Any, Any]]:
    """Every leaf of the recorded metrics beside the recomputed one at the same place."""
    if isinstance(recorded, dict):
        for key, value in recorded.items():
            yield from _paired_leaves(value, recomputed.get(key) if isinstance(recomputed, dict) else None,
                                f"{where}.{key}")
    else:
        yield where, recorded, recomputed


def _differs(a: Any, b: Any, rtol: float) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return not math.isclose(a, b, rel_tol=rtol, abs_tol=rtol * 1e-3)
    return a != b


def compare(result: RunResult, recomputed: dict[str, Any], rtol: float, unigram: bool) -> list[str]:
    """Each metric of `result` that the recomputed evaluation does not reproduce, named."""
    leaves = list(_paired_leaves(result.test, recomputed["test"], "test"))
    if unigram:
        leaves.append(("unigram_bits_per_byte", result.unigram_bits_per_byte, recomputed["unigram_bits_per_byte"]))
    return [f"{where}: recorded {a}, recomputed {b}" for where, a, b in leaves if _differs(a, b, rtol)]


def _check_data(folder: Path, result: RunResult, manifest: Manifest | None, data: PreparedData) -> str:
    """Refuse data that is not the test text and tokenizer the run was scored with; return the
    identity recomputed from its text (the manifest's word is not taken for it)."""
    claimed = identify_result(result.to_dict(), manifest)
    actual = compute_identity(data)
    if claimed.digest and actual != claimed.digest:
        raise UserError(f"{data.path} is not the test set {folder.name} was scored on (evaluation identity "
                        f"{actual[:10]}, the run's is {claimed.short}).")
    tokenizer = manifest.tokenizer_sha256 if manifest else None
    if tokenizer and data.manifest.tokenizer_sha256 != tokenizer:
        raise UserError(f"{data.path} holds the run's test text under another tokenizer; verify needs the data "
                        "the run was trained on (or one derived from it).")
    return actual


def _rtol(folder: Path, dev: torch.device) -> float:
    cert = folder / "throughput.json"
    trained_on = read_certificate(cert).get("device_type", "cpu") if cert.is_file() else "cpu"
    return CPU_RTOL if dev.type == "cpu" and trained_on == "cpu" else GPU_RTOL


def verify(bundle: str | Path, data_dir: str | Path, weights: str | Path | None = None, device: str = "auto",
           batch_size: int = 64, progress: bool = False) -> dict[str, Any]:
    """Re-run the test evaluation of a bundle (or run directory) from its weights on `data_dir`,
    compare every metric, and record the outcome as `verified.json` in it."""
    folder = Path(bundle)
    if not (folder / "result.json").is_file() or not (folder / "config.toml").is_file():
        raise UserError(f"{folder} is not a bundle or finished run (it needs result.json and config.toml).")
    result = RunResult.read(folder / "result.json")
    manifest = read_manifest(folder, BUNDLED) if (folder / BUNDLED).is_file() else None
    data = PreparedData(data_dir)
    identity = _check_data(folder, result, manifest, data)
    state, record = _weights_of(folder, Path(weights) if weights is not None else None)
    digest = weights_digest(state)
    dev = devices.resolve(device)
    rtol = _rtol(folder, dev)
    recomputed = None
    if record is not None and digest["sha256"] != record["sha256"]:
        mismatches = [f"weights: their digest {digest['sha256'][:12]} is not the bundled record's "
                      f"{record['sha256'][:12]}"]
    else:
        rm = load_run_model(folder, str(dev), data=data, weights=state)
        recomputed = evaluate_model(rm, "test", batch_size, progress=progress)
        same_data = data.fingerprint == result.data.get("fingerprint")
        mismatches = compare(result, recomputed, rtol, unigram=same_data)
    report = {
        "passed": not mismatches,
        "mismatches": mismatches,
        "result_sha256": sha256_file(folder / "result.json"),
        "weights_sha256": digest["sha256"],
        "evaluation_identity": identity,
        "data": {"path": str(data.path.resolve()), "fingerprint": data.fingerprint},
        "rtol": rtol,
        "device": str(dev),
        "torch": torch.__version__,
        "host": platform.node(),
        "languini_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recomputed": recomputed,
    }
    atomic_write_json(folder / VERIFIED_FILE, report)
    return report


def verification_status(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the verification record when it holds for the bundle as it is now, why it fails when it
    does not); (None, None) when the bundle was never verified."""
    path = folder / VERIFIED_FILE
    if not path.is_file():
        return None, None
    try:
        record = read_json(path, "Verification record")
        if record["result_sha256"] != sha256_file(folder / "result.json"):
            return None, f"{VERIFIED_FILE} verified another result.json than the one here"
        weights = folder / WEIGHTS_RECORD
        if weights.is_file() and read_json(weights, "Weights record")["sha256"] != record["weights_sha256"]:
            return None, f"{VERIFIED_FILE} verified other weights than the ones this bundle records"
        if not record["passed"]:
            return None, "re-scored from its weights, the test metrics differ: " + "; ".join(record["mismatches"])
    except (UserError, KeyError, TypeError) as e:
        return None, f"{VERIFIED_FILE} cannot be read ({e})"
    return record, None
