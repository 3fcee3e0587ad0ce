"""The on-disk layout of one split of prepared data, written as a stream of documents.

A split folder holds `tokens-NNNNN.npy` shards (the documents' tokens concatenated, each
document followed by the end-of-document id; a document may straddle two shards),
`doc_offsets.npy` (int64, n_docs + 1 offsets into the concatenated stream, each document
including its end-of-document id), `doc_domains.npy` (uint16 indices into the manifest's
domains) and `doc_ids.jsonl` (one JSON string per document). Shards are plain `.npy` files
so that the loader can memory-map them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Sequence

import numpy as np

from languini.io import sha256_file
from languini.errors import UserError

DEFAULT_SHARD_TOKENS = 64 << 20
INDEX_FILES = ("doc_offsets.npy", "doc_domains.npy", "doc_ids.jsonl")


class DocInfo(NamedTuple):
    id: str
    domain: str
    n_bytes: int  # UTF-8 bytes of the text
    n_chars: int


@dataclass
class EncodedBatch:
    """Documents of one split, tokenised: what an encoding worker hands to a `SplitWriter`."""

    split: str
    tokens: np.ndarray  # the documents' ids concatenated, each document ended by the end-of-document id
    lengths: list[int]  # tokens per document, its end-of-document id included
    docs: list[DocInfo]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (half the disk and memory traffic), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def shard_name(index: int) -> str:
    return f"tokens-{index:05d}.npy"


def _npy_header(n: int, dtype: np.dtype) -> bytes:
    """The `.npy` header of n items, as `np.save` writes it: numpy pads it so that the length
    can grow in place, so the header of 0 items has the size of the final one."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)})
    return buf.getvalue()


class NpyAppender:
    """A one-dimensional `.npy` file written by appending, so that neither a shard nor a
    split's document index is ever held whole: closing puts the final length into the header,
    and the file is then what `np.save` writes."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self._file: BinaryIO = open(path, "wb")
        self._file.write(_npy_header(0, self.dtype))

    def append(self, values: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.count += len(values)

    def close(self) -> None:
        header = _npy_header(self.count, self.dtype)
        assert len(header) == len(_npy_header(0, self.dtype)), "numpy no longer pads .npy headers for growth"
        self._file.seek(0)
        self._file.write(header)
        self._file.close()


class SplitWriter:
    """Appends tokenised documents to a split folder and sums what the manifest reports."""

    def __init__(self, folder: Path, *, dtype: np.dtype, eod_id: int, domains: Sequence[str], shard_tokens: int = DEFAULT_SHARD_TOKENS):
        if len(domains) > 1 << 16:
            raise UserError(f"the corpus has {len(domains)} domains; at most 65536 are supported.")
        self.folder = folder
        self.folder.mkdir(parents=True)
        self.dtype, self.eod_id, self.shard_tokens = dtype, eod_id, shard_tokens
        self.domains = list(domains)
        self._domain_index = {d: i for i, d in enumerate(self.domains)}
        self._shard: NpyAppender | None = None  # the shard being written
        self._shards: list[dict[str, Any]] = []
        self._offsets = NpyAppender(folder / "doc_offsets.npy", np.dtype(np.int64))
        self._offsets.append(np.zeros(1, dtype=np.int64))
        self._end = 0  # the offset after the last document
        self._doc_domains = NpyAppender(folder / "doc_domains.npy", np.dtype(np.uint16))
        self._ids = open(folder / "doc_ids.jsonl", "w", encoding="utf-8")
        self._stats = {d: {"documents": 0, "tokens": 0, "bytes": 0, "chars": 0} for d in self.domains}

    def add(self, batch: EncodedBatch) -> None:
        """Append a batch of documents (in order) to the split."""
        self._write(batch.tokens.astype(self.dtype, copy=False))
        self._offsets.append(self._end + np.cumsum(batch.lengths, dtype=np.int64))
        self._end += sum(batch.lengths)
        self._doc_domains.append(np.array([self._domain_index[doc.domain] for doc in batch.docs], dtype=np.uint16))
        for length, doc in zip(batch.lengths, batch.docs):
            stats = self._stats[doc.domain]
            stats["documents"] += 1
            stats["tokens"] += length
            stats["bytes"] += doc.n_bytes
            stats["chars"] += doc.n_chars
        self._ids.write("".join(json.dumps(d.id) + "\n" for d in batch.docs))

    def close(self) -> dict[str, Any]:
        """Write what is left and the document index; return the split's manifest entry."""
        if self._shard is not None:
            self._finish_shard()
        for index in (self._ids, self._offsets, self._doc_domains):
            index.close()
        by_domain = {d: s for d, s in self._stats.items() if s["documents"]}
        totals = {k: sum(s[k] for s in by_domain.values()) for k in ("documents", "tokens", "bytes", "chars")}
        files = {self._relative(name): sha256_file(self.folder / name) for name in INDEX_FILES}
        return {**totals, "by_domain": by_domain, "shards": self._shards, "files": files}

    def _write(self, tokens: np.ndarray) -> None:
        """Stream tokens into shards as they come: memory holds one batch, never a shard."""
        while len(tokens):
            if self._shard is None:
                self._shard = NpyAppender(self._shard_path(), self.dtype)
            take = min(self.shard_tokens - self._shard.count, len(tokens))
            self._shard.append(tokens[:take])
            tokens = tokens[take:]
            if self._shard.count == self.shard_tokens:
                self._finish_shard()

    def _finish_shard(self) -> None:
        assert self._shard is not None
        self._shard.close()
        path = self._shard.path
        self._shards.append({"file": self._relative(path.name), "tokens": self._shard.count, "sha256": sha256_file(path)})
        self._shard = None

    def _shard_path(self) -> Path:
        return self.folder / shard_name(len(self._shards))

    def _relative(self, name: str) -> str:
        """Paths in the manifest are relative to the dataset folder, e.g. `train/tokens-00000.npy`."""
        return f"{self.folder.name}/{name}"
