"""MinHash signatures and LSH banding over texts, vectorised with numpy.

The stages are pure functions of their inputs, so they run the same on one process, on a
pool of workers, or on a cluster engine:

    sign (MinHasher: exact hashes, signatures; band_keys) -> linked_pairs (candidate_pairs,
    similar: verification) -> representatives (clusters)

`linked_pairs` and `representatives` hold everything in memory: they are the plain
reference (and the benchmark's in-memory path). `languini data dedup` computes the same
pairs and clusters from sorted runs on disk, in bounded memory (`buckets`); tests and the
benchmark check that both decide alike.

A document is the sequence of its words after `normalise`, and for near duplicates the set
of its word n-grams ("shingles"). `MinHasher` works on a whole batch of documents at once,
with no Python loop per word or shingle: the batch's code points are one array, a word's
hash and a shingle's hash are polynomial hashes read off prefix sums (of code points, then
of word hashes), and the `num_perm` permutations are one numpy operation over the batch's
shingles, `a*x + b mod 2**32` with odd `a` on a mixed 32-bit shingle hash (the affine scheme
of datasketch 2.x: no integer division, which numpy does slowly), minimised over each
document's shingles. LSH cuts the signature into `bands` bands of `rows` rows; two documents
become candidates when some band is equal in both, which happens with probability
1-(1-J^rows)^bands at Jaccard similarity J (`s_curve`).
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import beta, betainc

MIN_NUM_PERM = 16
"""Fewer permutations estimate Jaccard similarity too coarsely (standard error above 0.1 at
J = 0.5) for a threshold to mean anything."""

_GROUP_CHARS = 1 << 20  # code points hashed at once: bounds the work arrays (~50 MB), not the documents
_CHUNK = 8192  # shingles per permutation step: the (num_perm, chunk) block stays in cache
_U64 = np.uint64


@functools.cache
def folded() -> np.ndarray:
    """bool per code point: punctuation, symbols, separators and controls, which separate
    words. (Nothing above U+3FFFF is one; the table still covers all of Unicode.)"""
    table = np.zeros(0x110000, dtype=bool)
    table[:0x40000] = [(c := unicodedata.category(chr(i)))[0] in "PSZ" or c == "Cc" for i in range(0x40000)]
    return table


def normalise(text: str) -> str:
    """The text duplicates are judged on: NFC, lower case, every run of punctuation, symbols
    and whitespace folded to one space.

    Texts that differ only in case, punctuation or spacing are then equal (exact
    duplicates), and words are the space-separated pieces. This is the plain reference;
    `MinHasher` computes the same words without building the strings.
    """
    fold = folded()
    return " ".join("".join(" " if fold[ord(c)] else c for c in _cased(text)).split())


def _cased(text: str) -> str:
    return unicodedata.normalize("NFC", text).lower()


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: every output bit depends on every input bit."""
    with np.errstate(over="ignore"):
        x ^= x >> _U64(33)
        x *= _U64(0xFF51AFD7ED558CCD)
        x ^= x >> _U64(33)
        x *= _U64(0xC4CEB9FE1A85EC53)
        x ^= x >> _U64(33)
    return x


class MinHasher:
    """Exact-duplicate hashes and MinHash signatures of `num_perm` min-wise hashes over word
    `ngram`s, all drawn from `seed` (equal seeds give comparable signatures)."""

    def __init__(self, num_perm: int, ngram: int, seed: int = 0) -> None:
        self.num_perm, self.ngram, self.seed = num_perm, ngram, seed
        rng = np.random.default_rng(seed)
        self.a = (rng.integers(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1))[:, None]  # odd: a bijection
        self.b = rng.integers(0, 1 << 32, num_perm, dtype=np.uint32)[:, None]
        self.q = rng.integers(1 << 32, 1 << 63, dtype=np.uint64) | _U64(1)  # the polynomial hashes' base; odd, so invertible mod 2**64
        self.separators = folded()  # carried to the workers, so none builds it (a second of work) again
        self._powers = np.ones(1, dtype=np.uint64)  # q**i and q**-i mod 2**64, grown on demand
        self._inverse = np.ones(1, dtype=np.uint64)

    def __getstate__(self) -> dict[str, Any]:
        """Tasks carry the separator table packed to bits, and not the power tables, which a
        task grows again as its texts need them (a cumulative product: cheap beside signing)."""
        state = {k: v for k, v in vars(self).items() if k not in ("_powers", "_inverse")}
        state["separators"] = np.packbits(self.separators)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self.separators = np.unpackbits(state["separators"]).astype(bool)
        self._powers, self._inverse = np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)

    def sign(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(exact, signatures): a 64-bit hash of each text's normalised words, equal for exact
        duplicates, and its (num_perm,) uint32 MinHash signature."""
        exact = np.empty(len(texts), dtype=np.uint64)
        signatures = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        for lo, hi in _groups([len(t) for t in texts], _GROUP_CHARS):
            words, word_starts = self.words(texts[lo:hi])
            exact[lo:hi] = self._span_hashes(words, word_starts[:-1], word_starts[1:])
            shingles, shingle_starts = self.shingles(words, word_starts)
            signatures[lo:hi] = self.minimums(shingles, shingle_starts)
        return exact, signatures

    def words(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """64-bit hashes of the words of `normalise(text)` for each text, concatenated, and
        where each text's words start (len(texts) + 1 offsets)."""
        cased = [_cased(t) for t in texts]
        points = np.frombuffer("\n".join(cased).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        text_starts = np.cumsum([0] + [len(t) + 1 for t in cased[:-1]])
        inside = ~self.separators[points]
        edges = np.diff(inside.astype(np.int8), prepend=0, append=0)
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        hashes = self._span_hashes(points.astype(np.uint64), starts, ends)
        per_text = np.bincount(np.searchsorted(text_starts, starts, side="right") - 1, minlength=len(texts))
        return hashes, np.concatenate(([0], np.cumsum(per_text)))

    def shingles(self, words: np.ndarray, word_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """32-bit hashes of each text's word `ngram`s, and where each text's shingles start.

        A text with fewer words than `ngram` is one shingle of all of them, so short and
        empty texts still have a signature.
        """
        counts = np.diff(word_starts)
        per_text = np.maximum(counts - self.ngram + 1, 1)
        shingle_starts = np.concatenate(([0], np.cumsum(per_text)))
        first = np.arange(shingle_starts[-1]) - np.repeat(shingle_starts[:-1] - word_starts[:-1], per_text)
        end = np.minimum(first + self.ngram, np.repeat(word_starts[1:], per_text))
        return (self._span_hashes(words, first, end) >> _U64(32)).astype(np.uint32), shingle_starts

    def minimums(self, shingles: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """(texts, num_perm) uint32: each permutation's minimum over a text's shingles."""
        out = np.full((len(starts) - 1, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        text_of = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
        block = np.empty((self.num_perm, min(_CHUNK, len(shingles))), dtype=np.uint32)
        for lo in range(0, len(shingles), _CHUNK):
            chunk, texts = shingles[lo : lo + _CHUNK], text_of[lo : lo + _CHUNK]
            permuted = block[:, : len(chunk)]
            np.multiply(self.a, chunk, out=permuted)
            permuted += self.b
            cuts = np.flatnonzero(np.diff(texts, prepend=-1))
            here = texts[cuts]
            out[here] = np.minimum(out[here], np.minimum.reduceat(permuted, cuts, axis=1).T)
        return out

    def _span_hashes(self, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """fmix64 of sum(values[i] * q**(i-lo)) over [lo, hi) mod 2**64, for every span at once,
        from one prefix sum: equal sequences hash equal wherever they sit."""
        self._grow(len(values) + 1)
        prefix = np.zeros(len(values) + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum(values * self._powers[: len(values)], out=prefix[1:])
            return fmix64((prefix[hi] - prefix[lo]) * self._inverse[lo])

    def _grow(self, n: int) -> None:
        if len(self._powers) >= n:
            return
        size = max(n, 2 * len(self._powers))
        self._powers, self._inverse = _power_table(self.q, size), _power_table(_U64(pow(int(self.q), -1, 1 << 64)), size)


def _power_table(base: np.uint64, n: int) -> np.ndarray:
    """base**i mod 2**64 for i in [0, n)."""
    out = np.ones(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.cumprod(np.full(n - 1, base, dtype=np.uint64), out=out[1:])
    return out


def _groups(sizes: Sequence[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) ranges whose sizes sum to at most `limit` (or one oversized item)."""
    groups, lo, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > lo and total + size > limit:
            groups.append((lo, i))
            lo, total = i, 0
        total += size
    if lo < len(sizes):
        groups.append((lo, len(sizes)))
    return groups


def lsh_params(threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising the weighted areas of error.

    The false-positive area is the integral of the S-curve below the threshold, the false
    negative area the integral of one minus it above (datasketch's `_optimal_param`). With
    u = s**rows both are incomplete beta functions: integral of (1-s^r)^b from 0 to t is
    B(1/r, b+1) * I(t^r; 1/r, b+1) / r. Ties go to fewer bands, then fewer rows, as there.
    """
    b, r = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64).T
    whole = beta(1 / r, b + 1) / r  # integral of (1-s^r)^b over [0, 1]
    below = whole * betainc(1 / r, b + 1, threshold**r)  # ... over [0, threshold]
    false_positive = threshold - below
    false_negative = whole - below
    best = int(np.argmin(false_positive_weight * false_positive + false_negative_weight * false_negative))
    return int(b[best]), int(r[best])


def candidate_probability(jaccard: float | np.ndarray, bands: int, rows: int) -> np.ndarray:
    """The S-curve: the chance that two documents at Jaccard similarity J share a band."""
    return 1 - (1 - np.asarray(jaccard, dtype=np.float64) ** rows) ** bands


def s_curve(bands: int, rows: int, points: Sequence[float] = tuple(np.round(np.arange(0.1, 1.01, 0.1), 2))) -> list[dict[str, float]]:
    """The S-curve at `points`, for a report: what a threshold means in practice."""
    return [{"jaccard": float(j), "probability": round(float(candidate_probability(j, bands, rows)), 6)} for j in points]


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands) uint64: a hash of each band's rows; equal keys make candidates."""
    bands_view = signatures[:, : bands * rows].reshape(len(signatures), bands, rows).astype(np.uint64)
    keys = np.zeros((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for row in range(rows):
            keys = fmix64(keys * _U64(0x9E3779B97F4A7C15) + bands_view[:, :, row])
    return keys


@dataclass(frozen=True)
class Signed:
    """What deduplication needs to know of each document, row by row; the text is not kept."""

    exact: np.ndarray  # (n,) uint64: equal for exact duplicates
    keys: np.ndarray  # (n, bands) uint64: LSH band keys
    signatures: np.ndarray  # (n, num_perm) uint32 (a memory map when the corpus is large)

    @classmethod
    def concatenate(cls, parts: Sequence["Signed"]) -> "Signed":
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("exact", "keys", "signatures")))


def sign(texts: Sequence[str], hasher: MinHasher, bands: int, rows: int) -> Signed:
    """Stage one, for a batch of texts: their exact hashes, band keys and signatures."""
    exact, signatures = hasher.sign(texts)
    return Signed(exact, band_keys(signatures, bands, rows), signatures)


def linked_pairs(signed: Signed, rows: np.ndarray, threshold: float, *, groups: np.ndarray | None = None, verify: bool = True) -> np.ndarray:
    """(pairs, 2) rows of `signed` that are duplicates: exact, or near (sharing a band and,
    with `verify`, a MinHash Jaccard estimate of at least `threshold`).

    Only the given `rows` take part, in the given order (a bucket's first row is paired
    with the rest, so order decides which side of a pair a row is on); `groups` (one per
    given row) keeps buckets apart. A later row is verified against its bucket's first row
    only: one that falls short of the first but is close to another row of the bucket is
    linked only if some other band or the exact hash brings the two together.
    """
    exact = rows[candidate_pairs(signed.exact[rows], groups)]
    near = rows[candidate_pairs(signed.keys[rows], groups)]
    if verify:
        near = near[similar(signed.signatures, near, threshold)]
    return np.unique(np.concatenate((exact, near)), axis=0)


def candidate_pairs(keys: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """(pairs, 2) int64 (first, later): positions sharing a key in some column, within a group.

    Each bucket (equal key, equal group) pairs its first position with every later one,
    which is enough to connect the bucket: memory grows with the documents in buckets, not
    with the square of a bucket's size. `keys` is (n,) or (n, columns); `groups` (n,)
    keeps buckets apart (one group per domain for local deduplication).
    """
    keys = keys.reshape(len(keys), -1)
    groups = np.zeros(len(keys), dtype=np.int64) if groups is None else groups
    found = [np.empty((0, 2), dtype=np.int64)]
    for column in keys.T:
        order = np.lexsort((column, groups))  # stable: positions ascend within a bucket
        k, g = column[order], groups[order]
        new = np.concatenate(([True], (k[1:] != k[:-1]) | (g[1:] != g[:-1])))
        first = order[new][np.cumsum(new) - 1]
        later = first != order
        found.append(np.stack((first[later], order[later]), axis=1))
    return np.unique(np.concatenate(found), axis=0)


def similar(signatures: np.ndarray, pairs: np.ndarray, threshold: float, chunk: int = 65536) -> np.ndarray:
    """Which pairs' MinHash Jaccard estimate (share of equal hashes) reaches `threshold`.

    Verifying candidates this way removes most of LSH's false positives (pairs far below the
    threshold that shared a band by luck) at the cost of reading two signatures per pair.
    """
    keep = np.zeros(len(pairs), dtype=bool)
    for lo in range(0, len(pairs), chunk):
        p = pairs[lo : lo + chunk]
        keep[lo : lo + chunk] = (signatures[p[:, 0]] == signatures[p[:, 1]]).mean(axis=1) >= threshold
    return keep


def representatives(n: int, pairs: np.ndarray) -> np.ndarray:
    """For each of `n` documents, the first document (smallest index) of its cluster.

    Clusters are the connected components of the pairs, which is what union-find over them
    computes; scipy finds them without a Python loop per pair. A document is kept when it is
    its own representative, so exactly the first of each cluster in stream order survives.
    """
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    first = np.full(count, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    return first[labels]
