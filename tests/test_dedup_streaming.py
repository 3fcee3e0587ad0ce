"""Bounded-memory deduplication: the streamed stages decide exactly what the in-memory ones
decided (outputs saved from the previous implementation on a corpus with planted duplicates),
whatever the memory limit, the task sizes and the executor."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from languini.data import buckets, dedup as dedup_module
from languini.data.buckets import MIN_MEMORY, Buckets, DisjointSets, memory_budget, merged, sorted_runs
from languini.data.dedup import dedup, read_duplicates
from languini.data.minhash import candidate_pairs, representatives
from languini.data.prepare import prepare
from languini.errors import UserError

DOMAINS = ("web", "books", "code")
EXPECTED = Path(__file__).parent / "data" / "dedup-planted.json"
CASES = {  # name: dedup() settings whose outputs are saved in EXPECTED
    "global": dict(scope="global"),
    "local": dict(scope="local"),
    "global-decontaminate": dict(scope="global", decontaminate=True),
    "local-decontaminate-0.6-unverified": dict(scope="local", decontaminate=True, threshold=0.6, num_perm=64, verify=False),
    "global-0.5-ngram3": dict(scope="global", threshold=0.5, ngram=3, seed=7),
}


def planted_corpus(path: Path, bases: int = 700, seed: int = 0) -> Path:
    """Documents in three domains, ~40% of them copied one to four times (exact restyled copies,
    copies with a few to many words replaced, copies of copies: chains whose ends are further
    apart than the threshold) into any domain and any split, in a shuffled stream; some shorter
    than an n-gram."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    docs: list[tuple[str, str]] = []
    for b in range(bases):
        words = [rng.choice(vocab) for _ in range(rng.choice([rng.randint(1, 6), rng.randint(20, 200)]))]
        docs.append((f"b{b}", " ".join(words)))
        if rng.random() < 0.4:
            current = words
            for c in range(rng.randint(1, 4)):
                if rng.random() < 0.25:
                    text = "  ".join(w.upper() + rng.choice(["", ",", ";", "!"]) for w in current)
                else:
                    current = list(current)
                    for _ in range(rng.choice([1, 2, rng.randint(3, max(3, len(current) // 4))])):
                        current[rng.randrange(len(current))] = f"x{rng.randrange(10**9)}"
                    text = " ".join(current)
                docs.append((f"b{b}-c{c}", text))
    rng.shuffle(docs)
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, text in docs:
            f.write(json.dumps({"id": doc_id, "text": text, "meta": {"set": rng.choice(DOMAINS)}}) + "\n")
    return path


def outcome(report: dict) -> dict:
    """What a dedup run decided and wrote (the new train split's entry holds the sha256 of its
    shards and index files), as saved in EXPECTED by the in-memory implementation (commit
    14d683e). (The fingerprint would also cover where the source file lay.)"""
    train = json.loads((Path(report["out"]) / "manifest.json").read_text())["splits"]["train"]
    return {"train": train, **{key: report[key] for key in ("total", "by_domain")}, "duplicates": list(read_duplicates(report["out"]))}



@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("planted")
    corpus = planted_corpus(tmp / "corpus.jsonl")
    prepare([str(corpus)], tmp / "data", tokenizer="bytes", domain_field="meta.set", split=(0.8, 0.1, 0.1), workers=1, progress=False)
    return tmp / "data"


@pytest.mark.parametrize("case", CASES)
def test_outputs_are_the_in_memory_implementations(parent, tmp_path, case):
    report = dedup(parent, tmp_path / "out", workers=1, progress=False, **CASES[case])
    assert outcome(report) == json.loads(EXPECTED.read_text())[case]


@pytest.mark.parametrize("case, workers", [("global-decontaminate", 1), ("local-decontaminate-0.6-unverified", 1)])
def test_outputs_do_not_depend_on_parts_blocks_or_workers(parent, tmp_path, monkeypatch, case, workers):
    """A dozen parts per pass, 16 records per run and round: buckets straddle chunks."""
    monkeypatch.setattr(dedup_module, "PART_TOKENS", 60_000)
    monkeypatch.setattr(dedup_module, "MIN_BLOCK", 16)
    monkeypatch.setattr(buckets, "MIN_MEMORY", 1)
    report = dedup(parent, tmp_path / "out", workers=workers, progress=False, memory_limit=20_000, **CASES[case])
    assert outcome(report) == json.loads(EXPECTED.read_text())[case]


def test_merged_buckets_pair_like_the_in_memory_candidates():
    rng = np.random.default_rng(0)
    n = 3000
    keys = rng.integers(0, 400, size=(n, 3), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # big buckets, high bits set
    groups = rng.integers(0, 3, size=n)
    cuts = np.sort(rng.choice(np.arange(1, n), size=12, replace=False))
    for column in range(keys.shape[1]):
        runs = [sorted_runs(keys[lo:hi, column : column + 1], np.arange(lo, hi))[0] for lo, hi in zip([0, *cuts], [*cuts, n])]
        for by_group in (None, groups):
            streamed, bucket = [], Buckets()
            for chunk in merged(runs, block=7):
                assert (np.diff(chunk["pos"])[np.diff(chunk["key"].astype(np.float64)) == 0] > 0).all()
                streamed.append(bucket.pairs(chunk["key"], chunk["pos"], None if by_group is None else by_group[chunk["pos"]]))
            expected = candidate_pairs(keys[:, column], by_group)
            assert (np.unique(np.concatenate(streamed), axis=0) == expected).all() and len(np.concatenate(streamed)) == len(expected)


def test_union_find_gives_each_documents_clusters_first():
    rng = np.random.default_rng(1)
    n = 5000
    for edges in (50, 2000, 6000):
        pairs = rng.integers(0, n, size=(edges, 2))
        chain = np.stack((np.arange(n - 1, 0, -1), np.arange(n - 2, -1, -1)), axis=1)[: edges // 2]  # deep trees
        pairs = np.concatenate((pairs, chain))
        sets = DisjointSets(n)
        for lo in range(0, len(pairs), 97):
            sets.union(pairs[lo : lo + 97, 0], pairs[lo : lo + 97, 1])
        assert (sets.firsts(chunk=333) == representatives(n, pairs)).all()
        assert sets.parent.dtype == np.int32


def test_memory_limit_is_parsed_or_refused():
    assert memory_budget("512M") == 512 << 20 and memory_budget("1.5GB") == 3 << 29 and memory_budget(1 << 30) == 1 << 30
    assert memory_budget("4gib") == 4 << 30 and memory_budget(None) > MIN_MEMORY
    with pytest.raises(UserError, match="is not a size"):
        memory_budget("lots")
    with pytest.raises(UserError, match="below 16 MiB"):
        memory_budget("1M")



def test_cli_takes_a_memory_limit_and_refuses_a_bad_one(parent, tmp_path):
    from helpers import fails, invoke

    report = json.loads(invoke("data", "dedup", parent, "--out", tmp_path / "out", "--memory-limit", "64M", "--workers", 1,
                               "--no-progress", "--json"))
    assert outcome(report) == json.loads(EXPECTED.read_text())["global"]
    assert "is not a size" in fails("data", "dedup", parent, "--out", tmp_path / "bad", "--memory-limit", "lots", "--no-progress")
    assert not (tmp_path / "bad").exists()
