"""`languini data dedup`: a prepared dataset in, one without duplicate train documents out.

Four stages, each a pure function of its input (see `minhash` for the first three):

1. sign: workers decode batches of documents and compute their exact hashes (normalised
   text), MinHash signatures and LSH band keys; only these are kept, the signatures in a
   memory map, so memory grows with the buckets, not with the text.
2. link: documents sharing an exact hash or a band (within a domain for `local` scope,
   across domains for `global`) become candidate pairs, verified by their MinHash Jaccard
   estimate.
3. cluster: pairs join documents into clusters; the first of each in stream order is kept.
4. filter: the kept train documents are copied, token for token, into a new dataset.

Only the train split changes: validation and test are the parent's, byte for byte, so every
mix is scored on the same text. With `decontaminate`, train documents that duplicate a
validation or test document are removed too (across domains, whatever the scope). The new
folder is built under a temporary name and its manifest is the parent's with the train split
recomputed, a `parent` and a `dedup` entry, and a new fingerprint.
"""

from __future__ import annotations

import functools
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

from languini.data.identity import identity_of
from languini.data.loader import PreparedData, TokenStream
from languini.data.minhash import MIN_NUM_PERM, MinHasher, Signed, folded, linked_pairs, lsh_params, representatives, s_curve, sign
from languini.data.executors import executor, run_tasks
from languini.data.prepare import FORMAT, SPLITS, stamp
from languini.data.shards import DocInfo, EncodedBatch, SplitWriter
from languini.data.tokenizer import Tokenizer, open_tokenizer
from languini.errors import UserError
from languini.io import atomic_dir, atomic_write_json

SCOPES = ("local", "global")
KINDS = ("exact", "near", "contamination")
REPORT_FILE = "dedup.json"
TASK_TOKENS = 1 << 20  # tokens a worker decodes and signs at a time
_SIGNATURES = ".signatures.npy"


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
) -> dict[str, Any]:
    """Write to `out` the prepared dataset `data_dir` without duplicate train documents.

    Documents are duplicates when their normalised texts are equal (exact) or when the
    Jaccard similarity of their word `ngram` sets is about `threshold` or more (near: MinHash
    with `num_perm` permutations drawn from `seed`, LSH bands and rows chosen for the
    threshold). `scope` is `local` (within each domain) or `global` (across domains).
    Returns the report (see `build_report`), also written to `out/dedup.json`.
    """
    check_settings(scope, threshold, ngram, num_perm, workers)
    parent = open_parent(data_dir)
    out = Path(out)
    check_out(parent.path, out, force)
    bands, rows = lsh_params(threshold, num_perm)
    settings = Settings(scope, float(threshold), ngram, num_perm, bands, rows, seed, decontaminate, verify)
    workers = workers or os.cpu_count() or 1
    folded()  # built once here, inherited by the forked workers
    with atomic_dir(out) as tmp, executor(executor_kind, workers) as pool:
        corpus = read_corpus(parent, SPLITS if decontaminate else ("train",), MinHasher(num_perm, ngram, seed), settings, tmp / _SIGNATURES, pool, workers, progress)
        decision = decide(corpus, settings)
        (tmp / _SIGNATURES).unlink()  # the memory map stays readable until dropped; the folder moves clean
        train = write_train(parent, corpus.train_table(parent.documents("train").offsets), decision.removed, tmp,
                            progress)
        copy_unchanged(parent, tmp)
        manifest = child_manifest(parent, train, "dedup", asdict(settings))
        report = build_report(parent, out, manifest, settings, corpus, decision)
        atomic_write_json(tmp / "manifest.json", manifest)
        atomic_write_json(tmp / REPORT_FILE, report)
    return report


def deduplicated(parent: PreparedData, settings: dict[str, Any], progress: bool = True) -> PreparedData:
    """`parent` deduplicated with `settings` (keyword arguments of `dedup`): written once into a
    folder beside it named for the parent and the settings, and reused from then on."""
    key = hashlib.sha256(json.dumps({"parent": parent.fingerprint, **settings}, sort_keys=True).encode()).hexdigest()
    out = parent.path.parent / f"{parent.path.name}.dedup-{key[:12]}"
    if not (out / "manifest.json").is_file():
        dedup(parent.path, out, progress=progress, **settings)
    child = PreparedData(out)
    if child.manifest.get("parent", {}).get("fingerprint") != parent.fingerprint:
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


def open_parent(data_dir: str | Path) -> PreparedData:
    path = Path(data_dir)
    if not path.is_dir():
        raise UserError(f"prepared data folder not found: {path}")
    if not (path / "manifest.json").is_file():
        raise UserError(f"{path} is not a prepared dataset (it has no manifest.json); make one with `languini data prepare`.")
    data = PreparedData(path)
    if data.manifest.get("format") != FORMAT:
        raise UserError(f"{path} holds data of format {data.manifest.get('format')!r}, not {FORMAT}; prepare it again.")
    return data


def check_out(parent: Path, out: Path, force: bool) -> None:
    """Never rewrite in place, never replace what is not ours, replace a dataset only if forced."""
    source, target = parent.resolve(), out.resolve()
    if target == source or target in source.parents:
        raise UserError(f"--out {out} would replace the input {parent}; deduplication writes a new folder, choose another --out.")
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder.")
    if not (out / "manifest.json").exists() and any(out.iterdir()):
        raise UserError(f"--out {out} holds other files and no languini dataset; choose an empty or new folder.")
    if not force and any(out.iterdir()):
        raise UserError(f"--out {out} already holds a dataset; pass --force to replace it or choose another --out.")


@dataclass(frozen=True)
class DocTable:
    """Per train document of a parent, in stream order: what the split writer sums."""

    offsets: np.ndarray  # n + 1 token offsets into the train stream (each document ends with its EOD)
    domains: np.ndarray  # index into the manifest's domains
    ids: list[str]
    n_bytes: np.ndarray  # UTF-8 bytes of the decoded text
    n_chars: np.ndarray

    @property
    def tokens(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Corpus:
    """Stage one's result: per signed document (train first, then any evaluation splits),
    where it came from and what it weighs, and its `Signed` row."""

    split: np.ndarray  # index into SPLITS
    index: np.ndarray  # position in its split
    domain: np.ndarray  # index into the manifest's domains
    tokens: np.ndarray  # its tokens, end-of-document id included
    n_bytes: np.ndarray  # UTF-8 bytes of its text
    n_chars: np.ndarray
    ids: dict[str, list[str]]  # per split
    signed: Signed

    @property
    def n_train(self) -> int:
        return int(np.count_nonzero(self.split == 0))

    def train_table(self, offsets: np.ndarray) -> DocTable:
        """The train documents (signed first, in stream order) as the writer reads them."""
        n = self.n_train
        return DocTable(offsets, self.domain[:n], self.ids["train"], self.n_bytes[:n], self.n_chars[:n])


@dataclass(frozen=True)
class SignedBatch:
    """What a worker sends back for a batch of documents."""

    signed: Signed
    n_bytes: np.ndarray
    n_chars: np.ndarray


def read_corpus(
    data: PreparedData, splits: Sequence[str], hasher: MinHasher, settings: Settings, spill: Path, pool: Any, workers: int, progress: bool
) -> Corpus:
    """Stage one over `splits`: sign every document on the workers, in stream order."""
    docs = {name: data.documents(name) for name in splits}
    total = sum(len(d.ids) for d in docs.values())
    signatures = np.lib.format.open_memmap(spill, mode="w+", dtype=np.uint32, shape=(total, settings.num_perm))
    tasks = (
        partial(sign_documents, str(data.path), data.fingerprint, name, docs[name].offsets[lo : hi + 1], hasher, settings.bands, settings.rows)
        for name in splits
        for lo, hi in batches(docs[name].offsets, TASK_TOKENS)
    )
    exact, keys, n_bytes, n_chars = [], [], [], []
    done = 0
    with tqdm(total=total, desc="sign", unit=" docs", disable=not progress, file=sys.stderr) as bar:
        for batch in run_tasks(pool, tasks, window=2 * workers):
            n = len(batch.n_bytes)
            signatures[done : done + n] = batch.signed.signatures
            exact.append(batch.signed.exact)
            keys.append(batch.signed.keys)
            n_bytes.append(batch.n_bytes)
            n_chars.append(batch.n_chars)
            done += n
            bar.update(n)
    return Corpus(
        split=np.concatenate([np.full(len(docs[name].ids), SPLITS.index(name), dtype=np.int8) for name in splits]),
        index=np.concatenate([np.arange(len(docs[name].ids)) for name in splits]),
        domain=np.concatenate([docs[name].domains for name in splits]),
        tokens=np.concatenate([np.diff(docs[name].offsets) for name in splits]),
        n_bytes=np.concatenate(n_bytes),
        n_chars=np.concatenate(n_chars),
        ids={name: docs[name].ids for name in splits},
        signed=Signed(np.concatenate(exact), np.concatenate(keys), signatures),
    )


def batches(offsets: np.ndarray, tokens: int) -> Iterator[tuple[int, int]]:
    """Consecutive document ranges [lo, hi) of about `tokens` tokens (at least one document)."""
    lo, n = 0, len(offsets) - 1
    while lo < n:
        hi = max(lo + 1, int(np.searchsorted(offsets, offsets[lo] + tokens, side="right")) - 1)
        yield lo, hi
        lo = hi


@functools.lru_cache(maxsize=4)
def _split_reader(path: str, data_fingerprint: str, split: str) -> tuple[TokenStream, Tokenizer]:
    """Per process: a split's token stream and the tokenizer, opened once (the fingerprint
    keeps a replaced dataset from being read through a stale cache)."""
    data = PreparedData(path)
    return data.stream(split), open_tokenizer(data.manifest["tokenizer"], data.path, threads=1)


def sign_documents(path: str, data_fingerprint: str, split: str, offsets: np.ndarray, hasher: MinHasher, bands: int, rows: int) -> SignedBatch:
    """Stage one for the documents between `offsets` (run by a worker): decode and sign."""
    stream, tok = _split_reader(path, data_fingerprint, split)
    tokens = stream.read(int(offsets[0]), int(offsets[-1] - offsets[0]))
    bounds = offsets - offsets[0]
    texts = [tok.decode(tokens[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    return SignedBatch(
        sign(texts, hasher, bands, rows),
        np.array([len(t.encode("utf-8")) for t in texts], dtype=np.int64),
        np.array([len(t) for t in texts], dtype=np.int64),
    )


@dataclass(frozen=True)
class Decision:
    """Per train document: why it goes (-1 stays, else an index into KINDS), and the row of
    the document it duplicates (its cluster's first, or the evaluation document)."""

    removed: np.ndarray  # bool
    kind: np.ndarray  # int8
    kept: np.ndarray  # int64 row of the corpus
    cross_domain: np.ndarray | None  # bool: removed by global scope only (None for local)


def decide(corpus: Corpus, settings: Settings) -> Decision:
    """Stages two and three: contamination first, then clusters among the rest."""
    n = corpus.n_train
    contaminated_by = contamination(corpus, settings) if settings.decontaminate else np.full(n, -1)
    clean = np.flatnonzero(contaminated_by < 0)
    first = cluster_firsts(corpus, clean, settings, local=settings.scope == "local")
    kind = np.full(n, -1, dtype=np.int8)
    duplicate = first != np.arange(n)
    rows = np.flatnonzero(duplicate)
    kind[rows] = np.where(corpus.signed.exact[rows] == corpus.signed.exact[first[rows]], 0, 1)
    kind[contaminated_by >= 0] = 2
    kept = np.where(contaminated_by >= 0, contaminated_by, first)
    cross = None
    if settings.scope == "global":
        cross = duplicate & (cluster_firsts(corpus, clean, settings, local=True) == np.arange(n))
    return Decision(kind >= 0, kind, kept, cross)


def cluster_firsts(corpus: Corpus, rows: np.ndarray, settings: Settings, *, local: bool) -> np.ndarray:
    """For each train document, the first document of its duplicate cluster (only `rows`
    take part; within each domain when `local`)."""
    groups = corpus.domain[rows] if local else None
    pairs = linked_pairs(corpus.signed, rows, settings.threshold, groups=groups, verify=settings.verify)
    return representatives(corpus.n_train, pairs)


def contamination(corpus: Corpus, settings: Settings) -> np.ndarray:
    """For each train document, the first evaluation document it duplicates, or -1.

    Evaluation rows go first, so a bucket holding any evaluation document pairs it (the
    first in the bucket) with the train documents there.
    """
    n = corpus.n_train
    rows = np.concatenate((np.arange(n, len(corpus.split)), np.arange(n)))
    pairs = linked_pairs(corpus.signed, rows, settings.threshold, verify=settings.verify)
    pairs = pairs[(pairs[:, 0] >= n) & (pairs[:, 1] < n)]
    found = np.full(n, len(corpus.split))
    np.minimum.at(found, pairs[:, 1], pairs[:, 0])
    return np.where(found < len(corpus.split), found, -1)


def write_train(parent: PreparedData, table: DocTable, removed: np.ndarray, folder: Path, progress: bool) -> dict[str, Any]:
    """Stage four: the kept train documents, token for token, as a new train split (the
    selection commands write their subsets with it too)."""
    if removed.all():
        raise UserError("every train document would be removed; lower the threshold or drop --decontaminate.")
    manifest = parent.manifest
    domains = manifest["domains"]
    writer = SplitWriter(
        folder / "train",
        dtype=np.dtype(manifest["dtype"]),
        eod_id=manifest["tokenizer"]["eod_id"],
        domains=domains,
        shard_tokens=manifest["settings"]["shard_tokens"],
    )
    stream, offsets, lengths_all = parent.stream("train"), table.offsets, table.tokens
    with tqdm(total=len(removed), desc="write", unit=" docs", disable=not progress, file=sys.stderr) as bar:
        for lo, hi in batches(offsets, TASK_TOKENS):
            keep = ~removed[lo:hi]
            lengths = lengths_all[lo:hi]
            tokens = stream.read(int(offsets[lo]), int(offsets[hi] - offsets[lo]))[np.repeat(keep, lengths)]
            rows = lo + np.flatnonzero(keep)
            infos = [DocInfo(table.ids[i], domains[table.domains[i]], int(table.n_bytes[i]), int(table.n_chars[i]))
                     for i in rows]
            writer.add(EncodedBatch("train", tokens, lengths[keep].tolist(), infos))
            bar.update(hi - lo)
    return writer.close()


def copy_unchanged(parent: PreparedData, folder: Path) -> None:
    """Validation, test and the tokenizer file are the parent's, byte for byte."""
    for name in SPLITS[1:]:
        shutil.copytree(parent.path / name, folder / name)
    model = parent.manifest["tokenizer"]["file"]
    if model:
        shutil.copy2(parent.path / model, folder / model)


STAMPS = ("format", "languini_version", "created", "fingerprint", "evaluation_identity")
PROVENANCE = ("parent", "dedup", "selection")  # what a derived dataset says about where it came from


def child_manifest(parent: PreparedData, train: dict[str, Any], kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The parent's manifest with the new train split, a `parent` entry, the `kind` entry
    (`dedup`, or `selection`) holding `settings`, and a fingerprint of its own. The parent's own
    provenance entries are dropped (its fingerprint leads to them), and where the parent lies
    is not part of what the dataset is. The test split is the parent's, and so is the evaluation
    identity."""
    body = {key: value for key, value in parent.manifest.items() if key not in STAMPS + PROVENANCE}
    body["splits"] = {**body["splits"], "train": train}
    body["parent"] = {"fingerprint": parent.fingerprint}
    body[kind] = settings
    manifest = stamp(body, identity_of(parent))
    manifest["parent"]["path"] = str(parent.path.resolve())
    return manifest


def build_report(parent: PreparedData, out: Path, manifest: dict[str, Any], settings: Settings, corpus: Corpus, decision: Decision) -> dict[str, Any]:
    """Settings, the S-curve, per-domain counts before/removed/after, and every removed
    document with the one it duplicates.

    Per domain and in total: documents and tokens before, removed and after; how many
    documents went as exact or near duplicates or as contamination; and `cross_domain`,
    the removed documents whose every duplicate lies in another domain, so that only global
    deduplication finds them (None for local scope).
    """
    n = corpus.n_train
    domains = manifest["domains"]
    counted = {d: _counts(corpus, decision, corpus.domain[:n] == i) for i, d in enumerate(domains) if np.any(corpus.domain[:n] == i)}
    return {
        "parent": manifest["parent"],
        "out": str(out),
        "fingerprint": manifest["fingerprint"],
        "settings": asdict(settings),
        "s_curve": s_curve(settings.bands, settings.rows),
        "total": _counts(corpus, decision, np.ones(n, dtype=bool)),
        "by_domain": counted,
        "duplicates": [
            {
                "removed": corpus.ids["train"][i],
                "kept": corpus.ids[SPLITS[corpus.split[k]]][corpus.index[k]],
                "kept_split": SPLITS[corpus.split[k]],
                "kind": KINDS[decision.kind[i]],
                "domain": domains[corpus.domain[i]],
            }
            for i, k in ((int(i), int(decision.kept[i])) for i in np.flatnonzero(decision.removed))
        ],
    }


def _counts(corpus: Corpus, decision: Decision, mask: np.ndarray) -> dict[str, int | None]:
    tokens = corpus.tokens[: len(mask)][mask]
    removed = decision.removed[mask]
    kinds = {kind: int(np.count_nonzero(decision.kind[mask] == i)) for i, kind in enumerate(KINDS)}
    return {
        "documents_before": int(mask.sum()),
        "documents_removed": int(removed.sum()),
        "documents_after": int(mask.sum() - removed.sum()),
        "tokens_before": int(tokens.sum()),
        "tokens_removed": int(tokens[removed].sum()),
        "tokens_after": int(tokens[~removed].sum()),
        **kinds,
        "cross_domain": None if decision.cross_domain is None else int(np.count_nonzero(decision.cross_domain[mask])),
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
    lines.append(f"written {report['out']} (fingerprint {report['fingerprint'][:12]})")
    return "\n".join(lines)
