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
from typing import Any, Iterator

import numpy as np
import torch

from languini.errors import UserError
from languini.io import read_json, sha256_file

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

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any] | None = None) -> None:
        """`manifest` stands in for the folder's own while it is being written."""
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"Prepared data folder not found: {self.path}")
        self.manifest: dict[str, Any] = manifest or read_json(self.path / "manifest.json", "Data manifest")

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
        from languini.data.tokenizer import open_tokenizer

        return open_tokenizer(self.manifest["tokenizer"], self.path)

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

    def verify_shards(self, split: str) -> None:
        """Stop on a shard whose bytes are not the ones the manifest recorded."""
        for shard in self._check_split(split)["shards"]:
            path = self.path / shard["file"]
            if not path.exists() or sha256_file(path) != shard["sha256"]:
                raise UserError(f"Shard {path} does not match its checksum in the manifest; prepare the data again.")

    def texts(self, split: str) -> Iterator[str]:
        """Each document of a split decoded, in stream order: the text its metrics count."""
        docs, stream, tok = self.documents(split), self.stream(split), self.tokenizer
        for lo, hi in zip(docs.offsets[:-1].tolist(), docs.offsets[1:].tolist()):
            yield tok.decode(stream.read(lo, hi - lo))  # decode drops the end-of-document id

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
        self.order = []
        for i, d in enumerate(self.domains):
            members = np.flatnonzero(docs.domains == data.domains.index(d))
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
