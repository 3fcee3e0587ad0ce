"""Which evaluation identity a run's result has: which results may be compared.

Two test bits-per-byte figures are comparable only when they were scored on the same text under
the same rules. The identity is a sha256 over both: the test split's decoded documents in order
(text, not tokens, since bits-per-byte is comparable across tokenizers) and a versioned string
naming the protocol. It is computed once, when a dataset is prepared, and written into its
manifest; derived datasets (dedup, selection) copy the test split byte for byte and keep it.
Leaderboards make one table per identity and fits refuse to mix two. The identity and its
protocol are defined with the manifest (`manifest.evaluation_identity`, `PROTOCOL`) and
computed from a dataset's decoded test text (`derive.compute_identity`); this module finds a
result's.

A result made before identities existed is identified by recomputing the identity from the
data it names, when that data is still there and is the one its manifest fingerprinted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from languini.data.derive import identity_of
from languini.data.loader import PreparedData
from languini.data.manifest import BUNDLED, MANIFEST_FILE, Manifest, dataset_name, read_manifest
from languini.errors import UserError
from languini.run import RunResult

SHORT = 10  # hex digits of the identity shown in table headings


@dataclass(frozen=True)
class Identified:
    """A result's evaluation identity and dataset name, and how it was found; `digest` is None
    when it cannot be found, and `how` then says why."""

    digest: str | None
    dataset: str
    how: str

    @property
    def short(self) -> str:
        return (self.digest or "")[:SHORT]


def identify_result(result: dict[str, Any], manifest: Mapping[str, Any] | None) -> Identified:
    """The identity of a run's result: the one it recorded, else its data manifest's, else one
    recomputed from the data folder it names when that folder still holds the fingerprinted data."""
    data = result.get("data") or {}
    listed = Manifest(manifest or {})
    name = result.get("dataset") or dataset_name(listed, data.get("path") or "unknown")
    if result.get("evaluation_identity"):
        return Identified(result["evaluation_identity"], name, "recorded")
    if listed.evaluation_identity:
        return Identified(listed.evaluation_identity, name, "from its data manifest")
    path = Path(data["path"]) if data.get("path") else None
    if path is None or not (path / MANIFEST_FILE).is_file():
        return Identified(None, name, f"it records no evaluation identity and its data ({path}) is not here to "
                                      "recompute it from")
    try:
        folder = PreparedData(path)
        if folder.fingerprint != data.get("fingerprint"):
            return Identified(None, name, f"it records no evaluation identity and the data at {path} is no longer "
                                          "the data it was scored on")
        return Identified(identity_of(folder), name, f"recomputed from {path}")
    except UserError as e:
        return Identified(None, name, f"it records no evaluation identity and the data at {path} cannot be read ({e})")


def identify_run(folder: str | Path) -> Identified:
    """`identify_result` for a run directory or bundle (a bundle carries its data manifest)."""
    folder = Path(folder)
    manifest = read_manifest(folder, BUNDLED) if (folder / BUNDLED).is_file() else None
    return identify_result(RunResult.read(folder / "result.json").to_dict(), manifest)
