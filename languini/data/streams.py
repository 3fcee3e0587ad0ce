"""Training batches from prepared data, the way Languini Kitchen reads its corpus.

The split is one long token stream, each batch row is a contiguous stream starting at its own
offset (row j starts at j·N/B), and step s reads the s-th chunk of every row. The qLSTM
carries its state along its row; the GPT simply sees consecutive windows. Batches are a pure
function of the step number, so a run is reproducible and resumable without loader state,
and a run that outlasts the data wraps around (the epoch count is reported). A mix's run
reads documents by domain instead (`MixedStreams`), with its state saved for resumption.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from languini.data.loader import PreparedData, TokenStream
from languini.errors import UserError


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
