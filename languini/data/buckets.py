"""LSH buckets on disk: the link and cluster stages of deduplication in bounded memory.

The layout follows datatrove's MinHash pipeline (signatures per shard, per-band sorted
buckets, pairs streamed out, union-find over them), so the corpus may be far larger than
memory:

- Each signing task (a *part*: a range of corpus rows) writes its signatures and, per
  *column* (the exact hash, then one per LSH band), its `(key, pos)` records sorted: one
  sorted run per part and column.
- A link task takes one column (or one key range of it), merges the parts' runs in blocks
  (`merged`), and streams the buckets (`Buckets`): each bucket's first document in position
  order is paired with every later one, as `minhash.candidate_pairs` does in memory. Pairs,
  verified or not, are appended to a file; nothing holds more than a few blocks.
- Clustering (`DisjointSets`) reads the pair files in chunks into a parent array of one
  integer per document: memory follows the documents, never the pairs.

`pos` is a document's place in link order (where ties go first), a corpus row shifted so
that evaluation documents come before train documents (see `dedup.Corpus`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from languini.data.minhash import similar
from languini.errors import UserError

RECORD = np.dtype([("key", "<u8"), ("pos", "<i8")])
PAIR = np.dtype(np.int64)  # pair files hold (first, later) rows, flat
PAIR_CHUNK = 1 << 20  # pairs read at a time by the clustering
WORKING_COPIES = 6  # copies of a block alive at once while merging (blocks, chunk, sort, pairs)
MIN_MEMORY = 16 << 20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def memory_budget(limit: str | int | None) -> int:
    """Bytes the buffers of deduplication may take on this machine, all workers together:
    `limit` as bytes or a size such as `4G` / `512MB`, by default a quarter of the RAM (the
    rest is the page cache that reading runs and signatures leans on)."""
    if limit is None:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    match = _SIZE.match(str(limit))
    if not match:
        raise UserError(f"--memory-limit {limit!r} is not a size; write bytes or a size such as 512M or 4G.")
    value = int(float(match[1]) * 1024 ** " kmgt".index(match[2].lower() or " "))
    if value < MIN_MEMORY:
        raise UserError(f"--memory-limit {limit} is below {MIN_MEMORY >> 20} MiB; deduplication cannot work in less.")
    return value


def part_file(work: Path, kind: str, part: int) -> Path:
    return work / f"{kind}-{part:05d}.npy"


def pair_file(work: Path, name: str, column: int, key_range: int) -> Path:
    return work / f"pairs-{name}-{column:03d}-{key_range:03d}.bin"


def pair_chunks(work: Path, name: str, chunk: int = PAIR_CHUNK) -> Iterator[np.ndarray]:
    """The (first, later) pairs of a link pass's output `name`, `chunk` at a time."""
    for path in sorted(work.glob(f"pairs-{name}-*.bin")):
        pairs = np.memmap(path, dtype=PAIR, mode="r").reshape(-1, 2) if path.stat().st_size else np.empty((0, 2), dtype=PAIR)
        for lo in range(0, len(pairs), chunk):
            yield np.array(pairs[lo : lo + chunk])


def sorted_runs(keys: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(columns, n) RECORD: column c holds (keys[:, c], pos) sorted by key, then by pos
    (`pos` ascends within a part, so a stable sort by key is enough)."""
    runs = np.empty((keys.shape[1], len(pos)), dtype=RECORD)
    for c, column in enumerate(keys.T):
        order = np.argsort(column, kind="stable")
        runs[c]["key"], runs[c]["pos"] = column[order], pos[order]
    return runs


class Parts:
    """Per-part arrays (one `.npy` per part, memory-mapped) read as one array by corpus row."""

    def __init__(self, paths: Sequence[Path], starts: np.ndarray) -> None:
        self.maps = [np.load(p, mmap_mode="r") for p in paths]
        self.starts = np.asarray(starts)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        part = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows),) + self.maps[0].shape[1:], dtype=self.maps[0].dtype)
        for p in np.unique(part):
            here = part == p
            out[here] = self.maps[p][rows[here] - self.starts[p]]
        return out


def key_ranges(count: int) -> list[tuple[int, int]]:
    """`count` consecutive [lo, hi) ranges covering the 64-bit keys (hi 2**64 for the last)."""
    edges = [(1 << 64) * i // count for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def merged(runs: Sequence[np.ndarray], block: int) -> Iterator[np.ndarray]:
    """The records of `runs` in one stream of chunks sorted by (key, pos). Each run is sorted
    by (key, pos), and the runs come in order of their positions, which do not overlap (parts
    in link order), so a stable sort by key alone orders a chunk.

    Each round reads up to `block` records from every run and emits those at or below the
    smallest last record among runs that have more to read: nothing later can sort before
    them, and that run's whole block goes, so every round makes progress.
    """
    cursors = [0] * len(runs)
    while True:
        live = [r for r in range(len(runs)) if cursors[r] < len(runs[r])]
        if not live:
            return
        blocks = {r: np.array(runs[r][cursors[r] : cursors[r] + block]) for r in live}
        more = [r for r in live if cursors[r] + block < len(runs[r])]
        bound = min((int(blocks[r]["key"][-1]), int(blocks[r]["pos"][-1])) for r in more) if more else None
        taken = []
        for r in live:
            n = len(blocks[r]) if bound is None else _at_most(blocks[r], *bound)
            taken.append(blocks[r][:n])
            cursors[r] += n
        chunk = np.concatenate(taken)
        yield chunk if len(taken) == 1 else chunk[np.argsort(chunk["key"], kind="stable")]


def _at_most(records: np.ndarray, key: int, pos: int) -> int:
    """How many of the sorted `records` are at or below (key, pos)."""
    keys = records["key"]
    lo, hi = np.searchsorted(keys, np.uint64(key), "left"), np.searchsorted(keys, np.uint64(key), "right")
    return int(lo + np.searchsorted(records["pos"][lo:hi], pos, "right"))


class Buckets:
    """Candidate pairs of buckets streamed in chunks sorted by (key, pos): each bucket's first
    document (by position) with each later one, buckets kept apart by group.

    A bucket may straddle chunks: the firsts of the last key's buckets are carried into the
    next chunk, where they still sort first.
    """

    def __init__(self) -> None:
        self.carry = np.empty(0, dtype=[("key", "<u8"), ("group", "<i8"), ("pos", "<i8")])

    def pairs(self, key: np.ndarray, pos: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
        """(pairs, 2) positions (first, later) found in this chunk."""
        chunk = np.empty(len(key), dtype=self.carry.dtype)
        chunk["key"], chunk["pos"], chunk["group"] = key, pos, 0 if group is None else group
        chunk = np.concatenate((self.carry, chunk))
        if group is not None:  # stable: positions stay in order within a group (carried firsts lead theirs)
            chunk = chunk[np.lexsort((chunk["group"], chunk["key"]))]
        if not len(chunk):
            return np.empty((0, 2), dtype=np.int64)
        k, g, p = chunk["key"], chunk["group"], chunk["pos"]
        start = np.ones(len(chunk), dtype=bool)
        start[1:] = (k[1:] != k[:-1]) | (g[1:] != g[:-1])
        first = p[start][np.cumsum(start) - 1]
        self.carry = chunk[start & (k == k[-1])]
        return np.stack((first[~start], p[~start]), axis=1)


class DisjointSets:
    """Union-find over documents 0..n-1 whose root is always its set's smallest member.

    Unions run on whole arrays of pairs: each round hooks every larger root under the
    smallest root it is paired with, until both ends of every pair share a root. Memory is
    the parent array (4 bytes a document below 2**31 documents), whatever the pairs.
    """

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int32 if n < 1 << 31 else np.int64)

    def roots(self, x: np.ndarray) -> np.ndarray:
        r = self.parent[x]
        while True:
            up = self.parent[r]
            if np.array_equal(up, r):
                return r
            r = up

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        ends = np.concatenate((a, b))
        while len(a):
            ra, rb = self.roots(a), self.roots(b)
            apart = ra != rb
            a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
            np.minimum.at(self.parent, np.maximum(ra, rb), np.minimum(ra, rb))
        self.parent[ends] = self.roots(ends)  # paths compressed where this chunk touched

    def firsts(self, chunk: int = 1 << 20) -> np.ndarray:
        """Each document's set's smallest member (the parent array, fully compressed)."""
        for lo in range(0, len(self.parent), chunk):
            self.parent[lo : lo + chunk] = self.roots(np.arange(lo, min(lo + chunk, len(self.parent))))
        return self.parent


@dataclass(frozen=True)
class LinkPlan:
    """What every link task of one pass shares (picklable, for local processes or Ray)."""

    work: str  # the work folder (shared storage when tasks run on several machines)
    part_starts: np.ndarray  # corpus row where each part starts (and the total at the end)
    n_train: int
    n_eval: int
    threshold: float
    verify: bool
    block: int  # records read from each run per round
    columns: int  # the exact hash and the bands
    parts: int

    @property
    def n_rows(self) -> int:
        return self.n_train + self.n_eval


def link(plan: LinkPlan, contamination: bool, outputs: tuple[tuple[str, bool], ...], column: int, key_range: int, ranges: int) -> int:
    """A link task: the buckets of `column`'s keys in key range `key_range` of `ranges`, as
    pair files, one per output `(name, by_domain)`; returns the pairs written.

    The contamination pass sees every document and keeps pairs of an evaluation document
    (first) with a train document, as corpus rows. The cluster pass sees the train documents
    not in `work/excluded.npy` and writes pairs of train rows.
    """
    work = Path(plan.work)
    parts = range(plan.parts) if contamination else [p for p in range(plan.parts) if plan.part_starts[p] < plan.n_train]
    parts = sorted(parts, key=lambda p: (plan.part_starts[p] + plan.n_eval) % plan.n_rows)  # in link order
    lo, hi = key_ranges(ranges)[key_range]
    runs = [_in_range(np.load(part_file(work, "runs", p), mmap_mode="r")[column], lo, hi) for p in parts]
    excluded = work / "excluded.npy"
    excluded = np.load(excluded, mmap_mode="r") if not contamination and excluded.exists() else None
    domains = np.load(work / "domains.npy", mmap_mode="r") if any(by_domain for _, by_domain in outputs) else None
    signatures = Parts([part_file(work, "signatures", p) for p in range(plan.parts)], plan.part_starts) if plan.verify and column else None
    buckets = [Buckets() for _ in outputs]
    files = [open(pair_file(work, name, column, key_range), "wb") for name, _ in outputs]
    written = 0
    try:
        for chunk in merged(runs, plan.block):
            key, pos = chunk["key"], chunk["pos"]
            if not contamination:
                pos = pos - plan.n_eval  # train rows
                if excluded is not None:
                    keep = ~excluded[pos]
                    key, pos = key[keep], pos[keep]
            for (_, by_domain), bucket, out in zip(outputs, buckets, files):
                pairs = bucket.pairs(key, pos, domains[pos] if by_domain else None)
                if contamination:
                    pairs = pairs[(pairs[:, 0] < plan.n_eval) & (pairs[:, 1] >= plan.n_eval)]
                    pairs = np.stack((pairs[:, 0] + plan.n_train, pairs[:, 1] - plan.n_eval), axis=1)
                if signatures is not None:
                    pairs = pairs[similar(signatures, pairs, plan.threshold)]
                np.ascontiguousarray(pairs, dtype=PAIR).tofile(out)
                written += len(pairs)
    finally:
        for out in files:
            out.close()
    return written


def _in_range(run: np.ndarray, lo: int, hi: int) -> np.ndarray:
    keys = run["key"]
    start = int(np.searchsorted(keys, np.uint64(lo))) if lo else 0
    end = int(np.searchsorted(keys, np.uint64(hi))) if hi < 1 << 64 else len(run)
    return run[start:end]
