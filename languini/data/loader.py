"""Reading prepared data: token streams, document metadata, and training batches.

Both families read the corpus the way Languini Kitchen does: the split is one long token
stream, each batch row is a contiguous stream starting at its own offset (row j starts at
j·N/B), and step s reads the s-th chunk of every row. The qLSTM carries its state along its
row; the GPT simply sees consecutive windows. Batches are a pure function of the step
number, so a run is reproducible and resumable without loader state, and a run that
outlasts the data wraps around (the epoch count is reported).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from languini.errors import UserError
from languini.io import read_json

SPLITS = ("train", "validation", "test")


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


@dataclass(frozen=True)
class Documents:
    """Per-document metadata of a split, in stream order."""

    offsets: np.ndarray  # n_docs + 1 token offsets; doc i is [off[i], off[i+1]) incl. its EOD
    domains: np.ndarray  # index into PreparedData.domains
    ids: list[str]


class PreparedData:
    """A folder written by `languini data prepare` (see DESIGN.md, "Prepared data")."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"Prepared data folder not found: {self.path}")
        self.manifest: dict[str, Any] = read_json(self.path / "manifest.json", "Data manifest")

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def domains(self) -> list[str]:
        return list(self.manifest["domains"])

    @cached_property
    def tokenizer(self):
        from languini.data.tokenizer import load_tokenizer

        return load_tokenizer(self.path)

    def _check_split(self, split: str) -> dict[str, Any]:
        if split not in self.manifest["splits"]:
            raise UserError(f"Split '{split}' is not in {self.path} (has: {', '.join(self.manifest['splits'])}).")
        return self.manifest["splits"][split]

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

    def documents(self, split: str) -> Documents:
        self._check_split(split)
        folder = self.path / split
        lines = (folder / "doc_ids.jsonl").read_text(encoding="utf-8").splitlines()
        return Documents(
            offsets=np.load(folder / "doc_offsets.npy"),
            domains=np.load(folder / "doc_domains.npy"),
            ids=[json.loads(line) for line in lines],
        )


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
