"""A split's documents decoded, and datasets derived from a parent's train documents.

Decoding: every reader that needs a split's text (evaluation's byte counts, the evaluation
identity, lm-eval tasks, deduplication's signatures, selection's tables and embedders) gets it
here, a batch of tokens at a time: the text of a document is its tokens decoded, without the
end-of-document id, and that is the text whose UTF-8 bytes bits-per-byte divides by.

Deriving: deduplication and every selection method end the same way: a boolean per train
document (removed or not) becomes a new prepared-data folder whose train split holds the kept
documents token for token, whose validation and test splits (and tokenizer) are the parent's
byte for byte, so every variant is scored on the same text, and whose manifest names its parent
and carries a `dedup` or `selection` entry (`manifest.child_manifest`).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from languini.data.loader import PreparedData, TokenStream
from languini.data.manifest import MANIFEST_FILE, SPLITS, Manifest, check_format, child_manifest, evaluation_identity
from languini.data.shards import DocInfo, EncodedBatch, SplitWriter
from languini.data.tokenizer import Tokenizer
from languini.errors import UserError
from languini.io import atomic_dir, atomic_write_json

TASK_TOKENS = 1 << 20  # tokens decoded (or copied) at a time


def batches(offsets: np.ndarray, tokens: int, max_docs: int | None = None) -> Iterator[tuple[int, int]]:
    """Consecutive document ranges [lo, hi) of about `tokens` tokens (at least one document,
    at most `max_docs`)."""
    lo, n = 0, len(offsets) - 1
    while lo < n:
        hi = max(lo + 1, int(np.searchsorted(offsets, offsets[lo] + tokens, side="right")) - 1)
        hi = min(hi, lo + max_docs) if max_docs else hi
        yield lo, hi
        lo = hi


# --- decoding ---------------------------------------------------------------------------


def decode_range(stream: TokenStream, tok: Tokenizer, offsets: np.ndarray) -> Iterator[list[str]]:
    """The texts of the documents whose token offsets are `offsets` (n + 1 of them), in
    batches of about TASK_TOKENS tokens, one list per batch."""
    for lo, hi in batches(offsets, TASK_TOKENS):
        tokens = stream.read(int(offsets[lo]), int(offsets[hi] - offsets[lo]))
        bounds = offsets[lo : hi + 1] - offsets[lo]
        yield [tok.decode(tokens[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]  # decode drops the EOD id


def texts(data: PreparedData, split: str) -> Iterator[str]:
    """Each document of a split decoded, in stream order: the text its metrics count."""
    offsets = data.documents(split).offsets
    stream, tok = data.stream(split), data.tokenizer
    for batch in decode_range(stream, tok, offsets):
        yield from batch


@dataclass(frozen=True)
class DecodedDocument:
    """One document of a prepared split as text, with what identifies it."""

    id: str
    domain: str
    text: str


def documents(data: PreparedData, split: str) -> Iterator[DecodedDocument]:
    """Each document of a split with its id and domain, decoded, in stream order."""
    docs, names = data.documents(split), data.domains
    for doc_id, domain, text in zip(docs.ids, docs.domains, texts(data, split)):
        yield DecodedDocument(str(doc_id), names[int(domain)], text)


def compute_identity(data: PreparedData) -> str:
    """The evaluation identity recomputed from a dataset's test text, whatever its manifest says."""
    return evaluation_identity(texts(data, "test"))


def identity_of(data: PreparedData) -> str:
    """A dataset's evaluation identity: its manifest's, or recomputed for data prepared before identities."""
    return data.manifest.evaluation_identity or compute_identity(data)


@dataclass(frozen=True)
class DocTable:
    """Per train document of a parent, in stream order: what the split writer sums."""

    offsets: np.ndarray  # n + 1 token offsets into the train stream (each document ends with its EOD)
    domains: np.ndarray  # index into the manifest's domains
    ids: Sequence[str]
    n_bytes: np.ndarray  # UTF-8 bytes of the decoded text
    n_chars: np.ndarray

    @property
    def tokens(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1


def document_table(data: PreparedData, split: str = "train", progress: bool = False) -> DocTable:
    """Decode every document of a split once for its byte and character counts (a derived
    manifest's per-domain statistics and evaluation's denominators are sums of them)."""
    docs = data.documents(split)
    n = len(docs.offsets) - 1
    n_bytes, n_chars = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    decoded = tqdm(texts(data, split), total=n, desc="read", unit=" docs", disable=not progress, file=sys.stderr)
    for i, text in enumerate(decoded):
        n_bytes[i], n_chars[i] = len(text.encode("utf-8")), len(text)
    return DocTable(docs.offsets, docs.domains, docs.ids, n_bytes, n_chars)


# --- deriving ---------------------------------------------------------------------------


def open_parent(data_dir: str | Path) -> PreparedData:
    """A prepared dataset to derive from (or train a selection model on), refused by name when
    it is not one or is of another format."""
    path = Path(data_dir)
    if not path.is_dir():
        raise UserError(f"prepared data folder not found: {path}")
    if not (path / MANIFEST_FILE).is_file():
        raise UserError(f"{path} is not a prepared dataset (it has no manifest.json); make one with `languini data prepare`.")
    data = PreparedData(path)
    check_format(data.manifest, path)
    return data


def check_derived_out(parent: Path, out: Path, force: bool) -> None:
    """Never rewrite in place, never replace what is not ours, replace a dataset only if forced."""
    source, target = parent.resolve(), out.resolve()
    if target == source or target in source.parents:
        raise UserError(f"--out {out} would replace the input {parent}; a derived dataset is a new folder, choose another --out.")
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder.")
    if not (out / MANIFEST_FILE).exists() and any(out.iterdir()):
        raise UserError(f"--out {out} holds other files and no languini dataset; choose an empty or new folder.")
    if not force and any(out.iterdir()):
        raise UserError(f"--out {out} already holds a dataset; pass --force to replace it or choose another --out.")


def write_train(parent: PreparedData, table: DocTable, removed: np.ndarray, folder: Path, progress: bool) -> dict[str, Any]:
    """The kept train documents, token for token, as a new train split in `folder`; returns
    its manifest entry."""
    if removed.all():
        raise UserError("every train document would be removed; keep more (lower the threshold, drop --decontaminate, "
                        "or keep a larger share).")
    manifest = parent.manifest
    domains = manifest.domains
    writer = SplitWriter(folder / "train", dtype=np.dtype(manifest.dtype), eod_id=manifest.eod_id, domains=domains,
                         shard_tokens=manifest.shard_tokens)
    stream, offsets = parent.stream("train"), table.offsets
    ids = iter(table.ids)  # read in order: a lazily read split's ids need no index
    with tqdm(total=len(removed), desc="write", unit=" docs", disable=not progress, file=sys.stderr) as bar:
        for lo, hi in batches(offsets, TASK_TOKENS):
            keep = ~removed[lo:hi]
            lengths = np.diff(offsets[lo : hi + 1])
            tokens = stream.read(int(offsets[lo]), int(offsets[hi] - offsets[lo]))[np.repeat(keep, lengths)]
            columns = (keep, table.domains[lo:hi], table.n_bytes[lo:hi], table.n_chars[lo:hi])
            infos = [DocInfo(doc_id, domains[d], n_bytes, n_chars)
                     for doc_id, kept, d, n_bytes, n_chars in zip(islice(ids, hi - lo), *(c.tolist() for c in columns)) if kept]
            writer.add(EncodedBatch("train", tokens, lengths[keep].tolist(), infos))
            bar.update(hi - lo)
    return writer.close()


def finish_derived(parent: PreparedData, folder: Path, train: dict[str, Any], kind: str,
                   settings: dict[str, Any]) -> Manifest:
    """Complete the derived dataset being built in `folder` around its new train split: the
    parent's validation and test splits and tokenizer file, byte for byte, and the child
    manifest (returned) with `settings` under `kind`."""
    for name in SPLITS[1:]:
        shutil.copytree(parent.path / name, folder / name)
    model = parent.manifest.tokenizer_file
    if model:
        shutil.copy2(parent.path / model, folder / model)
    manifest = child_manifest(parent.manifest, parent.path, train, kind, settings, identity_of(parent))
    atomic_write_json(folder / MANIFEST_FILE, manifest)
    return Manifest(manifest)


def write_derived(parent: PreparedData, table: DocTable, keep: np.ndarray, out: Path, kind: str, settings: dict[str, Any],
                  reports: dict[str, dict[str, Any]] | None = None, progress: bool = True) -> Manifest:
    """Write the kept train documents of `parent` as a new dataset at `out`, atomically.

    `settings` go into the manifest under `kind` (and so into its fingerprint); each of
    `reports` is written beside it under its file name, with the new fingerprint. Returns the
    new manifest."""
    with atomic_dir(out) as tmp:
        manifest = finish_derived(parent, tmp, write_train(parent, table, ~keep, tmp, progress), kind, settings)
        for name, report in (reports or {}).items():
            atomic_write_json(tmp / name, {**report, "fingerprint": manifest.fingerprint})
    return manifest
