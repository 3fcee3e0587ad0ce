"""`languini data dedup`: a prepared dataset in, one without duplicate train documents out.

Four stages, each a pure function of its input (see `minhash` for the hashing and `buckets`
for the on-disk link and cluster stages), with memory bounded by `memory_limit` and by a
few bytes per document, never by the text, the band keys or the pairs:

1. sign: workers decode parts of the corpus and write, per part, the documents' MinHash
   signatures and one sorted run of (key, position) per column (the exact hash of the
   normalised text, then each LSH band); the driver keeps per document only its exact hash
   and sizes, in a memory map.
2. link: per column (and key range), a task merges the parts' runs and streams the buckets:
   documents sharing an exact hash or a band (within a domain for `local` scope, across
   domains for `global`) become candidate pairs, verified by their MinHash Jaccard
   estimate and appended to pair files.
3. cluster: union-find over the streamed pairs joins documents into clusters; the first of
   each in stream order is kept.
4. filter: the kept train documents are copied, token for token, into a new dataset, and
   the removed ones listed in its `duplicates.jsonl` as their ids stream past.

Stages one and two run on local processes or on Ray (`executors`); with Ray across machines,
the input and `out` (whose temporary folder holds the work files) are on shared storage.

Only the train split changes: validation and test are the parent's, byte for byte, so every
mix is scored on the same text. With `decontaminate`, train documents that duplicate a
validation or test document are removed too (across domains, whatever the scope). The new
folder is built under a temporary name and its manifest is the parent's with the train split
recomputed, a `parent` and a `dedup` entry, and a new fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from languini.data.buckets import RECORD, WORKING_COPIES, DisjointSets, LinkPlan, link, memory_budget, pair_chunks, part_file, sorted_runs
from languini.data.derive import TASK_TOKENS, DocTable, batches, check_derived_out, decode_range, finish_derived, open_parent, write_train
from languini.data.loader import Documents, PreparedData
from languini.data.manifest import MANIFEST_FILE, SPLITS, Manifest
from languini.data.minhash import MIN_NUM_PERM, MinHasher, band_keys, lsh_params, s_curve
from languini.data.executors import executor, run_tasks
from languini.errors import UserError
from languini.io import atomic_dir, atomic_write_json

SCOPES = ("local", "global")
DUPLICATE_KINDS = ("exact", "near", "contamination")
REPORT_FILE = "dedup.json"
DUPLICATES_FILE = "duplicates.jsonl"
PART_TOKENS = 1 << 26  # tokens of a signing part at most (one sorted run per column each)
MIN_BLOCK = 1024  # records read from each run per merge round, at least
ROUND_RECORDS = 1 << 18  # records merged per round, at most: larger rounds are no faster (merging is a small part
# of dedup), and a round's memory then stays the same whatever the corpus
CHUNK = 1 << 20  # documents per step where the driver scans all of them
_WORK = ".work"


@dataclass(frozen=True)
class Settings:
    """What decides which documents go; recorded in the new manifest's `dedup` entry."""

    scope: str
    threshold: float
    ngram: int
    num_perm: int
    bands: int
    rows: int
    seed: int
    decontaminate: bool
    verify: bool


def dedup(
    data_dir: str | Path,
    out: str | Path,
    *,
    scope: str = "global",
    threshold: float = 0.8,
    ngram: int = 5,
    num_perm: int = 128,
    decontaminate: bool = False,
    verify: bool = True,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
    seed: int = 0,
    executor_kind: str = "local",
    memory_limit: str | int | None = None,
) -> dict[str, Any]:
    """Write to `out` the prepared dataset `data_dir` without duplicate train documents.

    Documents are duplicates when their normalised texts are equal (exact) or when the
    Jaccard similarity of their word `ngram` sets is about `threshold` or more (near: MinHash
    with `num_perm` permutations drawn from `seed`, LSH bands and rows chosen for the
    threshold). `scope` is `local` (within each domain) or `global` (across domains).
    `memory_limit` (bytes, or a size such as `4G`; default a quarter of the RAM) bounds the
    workers' buffers together; it changes how the work is cut, never the result.
    Returns the report (see `build_report`), also written to `out/dedup.json`; the removed
    documents are listed in `out/duplicates.jsonl` (`read_duplicates`).
    """
    check_settings(scope, threshold, ngram, num_perm, workers)
    parent = open_parent(data_dir)
    out = Path(out)
    check_derived_out(parent.path, out, force)
    bands, rows = lsh_params(threshold, num_perm)
    settings = Settings(scope, float(threshold), ngram, num_perm, bands, rows, seed, decontaminate, verify)
    workers = workers or os.cpu_count() or 1
    budget = memory_budget(memory_limit)
    with atomic_dir(out) as tmp, executor(executor_kind, workers) as pool:
        work = tmp / _WORK
        work.mkdir()
        corpus = sign_corpus(parent, SPLITS if decontaminate else ("train",), MinHasher(num_perm, ngram, seed), settings, work, pool,
                             workers, budget, progress)
        decision = decide(corpus, settings, link_plan(corpus, settings, work, workers, budget), pool, workers, progress)
        train = write_train(parent, corpus.train_table(), decision.removed, tmp, progress)
        shutil.rmtree(work)  # memory maps stay readable until dropped; the folder moves clean
        manifest = finish_derived(parent, tmp, train, "dedup", asdict(settings))
        report = build_report(out, manifest, settings, corpus, decision)
        write_duplicates(tmp / DUPLICATES_FILE, corpus, decision, manifest.domains)
        atomic_write_json(tmp / REPORT_FILE, report)
    return report


def deduplicated(parent: PreparedData, settings: dict[str, Any], progress: bool = True) -> PreparedData:
    """`parent` deduplicated with `settings` (keyword arguments of `dedup`): written once into a
    folder beside it named for the parent and the settings, and reused from then on."""
    key = hashlib.sha256(json.dumps({"parent": parent.fingerprint, **settings}, sort_keys=True).encode()).hexdigest()
    out = parent.path.parent / f"{parent.path.name}.dedup-{key[:12]}"
    if not (out / MANIFEST_FILE).is_file():
        dedup(parent.path, out, progress=progress, **settings)
    child = PreparedData(out)
    if child.manifest.parent_fingerprint != parent.fingerprint:
        raise UserError(f"{out} holds another dataset than {parent.path} deduplicated; move it away.")
    return child


def check_settings(scope: str, threshold: float, ngram: int, num_perm: int, workers: int | None) -> None:
    """Refuse settings that cannot mean anything before any reading."""
    if scope not in SCOPES:
        raise UserError(f"unknown dedup scope {scope!r}; use local (within each domain) or global (across domains).")
    if not 0 < threshold < 1:
        raise UserError(f"the Jaccard threshold must lie strictly between 0 and 1, got {threshold}.")
    if ngram < 1:
        raise UserError(f"ngram must be at least 1 word, got {ngram}.")
    if num_perm < MIN_NUM_PERM:
        raise UserError(f"num_perm must be at least {MIN_NUM_PERM} for a usable Jaccard estimate, got {num_perm}.")
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}.")


@dataclass
class SignedCorpus:
    """Stage one's result. Corpus rows number the signed documents: train first, then any
    evaluation splits, in stream order. Link order (`pos`, see `buckets`) puts the evaluation
    documents first, so that they head the buckets they share with train documents."""

    docs: dict[str, Documents]  # per signed split, in SPLITS order
    rows: np.ndarray  # per corpus row: exact hash, UTF-8 bytes and characters of its text (a memory map)
    part_starts: np.ndarray  # the corpus row where each signing part starts, and the total

    @property
    def n_train(self) -> int:
        return _count(self.docs["train"])

    @property
    def n_eval(self) -> int:
        return len(self.rows) - self.n_train

    def locate(self, row: int) -> tuple[str, int]:
        """The split of a corpus row and its index there."""
        for name, docs in self.docs.items():
            if row < _count(docs):
                return name, row
            row -= _count(docs)
        raise IndexError(row)

    def train_table(self) -> DocTable:
        """The train documents as the split writer reads them."""
        train, n = self.docs["train"], self.n_train
        rows = np.asarray(self.rows[:n])  # a plain view of the map: indexing it one document at a time stays cheap
        return DocTable(train.offsets, train.domains, train.ids, rows["n_bytes"], rows["n_chars"])


def _count(docs: Documents) -> int:
    return len(docs.offsets) - 1


ROW = np.dtype([("exact", "<u8"), ("n_bytes", "<i8"), ("n_chars", "<i8")])


@dataclass(frozen=True)
class SignedPart:
    """What a signing task sends back besides its files: per document, ROW's fields."""

    exact: np.ndarray
    n_bytes: np.ndarray
    n_chars: np.ndarray


def sign_corpus(data: PreparedData, splits: Sequence[str], hasher: MinHasher, settings: Settings, work: Path, pool: Any,
                workers: int, budget: int, progress: bool) -> SignedCorpus:
    """Stage one over `splits`: each part of the corpus signed by a worker into `work`."""
    docs = {name: data.documents(name) for name in splits}
    parts = list(plan_parts(docs, settings.bands + 1, workers, budget))
    counts = [_count(docs[name]) for name in splits]
    n_train, total = counts[0], sum(counts)
    starts = np.cumsum([0] + [hi - lo for _, lo, hi in parts])
    split_starts = dict(zip(splits, np.cumsum([0] + counts)))
    rows = np.lib.format.open_memmap(work / "rows.npy", mode="w+", dtype=ROW, shape=(total,))
    tasks = (
        partial(sign_part, str(data.path), name, docs[name].offsets[lo : hi + 1], str(work), p,
                (int(split_starts[name]) + lo + total - n_train) % total, hasher, settings.bands, settings.rows)
        for p, (name, lo, hi) in enumerate(parts)
    )
    with tqdm(total=total, desc="sign", unit=" docs", disable=not progress, file=sys.stderr) as bar:
        for p, part in enumerate(run_tasks(pool, tasks, window=2 * workers)):
            lo, hi = starts[p], starts[p + 1]
            rows["exact"][lo:hi], rows["n_bytes"][lo:hi], rows["n_chars"][lo:hi] = part.exact, part.n_bytes, part.n_chars
            bar.update(hi - lo)
    rows.flush()
    return SignedCorpus(docs, np.load(work / "rows.npy", mmap_mode="r"), starts)


def plan_parts(docs: dict[str, Documents], columns: int, workers: int, budget: int) -> Iterator[tuple[str, int, int]]:
    """(split, lo, hi) document ranges, one per signing task: at least a batch of tokens each,
    two per worker while parts stay under PART_TOKENS, and no more documents than a worker's
    share of `budget` can sort (each part is one sorted run per column, so fewer, larger parts
    make the merge cheaper)."""
    max_docs = max(1, budget // workers // (columns * RECORD.itemsize * 3))
    for name, d in docs.items():
        tokens = int(d.offsets[-1])
        per_part = min(PART_TOKENS, max(TASK_TOKENS, -(-tokens // (2 * workers))))
        for lo, hi in batches(d.offsets, per_part, max_docs):
            yield name, lo, hi


def sign_part(path: str, split: str, offsets: np.ndarray, work: str, part: int, first_pos: int, hasher: MinHasher,
              bands: int, rows: int) -> SignedPart:
    """Stage one for the documents between `offsets` (run by a worker): decode and sign them a
    batch at a time into the part's signatures file, then write its sorted runs (exact hashes
    and band keys, each with the documents' link positions). The task opens the split and a
    one-thread tokenizer itself (the worker processes are the parallelism): milliseconds,
    beside signing a part."""
    data = PreparedData(path)
    stream, tok = data.stream(split), data.open_tokenizer(threads=1)
    n = len(offsets) - 1
    signatures = np.lib.format.open_memmap(part_file(Path(work), "signatures", part), mode="w+", dtype=np.uint32, shape=(n, hasher.num_perm))
    keys = np.empty((n, bands + 1), dtype=np.uint64)
    n_bytes, n_chars = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    lo = 0
    for texts in decode_range(stream, tok, offsets):
        hi = lo + len(texts)
        keys[lo:hi, 0], signatures[lo:hi] = hasher.sign(texts)
        keys[lo:hi, 1:] = band_keys(signatures[lo:hi], bands, rows)
        n_bytes[lo:hi] = [len(t.encode("utf-8")) for t in texts]
        n_chars[lo:hi] = [len(t) for t in texts]
        lo = hi
    signatures.flush()
    np.save(part_file(Path(work), "runs", part), sorted_runs(keys, first_pos + np.arange(n)))
    return SignedPart(keys[:, 0].copy(), n_bytes, n_chars)


@dataclass(frozen=True)
class Decision:
    """Per train document why it goes (-1 stays, else an index into DUPLICATE_KINDS); for the removed
    ones, in row order, the corpus row of the document each duplicates (its cluster's first,
    or the evaluation document)."""

    kind: np.ndarray  # int8
    removed_rows: np.ndarray  # int64
    kept: np.ndarray  # int64, one per removed row
    cross_domain: np.ndarray | None  # bool: removed by global scope only (None for local)

    @property
    def removed(self) -> np.ndarray:
        return self.kind >= 0


def decide(corpus: SignedCorpus, settings: Settings, plan: LinkPlan, pool: Any, workers: int, progress: bool) -> Decision:
    """Stages two and three: contamination first, then clusters among the rest."""
    n, work = corpus.n_train, Path(plan.work)
    kind = np.full(n, -1, dtype=np.int8)
    removed, kept = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    if settings.decontaminate:
        link_pass(plan, True, (("contamination", False),), pool, workers, progress)
        found = np.full(n, len(corpus.rows), dtype=np.int64)
        for pairs in pair_chunks(work, "contamination"):
            np.minimum.at(found, pairs[:, 1], pairs[:, 0])
        contaminated = found < len(corpus.rows)
        np.save(work / "excluded.npy", contaminated)
        removed.append(np.flatnonzero(contaminated))
        kept.append(found[contaminated])
        kind[contaminated] = 2
        del found, contaminated
    scopes = ("global", "local") if settings.scope == "global" else ("local",)
    link_pass(plan, False, tuple((scope, scope == "local") for scope in scopes), pool, workers, progress)
    first = clusters(work, scopes[0], n)
    rows = np.concatenate([lo + np.flatnonzero(first[lo : lo + CHUNK] != np.arange(lo, min(lo + CHUNK, n))) for lo in range(0, n, CHUNK)])
    kind[rows] = np.where(corpus.rows["exact"][rows] == corpus.rows["exact"][first[rows]], 0, 1)
    removed.append(rows)
    kept.append(first[rows].astype(np.int64))
    del first
    cross = None
    if settings.scope == "global":
        local = clusters(work, "local", n)
        cross = np.zeros(n, dtype=bool)
        cross[rows] = local[rows] == rows
    removed_rows, kept_rows = np.concatenate(removed), np.concatenate(kept)
    order = np.argsort(removed_rows)
    return Decision(kind, removed_rows[order], kept_rows[order], cross)


def link_plan(corpus: SignedCorpus, settings: Settings, work: Path, workers: int, budget: int) -> LinkPlan:
    """What the link tasks share; each merges one run per part, ROUND_RECORDS at a time or
    fewer where a worker's share of `budget` is smaller."""
    np.save(work / "domains.npy", corpus.docs["train"].domains)
    parts = len(corpus.part_starts) - 1
    block = max(MIN_BLOCK, min(ROUND_RECORDS, budget // workers // (RECORD.itemsize * WORKING_COPIES)) // parts)
    return LinkPlan(str(work), corpus.part_starts, corpus.n_train, corpus.n_eval, settings.threshold, settings.verify, block,
                    settings.bands + 1, parts)


def link_pass(plan: LinkPlan, contamination: bool, outputs: tuple[tuple[str, bool], ...], pool: Any, workers: int, progress: bool) -> None:
    """Stage two: every column's buckets, each column split into key ranges so that every
    worker has tasks, as pair files in the work folder."""
    ranges = max(1, -(-2 * workers // plan.columns))
    tasks = [partial(link, plan, contamination, outputs, c, r, ranges) for c in range(plan.columns) for r in range(ranges)]
    desc = "contamination" if contamination else "link"
    with tqdm(total=len(tasks), desc=desc, unit=" tasks", disable=not progress, file=sys.stderr) as bar:
        for _ in run_tasks(pool, tasks, window=2 * workers):
            bar.update()


def clusters(work: Path, name: str, n: int) -> np.ndarray:
    """Stage three: each train document's cluster's first, by union-find over the pairs."""
    sets = DisjointSets(n)
    for pairs in pair_chunks(work, name):
        sets.union(pairs[:, 0], pairs[:, 1])
    return sets.firsts()


def build_report(out: Path, manifest: Manifest, settings: Settings, corpus: SignedCorpus, decision: Decision) -> dict[str, Any]:
    """Settings, the S-curve, and per-domain counts before/removed/after.

    Per domain and in total: documents and tokens before, removed and after; how many
    documents went as exact or near duplicates or as contamination; and `cross_domain`,
    the removed documents whose every duplicate lies in another domain, so that only global
    deduplication finds them (None for local scope). Which documents went is in
    `duplicates_file`, a file of the new folder: a list that grows with the corpus is not
    held in memory, nor printed.
    """
    domains = manifest.domains
    sums = domain_sums(corpus, decision, len(domains))
    return {
        "parent": manifest.parent,
        "out": str(out),
        "fingerprint": manifest.fingerprint,
        "settings": asdict(settings),
        "s_curve": s_curve(settings.bands, settings.rows),
        "total": _counts(sums.sum(axis=0), decision),
        "by_domain": {d: _counts(sums[i], decision) for i, d in enumerate(domains) if sums[i, 0]},
        "duplicates_file": DUPLICATES_FILE,
    }


def write_duplicates(path: Path, corpus: SignedCorpus, decision: Decision, domains: Sequence[str]) -> None:
    """One JSON line per removed train document, in stream order: its id, the id and split of
    the document it duplicates, why it went, and its domain.

    Written as the train ids stream past: a removed document's cluster starts earlier in
    stream order, so its kept document's id has been read by then. Memory holds the ids of the
    kept documents of clusters (and of the evaluation documents that train ones copy), never
    the list.
    """
    n, train = corpus.n_train, corpus.docs["train"]
    removed, kept = decision.removed_rows, decision.kept
    kept_ids: dict[int, tuple[str, str]] = {}
    evaluation = [(row, *corpus.locate(row)) for row in np.unique(kept[kept >= n]).tolist()]
    for split in {split for _, split, _ in evaluation}:
        rows = [(row, index) for row, s, index in evaluation if s == split]
        picked = corpus.docs[split].ids.pick([index for _, index in rows])
        kept_ids.update((row, (split, doc_id)) for (row, _), doc_id in zip(rows, picked))
    firsts = iter(np.unique(kept[kept < n]).tolist() + [n])
    first, r = next(firsts), 0
    with open(path, "w", encoding="utf-8") as out:
        for row, doc_id in zip(range(int(removed[-1]) + 1 if len(removed) else 0), train.ids):
            if row == first:
                kept_ids[row], first = ("train", doc_id), next(firsts)
            if row == removed[r]:
                split, kept_id = kept_ids[int(kept[r])]
                entry = {"removed": doc_id, "kept": kept_id, "kept_split": split, "kind": DUPLICATE_KINDS[decision.kind[row]],
                         "domain": domains[train.domains[row]]}
                out.write(json.dumps(entry) + "\n")
                r += 1


def read_duplicates(folder: str | Path) -> Iterator[dict[str, str]]:
    """The removed documents of a deduplicated dataset, as `write_duplicates` listed them."""
    with open(Path(folder) / DUPLICATES_FILE, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


_SUMS = ("documents_before", "documents_removed", "tokens_before", "tokens_removed", *DUPLICATE_KINDS, "cross_domain")


def domain_sums(corpus: SignedCorpus, decision: Decision, n_domains: int) -> np.ndarray:
    """(domains, _SUMS) int64 counts over the train documents, a chunk of them at a time."""
    train = corpus.docs["train"]
    sums = np.zeros((n_domains, len(_SUMS)), dtype=np.float64)
    for lo in range(0, corpus.n_train, CHUNK):
        hi = min(lo + CHUNK, corpus.n_train)
        domain, kind, tokens = train.domains[lo:hi], decision.kind[lo:hi], np.diff(train.offsets[lo : hi + 1])
        cross = decision.cross_domain[lo:hi] if decision.cross_domain is not None else np.zeros(hi - lo, dtype=bool)
        weights = (None, kind >= 0, tokens, tokens * (kind >= 0), *(kind == i for i in range(len(DUPLICATE_KINDS))), cross)
        sums += np.stack([np.bincount(domain, w, minlength=n_domains) for w in weights], axis=1)
    return sums.round().astype(np.int64)


def _counts(sums: np.ndarray, decision: Decision) -> dict[str, int | None]:
    c = dict(zip(_SUMS, (int(x) for x in sums)))
    return {
        "documents_before": c["documents_before"],
        "documents_removed": c["documents_removed"],
        "documents_after": c["documents_before"] - c["documents_removed"],
        "tokens_before": c["tokens_before"],
        "tokens_removed": c["tokens_removed"],
        "tokens_after": c["tokens_before"] - c["tokens_removed"],
        **{kind: c[kind] for kind in DUPLICATE_KINDS},
        "cross_domain": None if decision.cross_domain is None else c["cross_domain"],
    }


def describe(report: dict[str, Any]) -> str:
    """The report as a few lines of text for the terminal (the CLI's non-JSON output)."""
    s = report["settings"]
    lines = [
        f"dedup {s['scope']}: Jaccard >= {s['threshold']:g} on word {s['ngram']}-grams, {s['num_perm']} permutations = "
        f"{s['bands']} bands x {s['rows']} rows{', verified' if s['verify'] else ''}{', decontaminated' if s['decontaminate'] else ''}",
        "chance that a pair becomes a candidate, by Jaccard similarity:",
        "  " + "  ".join(f"{p['jaccard']:.1f}:{p['probability']:.3f}" for p in report["s_curve"]),
        f"{'domain':<16}{'docs before':>12}{'removed':>9}{'after':>9}{'tokens removed':>16}{'exact':>7}{'near':>7}{'contam.':>8}{'cross-dom.':>11}",
    ]
    for name, c in [*report["by_domain"].items(), ("total", report["total"])]:
        cross = "-" if c["cross_domain"] is None else c["cross_domain"]
        lines.append(
            f"{name:<16}{c['documents_before']:>12}{c['documents_removed']:>9}{c['documents_after']:>9}{c['tokens_removed']:>16}"
            f"{c['exact']:>7}{c['near']:>7}{c['contamination']:>8}{cross:>11}"
        )
    lines.append(f"written {report['out']} (fingerprint {report['fingerprint'][:12]}); the removed documents are listed in "
                 f"{Path(report['out']) / report['duplicates_file']}")
    return "\n".join(lines)
