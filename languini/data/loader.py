"""Reading prepared data: the token streams of its splits, their document metadata, and the
check of their shards. Torch-free, so that the workers of `data prepare` and `data dedup`,
which open splits by the hundred, do not each carry torch (`streams` turns a split into
training batches).
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

    @cached_property
    def _count(self) -> int:
        """Lines in the file, counted without keeping where each starts (`list()` asks for the length)."""
        if "_starts" in vars(self):
            return len(self._starts) - 1
        count, last = 0, b"\n"
        with open(self.path, "rb") as f:
            while block := f.read(IDS_SCAN_BYTES):
                count, last = count + block.count(b"\n"), block[-1:]
        return count + (last != b"\n")

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"document {index} is not in a split of {n}")
        i = int(index) % n
        lo, hi = int(self._starts[i]), int(self._starts[i + 1])
        return json.loads(os.pread(self._fd, hi - lo, lo))

    def pick(self, indices: Sequence[int]) -> list[str]:
        """The ids at `indices` (any order), in one pass over the file: a report that names a few
        documents of a large split need not build the index that random access does."""
        order = sorted(range(len(indices)), key=lambda k: indices[k])
        out: list[str] = [""] * len(indices)
        with open(self.path, "rb") as f:
            lines = enumerate(f)
            line_no, line = -1, b""
            for k in order:
                while line_no < indices[k]:
                    line_no, line = next(lines, (None, b""))
                    if line_no is None:
                        raise IndexError(f"document {indices[k]} is not in {self.path}")
                out[k] = json.loads(line)
        return out

    @cached_property
    def _fd(self) -> int:
        """Kept open: a selection report looks up every document it names in turn."""
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
    ids: DocIds


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
