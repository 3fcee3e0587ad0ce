"""`languini data prepare`: sources in, a tokenised, split, sharded dataset folder out.

Two passes over the sources, both on a pool of worker processes (or Ray tasks), each worker
reading its own files and line-aligned byte ranges of large ones. Pass one puts each
document in a split by a hash of its text, counts, and finds the seeded sample of the train
split the tokenizer is trained on; then the tokenizer is trained; pass two reads the sources
again, each worker tokenising what it read, and the splits are written shard by shard (see
`shards`). Nothing but the output is written: no copy of the corpus waits on disk between
the passes, so peak disk is the dataset itself. The folder is built under a temporary name
and moved into place only when complete, so a failure never leaves half a dataset where a
good one stood.
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
import os
import sys
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from languini.data.derive import compute_identity
from languini.data.executors import Executor, executor, run_tasks
from languini.data.loader import PreparedData
from languini.data.manifest import MANIFEST_FILE, SPLITS, read_manifest, stamp
from languini.data.shards import DEFAULT_SHARD_TOKENS, DocInfo, EncodedBatch, SplitWriter, token_dtype
from languini.data.sources import Batch, BadRecordError, Document, JsonlSlice, LineNumbers, ReadOptions, Source, Task, parse_source, read_tasks
from languini.data.tokenizer import Tokenizer, check_tokenizer_name, make_tokenizer, needs_training, open_tokenizer
from languini.errors import UserError
from languini.io import atomic_dir, atomic_write_json

DEFAULT_SAMPLE_BYTES = 2_000_000
"""Train text the SentencePiece trainer sees. Training runs on one core while the others
wait, so it is kept small; on the stdlib an 8k vocabulary trained on 2 MB needs only 0.6%
more tokens than one trained on 3 MB."""


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
    reading = Reading(parsed, ReadOptions(domain_field, skip_bad_lines), fractions)
    with atomic_dir(out) as tmp, executor(executor_kind, workers) as pool:
        sample = TrainingSample(sample_bytes, seed) if trains else None
        corpus = read_corpus(reading, sample, pool, workers, progress)
        if sample and progress:
            tqdm.write(f"training a {vocab_size}-piece SentencePiece BPE on {sample.size / 1e6:.2f} MB of train text", file=sys.stderr)
        tok = make_tokenizer(tokenizer, tmp, vocab_size=vocab_size, sample=sample.texts() if sample else (), seed=seed, pool=pool)
        splits = write_splits(reading, corpus, tok, tmp, shard_tokens, pool, workers, progress)
        manifest = build_manifest(request, corpus, tok, splits, tmp)
        check_out(out, request, manifest["fingerprint"], force)
        atomic_write_json(tmp / MANIFEST_FILE, manifest)
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

    The workers hash; this object, in the calling process, sees every train document's
    hash and length in read order (so the sample is the one a single reader would keep) but
    the text only of those that could still enter when their task was handed out (`ceiling`);
    a document that enters without its text holds where to find it until `fill`.
    """

    def __init__(self, budget: int, seed: int):
        self.budget = budget
        self.size = 0
        self.cap = max(1, budget // 16)  # characters of one document at most
        self.key = seed.to_bytes(8, "little", signed=True)
        self._heap: list[tuple[int, int, int, Any]] = []  # (-hash, arrival, length, text or its place): the largest hash on top
        self._arrivals = 0

    def hash(self, data: bytes) -> int:
        return sample_hash(self.key, data)

    def ceiling(self) -> int:
        """No document hashed above this can enter while the budget stays full."""
        return -self._heap[0][0] if self._heap and self.size >= self.budget else 1 << 64

    def offer(self, text: str, data: bytes) -> None:
        text = text[: self.cap]
        self.add(self.hash(data), len(text), text)

    def add(self, h: int, length: int, item: Any) -> None:
        """Offer a document of hash `h` and `length` (capped) characters: its text, or its place."""
        if self._heap and self.size >= self.budget and -self._heap[0][0] < h:
            return
        heapq.heappush(self._heap, (-h, self._arrivals, length, item))
        self._arrivals += 1
        self.size += length
        while self.size > self.budget and len(self._heap) > 1:
            self.size -= heapq.heappop(self._heap)[2]

    def missing(self) -> list[Any]:
        """The places of the kept documents whose text has not come."""
        return [item for *_, item in self._heap if not isinstance(item, str)]

    def fill(self, texts: dict[Any, str]) -> None:
        self._heap = [(h, a, n, texts.get(item, item) if not isinstance(item, str) else item) for h, a, n, item in self._heap]

    def texts(self) -> list[str]:
        assert not self.missing(), "fill the sample's texts first"
        return [item for *_, item in sorted(self._heap, reverse=True)]


def sample_hash(key: bytes, data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "big")


@dataclass(frozen=True)
class Reading:
    """The sources and how to read and split them: the tasks both passes run, in one fixed order."""

    sources: Sequence[Source]
    options: ReadOptions
    fractions: tuple[float, float, float]

    def tasks(self) -> Iterator[Task]:
        return (task for source in self.sources for task in read_tasks(source, self.options))


def kept(batch: Batch, fractions: Sequence[float]) -> Iterator[tuple[Document, bytes, str]]:
    """The batch's non-empty documents with their UTF-8 text and split."""
    for doc in batch.documents:
        if doc.text:
            data = doc.text.encode("utf-8")
            yield doc, data, split_of(data, fractions)


@dataclass
class Scan:
    """What pass one learns from one read task (a worker's answer: small, no documents but
    the sample candidates)."""

    documents: Counter = field(default_factory=Counter)  # per split
    domains: set[str] = field(default_factory=set)
    bad_lines: int = 0
    replaced: int = 0
    empty: int = 0
    lines: int = 0
    bad_at: tuple[int, str] | None = None
    hashes: list[int] = field(default_factory=list)  # per train document, in order: its sample hash
    lengths: list[int] = field(default_factory=list)  # its capped length
    texts: list[str | None] = field(default_factory=list)  # its capped text if under the ceiling


def scan(fractions: Sequence[float], task: Task, sample: tuple[bytes, int, int, int] | None) -> Scan:
    """Pass one of one task (run by a worker): split, count, hash for the sample.

    `sample` is (key, cap, ceiling, budget): texts hashed above the ceiling stay behind, and
    so do those that the task's own smaller-hashed texts already push out of the budget
    (they cannot enter the sample either), so a large task sends back little text even
    when it is handed out before the sample has filled."""
    batch = task()
    result = Scan(bad_lines=batch.bad_lines, replaced=batch.replaced, lines=batch.lines, bad_at=batch.bad_at)
    result.empty = sum(1 for doc in batch.documents if not doc.text)
    train: list[str] = []
    for doc, data, name in kept(batch, fractions):
        result.documents[name] += 1
        result.domains.add(doc.domain)
        if sample is not None and name == "train":
            result.hashes.append(sample_hash(sample[0], data))
            result.lengths.append(min(len(doc.text), sample[1]))
            train.append(doc.text)
    if sample is not None:
        key, cap, ceiling, budget = sample
        ceiling = min(ceiling, own_ceiling(result.hashes, result.lengths, budget))
        result.texts = [text[:cap] if h <= ceiling else None for h, text in zip(result.hashes, train)]
    return result


def own_ceiling(hashes: list[int], lengths: list[int], budget: int) -> int:
    """The hash above which a document is out of the sample for this task's own documents
    alone: the first whose smaller-hashed documents, with it, exceed the budget."""
    total = 0
    for h, length in sorted(zip(hashes, lengths)):
        total += length
        if total > budget:
            return h
    return 1 << 64


def sample_texts(fractions: Sequence[float], task: Task, cap: int, wanted: list[int]) -> list[str]:
    """The capped texts of the task's train documents numbered `wanted` (run by a worker)."""
    train = [doc.text for doc, _, name in kept(task(), fractions) if name == "train"]
    return [train[i][:cap] for i in wanted]


@dataclass
class Corpus:
    """What pass one learned about the corpus (the documents stay in the sources)."""

    documents: Counter = field(default_factory=Counter)  # per split
    domains: set[str] = field(default_factory=set)
    bad_lines: int = 0
    replaced: int = 0
    empty: int = 0
    lines: array = field(default_factory=lambda: array("q"))  # per JSON-lines slice, in task order: its line count

    def add(self, result: Scan) -> None:
        self.documents.update(result.documents)
        self.domains |= result.domains
        self.bad_lines += result.bad_lines
        self.replaced += result.replaced
        self.empty += result.empty


def read_corpus(reading: Reading, sample: TrainingSample | None, pool: Executor | None, workers: int, progress: bool) -> Corpus:
    """Pass one: split, count and sample on the workers; refuse an empty corpus or an empty split."""
    corpus = Corpus()
    numbers = LineNumbers()
    handed: deque[Task] = deque()  # tasks handed out, oldest first: the one each answer belongs to

    def jobs() -> Iterator[Callable[[], Scan]]:
        for task in reading.tasks():
            handed.append(task)
            yield partial(scan, reading.fractions, task, (sample.key, sample.cap, sample.ceiling(), sample.budget) if sample else None)

    with tqdm(desc="read", unit=" docs", disable=not progress, file=sys.stderr) as bar:
        for k, result in enumerate(run_tasks(pool, jobs(), window=2 * workers)):
            task = handed.popleft()
            if isinstance(task, JsonlSlice):
                first = numbers.first(task, result.lines)
                corpus.lines.append(result.lines)
                if result.bad_at is not None:
                    raise BadRecordError(f"{task.file}:{first + result.bad_at[0] - 1}", result.bad_at[1])
            corpus.add(result)
            if sample is not None:
                for i, (h, length, text) in enumerate(zip(result.hashes, result.lengths, result.texts)):
                    sample.add(h, length, (k, i) if text is None else text)
            bar.update(sum(result.documents.values()) + result.empty)
    _check_nonempty(corpus, reading.fractions)
    if sample is not None and sample.missing():
        _fetch_sample(reading, sample, pool, workers)
    return corpus


def _fetch_sample(reading: Reading, sample: TrainingSample, pool: Executor | None, workers: int) -> None:
    """Read again the few tasks holding kept sample documents whose texts stayed behind
    (they entered after the ceiling had dropped and the budget then freed up)."""
    wanted: dict[int, list[int]] = {}
    for k, i in sorted(sample.missing()):
        wanted.setdefault(k, []).append(i)
    jobs = (partial(sample_texts, reading.fractions, task, sample.cap, wanted[k]) for k, task in enumerate(reading.tasks()) if k in wanted)
    texts = {}
    for k, found in zip(sorted(wanted), run_tasks(pool, jobs, window=2 * workers)):
        texts.update({(k, i): text for i, text in zip(wanted[k], found)})
    sample.fill(texts)


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


def write_splits(reading: Reading, corpus: Corpus, tok: Tokenizer, folder: Path, shard_tokens: int, pool: Executor | None,
                 workers: int, progress: bool) -> dict[str, Any]:
    """Pass two: read the sources again, tokenise on the workers, and write each split."""
    domains = sorted(corpus.domains)
    dtype = token_dtype(tok.vocab_size)
    writers = {name: SplitWriter(folder / name, dtype=dtype, eod_id=tok.eod_id, domains=domains, shard_tokens=shard_tokens) for name in SPLITS}
    entry = tok.manifest_entry()
    with tqdm(total=sum(corpus.documents.values()), desc="encode", unit=" docs", disable=not progress, file=sys.stderr) as bar:
        for batches in run_tasks(pool, (partial(encode_task, reading.fractions, entry, folder, task) for task in numbered(reading, corpus)), window=2 * workers):
            for batch in batches:
                try:
                    writers[batch.split].add(batch)
                except KeyError:  # a domain pass one did not see
                    raise SourcesChanged() from None
                bar.update(len(batch.docs))
    splits = {name: writer.close() for name, writer in writers.items()}
    if any(splits[name]["documents"] != corpus.documents[name] for name in SPLITS):
        raise SourcesChanged()
    return splits


def numbered(reading: Reading, corpus: Corpus) -> Iterator[Task]:
    """The read tasks again, every JSON-lines slice told its first line number (from pass one's counts)."""
    numbers, counts = LineNumbers(), iter(corpus.lines)
    for task in reading.tasks():
        if isinstance(task, JsonlSlice):
            lines = next(counts, None)
            if lines is None:
                raise SourcesChanged()
            task = replace(task, first_line=numbers.first(task, lines))
        yield task


class SourcesChanged(UserError):
    """Pass two read other documents than pass one counted: the counts, the tokenizer's
    sample and the shards would not belong together."""

    def __init__(self) -> None:
        super().__init__("the sources changed while they were being prepared; prepare them again once they are complete.")


def encode_task(fractions: Sequence[float], entry: dict[str, Any], folder: Path, task: Task) -> list[EncodedBatch]:
    """Read one task's documents and tokenise them, one batch per split (run by a worker).

    The task opens the tokenizer itself, with one thread: the worker processes are the
    parallelism, and they also share the Python work around the encoder. Opening takes
    milliseconds, beside encoding a task's megabytes of text.
    """
    tok = open_tokenizer(entry, folder, threads=1)
    by_split: dict[str, list[tuple[Document, int]]] = {name: [] for name in SPLITS}
    for doc, data, name in kept(task(), fractions):
        by_split[name].append((doc, len(data)))
    return [encode_documents(tok, name, docs) for name, docs in by_split.items() if docs]


def encode_documents(tok: Tokenizer, split: str, docs: list[tuple[Document, int]]) -> EncodedBatch:
    """Documents (with their UTF-8 sizes) of one split as a token stream."""
    ids = tok.encode_batch([doc.text for doc, _ in docs])
    lengths = [len(t) + 1 for t in ids]
    stream = chain.from_iterable(chain(t, (tok.eod_id,)) for t in ids)
    tokens = np.fromiter(stream, dtype=token_dtype(tok.vocab_size), count=sum(lengths))
    return EncodedBatch(split, tokens, lengths, [DocInfo(doc.id, doc.domain, n_bytes, len(doc.text)) for doc, n_bytes in docs])


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


def _existing_manifest(out: Path) -> Mapping[str, Any] | None:
    """The manifest at `out` ({} when damaged), None when `out` is free to use.

    A non-empty folder without a manifest is refused even with --force: it is not ours to
    delete.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder.")
    if not (out / MANIFEST_FILE).exists():
        if any(out.iterdir()):
            raise UserError(f"--out {out} holds other files and no languini dataset; choose an empty or new folder.")
        return None
    try:
        return read_manifest(out)
    except UserError:
        return {}
