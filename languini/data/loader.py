"""Reading prepared data: token streams, document metadata, and training batches.

Both families read the corpus the way Languini Kitchen does: the split is one long token
stream, each batch row is a contiguous stream starting at its own offset (row j starts at
j·N/B), and step s reads the s-th chunk of every row. The qLSTM carries its state along its
row; the GPT simply sees consecutive windows. Batches are a pure function of the step
number, so a run is reproducible and resumable without loader state, and a run that
outlasts the data wraps around (the epoch count is reported).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from languini.data.manifest import Manifest, read_manifest
from languini.data.tokenizer import Tokenizer, open_tokenizer
from languini.errors import UserError
from languini.io import atomic_write_json, sha256_file


class TokenStream:
    """The concatenated shards of one split, read by position without loading them all."""

    def __init__(self, shards: list[np.ndarray]) -> None:
        self.shards = [s for s in shards if len(s)]
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length) as int64, wrapping around the end of the stream."""
        n = len(self)
        out = np.empty(length, dtype=np.int64)
        filled = 0
        pos = start % n
        while filled < length:
            i = int(np.searchsorted(self.starts, pos, side="right")) - 1
            local = pos - int(self.starts[i])
            take = min(length - filled, len(self.shards[i]) - local)
            out[filled : filled + take] = self.shards[i][local : local + take]
            filled += take
            pos = (pos + take) % n
        return out

    def all(self) -> np.ndarray:
        return self.read(0, len(self))


class DocIds(Sequence[str]):
    """A split's document ids, read from `doc_ids.jsonl` when asked for, never all held.

    A terabyte corpus has hundreds of millions of documents, and a list of their ids would
    take tens of GB; iterating streams the file, and indexing uses the start of each line
    (8 bytes per document), found by one scan on first use. Equal to any sequence of the same
    ids, so it stands where a list did.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @cached_property
    def _starts(self) -> np.ndarray:
        """Byte offsets of each line's start, plus the file's size."""
        size = self.path.stat().st_size
        starts = [np.zeros(1, dtype=np.int64)]
        with open(self.path, "rb") as f:
            offset = 0
            while block := f.read(IDS_SCAN_BYTES):
                ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + offset + 1
                starts.append(ends.astype(np.int64))
                offset += len(block)
        out = np.concatenate(starts)
        return out if out[-1] == size else np.append(out, size)

    def __len__(self) -> int:
        return len(self._starts) - 1

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"document {index} is not in a split of {n}")
        i = int(index) % n
        lo, hi = int(self._starts[i]), int(self._starts[i + 1])
        return json.loads(os.pread(self._fd, hi - lo, lo))

    @cached_property
    def _fd(self) -> int:
        """Kept open: writers of derived datasets look up every kept document's id in turn."""
        return os.open(self.path, os.O_RDONLY)

    def __del__(self) -> None:
        if "_fd" in vars(self):
            os.close(self._fd)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_fd"}

    def __iter__(self) -> Iterator[str]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DocIds({str(self.path)!r})"


IDS_SCAN_BYTES = 16 << 20


@dataclass(frozen=True)
class Documents:
    """Per-document metadata of a split, in stream order. The arrays are memory maps of the
    split's index files and the ids are read on demand, so opening a split costs no memory
    that grows with its documents."""

    offsets: np.ndarray  # n_docs + 1 token offsets; doc i is [off[i], off[i+1]) incl. its EOD
    domains: np.ndarray  # index into PreparedData.domains
    ids: Sequence[str]


class PreparedData:
    """A folder written by `languini data prepare` (see DESIGN.md, "Prepared data")."""

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any] | None = None) -> None:
        """`manifest` stands in for the folder's own while it is being written."""
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"Prepared data folder not found: {self.path}")
        self.manifest = Manifest(manifest) if manifest else read_manifest(self.path)

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    @property
    def domains(self) -> list[str]:
        return self.manifest.domains

    @cached_property
    def tokenizer(self) -> Tokenizer:
        return self.open_tokenizer()

    def open_tokenizer(self, threads: int | None = None) -> Tokenizer:
        """A tokenizer of its own (`tokenizer` is the one this object keeps): a worker opens one
        with one thread, since the worker processes are the parallelism."""
        return open_tokenizer(self.manifest.tokenizer, self.path, threads)

    def _check_split(self, split: str) -> dict[str, Any]:
        return self.manifest.split(split, self.path)

    def stream(self, split: str) -> TokenStream:
        info = self._check_split(split)
        shards = []
        for shard in info["shards"]:
            path = self.path / shard["file"]
            if not path.exists():
                raise UserError(f"Shard {path} listed in the manifest is missing.")
            shards.append(np.load(path, mmap_mode="r"))
        stream = TokenStream(shards)
        if len(stream) < 2:
            raise UserError(f"Split '{split}' of {self.path} holds fewer than two tokens.")
        return stream

    def verify_shards(self, split: str, force: bool = False) -> bool:
        """Stop on a shard whose bytes are not the ones the manifest recorded.

        Hashing a terabyte of shards takes minutes, so it is done once per dataset and machine:
        a stamp beside the data records each verified shard's size, mtime, ctime and inode, and
        a shard whose four are unchanged is not hashed again. Any rewrite changes the ctime
        (which, unlike the mtime, cannot be set back), a replacement the inode. A shard changed
        within the clock's granularity of its verification could keep all four, so shards
        changed less than `RACY_NS` before verification are not stamped (git's "racily clean").
        `force` hashes every shard. Returns whether any was hashed.
        """
        shards = self._check_split(split)["shards"]
        stamp = _VerifyStamp(self)
        states = {}
        for shard in shards:
            path = self.path / shard["file"]
            states[shard["file"]] = _file_state(path)
            if states[shard["file"]] is None:
                raise UserError(f"Shard {path} listed in the manifest is missing; prepare the data again.")
        todo = [s for s in shards if force or stamp.get(split, s["file"]) != states[s["file"]]]
        started = time.time_ns()
        for shard in todo:
            path = self.path / shard["file"]
            if sha256_file(path) != shard["sha256"]:
                raise UserError(f"Shard {path} does not match its checksum in the manifest; prepare the data again.")
        if todo:
            stamp.record(split, {f: state for f, state in states.items() if state[2] < started - RACY_NS})
        return bool(todo)

    def documents(self, split: str) -> Documents:
        self._check_split(split)
        folder = self.path / split
        return Documents(
            offsets=np.load(folder / "doc_offsets.npy", mmap_mode="r"),
            domains=np.load(folder / "doc_domains.npy", mmap_mode="r"),
            ids=DocIds(folder / "doc_ids.jsonl"),
        )


RACY_NS = 2_000_000_000  # coarser than any filesystem's timestamps, NFS server clocks included


def _file_state(path: Path) -> list[int] | None:
    """What changes whenever a file's bytes do: size, mtime, ctime, inode (None if missing)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class _VerifyStamp:
    """`.languini-verified-HOST.json` beside the data: the shards verified on this machine
    (another machine sees other inodes and ctimes of shared storage, and verifies for itself)."""

    def __init__(self, data: PreparedData) -> None:
        self.path = data.path / f".languini-verified-{socket.gethostname()}.json"
        self.fingerprint = data.fingerprint
        try:
            stamp = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stamp = {}
        self.splits = stamp.get("splits", {}) if isinstance(stamp, dict) and stamp.get("fingerprint") == self.fingerprint else {}

    def get(self, split: str, file: str) -> list[int] | None:
        return self.splits.get(split, {}).get(file)

    def record(self, split: str, states: dict[str, list[int]]) -> None:
        """Keep the new states; on a read-only data folder, verify again next time."""
        self.splits[split] = states
        with contextlib.suppress(OSError):
            atomic_write_json(self.path, {"fingerprint": self.fingerprint, "splits": self.splits})


class StreamBatches:
    """Batch rows as contiguous streams; `batch(step)` is a pure function of the step."""

    def __init__(self, stream: TokenStream, batch_size: int, seq_len: int) -> None:
        self.stream, self.batch_size, self.seq_len = stream, batch_size, seq_len
        self.row_starts = [j * (len(stream) // batch_size) for j in range(batch_size)]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.seq_len
        rows = np.stack([self.stream.read(start + step * T, T + 1) for start in self.row_starts])
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    def epochs(self, steps: int) -> float:
        """How many times the split's tokens were read in `steps` steps."""
        return steps * self.batch_size * self.seq_len / len(self.stream)


class MixedStreams:
    """Batch rows as continuous streams of documents whose domains follow a mix's token shares.

    Each row, when it needs more text, appends the next document of the domain furthest
    below its share of the tokens drawn so far (a deficit schedule, shared by all rows). Random
    domain draws would match the shares only in expectation, and corpora with a few huge
    documents (a 200k-token source file) make that expectation useless over a real run;
    the deficit schedule is off by at most the documents in flight. Within a domain, documents
    come in an order permuted by the seed and wrap around when exhausted (the wraps are the
    repeat count). The whole state is `state_dict()`, for exact resumption.
    """

    def __init__(self, data: PreparedData, split: str, weights: dict[str, float], batch_size: int,
                 seq_len: int, seed: int) -> None:
        self.stream = data.stream(split)
        docs = data.documents(split)
        self.domains = [d for d in data.domains if weights.get(d, 0) > 0]
        self.weights = np.array([weights[d] for d in self.domains]) / sum(weights[d] for d in self.domains)
        self.order = []  # per domain, its documents in a seeded order: 4 bytes each (the one per-document cost)
        index_type = np.int32 if len(docs.domains) < 1 << 31 else np.int64
        for i, d in enumerate(self.domains):
            members = np.flatnonzero(docs.domains == data.domains.index(d)).astype(index_type)
            if not len(members):
                raise UserError(f"Domain '{d}' has no {split} documents.")
            self.order.append(np.random.default_rng([seed, i]).permutation(members))
        self.offsets, self.batch_size, self.seq_len = docs.offsets, batch_size, seq_len
        k = len(self.domains)
        self.next_doc = np.zeros(k, dtype=np.int64)  # documents drawn from each domain so far
        self.drawn = np.zeros(k, dtype=np.int64)  # tokens drawn from each domain so far
        self.tokens_read = np.zeros(k, dtype=np.int64)  # tokens trained on, by domain
        empty = np.empty(0, dtype=np.int64)
        self.tokens = [empty] * batch_size  # each row's pending tokens
        self.token_domains = [empty] * batch_size  # and the domain index of each
        self.step = 0

    def _draw(self, row: int) -> None:
        d = int(np.argmax(self.weights * (self.drawn.sum() + 1) - self.drawn))
        order = self.order[d]
        doc = int(order[self.next_doc[d] % len(order)])
        self.next_doc[d] += 1
        start, end = int(self.offsets[doc]), int(self.offsets[doc + 1])
        self.drawn[d] += end - start
        self.tokens[row] = np.concatenate([self.tokens[row], self.stream.read(start, end - start)])
        self.token_domains[row] = np.concatenate([self.token_domains[row], np.full(end - start, d)])

    def _take(self, row: int) -> np.ndarray:
        """The row's next seq_len + 1 tokens; the last stays pending as the next step's first input."""
        n = self.seq_len
        while len(self.tokens[row]) < n + 1:
            self._draw(row)
        out = self.tokens[row][: n + 1]
        self.tokens_read += np.bincount(self.token_domains[row][:n], minlength=len(self.domains))
        self.tokens[row], self.token_domains[row] = self.tokens[row][n:], self.token_domains[row][n:]
        return out

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if step != self.step:
            raise RuntimeError(f"MixedStreams reads sequentially: asked for step {step} at step {self.step}")
        rows = np.stack([self._take(row) for row in range(self.batch_size)])
        self.step += 1
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    def realised_shares(self) -> dict[str, float]:
        total = int(self.tokens_read.sum())
        return {d: int(n) / total if total else 0.0 for d, n in zip(self.domains, self.tokens_read)}

    def repeats(self) -> dict[str, float]:
        """Passes over each domain's documents so far (above 1: the domain repeated)."""
        return {d: int(n) / len(o) for d, n, o in zip(self.domains, self.next_doc, self.order)}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "next_doc": self.next_doc.copy(), "drawn": self.drawn.copy(),
                "tokens_read": self.tokens_read.copy(), "tokens": [t.copy() for t in self.tokens],
                "token_domains": [t.copy() for t in self.token_domains]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        for name in ("next_doc", "drawn", "tokens_read"):
            setattr(self, name, np.asarray(state[name]).copy())
        self.tokens = [np.asarray(t) for t in state["tokens"]]
        self.token_domains = [np.asarray(t) for t in state["token_domains"]]
