"""`languini data prepare`: sources in, a tokenised, split, sharded dataset folder out.

Two passes, both on a pool of worker processes. Pass one reads every source, puts each
document in a split by a hash of its text, keeps a seeded sample of the train split for the
tokenizer and spills the documents to a temporary file; then the tokenizer is trained on the
sample; pass two tokenises the spill and writes the splits (see `shards`). The folder is built under a temporary name
and moved into place only when complete, so a failure never leaves half a dataset where a
good one stood.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import pickle
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from languini import __version__
from languini.data.executors import Executor, executor, run_tasks
from languini.data.identity import compute_identity
from languini.data.loader import PreparedData
from languini.data.shards import DEFAULT_SHARD_TOKENS, DocInfo, EncodedBatch, SplitWriter, token_dtype
from languini.data.sources import ReadOptions, Source, parse_source, read_tasks
from languini.data.tokenizer import Tokenizer, check_tokenizer_name, make_tokenizer, needs_training, open_tokenizer
from languini.errors import UserError
from languini.io import atomic_dir, atomic_write_json, read_json, to_json

FORMAT = "languini-data/1"
SPLITS = ("train", "validation", "test")
DEFAULT_SAMPLE_BYTES = 2_000_000
"""Train text the SentencePiece trainer sees. Training runs on one core while the others
wait, so it is kept small; on the stdlib an 8k vocabulary trained on 2 MB needs only 0.6%
more tokens than one trained on 3 MB."""
SPILL_BATCH_BYTES = 4 << 20  # text per encoding task
_SPILL = ".documents.pickle"

Record = tuple[str, str, str, str, int]  # a spilled document: text, id, domain, split, UTF-8 bytes


def prepare(
    sources: Sequence[str],
    out: str | Path,
    *,
    tokenizer: str = "sentencepiece",
    vocab_size: int = 8192,
    domain_field: str | None = None,
    split: tuple[float, float, float] = (0.98, 0.01, 0.01),
    skip_bad_lines: bool = False,
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
    seed: int = 0,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    sample_bytes: int = DEFAULT_SAMPLE_BYTES,
    executor_kind: str = "local",
) -> dict[str, Any]:
    """Prepare `sources` (`SOURCE` or `NAME=SOURCE`) into the dataset folder `out`.

    `tokenizer` is `sentencepiece` (BPE of `vocab_size` pieces trained on `sample_bytes` of
    the train split, chosen by `seed`), `bytes`, or the path of a SentencePiece `.model`.
    `split` gives the train/validation/test fractions. Returns the manifest.
    """
    if not sources:
        raise UserError("give at least one source to prepare.")
    parsed = [parse_source(s) for s in sources]
    fractions = check_fractions(split)
    check_tokenizer_name(tokenizer)
    trains = needs_training(tokenizer)
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}.")
    if shard_tokens < 1:
        raise UserError(f"shard_tokens must be at least 1, got {shard_tokens}.")
    workers = workers or os.cpu_count() or 1
    request = {
        "sources": [s.manifest_entry() for s in parsed],
        "split_fractions": list(fractions),
        "settings": {
            "tokenizer": tokenizer,
            "vocab_size": vocab_size if trains else None,
            "sample_bytes": sample_bytes if trains else None,
            "seed": seed,
            "domain_field": domain_field,
            "skip_bad_lines": skip_bad_lines,
            "shard_tokens": shard_tokens,
        },
    }
    out = Path(out)
    check_out(out, request, None, force)
    with atomic_dir(out) as tmp, executor(executor_kind, workers) as pool:
        sample = TrainingSample(sample_bytes, seed) if trains else None
        corpus = read_corpus(parsed, ReadOptions(domain_field, skip_bad_lines), tmp / _SPILL, fractions, sample, pool, workers, progress)
        if sample and progress:
            tqdm.write(f"training a {vocab_size}-piece SentencePiece BPE on {sample.size / 1e6:.2f} MB of train text", file=sys.stderr)
        tok = make_tokenizer(tokenizer, tmp, vocab_size=vocab_size, sample=sample.texts() if sample else (), seed=seed)
        splits = write_splits(corpus, tok, tmp, shard_tokens, pool, workers, progress)
        manifest = build_manifest(request, corpus, tok, splits, tmp)
        check_out(out, request, manifest["fingerprint"], force)
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def check_fractions(split: Sequence[float]) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in split)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"split fractions must be three positive numbers (train, validation, test) that sum to 1, got {tuple(split)}.")
    return fractions  # type: ignore[return-value]


def split_of(data: bytes, fractions: Sequence[float]) -> str:
    """The split of a document with UTF-8 text `data`.

    blake2b (not Python's salted `hash`) makes membership the same on every run and machine,
    and puts identical texts in the same split, so a duplicate cannot leak into the test set.
    """
    u = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") / 2.0**64
    if u < fractions[0]:
        return SPLITS[0]
    return SPLITS[1] if u < fractions[0] + fractions[1] else SPLITS[2]


class TrainingSample:
    """The train documents with the smallest seeded hashes that fit in a byte budget.

    A bottom-k sample: the same documents whatever order they arrive in and however many
    workers read them, different ones for a different seed. Each document contributes at
    most a sixteenth of the budget, so a few huge documents cannot make up the whole sample.
    """

    def __init__(self, budget: int, seed: int):
        self.budget = budget
        self.size = 0
        self._key = seed.to_bytes(8, "little", signed=True)
        self._heap: list[tuple[int, str]] = []  # (-hash, text): the largest hash on top

    def offer(self, text: str, data: bytes) -> None:
        h = int.from_bytes(hashlib.blake2b(data, digest_size=8, key=self._key).digest(), "big")
        if self._heap and self.size >= self.budget and -self._heap[0][0] < h:
            return
        text = text[: max(1, self.budget // 16)]
        heapq.heappush(self._heap, (-h, text))
        self.size += len(text)
        while self.size > self.budget and len(self._heap) > 1:
            self.size -= len(heapq.heappop(self._heap)[1])

    def texts(self) -> list[str]:
        return [text for _, text in sorted(self._heap, reverse=True)]


@dataclass
class Corpus:
    """What pass one learned about the corpus; the documents themselves wait in `spill`."""

    spill: Path
    documents: Counter = field(default_factory=Counter)  # per split
    domains: set[str] = field(default_factory=set)
    bad_lines: int = 0
    replaced: int = 0
    empty: int = 0


def read_corpus(
    sources: Sequence[Source],
    options: ReadOptions,
    spill: Path,
    fractions: Sequence[float],
    sample: TrainingSample | None,
    pool: Executor | None,
    workers: int,
    progress: bool,
) -> Corpus:
    """Pass one: read, split, sample, spill; refuse an empty corpus or an empty split."""
    corpus = Corpus(spill)
    tasks = (task for source in sources for task in read_tasks(source, options))
    with open(spill, "wb") as f, tqdm(desc="read", unit=" docs", disable=not progress, file=sys.stderr) as bar:
        records: list[Record] = []
        size = 0
        for batch in run_tasks(pool, tasks, window=2 * workers):
            corpus.bad_lines += batch.bad_lines
            corpus.replaced += batch.replaced
            for doc in batch.documents:
                if not doc.text:
                    corpus.empty += 1
                    continue
                data = doc.text.encode("utf-8")
                name = split_of(data, fractions)
                corpus.documents[name] += 1
                corpus.domains.add(doc.domain)
                if sample is not None and name == "train":
                    sample.offer(doc.text, data)
                records.append((doc.text, doc.id, doc.domain, name, len(data)))
                size += len(data)
            if size >= SPILL_BATCH_BYTES:
                pickle.dump(records, f, protocol=pickle.HIGHEST_PROTOCOL)
                records, size = [], 0
            bar.update(len(batch.documents))
        pickle.dump(records, f, protocol=pickle.HIGHEST_PROTOCOL)
    _check_nonempty(corpus, fractions)
    return corpus


def _check_nonempty(corpus: Corpus, fractions: Sequence[float]) -> None:
    total = sum(corpus.documents.values())
    if not total:
        skipped = f" ({corpus.bad_lines} bad lines and {corpus.empty} empty documents skipped)" if corpus.bad_lines or corpus.empty else ""
        raise UserError(f"the sources hold no documents{skipped}.")
    for name in SPLITS:
        if not corpus.documents[name]:
            raise UserError(
                f"the {name} split is empty at split fractions {'/'.join(f'{f:g}' for f in fractions)} "
                f"({total} documents in all); add documents or give {name} a larger fraction."
            )


def _spilled(path: Path) -> Iterator[list[Record]]:
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def write_splits(corpus: Corpus, tok: Tokenizer, folder: Path, shard_tokens: int, pool: Executor | None, workers: int, progress: bool) -> dict[str, Any]:
    """Pass two: tokenise the spilled documents on the workers and write each split."""
    domains = sorted(corpus.domains)
    dtype = token_dtype(tok.vocab_size)
    writers = {name: SplitWriter(folder / name, dtype=dtype, eod_id=tok.eod_id, domains=domains, shard_tokens=shard_tokens) for name in SPLITS}
    entry = tok.manifest_entry()
    tasks = (
        partial(encode_records, entry, folder, name, mine)
        for records in _spilled(corpus.spill)
        for name in SPLITS
        if (mine := [r for r in records if r[3] == name])
    )
    try:
        with tqdm(total=sum(corpus.documents.values()), desc="encode", unit=" docs", disable=not progress, file=sys.stderr) as bar:
            for batch in run_tasks(pool, tasks, window=2 * workers):
                writers[batch.split].add(batch)
                bar.update(len(batch.docs))
    finally:
        _TOKENIZERS.clear()
    corpus.spill.unlink()
    return {name: writer.close() for name, writer in writers.items()}


_TOKENIZERS: dict[str, Tokenizer] = {}  # per process: the tokenizer of the dataset being encoded


def encode_records(entry: dict[str, Any], folder: Path, split: str, records: list[Record]) -> EncodedBatch:
    """Tokenise documents of one split into a token stream (run by a worker process).

    A worker opens the tokenizer once, with one thread: the worker processes are the
    parallelism, and they also share the Python work around the encoder.
    """
    key = f"{folder}:{entry['sha256']}"
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = open_tokenizer(entry, folder, threads=1)
    tok = _TOKENIZERS[key]
    ids = tok.encode_batch([r[0] for r in records])
    lengths = [len(t) + 1 for t in ids]
    stream = chain.from_iterable(chain(t, (tok.eod_id,)) for t in ids)
    tokens = np.fromiter(stream, dtype=token_dtype(tok.vocab_size), count=sum(lengths))
    return EncodedBatch(split, tokens, lengths, [DocInfo(r[1], r[2], r[4], len(r[0])) for r in records])


def build_manifest(request: dict[str, Any], corpus: Corpus, tok: Tokenizer, splits: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The manifest of the dataset written in `folder`; its evaluation identity is read back
    from the test split just written, so it is the text that will be scored."""
    body = {
        **request,
        "domains": sorted(corpus.domains),
        "tokenizer": tok.manifest_entry(),
        "dtype": token_dtype(tok.vocab_size).name,
        "splits": splits,
        "bad_lines_skipped": corpus.bad_lines,
        "invalid_utf8_replaced": corpus.replaced,
        "empty_documents_skipped": corpus.empty,
    }
    return stamp(body, compute_identity(PreparedData(folder, body)))


def stamp(body: dict[str, Any], evaluation_identity: str) -> dict[str, Any]:
    """A manifest: the body behind its format, version, creation time, fingerprint and
    evaluation identity. The identity stays outside the fingerprint: it follows from the test
    shards and tokenizer the fingerprint covers (and the protocol), so a new protocol version
    does not make the same data a different dataset."""
    return {
        "format": FORMAT,
        "languini_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fingerprint(body),
        "evaluation_identity": evaluation_identity,
        **body,
    }


def fingerprint(body: dict[str, Any]) -> str:
    """sha256 over what was asked and what came out (token and index hashes, counts), not
    when or by which version: equal fingerprints mean interchangeable datasets."""
    return hashlib.sha256((FORMAT + to_json(body)).encode("utf-8")).hexdigest()


def check_out(out: Path, request: dict[str, Any], new_fingerprint: str | None, force: bool) -> None:
    """Refuse to replace a different dataset unless forced.

    Called before reading (comparing the request, so a refusal is immediate) and again
    before the move (comparing fingerprints, which differ when input files changed).
    """
    existing = _existing_manifest(out)
    if existing is None or force:
        return
    if {key: existing.get(key) for key in request} != request:
        raise UserError(f"{out} already holds a dataset prepared from other sources or settings; pass --force to replace it or choose another --out.")
    if new_fingerprint is not None and existing.get("fingerprint") != new_fingerprint:
        raise UserError(f"{out} already holds a dataset prepared with these settings from different input data; pass --force to replace it.")


def _existing_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest at `out` ({} when damaged), None when `out` is free to use.

    A non-empty folder without a manifest is refused even with --force: it is not ours to
    delete.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder.")
    path = out / "manifest.json"
    if not path.exists():
        if any(out.iterdir()):
            raise UserError(f"--out {out} holds other files and no languini dataset; choose an empty or new folder.")
        return None
    try:
        manifest = read_json(path, "data manifest")
    except UserError:
        return {}
    return manifest if isinstance(manifest, dict) else {}
