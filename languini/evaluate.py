"""Scoring a split: per-token negative log-likelihoods, then metrics over bytes and characters.

Scoring (model or unigram → one NLL per predicted token) is kept apart from aggregation
(NLLs + document metadata → metrics), so every scorer is measured by the same arithmetic:
    bits_per_byte    = Σ NLL / ln 2 / UTF-8 bytes of the decoded split
    token_perplexity = exp(Σ NLL / predicted tokens)
    char_perplexity  = exp(Σ NLL / characters)   (Languini Kitchen's "normalised perplexity")
Every token but the split's first is predicted exactly once, end-of-document tokens included;
bytes and characters are those of every document's decoded text.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from languini import device as devices
from languini.data.derive import document_table, identity_of
from languini.data.loader import PreparedData, TokenStream
from languini.data.manifest import STREAMS, dataset_name, default_stride
from languini.distributed import World, sum_arrays
from languini.run import RunModel, load_run_model
from languini.step import token_nll



@dataclass
class TokenScores:
    nll: np.ndarray  # float64, one per target token 1..N-1 of the split
    correct: np.ndarray | None  # top-1 prediction right, where the scorer has a prediction


def _nll_and_correct(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return token_nll(logits, targets), logits.argmax(-1) == targets


def rolling_windows(n_tokens: int, seq_len: int, stride: int, first: int = 1) -> list[tuple[int, int, int]]:
    """Windows (start, scored_from, end) that score targets first..n_tokens-1 once each.

    A window's input is tokens[start:end-1], its targets tokens[start+1:end], and it scores the
    targets at positions [scored_from, end). Targets within seq_len of the start go in the first
    window (all the context there is); after that each window scores `stride` new targets and
    reaches back seq_len tokens. With first=1 these are `languini.evaluate`'s windows.
    """
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride {stride} must be between 1 and seq_len {seq_len}")
    windows, done = [], first
    while done < n_tokens:
        end = min(n_tokens, max(done + stride, seq_len + 1))
        start = max(0, end - 1 - seq_len)
        windows.append((start, done, end))
        done = end
    return windows


def _reduce(nll: np.ndarray, correct: np.ndarray, world: World) -> TokenScores:
    """Ranks scored disjoint positions of zeroed arrays: their sum is the whole split."""
    return TokenScores(sum_arrays(nll, world), sum_arrays(correct.astype(np.int64), world) > 0)


@torch.no_grad()
def score_windows(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, stride: int,
                  batch_size: int, dev: torch.device, progress: bool = False, world: World = World()) -> TokenScores:
    """A stateless model over sliding windows (see `rolling_windows`); ranks take every size-th."""
    n = len(tokens)
    length = min(seq_len, n - 1)
    windows = rolling_windows(n, seq_len, stride)[world.rank :: world.size]
    nll = np.zeros(n - 1, dtype=np.float64)
    correct = np.zeros(n - 1, dtype=bool)
    t = torch.from_numpy(tokens.astype(np.int64))
    partial = "logits_from" in inspect.signature(model.forward).parameters
    for i in tqdm(range(0, len(windows), batch_size), desc="eval", disable=not progress, leave=False):
        chunk = windows[i : i + batch_size]
        skip = min(f - s - 1 for s, f, _ in chunk) if partial else 0  # positions no window scores
        x = torch.stack([t[s : s + length] for s, _, _ in chunk]).to(dev)
        y = torch.stack([t[s + 1 + skip : s + 1 + length] for s, _, _ in chunk]).to(dev)
        with devices.autocast(dev):
            logits, _ = model(x, logits_from=skip) if partial else model(x)
        w_nll, w_ok = (a.cpu().numpy() for a in _nll_and_correct(logits, y))
        for row, (s, f, e) in enumerate(chunk):
            nll[f - 1 : e - 1] = w_nll[row, f - s - 1 - skip :]
            correct[f - 1 : e - 1] = w_ok[row, f - s - 1 - skip :]
    return _reduce(nll, correct, world)


@torch.no_grad()
def score_streams(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, streams: int,
                  dev: torch.device, progress: bool = False, world: World = World()) -> TokenScores:
    """A stateful model over contiguous streams, state carried chunk to chunk; ranks take every
    size-th stream."""
    n_targets = len(tokens) - 1
    rows = min(streams, n_targets)
    length = math.ceil(n_targets / rows)
    pad = rows * length - n_targets
    x = np.concatenate([tokens[:-1], np.zeros(pad, tokens.dtype)]).astype(np.int64).reshape(rows, length)
    y = np.concatenate([tokens[1:], np.zeros(pad, tokens.dtype)]).astype(np.int64).reshape(rows, length)
    nll = np.zeros((rows, length), dtype=np.float64)
    correct = np.zeros((rows, length), dtype=bool)
    mine = np.arange(world.rank, rows, world.size)
    state = None
    for a in tqdm(range(0, length, seq_len) if len(mine) else [], desc="eval", disable=not progress, leave=False):
        xb = torch.from_numpy(x[mine, a : a + seq_len]).to(dev)
        yb = torch.from_numpy(y[mine, a : a + seq_len]).to(dev)
        with devices.autocast(dev):
            logits, state = model(xb, state)
        c_nll, c_ok = _nll_and_correct(logits, yb)
        nll[mine, a : a + seq_len] = c_nll.cpu().numpy()
        correct[mine, a : a + seq_len] = c_ok.cpu().numpy()
    return _reduce(nll.reshape(-1)[:n_targets], correct.reshape(-1)[:n_targets], world)


def unigram_counts(stream: TokenStream, vocab_size: int) -> np.ndarray:
    counts = np.zeros(vocab_size, dtype=np.int64)
    for shard in stream.shards:
        counts += np.bincount(np.asarray(shard), minlength=vocab_size)[:vocab_size]
    return counts


def score_unigram(counts: np.ndarray, tokens: np.ndarray) -> TokenScores:
    """A unigram model of the train split (add-one smoothed): the floor any LM must beat."""
    logp = np.log(counts + 1.0) - np.log(counts.sum() + len(counts))
    return TokenScores(-logp[tokens[1:]], None)


def _metrics(nll_sum: float, n_tokens: int, n_bytes: int, n_chars: int, n_correct: int | None) -> dict:
    out = {
        "bits_per_byte": nll_sum / math.log(2) / n_bytes if n_bytes else float("nan"),
        "token_perplexity": math.exp(nll_sum / n_tokens),
        "char_perplexity": math.exp(nll_sum / n_chars) if n_chars else float("nan"),
        "tokens": n_tokens,
        "bytes": n_bytes,
        "chars": n_chars,
    }
    if n_correct is not None:
        out["accuracy"] = n_correct / n_tokens
    return out


def implied_nll_sums(metrics: dict) -> dict[str, float]:
    """The summed NLL that each reported metric implies, `_metrics` read backwards: bits per
    byte, token and character perplexity of one scoring all come from one sum, so these agree
    unless a number was changed after it was computed."""
    return {
        "bits_per_byte": metrics["bits_per_byte"] * math.log(2) * metrics["bytes"],
        "token_perplexity": math.log(metrics["token_perplexity"]) * metrics["tokens"],
        "char_perplexity": math.log(metrics["char_perplexity"]) * metrics["chars"],
    }


@dataclass(frozen=True)
class SplitText:
    """What the metrics divide by: each document's decoded bytes and characters, and domains."""

    domains: list[str]
    doc_domains: np.ndarray
    doc_bytes: np.ndarray
    doc_chars: np.ndarray
    target_doc: np.ndarray  # the document of each target position 1..N-1

    @classmethod
    def load(cls, data: PreparedData, split: str, tokens: np.ndarray) -> "SplitText":
        table = document_table(data, split)
        target_doc = np.searchsorted(table.offsets, np.arange(1, len(tokens)), side="right") - 1
        return cls(data.domains, table.domains, table.n_bytes, table.n_chars, target_doc)


def summarize(scores: TokenScores, text: SplitText) -> dict:
    """Overall and per-domain metrics of one scorer over a split."""
    correct = scores.correct
    result = _metrics(float(scores.nll.sum()), len(scores.nll), int(text.doc_bytes.sum()),
                      int(text.doc_chars.sum()), None if correct is None else int(correct.sum()))
    by_domain = {}
    for d, name in enumerate(text.domains):
        in_domain = text.doc_domains[text.target_doc] == d
        if not in_domain.any():
            continue
        doc_mask = text.doc_domains == d
        by_domain[name] = _metrics(
            float(scores.nll[in_domain].sum()), int(in_domain.sum()), int(text.doc_bytes[doc_mask].sum()),
            int(text.doc_chars[doc_mask].sum()), None if correct is None else int(correct[in_domain].sum()),
        )
    result["by_domain"] = by_domain
    return result


def score_model(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, dev: torch.device,
                batch_size: int = 64, stride: int | None = None, progress: bool = False,
                world: World = World()) -> TokenScores:
    """The fixed protocol: sliding windows for stateless models, carried state for stateful."""
    model.eval()
    if getattr(model, "stateful", False):
        return score_streams(model, tokens, seq_len, STREAMS, dev, progress, world)
    return score_windows(model, tokens, seq_len, stride or default_stride(seq_len), batch_size, dev, progress, world)


def evaluate_run(run_path: str | os.PathLike, split: str = "test", batch_size: int = 64, stride: int | None = None,
                 device: str = "auto", progress: bool = False, *, world: World) -> dict | None:
    """Score a finished run's checkpoint on a whole split, next to the train-split unigram.

    Under torchrun the scoring is sharded over ranks and summed; rank 0 returns the metrics,
    the others None."""
    return evaluate_model(load_run_model(run_path, device), split, batch_size, stride, progress, world)


def evaluate_model(rm: RunModel, split: str = "test", batch_size: int = 64, stride: int | None = None,
                   progress: bool = False, world: World = World()) -> dict | None:
    """`evaluate_run` on a model already loaded. A test evaluation under the fixed protocol
    also names its evaluation identity and dataset, which say what it may be compared with."""
    model, data, dev, seq_len = rm.model, rm.data, rm.device, rm.seq_len
    tokens = data.stream(split).all()
    stride = stride or default_stride(seq_len)
    scores = score_model(model, tokens, seq_len, dev, batch_size, stride, progress, world)
    if not world.is_main:
        return None
    unigram = score_unigram(unigram_counts(data.stream("train"), data.vocab_size), tokens)
    text = SplitText.load(data, split, tokens)
    metrics = summarize(scores, text)
    stateful = getattr(model, "stateful", False)
    metrics["protocol"] = {
        "split": split,
        "whole_split": True,
        "method": "carried-state streams" if stateful else "sliding windows",
        "seq_len": seq_len,
        "stride": None if stateful else stride,
        "streams": STREAMS if stateful else None,
    }
    out = {split: metrics, "unigram_bits_per_byte": summarize(unigram, text)["bits_per_byte"]}
    if split == "test" and (stateful or stride == default_stride(seq_len)):
        out.update(evaluation_identity=identity_of(data), dataset=dataset_name(data.manifest, data.path))
    return out
