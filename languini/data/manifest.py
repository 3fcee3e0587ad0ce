"""The prepared-data manifest: its format, what its stamps mean, and a typed read-only view.

`manifest.json` is the contract between `data prepare` (and the derived-dataset writers) and
every reader: the loader, evaluation, selection, submissions. It is written here (`stamp`,
`child_manifest`) and read through `Manifest`, so the JSON's shape is known in one place.
The evaluation identity's definition lives here too: the manifest records it, and it is what
says which results on a dataset are comparable (`languini.data.identity` finds a result's).
"""

from __future__ import annotations

import copy
import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from languini import __version__
from languini.errors import UserError
from languini.io import read_json, to_json

FORMAT = "languini-data/1"
SPLITS = ("train", "validation", "test")
STAMPS = ("format", "languini_version", "created", "fingerprint", "evaluation_identity")
PROVENANCE = ("parent", "dedup", "selection")  # what a derived dataset says about where it came from
MANIFEST_FILE = "manifest.json"

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


def default_stride(seq_len: int) -> int:
    return max(1, seq_len // STRIDE_DIVISOR)


def evaluation_identity(test_documents: Iterable[str], protocol: str = PROTOCOL) -> str:
    """sha256 of the protocol and the test split's decoded documents in order (text, not
    tokens, since bits-per-byte is comparable across tokenizers), each framed by its length
    (no separator can make two different splits hash alike)."""
    h = hashlib.sha256(b"languini-evaluation-identity/1\0")
    _framed(h, protocol.encode("utf-8"))
    for text in test_documents:
        _framed(h, text.encode("utf-8"))
    return h.hexdigest()


def _framed(h: Any, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


class Manifest(Mapping[str, Any]):
    """A dataset's manifest, read-only, with typed accessors for what readers need.

    It is also a read-only mapping over the JSON, so code not yet moved to the accessors
    keeps reading it as it did; writers take `to_dict()`, a copy."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self._body = dict(body)

    def __getitem__(self, key: str) -> Any:
        return self._body[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._body)

    def __len__(self) -> int:
        return len(self._body)

    def __repr__(self) -> str:
        return f"Manifest(fingerprint={self._body.get('fingerprint')!r})"

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._body)

    @property
    def format(self) -> str | None:
        return self._body.get("format")

    @property
    def fingerprint(self) -> str:
        return str(self._body["fingerprint"])

    @property
    def evaluation_identity(self) -> str | None:
        """None for data prepared before identities existed (recompute it from the test text)."""
        return self._body.get("evaluation_identity") or None

    @property
    def tokenizer(self) -> dict[str, Any]:
        """The tokenizer entry `open_tokenizer` takes (kind, file, sha256, vocab_size, eod_id, settings)."""
        return self._body["tokenizer"]

    @property
    def tokenizer_sha256(self) -> str | None:
        """None where the manifest names no tokenizer file hash (raw bytes, or an old bundle's copy)."""
        return (self._body.get("tokenizer") or {}).get("sha256")

    @property
    def tokenizer_file(self) -> str | None:
        return self.tokenizer.get("file")

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer["vocab_size"])

    @property
    def eod_id(self) -> int:
        return int(self.tokenizer["eod_id"])

    @property
    def dtype(self) -> str:
        return str(self._body["dtype"])

    @property
    def shard_tokens(self) -> int:
        return int(self._body["settings"]["shard_tokens"])

    @property
    def domains(self) -> list[str]:
        return list(self._body["domains"])

    @property
    def split_names(self) -> list[str]:
        return list(self._body["splits"])

    def split(self, name: str, where: str | Path = "the dataset") -> dict[str, Any]:
        """A split's entry (documents, tokens, bytes, chars, by_domain, shards); refused by name
        when the dataset has no such split."""
        if name not in self._body["splits"]:
            raise UserError(f"Split '{name}' is not in {where} (has: {', '.join(self._body['splits'])}).")
        return self._body["splits"][name]

    def domain_tokens(self, split: str = "train") -> dict[str, int]:
        """Tokens of each domain in a split."""
        return {d: v["tokens"] for d, v in self.split(split)["by_domain"].items()}

    def shard_hashes(self, split: str) -> tuple[str, ...]:
        return tuple(s["sha256"] for s in self.split(split)["shards"])

    @property
    def parent(self) -> dict[str, Any] | None:
        """Where a derived dataset came from (its parent's fingerprint and path); None for prepared data."""
        return self._body.get("parent")

    @property
    def parent_fingerprint(self) -> str | None:
        return (self.parent or {}).get("fingerprint")



BUNDLED = "data_manifest.json"
"""A submission bundle's copy of the manifest of the data its run trained on."""


def read_manifest(folder: str | Path, file: str = MANIFEST_FILE) -> Manifest:
    """The manifest of the prepared-data folder `folder` (or a bundle's copy: `file=BUNDLED`)."""
    path = Path(folder) / file
    body = read_json(path, "Bundled data manifest" if file == BUNDLED else "Data manifest")
    if not isinstance(body, dict):
        raise UserError(f"{path} is not a data manifest (it holds no JSON object); prepare the data again.")
    return Manifest(body)


def dataset_name(manifest: Mapping[str, Any], folder: str | Path) -> str:
    """A human name for a dataset: the manifest's `name` where one is given, else its folder's."""
    return str(manifest.get("name") or Path(folder).name)


def check_format(manifest: Manifest, folder: str | Path) -> None:
    """Refuse data written in a format this version does not read."""
    if manifest.format != FORMAT:
        raise UserError(f"{folder} holds data of format {manifest.format!r}, not {FORMAT}; prepare it again.")


def stamp(body: dict[str, Any], identity: str | None) -> dict[str, Any]:
    """A manifest: the body behind its format, version, creation time, fingerprint and
    evaluation identity. The identity stays outside the fingerprint: it follows from the test
    shards and tokenizer the fingerprint covers (and the protocol), so a new protocol version
    does not make the same data a different dataset."""
    return {
        "format": FORMAT,
        "languini_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fingerprint(body),
        "evaluation_identity": identity,
        **body,
    }


def fingerprint(body: dict[str, Any]) -> str:
    """sha256 over what was asked and what came out (token and index hashes, counts), not
    when or by which version: equal fingerprints mean interchangeable datasets."""
    return hashlib.sha256((FORMAT + to_json(body)).encode("utf-8")).hexdigest()


def child_manifest(parent: Manifest, parent_path: Path, train: dict[str, Any], kind: str, settings: dict[str, Any],
                   identity: str) -> dict[str, Any]:
    """The parent's manifest with the new train split, a `parent` entry, the `kind` entry
    (`dedup`, or `selection`) holding `settings`, and a fingerprint of its own. The parent's own
    provenance entries are dropped (its fingerprint leads to them), and where the parent lies
    is not part of what the dataset is. The test split is the parent's, and so is the
    evaluation `identity`."""
    body = {key: value for key, value in parent.to_dict().items() if key not in STAMPS + PROVENANCE}
    body["splits"] = {**body["splits"], "train": train}
    body["parent"] = {"fingerprint": parent.fingerprint}
    body[kind] = settings
    manifest = stamp(body, identity)
    manifest["parent"]["path"] = str(parent_path.resolve())
    return manifest
