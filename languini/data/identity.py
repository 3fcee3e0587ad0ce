"""The evaluation identity: which results may be compared.

Two test bits-per-byte figures are comparable only when they were scored on the same text under
the same rules. The identity is a sha256 over both: the test split's decoded documents in order
(text, not tokens, since bits-per-byte is comparable across tokenizers) and a versioned string
naming the protocol. It is computed once, when a dataset is prepared, and written into its
manifest; derived datasets (dedup, selection) copy the test split byte for byte and keep it.
Leaderboards make one table per identity and fits refuse to mix two.

A result made before identities existed is identified by recomputing the identity from the
data it names, when that data is still there and is the one its manifest fingerprinted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from languini.data.loader import PreparedData
from languini.errors import UserError
from languini.io import read_json
from languini.run import RunResult

STREAMS = 16
"""Stateful models read the split as this many streams, each starting from a zero state.
Part of the protocol, not a speed setting: more streams means less context at their starts."""
STRIDE_DIVISOR = 4
"""Stateless models slide windows of their sequence length by seq_len // STRIDE_DIVISOR."""

PROTOCOL = (
    "languini-eval/1: the whole test split as one token stream, every token after the first predicted once "
    "(end-of-document tokens included); bits per byte = sum of NLL / ln 2 / UTF-8 bytes of the decoded documents; "
    f"stateless models: windows of the model's seq_len moved by seq_len // {STRIDE_DIVISOR}, each token scored once; "
    f"stateful models: {STREAMS} contiguous streams from a zero state, state carried chunk to chunk"
)
"""Change the version when anything that moves a test metric changes; old results then stop
comparing with new ones, as they should."""

SHORT = 10  # hex digits of the identity shown in table headings


def default_stride(seq_len: int) -> int:
    return max(1, seq_len // STRIDE_DIVISOR)


def evaluation_identity(test_documents: Iterable[str], protocol: str = PROTOCOL) -> str:
    """sha256 of the protocol and the documents, each framed by its length (no separator can
    make two different splits hash alike)."""
    h = hashlib.sha256(b"languini-evaluation-identity/1\0")
    _framed(h, protocol.encode("utf-8"))
    for text in test_documents:
        _framed(h, text.encode("utf-8"))
    return h.hexdigest()


def _framed(h: Any, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def compute_identity(data: PreparedData) -> str:
    """The identity recomputed from a dataset's test text, whatever its manifest says."""
    return evaluation_identity(data.texts("test"))


def identity_of(data: PreparedData) -> str:
    """A dataset's identity: its manifest's, or recomputed for data prepared before identities."""
    return data.manifest.get("evaluation_identity") or compute_identity(data)


def dataset_name(manifest: dict[str, Any], folder: str | Path) -> str:
    """A human name for a dataset: the manifest's `name` where one is given, else its folder's."""
    return str(manifest.get("name") or Path(folder).name)


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


def identify_result(result: dict[str, Any], manifest: dict[str, Any] | None) -> Identified:
    """The identity of a run's result: the one it recorded, else its data manifest's, else one
    recomputed from the data folder it names when that folder still holds the fingerprinted data."""
    data = result.get("data") or {}
    name = result.get("dataset") or dataset_name(manifest or {}, data.get("path") or "unknown")
    if result.get("evaluation_identity"):
        return Identified(result["evaluation_identity"], name, "recorded")
    if manifest and manifest.get("evaluation_identity"):
        return Identified(manifest["evaluation_identity"], name, "from its data manifest")
    path = Path(data["path"]) if data.get("path") else None
    if path is None or not (path / "manifest.json").is_file():
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
    bundled = folder / "data_manifest.json"
    manifest = read_json(bundled, "Bundled data manifest") if bundled.is_file() else None
    return identify_result(RunResult.read(folder / "result.json").to_dict(), manifest)
